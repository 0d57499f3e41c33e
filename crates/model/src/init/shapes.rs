//! `init --shape NAME --random`: a model directory with the exact Hugging Face layout of a
//! real checkpoint (its `config.json`, tensor names and shapes, bf16 safetensors, special
//! tokens at their real ids, its chat template) and random weights, for benchmarks and tests.
//!
//! The tokenizer is a byte-level BPE trained on the generated corpus, padded with unreachable
//! filler entries up to the real vocabulary size, with the family's special tokens at their
//! real ids: text encodes and decodes, and every id the real model knows exists.

use std::io::Write;
use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::corpus::World;
use super::{tok_err, train_bpe, write_json};
use crate::config::{Config, GenerationConfig, TokenIds};
use crate::error::{Error, Result, write_file};
use crate::weights::normal;

/// The real model shapes `init --shape` reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Shape {
    /// HuggingFaceTB/SmolLM2-135M: llama, 30 layers, hidden 576, 9 heads (3 kv), vocab 49152.
    #[serde(rename = "smollm2-135m")]
    Smollm2_135m,
    /// Qwen/Qwen2.5-0.5B: qwen2 (q/k/v biases), 24 layers, hidden 896, 14 heads (2 kv).
    #[serde(rename = "qwen2.5-0.5b")]
    Qwen25_05b,
    /// meta-llama/Llama-3.2-1B: llama with llama3 rope scaling, 16 layers, hidden 2048.
    #[serde(rename = "llama3.2-1b")]
    Llama32_1b,
}

impl std::str::FromStr for Shape {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Shape::ALL
            .into_iter()
            .find(|sh| sh.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown shape {s:?} (one of {})",
                    Shape::ALL.map(Shape::name).join(", ")
                ))
            })
    }
}

/// One special token: its text and id.
type Special = (&'static str, u32);

const SMOL_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const QWEN_TEMPLATE: &str = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}";

