//! `init`: make a small base model from nothing — generate a corpus, train a byte-level BPE
//! tokenizer, pre-train a Llama-architecture model with AdamW, write a Hugging Face directory.
//!
//! Deterministic with a seed on a given machine (same thread count): the corpus, tokenizer,
//! initial weights and batch order all come from seeded ChaCha8 streams.

mod corpus;
mod shapes;

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub use corpus::{CORPUS_VERSION, World};
pub use shapes::{Shape, ShapeOptions, ShapeReport, cache_dir, cached_shape, init_shape};

use crate::config::{Config, GenerationConfig, ModelType, TokenIds};
use crate::error::{Error, Result, write_file};
use crate::model::Model;
use crate::routing::BatchAdapters;
use crate::weights::random_weights;

/// Special tokens, in id order (ids 0..).
pub const SPECIAL_TOKENS: [&str; 6] = [
    "<s>",
    "</s>",
    "<pad>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
];

/// The chat template written to `tokenizer_config.json`.
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}\
{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Size presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// For tests: trains in seconds (200 steps: enough to write the corpus's words).
    Tiny,
    /// For the demo: a few minutes on two cores.
    Small,
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            _ => Err(Error::InvalidArgument(format!(
                "unknown preset {s:?} (tiny or small)"
            ))),
        }
    }
}

/// Everything that determines an init run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitOptions {
    /// The preset the values came from.
    pub preset: Preset,
    /// Seed of corpus, weights and batches.
    pub seed: u64,
    /// Training documents.
    pub documents: usize,
    /// Held-out documents for perplexity.
    pub eval_documents: usize,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Training context length.
    pub seq_len: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate (linear warm-up, cosine decay to 10%).
    pub learning_rate: f64,
}

impl InitOptions {
    /// The values of a preset.
    pub fn preset(preset: Preset, seed: u64) -> Self {
        match preset {
            Preset::Tiny => InitOptions {
                preset,
                seed,
                documents: 400,
                eval_documents: 40,
                vocab_size: 384,
                hidden_size: 64,
                intermediate_size: 128,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                seq_len: 32,
                batch_size: 8,
                steps: 200,
                learning_rate: 3e-3,
            },
            Preset::Small => InitOptions {
                preset,
                seed,
                documents: 20_000,
                eval_documents: 500,
                vocab_size: 2048,
                hidden_size: 128,
                intermediate_size: 352,
                layers: 4,
                heads: 4,
                kv_heads: 2,
                seq_len: 64,
                batch_size: 16,
                steps: 300,
                learning_rate: 2e-3,
            },
        }
    }

    /// The model configuration these options produce (ids of `<s>` = 0, `</s>` = 1).
    pub fn config(&self) -> Config {
        Config {
            model_type: ModelType::Llama,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: Some(self.kv_heads),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_position_embeddings: self.seq_len.max(256),
            tie_word_embeddings: true,
            vocab_size: self.vocab_size,
            attention_bias: false,
            mlp_bias: false,
            hidden_act: "silu".into(),
            sliding_window: None,
            use_sliding_window: None,
            bos_token_id: Some(0),
            eos_token_id: Some(TokenIds::One(1)),
            torch_dtype: Some("float32".into()),
            architectures: Some(vec!["LlamaForCausalLM".into()]),
        }
    }
}

/// What an init run measured (written as `training_report.json`; no wall-clock values, so the
/// directory hash stays deterministic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitReport {
    /// The options used.
    pub options: InitOptions,
    /// Where the training text came from and its licence.
    pub corpus: String,
    /// Tokens in the training stream.
    pub train_tokens: usize,
    /// Parameters of the model.
    pub parameters: usize,
    /// (step, training loss) every few steps.
    pub loss_curve: Vec<(usize, f32)>,
    /// Mean cross-entropy on held-out documents.
    pub eval_loss: f32,
    /// exp(eval_loss).
    pub eval_perplexity: f32,
}

/// What to tell a user about a base model made by [`init`]: such a base was trained only on
/// the generated world of [`World`], so its vocabulary and knowledge cover that world and
/// nothing else.
pub const TOY_WORLD_NOTE: &str = "toy-world model: trained only on generated sentences about a \
     synthetic world; it cannot learn ordinary text (use a pulled Hugging Face base for that)";

