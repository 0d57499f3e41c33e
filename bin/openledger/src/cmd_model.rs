//! `openledger model ...`: make, inspect, run and benchmark base models.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use openledger_model::init::{InitOptions, Preset, Progress, init};
use openledger_model::{
    ChatMessage, DType, Device, LoraAdapter, Pretrained, SamplingParams, generate, info,
};

/// Size preset of `model init`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PresetArg {
    /// Seconds; for tests.
    Tiny,
    /// A few minutes on two cores; for the demo.
    Small,
}

/// Real checkpoint shapes of `model init --shape`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ShapeArg {
    /// HuggingFaceTB/SmolLM2-135M (135M parameters).
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    /// Qwen/Qwen2.5-0.5B (494M).
    #[value(name = "qwen2.5-0.5b")]
    Qwen25_05b,
    /// meta-llama/Llama-3.2-1B (1.24B).
    #[value(name = "llama3.2-1b")]
    Llama32_1b,
}

impl From<ShapeArg> for openledger_model::init::Shape {
    fn from(s: ShapeArg) -> Self {
        use openledger_model::init::Shape;
        match s {
            ShapeArg::Smollm2_135m => Shape::Smollm2_135m,
            ShapeArg::Qwen25_05b => Shape::Qwen25_05b,
            ShapeArg::Llama32_1b => Shape::Llama32_1b,
        }
    }
}

/// `openledger model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Generate a corpus, train a BPE tokenizer and pre-train a Llama-architecture base model
    /// into a Hugging Face directory.
    Init {
        /// Size preset.
        #[arg(long, value_enum, default_value = "tiny")]
        preset: PresetArg,
        /// Instead of training a preset: the exact Hugging Face layout of a real checkpoint
        /// (smollm2-135m, qwen2.5-0.5b, llama3.2-1b) with random bf16 weights; needs --random.
        #[arg(long, requires = "random", value_enum)]
        shape: Option<ShapeArg>,
        /// Random weights (with --shape): for benchmarks and tests, not for answers.
        #[arg(long, requires = "shape")]
        random: bool,
        /// With --shape: keep only the first N decoder layers.
        #[arg(long, requires = "shape")]
        layers: Option<usize>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of corpus, tokenizer, weights and batches.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Override the preset's number of optimizer steps.
        #[arg(long)]
        steps: Option<usize>,
    },
    /// Print architecture, parameter count, file digests and the content hash of a model directory.
    Info {
        /// Model directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Register a trained adapter in ModelRegistry (from its training manifest).
    Publish(Box<crate::cmd_train::PublishArgs>),
    /// Generate text from a model directory (optionally with a PEFT adapter).
    Generate {
        /// Model directory.
        dir: PathBuf,
        /// Prompt text (a user message with --chat).
        prompt: String,
        /// Render the prompt with the model's chat template.
        #[arg(long)]
        chat: bool,
        /// PEFT adapter directory.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Tokens to generate.
        #[arg(long, default_value_t = 48)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Nucleus sampling threshold.
        #[arg(long)]
        top_p: Option<f64>,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop string (repeatable).
        #[arg(long)]
        stop: Vec<String>,
    },
    /// Prefill and decode tokens/s at batch 1 and 16; prints a table and writes JSON.
    Bench {
        /// Model directory.
        dir: PathBuf,
        /// Where to write the JSON results.
        #[arg(long, default_value = "bench-out/model.json")]
        out: PathBuf,
    },
}