const LLAMA3_TEMPLATE: &str = "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}{{- 'Cutting Knowledge Date: December 2023\n' }}{{- 'Today Date: ' + date_string + '\n\n' }}{{- system_message }}{{- '<|eot_id|>' }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}";

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 3] = [Shape::Smollm2_135m, Shape::Qwen25_05b, Shape::Llama32_1b];

    /// The name `--shape` takes.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Smollm2_135m => "smollm2-135m",
            Shape::Qwen25_05b => "qwen2.5-0.5b",
            Shape::Llama32_1b => "llama3.2-1b",
        }
    }

    /// The checkpoint's `config.json` (the fields this runtime reads, with their real values).
    pub fn config(self) -> Config {
        let json = match self {
            Shape::Smollm2_135m => serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 0,
                "hidden_act": "silu", "torch_dtype": "bfloat16"
            }),
            Shape::Qwen25_05b => serde_json::json!({
                "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151643,
                "sliding_window": 32768, "use_sliding_window": false, "hidden_act": "silu",
                "torch_dtype": "bfloat16"
            }),
            Shape::Llama32_1b => serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192},
                "tie_word_embeddings": true, "bos_token_id": 128000,
                "eos_token_id": 128001, "attention_bias": false, "mlp_bias": false,
                "hidden_act": "silu", "torch_dtype": "bfloat16"
            }),
        };
        // the literals above are valid configurations (unit-tested)
        serde_json::from_value(json).unwrap_or_else(|e| unreachable!("shape config: {e}"))
    }

    /// Special tokens at their real ids.
    fn specials(self) -> Vec<Special> {
        match self {
            Shape::Smollm2_135m => vec![
                ("<|endoftext|>", 0),
                ("<|im_start|>", 1),
                ("<|im_end|>", 2),
                ("<repo_name>", 3),
                ("<reponame>", 4),
                ("<file_sep>", 5),
                ("<filename>", 6),
                ("<gh_stars>", 7),
                ("<issue_start>", 8),
                ("<issue_comment>", 9),
                ("<issue_closed>", 10),
                ("<jupyter_start>", 11),
                ("<jupyter_text>", 12),
                ("<jupyter_code>", 13),
                ("<jupyter_output>", 14),
                ("<jupyter_script>", 15),
                ("<empty_output>", 16),
            ],
            Shape::Qwen25_05b => vec![
                ("<|endoftext|>", 151643),
                ("<|im_start|>", 151644),
                ("<|im_end|>", 151645),
                ("<|object_ref_start|>", 151646),
                ("<|object_ref_end|>", 151647),
                ("<|box_start|>", 151648),
                ("<|box_end|>", 151649),
                ("<|quad_start|>", 151650),
                ("<|quad_end|>", 151651),
                ("<|vision_start|>", 151652),
                ("<|vision_end|>", 151653),
                ("<|vision_pad|>", 151654),
                ("<|image_pad|>", 151655),
                ("<|video_pad|>", 151656),
                ("<tool_call>", 151657),
                ("</tool_call>", 151658),
                ("<|fim_prefix|>", 151659),
                ("<|fim_middle|>", 151660),
                ("<|fim_suffix|>", 151661),
                ("<|fim_pad|>", 151662),
                ("<|repo_name|>", 151663),
                ("<|file_sep|>", 151664),
            ],
            Shape::Llama32_1b => vec![
                ("<|begin_of_text|>", 128000),
                ("<|end_of_text|>", 128001),
                ("<|finetune_right_pad_id|>", 128004),
                ("<|start_header_id|>", 128006),
                ("<|end_header_id|>", 128007),
                ("<|eom_id|>", 128008),
                ("<|eot_id|>", 128009),
                ("<|python_tag|>", 128010),
            ],
        }
    }

    /// Where the BPE vocabulary ends and how many ids the tokenizer has in all.
    fn tokenizer_sizes(self) -> (u32, u32) {
        match self {
            Shape::Smollm2_135m => (49152, 49152),
            Shape::Qwen25_05b => (151643, 151665),
            Shape::Llama32_1b => (128000, 128256),
        }
    }

    /// (`bos_token`, `eos_token`, `pad_token`, add BOS when encoding, template, EOS ids of
    /// `generation_config.json`).
    #[allow(clippy::type_complexity)]
    fn tokenizer_config(
        self,
    ) -> (
        Option<&'static str>,
        &'static str,
        Option<&'static str>,
        bool,
        &'static str,
        Vec<u32>,
    ) {
        match self {
            Shape::Smollm2_135m => (
                Some("<|endoftext|>"),
                "<|endoftext|>",
                None,
                false,
                SMOL_TEMPLATE,
                vec![0, 2],
            ),
            Shape::Qwen25_05b => (
                None,
                "<|endoftext|>",
                Some("<|endoftext|>"),
                false,
                QWEN_TEMPLATE,
                vec![151643, 151645],
            ),
            Shape::Llama32_1b => (
                Some("<|begin_of_text|>"),
                "<|end_of_text|>",
                None,
                true,
                LLAMA3_TEMPLATE,
                vec![128001, 128008, 128009],
            ),
        }
    }
}

/// What `init --shape` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeReport {
    /// The shape.
    pub shape: Shape,
    /// Decoder layers written (the shape's, or fewer when asked).
    pub layers: usize,
    /// Parameters written.
    pub parameters: usize,
    /// Bytes of `model.safetensors`.
    pub weight_bytes: u64,
}