/// Whether `dir` holds a base made by [`init`] (its `training_report.json` names the generated
/// corpus): a toy-world model, to be labelled so wherever it is offered.
pub fn is_toy_world(dir: &std::path::Path) -> bool {
    std::fs::read(dir.join("training_report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("corpus")?.as_str().map(|c| c.contains("init::World")))
        .unwrap_or(false)
}

/// Progress of a run: `Tokenizer`, then one `Step` per optimizer step, then `Eval`.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// The tokenizer is trained.
    Tokenizer,
    /// Step `step` of `total` finished with this training loss.
    Step {
        /// 1-based step.
        step: usize,
        /// Total steps.
        total: usize,
        /// Loss of the step's batch.
        loss: f32,
    },
    /// Evaluation is running.
    Eval,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Trains a byte-level BPE tokenizer with `SPECIAL_TOKENS` as ids 0..6.
pub fn train_tokenizer(docs: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let tok = train_bpe(docs, vocab_size, &SPECIAL_TOKENS)?;
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        if tok.token_to_id(s) != Some(i as u32) {
            return Err(Error::Tokenizer(format!(
                "special token {s} did not get id {i}"
            )));
        }
    }
    Ok(tok)
}

/// Trains a byte-level BPE of at most `vocab_size` ids with `specials` as ids 0...
fn train_bpe(docs: &[String], vocab_size: usize, specials: &[&str]) -> Result<Tokenizer> {
    let specials: Vec<AddedToken> = specials
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevel::new(false, true, true)));
    let mut trainer = tokenizers::models::TrainerWrapper::from(trainer);
    tok.train(&mut trainer, docs.iter()).map_err(tok_err)?;
    if tok.get_vocab_size(true) > vocab_size {
        return Err(Error::Tokenizer(format!(
            "trained vocabulary exceeds {vocab_size}"
        )));
    }
    Ok(tok)
}

/// `<s> doc </s>` for every document, concatenated.
fn token_stream(tok: &Tokenizer, docs: &[String]) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for d in docs {
        let enc = tok.encode(d.as_str(), false).map_err(tok_err)?;
        out.push(0);
        out.extend_from_slice(enc.get_ids());
        out.push(1);
    }
    Ok(out)
}

/// Windows of `t + 1` tokens starting at the given offsets, as (inputs, targets) [b, t].
fn batch(stream: &[u32], starts: &[usize], t: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * t);
    let mut y = Vec::with_capacity(starts.len() * t);
    for &s in starts {
        x.extend_from_slice(&stream[s..s + t]);
        y.extend_from_slice(&stream[s + 1..s + t + 1]);
    }
    let b = starts.len();
    Ok((
        Tensor::from_vec(x, (b, t), dev)?,
        Tensor::from_vec(y, (b, t), dev)?,
    ))
}

fn loss(model: &Model, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (b, t) = x.dims2()?;
    let logits = model.forward(x, &BatchAdapters::none(b))?;
    let v = model.config().vocab_size;
    Ok(candle_nn::loss::cross_entropy(
        &logits.reshape((b * t, v))?,
        &y.reshape(b * t)?,
    )?)
}