/// Runs one `openledger model` subcommand.
pub fn run(cmd: ModelCmd) -> eyre::Result<()> {
    match cmd {
        ModelCmd::Publish(a) => {
            tokio::runtime::Handle::current().block_on(crate::cmd_train::publish(*a))?;
        }
        ModelCmd::Init {
            shape: Some(shape),
            out,
            seed,
            layers,
            ..
        } => {
            let shape: openledger_model::init::Shape = shape.into();
            let started = Instant::now();
            let opts = openledger_model::init::ShapeOptions {
                layers,
                ..openledger_model::init::ShapeOptions::new(seed)
            };
            let r = openledger_model::init::init_shape(&out, shape, opts)?;
            println!(
                "wrote {} ({}, random weights, {} layers, {} parameters, {:.1} MB bf16) in {:.1} s",
                out.display(),
                shape.name(),
                r.layers,
                r.parameters,
                r.weight_bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            println!("content hash {}", info(&out)?.content_hash);
        }
        ModelCmd::Init {
            preset,
            out,
            seed,
            steps,
            ..
        } => {
            let preset = match preset {
                PresetArg::Tiny => Preset::Tiny,
                PresetArg::Small => Preset::Small,
            };
            let mut opts = InitOptions::preset(preset, seed);
            if let Some(s) = steps {
                opts.steps = s;
            }
            let bar = ProgressBar::new(opts.steps as u64);
            bar.set_style(ProgressStyle::with_template(
                "{spinner} {msg:<28} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
            )?);
            bar.set_message("training tokenizer");
            let started = Instant::now();
            let report = init(&out, &opts, |p| match p {
                Progress::Tokenizer => bar.set_message("pre-training"),
                Progress::Step { step, loss, .. } => {
                    bar.set_position(step as u64);
                    bar.set_message(format!("loss {loss:.3}"));
                }
                Progress::Eval => bar.set_message("evaluating"),
            })?;
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            println!("wrote {} in {secs:.1} s", out.display());
            println!(
                "parameters {}  train tokens {}  steps {}  batch {}x{}",
                report.parameters, report.train_tokens, opts.steps, opts.batch_size, opts.seq_len
            );
            println!("loss curve (step: loss)");
            let every = (report.loss_curve.len() / 10).max(1);
            let n = report.loss_curve.len();
            for (i, (s, l)) in report.loss_curve.iter().enumerate() {
                if i % every == 0 || i + 1 == n {
                    println!("  {s:>5}: {l:.4}");
                }
            }
            println!(
                "held-out loss {:.4}, perplexity {:.2}",
                report.eval_loss, report.eval_perplexity
            );
            println!("content hash {}", info(&out)?.content_hash);
        }
        ModelCmd::Info { dir, json } => {
            let i = info(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!("{i}");
            }
        }
        ModelCmd::Generate {
            dir,
            prompt,
            chat,
            adapter,
            max_tokens,
            temperature,
            top_p,
            seed,
            stop,
        } => {
            let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
            let tok = p
                .tokenizer
                .as_ref()
                .ok_or_else(|| eyre::eyre!("{} has no tokenizer.json", dir.display()))?;
            let ids = if chat {
                p.encode_chat(&[ChatMessage::new("user", &prompt)])?
            } else {
                p.encode(&prompt)?
            };
            let adapter = match adapter {
                Some(a) => {
                    let mut a = LoraAdapter::load(&a, &p.config, &Device::Cpu, DType::F32)?;
                    // the same numbers `openledger serve` computes with
                    a.prepare_serving()?;
                    Some(Arc::new(a))
                }
                None => None,
            };
            let params = SamplingParams {
                max_new_tokens: max_tokens,
                temperature,
                top_p,
                seed,
                stop_strings: stop,
                stop_token_ids: p.eos_ids(),
                ..Default::default()
            };
            use std::io::Write;
            let mut stdout = std::io::stdout();
            let seq = generate(&p.model, Some(tok), &ids, adapter, &params, |t| {
                let _ = write!(stdout, "{}", t.text_delta);
                let _ = stdout.flush();
                true
            })?;
            println!();
            eprintln!(
                "[{} tokens, finish {:?}]",
                seq.generated().len(),
                seq.finish
            );
        }
        ModelCmd::Bench { dir, out } => {
            let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
            let rows = openledger_model::bench::throughput(&p.model, &[1, 16], 64, 32)?;
            println!("{}", openledger_model::bench::table(&rows));
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&rows)?)?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}