/// The byte-level BPE of the shape: trained on the generated corpus, filler entries up to the
/// end of the BPE range, special tokens at their ids.
fn shape_tokenizer(shape: Shape, seed: u64) -> Result<Tokenizer> {
    let docs = World::new(seed).documents(2_000, seed.wrapping_add(1));
    let specials = shape.specials();
    let (bpe_end, total) = shape.tokenizer_sizes();
    // SmolLM2's specials open its vocabulary (ids 0..); the others' follow the BPE range
    let leading: Vec<&str> = specials
        .iter()
        .filter(|(_, id)| *id < bpe_end)
        .map(|(t, _)| *t)
        .collect();
    let trained = train_bpe(&docs, 4_096, &leading)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&trained.to_string(false).map_err(tok_err)?)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let vocab = v
        .pointer_mut("/model/vocab")
        .and_then(|x| x.as_object_mut())
        .ok_or_else(|| Error::Tokenizer("trained tokenizer has no model.vocab".into()))?;
    let used = vocab.len() as u32;
    for id in used..bpe_end {
        vocab.insert(format!("<|filler_{id}|>"), id.into());
    }
    let mut added = Vec::new();
    let named: std::collections::HashMap<u32, &str> =
        specials.iter().map(|(t, id)| (*id, *t)).collect();
    let reserved: Vec<(String, u32)> = (bpe_end..total)
        .filter(|id| !named.contains_key(id))
        .enumerate()
        .map(|(k, id)| (format!("<|reserved_special_token_{k}|>"), id))
        .collect();
    let mut all: Vec<(String, u32)> = specials
        .iter()
        .map(|(t, id)| (t.to_string(), *id))
        .chain(reserved)
        .collect();
    all.sort_by_key(|(_, id)| *id);
    for (content, id) in all {
        added.push(serde_json::json!({
            "id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    v["added_tokens"] = serde_json::Value::Array(added);
    if shape == Shape::Llama32_1b {
        v["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                "ids": [128000], "tokens": ["<|begin_of_text|>"]}}
        });
    }
    let tok: Tokenizer = v.to_string().parse().map_err(tok_err)?;
    if tok.get_vocab_size(true) != total as usize {
        return Err(Error::Tokenizer(format!(
            "{}: tokenizer has {} ids, expected {total}",
            shape.name(),
            tok.get_vocab_size(true)
        )));
    }
    Ok(tok)
}

/// Values per seeded chunk of a tensor: chunks are generated in parallel, each from its own
/// stream, so the weights do not depend on the thread count.
const CHUNK: usize = 1 << 20;

/// The bf16 bytes of one random tensor: normal(0, std) matrices (the residual outputs scaled
/// down by √(2·layers)), unit norms, zero biases.
fn random_bf16(cfg: &Config, name: &str, n: usize, seed: u64) -> Vec<u8> {
    let std = 0.02;
    let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
        std / (2.0 * cfg.num_hidden_layers as f64).sqrt()
    } else {
        std
    };
    let constant = if name.ends_with("norm.weight") {
        Some(1.0f32)
    } else if name.ends_with(".bias") {
        Some(0.0)
    } else {
        None
    };
    let mut out = vec![0u8; 2 * n];
    out.par_chunks_mut(2 * CHUNK)
        .enumerate()
        .for_each(|(c, bytes)| {
            let len = bytes.len() / 2;
            let values = match constant {
                Some(v) => vec![v; len],
                None => {
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    normal(&mut rng, len, std)
                }
            };
            for (b, v) in bytes.chunks_exact_mut(2).zip(values) {
                b.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
        });
    out
}

/// Options of [`init_shape`].
#[derive(Clone, Copy, Debug)]
pub struct ShapeOptions {
    /// Seed of the tokenizer's corpus and of the weights.
    pub seed: u64,
    /// Keep only the first layers (fast tests at the real widths); `None`: all of them.
    pub layers: Option<usize>,
    /// Write `model.safetensors` (false: only the JSON files and the tokenizer).
    pub weights: bool,
}

impl ShapeOptions {
    /// The whole model, with weights.
    pub fn new(seed: u64) -> Self {
        ShapeOptions {
            seed,
            layers: None,
            weights: true,
        }
    }
}

/// Writes the directory of `shape` with random weights into `out`.
pub fn init_shape(out: &Path, shape: Shape, opts: ShapeOptions) -> Result<ShapeReport> {
    let ShapeOptions {
        seed,
        layers,
        weights,
    } = opts;
    let mut cfg = shape.config();
    if let Some(l) = layers {
        cfg.num_hidden_layers = l.clamp(1, cfg.num_hidden_layers);
    }
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tok = shape_tokenizer(shape, seed)?;
    let tok_json = tok.to_string(false).map_err(tok_err)?;
    write_file(&out.join("tokenizer.json"), tok_json.as_bytes())?;
    let (bos, eos, pad, add_bos, template, gen_eos) = shape.tokenizer_config();
    write_json(
        &out.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": bos, "eos_token": eos, "pad_token": pad, "add_bos_token": add_bos,
            "clean_up_tokenization_spaces": false,
            "model_max_length": cfg.max_position_embeddings,
            "chat_template": template,
        }),
    )?;
    write_json(
        &out.join("generation_config.json"),
        &GenerationConfig {
            bos_token_id: cfg.bos_token_id,
            eos_token_id: Some(TokenIds::Many(gen_eos)),
            ..Default::default()
        },
    )?;
    write_json(&out.join("config.json"), &cfg)?;
    let weight_bytes = if weights {
        write_random_safetensors(&out.join("model.safetensors"), &cfg, seed)?
    } else {
        0
    };
    Ok(ShapeReport {
        shape,
        layers: cfg.num_hidden_layers,
        parameters: cfg.num_parameters(),
        weight_bytes,
    })
}