/// Runs corpus generation, tokenizer training and pre-training, and writes a Hugging Face
/// directory to `out`: `config.json`, `model.safetensors`, `tokenizer.json`,
/// `tokenizer_config.json`, `generation_config.json`, `training_report.json`.
pub fn init(
    out: &Path,
    opts: &InitOptions,
    mut progress: impl FnMut(Progress),
) -> Result<InitReport> {
    let dev = Device::Cpu;
    let world = World::new(opts.seed);
    let docs = world.documents(opts.documents, opts.seed.wrapping_add(1));
    let eval_docs = world.documents(opts.eval_documents, opts.seed.wrapping_add(2));
    let tok = train_tokenizer(&docs, opts.vocab_size)?;
    progress(Progress::Tokenizer);
    let cfg = Config {
        vocab_size: tok.get_vocab_size(true),
        ..opts.config()
    };
    cfg.validate()?;
    let stream = token_stream(&tok, &docs)?;
    let eval_stream = token_stream(&tok, &eval_docs)?;
    let t = opts.seq_len;
    if stream.len() <= t + 1 || eval_stream.len() <= t + 1 {
        return Err(Error::InvalidArgument(
            "corpus too small for seq_len".into(),
        ));
    }

    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidArgument("VarMap lock poisoned".into()))?;
        for (name, shape, values) in random_weights(&cfg, opts.seed, 0.02) {
            data.insert(
                name,
                Var::from_tensor(&Tensor::from_vec(values, shape, &dev)?)?,
            );
        }
    }
    let model = Model::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let params = ParamsAdamW {
        lr: opts.learning_rate,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(3));
    let warmup = (opts.steps / 10).max(1);
    let mut curve = Vec::new();
    let every = (opts.steps / 50).max(1);
    for step in 1..=opts.steps {
        let lr = if step <= warmup {
            opts.learning_rate * step as f64 / warmup as f64
        } else {
            let p = (step - warmup) as f64 / (opts.steps - warmup).max(1) as f64;
            opts.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
        };
        opt.set_learning_rate(lr);
        let starts: Vec<usize> = (0..opts.batch_size)
            .map(|_| (rng.next_u64() % (stream.len() - t - 1) as u64) as usize)
            .collect();
        let (x, y) = batch(&stream, &starts, t, &dev)?;
        let l = loss(&model, &x, &y)?;
        opt.backward_step(&l)?;
        let lv = l.to_scalar::<f32>()?;
        if step % every == 0 || step == 1 || step == opts.steps {
            curve.push((step, lv));
        }
        progress(Progress::Step {
            step,
            total: opts.steps,
            loss: lv,
        });
    }

    progress(Progress::Eval);
    let starts: Vec<usize> = (0..(eval_stream.len() - 1) / t)
        .map(|i| i * t)
        .filter(|s| s + t < eval_stream.len())
        .take(64)
        .collect();
    let mut total = 0.0f32;
    for chunk in starts.chunks(opts.batch_size) {
        let (x, y) = batch(&eval_stream, chunk, t, &dev)?;
        total += loss(&model, &x, &y)?.to_scalar::<f32>()? * chunk.len() as f32;
    }
    let eval_loss = total / starts.len().max(1) as f32;

    let report = InitReport {
        options: opts.clone(),
        corpus: "generated in code by openledger_model::init::World (templated sentences about a \
                 synthetic world, seeded); the project's own text, Apache-2.0"
            .into(),
        train_tokens: stream.len(),
        parameters: cfg.num_parameters(),
        loss_curve: curve,
        eval_loss,
        eval_perplexity: eval_loss.exp(),
    };
    write_dir(out, &cfg, &model, &tok, &report)?;
    Ok(report)
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::json(path, e))?;
    write_file(path, &bytes)
}

fn write_dir(
    out: &Path,
    cfg: &Config,
    model: &Model,
    tok: &Tokenizer,
    report: &InitReport,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_json(&out.join("config.json"), cfg)?;
    let weights: std::collections::HashMap<String, Tensor> = model
        .named_weights()?
        .into_iter()
        .map(|(n, t)| (n, t.detach()))
        .collect();
    let path = out.join("model.safetensors");
    candle_core::safetensors::save(&weights, &path).map_err(|e| Error::Safetensors {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tok_json = tok.to_string(true).map_err(tok_err)?;
    write_file(&out.join("tokenizer.json"), tok_json.as_bytes())?;
    let tc = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "add_bos_token": true,
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
    });
    write_json(&out.join("tokenizer_config.json"), &tc)?;
    let gen_cfg = GenerationConfig {
        bos_token_id: Some(0),
        eos_token_id: Some(TokenIds::One(1)),
        do_sample: Some(true),
        temperature: Some(0.8),
        top_p: Some(0.95),
        top_k: None,
        repetition_penalty: None,
        max_new_tokens: Some(64),
    };
    write_json(&out.join("generation_config.json"), &gen_cfg)?;
    write_json(&out.join("training_report.json"), report)
}
