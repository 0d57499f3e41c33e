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
    /// into a Hugging Face directory. A preset base is a toy-world model: it knows only its
    /// generated world and cannot learn ordinary text (use `model pull` for that).
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
    },
    /// Download a model (config, tokenizer, safetensors) from the Hugging Face hub into the
    /// models cache (~/.cache/openledger/models/<owner>--<name>): resumable, checksummed.
    /// Honours HF_ENDPOINT (another hub) and HF_TOKEN (gated or private repositories).
    Pull {
        /// Repository id, e.g. HuggingFaceTB/SmolLM2-135M.
        repo: String,
        /// Branch, tag or commit.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Models cache to pull into (default ~/.cache/openledger/models).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// List the models in the models cache (pulled ones, with their paths for --base).
    List {
        /// Models cache (default ~/.cache/openledger/models).
        #[arg(long)]
        root: Option<PathBuf>,
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
    /// Batch-1 prefill and decode tokens/s in each weight format, side by side with llama.cpp
    /// (f32 and Q8_0 GGUF of the same weights) when --llamacpp names a Python that has it,
    /// interleaved repeats, medians; accuracy of each format against the f32 NumPy reference;
    /// then batch 1 vs 16 with 0, 1 and 16 adapters. Prints tables and writes JSON.
    Bench {
        /// Model directory (default: the SmolLM2-135M shape with random weights, made once
        /// under ~/.cache/openledger/shapes).
        dir: Option<PathBuf>,
        /// Where to write the JSON results.
        #[arg(long, default_value = "bench-out/model.json")]
        out: PathBuf,
        /// Weight formats to measure.
        #[arg(long, value_delimiter = ',', default_value = "f32,bf16,int8")]
        weights: Vec<openledger_model::WeightFormat>,
        /// A Python with llama-cpp-python, gguf, numpy and safetensors
        /// (crates/model/benches/llamacpp/compare.py runs under it).
        #[arg(long)]
        llamacpp: Option<PathBuf>,
        /// Interleaved repeats (ours, then llama.cpp, again); medians are reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
}

/// Runs one `openledger model` subcommand.
pub fn run(cmd: ModelCmd) -> eyre::Result<()> {
    match cmd {
        ModelCmd::Publish(a) => {
            tokio::runtime::Handle::current().block_on(crate::cmd_train::publish(*a))?;
        }
        ModelCmd::Pull {
            repo,
            revision,
            root,
        } => {
            let mut opts = openledger_model::pull::PullOptions::from_env();
            opts.revision = revision;
            if let Some(r) = root {
                opts.root = r;
            }
            let pb = ProgressBar::new(0);
            if let Ok(s) = ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            ) {
                pb.set_style(s.progress_chars("=> "));
            }
            let p = tokio::runtime::Handle::current().block_on(openledger_model::pull::pull(
                &repo,
                &opts,
                |e| match e {
                    openledger_model::pull::PullProgress::Plan { bytes, .. } => {
                        pb.set_length(bytes)
                    }
                    openledger_model::pull::PullProgress::File { name, resumed_at } => {
                        pb.inc(resumed_at);
                        pb.set_message(name);
                    }
                    openledger_model::pull::PullProgress::Bytes(n) => pb.inc(n),
                },
            ));
            pb.finish_and_clear();
            let p = p.map_err(|e| eyre::eyre!("model pull: {e} ({})", e.kind()))?;
            let what = if p.fetched == 0 {
                format!("{} is already complete", p.dir.display())
            } else {
                format!(
                    "pulled {repo}{} into {} ({} files, {} bytes)",
                    p.commit
                        .as_ref()
                        .map(|c| format!(" at {c}"))
                        .unwrap_or_default(),
                    p.dir.display(),
                    p.fetched,
                    p.bytes
                )
            };
            crate::endpoints::emit(
                format!("{what}\nuse it with: --base {}", p.dir.display()),
                serde_json::json!({"repo": repo, "dir": p.dir, "commit": p.commit, "fetched": p.fetched, "bytes": p.bytes}),
            );
        }
        ModelCmd::List { root } => {
            let root = root.unwrap_or_else(openledger_model::pull::models_dir);
            let dirs = openledger_model::pull::list(&root);
            if dirs.is_empty() {
                println!(
                    "no models in {} (openledger model pull <repo> adds one)",
                    root.display()
                );
            }
            for d in dirs {
                let cfg = openledger_model::Config::from_file(&d.join("config.json"));
                match cfg {
                    Ok(c) => println!(
                        "{}  {:?}, {:.0}M parameters, vocabulary {}",
                        d.display(),
                        c.model_type,
                        c.num_parameters() as f64 / 1e6,
                        c.vocab_size
                    ),
                    Err(e) => println!("{}  (unreadable config: {e})", d.display()),
                }
            }
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
            let hash = info(&out)?.content_hash;
            crate::endpoints::emit(
                format!(
                    "wrote {} ({}, random weights, {} layers, {} parameters, {:.1} MB bf16) in {:.1} s\ncontent hash {hash}",
                    out.display(),
                    shape.name(),
                    r.layers,
                    r.parameters,
                    r.weight_bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                ),
                serde_json::json!({"dir": out, "shape": shape.name(), "layers": r.layers, "parameters": r.parameters, "contentHash": hash}),
            );
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
            let mut human = vec![
                format!("wrote {} in {secs:.1} s", out.display()),
                format!(
                    "parameters {}  train tokens {}  steps {}  batch {}x{}",
                    report.parameters,
                    report.train_tokens,
                    opts.steps,
                    opts.batch_size,
                    opts.seq_len
                ),
                "loss curve (step: loss)".to_string(),
            ];
            let every = (report.loss_curve.len() / 10).max(1);
            let n = report.loss_curve.len();
            for (i, (s, l)) in report.loss_curve.iter().enumerate() {
                if i % every == 0 || i + 1 == n {
                    human.push(format!("  {s:>5}: {l:.4}"));
                }
            }
            let hash = info(&out)?.content_hash;
            human.push(format!(
                "held-out loss {:.4}, perplexity {:.2}",
                report.eval_loss, report.eval_perplexity
            ));
            human.push(format!("content hash {hash}"));
            crate::endpoints::emit(
                human.join("\n"),
                serde_json::json!({"dir": out, "parameters": report.parameters, "steps": opts.steps, "heldOutLoss": report.eval_loss, "contentHash": hash, "secs": secs}),
            );
        }
        ModelCmd::Info { dir } => {
            let i = info(&dir)?;
            crate::endpoints::emit(&i, serde_json::to_value(&i)?);
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
        ModelCmd::Bench {
            dir,
            out,
            weights,
            llamacpp,
            repeat,
        } => bench(dir, out, weights, llamacpp, repeat)?,
    }
    Ok(())
}

/// One engine × weight format of `model bench`: medians of the interleaved repeats.
#[derive(serde::Serialize)]
struct Batch1 {
    engine: String,
    weights: String,
    prefill_tokens_per_s: Vec<f64>,
    decode_tokens_per_s: Vec<f64>,
    prefill_median: f64,
    decode_median: f64,
    weight_bytes: Option<usize>,
    /// Largest |logit − NumPy f32 reference| over the 64-token prompt.
    max_abs_logit_diff_vs_numpy_reference: Option<f64>,
    /// Mean next-token NLL on held-out text (nats), and its difference from ours in f32.
    heldout_nll: Option<f64>,
    heldout_nll_vs_f32: Option<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `openledger model bench`.
fn bench(
    dir: Option<PathBuf>,
    out: PathBuf,
    formats: Vec<openledger_model::WeightFormat>,
    llamacpp: Option<PathBuf>,
    repeat: usize,
) -> eyre::Result<()> {
    use openledger_bench::model::{batch1, logits_and_nll};
    let dir = match dir {
        Some(d) => d,
        None => {
            eprintln!("base: the SmolLM2-135M shape, random weights (made once, cached) ...");
            openledger_model::init::cached_shape(openledger_model::init::Shape::Smollm2_135m)?
        }
    };
    let folder = out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&folder)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/model/benches/llamacpp/compare.py");
    let mut models = Vec::new();
    for f in &formats {
        let p = Pretrained::load_as(&dir, &Device::Cpu, Some(*f))?;
        models.push((*f, p));
    }
    let cfg = models
        .first()
        .map(|m| m.1.config.clone())
        .ok_or_else(|| eyre::eyre!("no weight format to measure"))?;
    let (prompt_len, steps) = (64, 32);
    let mut ours: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); models.len()];
    let mut theirs: Vec<serde_json::Value> = Vec::new();
    for rep in 0..repeat.max(1) {
        for (k, (f, p)) in models.iter().enumerate() {
            let (pre, dec) = batch1(&p.model, prompt_len, steps)?;
            println!(
                "repeat {rep}: openledger {:>5}: prefill {pre:>8.1} tok/s  decode {dec:>7.1} tok/s",
                f.name()
            );
            ours[k].0.push(pre);
            ours[k].1.push(dec);
        }
        if let Some(py) = &llamacpp {
            let json = folder.join("llamacpp-run.json");
            let status = std::process::Command::new(py)
                .arg(&script)
                .arg(&dir)
                .arg(&json)
                .args(["--types", "f32,q8_0", "--repeat", "1"])
                .stdout(std::process::Stdio::null())
                .status()?;
            eyre::ensure!(status.success(), "{} failed", script.display());
            let runs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&json)?)?;
            for r in runs {
                let (pre, dec) = (
                    r["prefill_tokens_per_s"][0].as_f64().unwrap_or(0.0),
                    r["decode_tokens_per_s"][0].as_f64().unwrap_or(0.0),
                );
                println!(
                    "repeat {rep}: llama.cpp  {:>5}: prefill {pre:>8.1} tok/s  decode {dec:>7.1} tok/s",
                    r["weights"].as_str().unwrap_or("?")
                );
                theirs.push(r);
            }
        }
    }
    // accuracy of each format: the NumPy f32 reference on the bench prompt (when a Python
    // with numpy is at hand), and held-out NLL on text the generated corpus writes
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|i| ((i * 31 + 3) % cfg.vocab_size) as u32)
        .collect();
    let reference = match &llamacpp {
        Some(py) => {
            let tmp = folder.join("reference-logits.safetensors");
            let ids: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../crates/model/tests/reference/reference.py");
            let ok = std::process::Command::new(py)
                .arg(script)
                .args(["logits"])
                .arg(&dir)
                .arg(ids.join(","))
                .arg(&tmp)
                .status()?
                .success();
            eyre::ensure!(ok, "the NumPy reference failed");
            let mut m = openledger_model::load_safetensors(&tmp, &Device::Cpu)?;
            m.remove("logits")
        }
        None => None,
    };
    let text = openledger_model::init::World::new(9)
        .documents(40, 99)
        .join(" ");
    let mut rows = Vec::new();
    let mut f32_nll = None;
    for (k, (f, p)) in models.iter().enumerate() {
        let heldout = p.encode(&text)?;
        let heldout = &heldout[..heldout.len().min(256)];
        let (_, nll) = logits_and_nll(&p.model, heldout)?;
        if *f == openledger_model::WeightFormat::F32 {
            f32_nll = Some(nll);
        }
        let diff = match &reference {
            Some(want) => {
                let (got, _) = logits_and_nll(&p.model, &prompt)?;
                Some(f64::from(
                    (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?,
                ))
            }
            None => None,
        };
        rows.push(Batch1 {
            engine: "openledger".into(),
            weights: f.name().into(),
            prefill_median: median(&ours[k].0),
            decode_median: median(&ours[k].1),
            prefill_tokens_per_s: ours[k].0.clone(),
            decode_tokens_per_s: ours[k].1.clone(),
            weight_bytes: Some(p.model.weight_bytes()),
            max_abs_logit_diff_vs_numpy_reference: diff,
            heldout_nll: Some(nll),
            heldout_nll_vs_f32: None,
        });
    }
    for r in rows.iter_mut() {
        r.heldout_nll_vs_f32 = r.heldout_nll.zip(f32_nll).map(|(a, b)| a - b);
    }
    for t in ["f32", "q8_0"] {
        let runs: Vec<&serde_json::Value> = theirs.iter().filter(|r| r["weights"] == t).collect();
        if runs.is_empty() {
            continue;
        }
        let col =
            |key: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[key][0].as_f64()).collect() };
        let (pre, dec) = (col("prefill_tokens_per_s"), col("decode_tokens_per_s"));
        rows.push(Batch1 {
            engine: runs[0]["engine"].as_str().unwrap_or("llama.cpp").into(),
            weights: t.into(),
            prefill_median: median(&pre),
            decode_median: median(&dec),
            prefill_tokens_per_s: pre,
            decode_tokens_per_s: dec,
            weight_bytes: None,
            max_abs_logit_diff_vs_numpy_reference: runs[0]["max_abs_logit_diff_vs_numpy_reference"]
                .as_f64(),
            heldout_nll: None,
            heldout_nll_vs_f32: None,
        });
    }
    println!(
        "\nbatch 1, {} ({} parameters), medians of {repeat} interleaved repeats",
        dir.display(),
        cfg.num_parameters()
    );
    println!(
        "{:<58} {:>6} {:>10} {:>10} {:>10} {:>11} {:>10}",
        "engine", "weights", "MB", "prefill/s", "decode/s", "max|Δlogit|", "ΔNLL"
    );
    for r in &rows {
        println!(
            "{:<58} {:>6} {:>10} {:>10.1} {:>10.1} {:>11} {:>10}",
            r.engine,
            r.weights,
            r.weight_bytes
                .map_or("-".into(), |b| format!("{:.0}", b as f64 / 1e6)),
            r.prefill_median,
            r.decode_median,
            r.max_abs_logit_diff_vs_numpy_reference
                .map_or("-".into(), |d| format!("{d:.2e}")),
            r.heldout_nll_vs_f32
                .map_or("-".into(), |d| format!("{d:+.4}")),
        );
    }
    let find = |e: &str, w: &str| {
        rows.iter()
            .find(|r| r.engine.starts_with(e) && r.weights == w)
            .map(|r| r.decode_median)
    };
    let mut ratios = serde_json::Map::new();
    for (ours_w, theirs_w) in [("f32", "f32"), ("bf16", "f32"), ("int8", "q8_0")] {
        if let (Some(a), Some(b)) = (find("openledger", ours_w), find("llama.cpp", theirs_w)) {
            println!(
                "decode, openledger {ours_w} ÷ llama.cpp {theirs_w}: {:.2}×",
                a / b
            );
            ratios.insert(format!("{ours_w}_vs_llamacpp_{theirs_w}"), (a / b).into());
        }
    }
    // batch 1 vs 16, with adapters (the first format)
    let (_, p) = &models[0];
    let more = openledger_bench::model::throughput(&p.model, &[1, 16], 64, 32)?;
    println!("\n{}", openledger_bench::model::table(&more));
    let report = serde_json::json!({
        "model_dir": dir, "parameters": cfg.num_parameters(), "repeat": repeat,
        "threads": candle_core_threads(),
        "batch1": rows, "decode_ratios": ratios, "batched": more,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Threads of the CPU kernels (the rayon pool).
fn candle_core_threads() -> usize {
    openledger_model::candle::utils::get_num_threads()
}