/// Where models made on this machine are cached: `$OPENLEDGER_CACHE`, else
/// `$XDG_CACHE_HOME/openledger`, else `~/.cache/openledger`.
pub fn cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("OPENLEDGER_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("openledger");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/openledger"),
        None => std::env::temp_dir().join("openledger-cache"),
    }
}

/// The random-weight directory of `shape` (seed 42) for benchmarks, made once under
/// [`cache_dir`]`/shapes/` (written to a temporary sibling and renamed, so a killed run
/// leaves no half directory).
pub fn cached_shape(shape: Shape) -> Result<std::path::PathBuf> {
    let parent = cache_dir().join("shapes");
    let dir = parent.join(format!("{}-random-42-v1", shape.name()));
    if dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = parent.join(format!(".{}.tmp-{}", shape.name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    init_shape(&tmp, shape, ShapeOptions::new(42))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join("model.safetensors").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(Error::io(&dir, e)),
    }
}

/// Streams a bf16 safetensors file of random weights (tensor by tensor: the 1B shape never
/// holds more than one tensor in memory). Layout: u64 LE header length, JSON header
/// `{name: {dtype, shape, data_offsets}}` padded with spaces to 8 bytes, then the data.
fn write_random_safetensors(path: &Path, cfg: &Config, seed: u64) -> Result<u64> {
    let shapes = cfg.tensor_shapes();
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "generator": "openledger model init --random"}),
    );
    let mut offset = 0usize;
    for (name, shape) in &shapes {
        let bytes = 2 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape,
                               "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
    let io = |e| Error::io(path, e);
    w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&h).map_err(io)?;
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n = shape.iter().product();
        let tensor_seed = seed.wrapping_add((i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        w.write_all(&random_bf16(cfg, name, n, tensor_seed))
            .map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok((8 + h.len() + offset) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_real_parameter_counts() -> Result<()> {
        // the counts Hugging Face reports for these checkpoints
        let want = [134_515_008usize, 494_032_768, 1_235_814_400];
        for (shape, n) in Shape::ALL.into_iter().zip(want) {
            let cfg = shape.config();
            cfg.validate()?;
            assert_eq!(cfg.num_parameters(), n, "{}", shape.name());
            assert_eq!(shape.name().parse::<Shape>()?, shape);
        }
        assert!("gpt2".parse::<Shape>().is_err());
        Ok(())
    }
}
