//! `openledger bench train`: training throughput (tokens/s) of the trainer on a base model and
//! demo rows, next to baselines measured in the same run on the same rows and model.
//!
//! - `batched`: the configuration under test (micro-batches of `batch` sequences).
//! - `unbatched`: the same optimizer steps with one sequence per forward/backward
//!   (gradient accumulation over `batch` micro-batches): what a naive loop does.
//! - `pytorch+peft`: `transformers.LlamaForCausalLM` + `peft` LoRA on the CPU, fed the exact
//!   micro-batches of `batched` ([`export_steps`]: token ids, targets, loss masks, padding,
//!   learning rate of every step), starting from the same initial adapter, with
//!   `torch.optim.AdamW` (same betas, eps, weight decay), the same clipping and
//!   `torch.set_num_threads` = candle's thread count. Runs `scripts/pytorch_lora.py` in a venv
//!   that `scripts/setup-venv.sh` installs from PyPI on first use ([`ensure_venv`]); when that is
//!   not possible the reason is reported instead of the row.
//!
//! Tokens/s counts real (non-padding) input tokens through forward + backward + AdamW, from
//! the trainer's own progress events; validation and sketches are excluded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::DType;
use candle_nn::VarMap;
use openledger_datanet::formats::Row;
use openledger_model::{LoraAdapter, Pretrained};
use openledger_train::Result;
use openledger_train::config::TrainConfig;
use openledger_train::data;
use openledger_train::loss::Batch;
use openledger_train::trainer::{self, Event};
use serde::{Deserialize, Serialize};

/// The Python baseline, embedded so the binary runs it from anywhere.
pub const PYTORCH_SCRIPT: &str = include_str!("../scripts/pytorch_lora.py");
/// The venv installer (see the file's header for what it installs and why).
pub const SETUP_SCRIPT: &str = include_str!("../scripts/setup-venv.sh");

/// One measured configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchRow {
    /// Name.
    pub name: String,
    /// Sequences per forward/backward.
    pub micro_batch: usize,
    /// Optimizer steps timed.
    pub steps: usize,
    /// Training tokens per second.
    pub tokens_per_sec: f64,
    /// Wall seconds of the whole call (incl. setup and sketches).
    pub wall_secs: f64,
    /// Loss of every optimizer step.
    #[serde(default)]
    pub losses: Vec<f64>,
}

/// The configuration of a bench run: `micro` sequences per forward/backward, `accum` of them
/// per optimizer step.
pub fn bench_config(steps: usize, micro: usize, accum: usize) -> TrainConfig {
    TrainConfig {
        rank: 8,
        alpha: 16.0,
        max_steps: Some(steps),
        batch_size: micro,
        grad_accum: accum,
        val_fraction: 0.0,
        checkpoint_every: 0,
        sketch_dim: 8,
        max_seq_len: 128,
        warmup_steps: 2,
        ..Default::default()
    }
}

/// Measures `batched` and `unbatched` for `steps` optimizer steps of `batch` sequences.
pub fn run(
    base: &Pretrained,
    base_hash: &str,
    rows: &[(String, Row)],
    steps: usize,
    batch: usize,
) -> Result<Vec<BenchRow>> {
    let mut out = Vec::new();
    for (name, micro, accum) in [("batched", batch, 1), ("unbatched", 1, batch)] {
        let cfg = bench_config(steps, micro, accum);
        let t0 = Instant::now();
        let mut tps = 0.0;
        let mut losses = Vec::new();
        let never = AtomicBool::new(false);
        trainer::train(base, base_hash, rows, &cfg, None, &never, &mut |e| {
            if let Event::Progress {
                tokens_per_sec,
                loss,
                ..
            } = e
            {
                tps = tokens_per_sec;
                losses.push(loss);
            }
        })?;
        out.push(BenchRow {
            name: name.into(),
            micro_batch: micro,
            steps,
            tokens_per_sec: tps,
            wall_secs: t0.elapsed().as_secs_f64(),
            losses,
        });
    }
    Ok(out)
}

/// A text table of `rows` with the ratio to the first row.
pub fn table(rows: &[BenchRow]) -> String {
    let first = rows.first().map_or(1.0, |r| r.tokens_per_sec.max(1e-9));
    let mut s = format!(
        "{:<14} {:>11} {:>6} {:>12} {:>8}\n",
        "run", "micro-batch", "steps", "tokens/s", "ratio"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<14} {:>11} {:>6} {:>12.0} {:>8.2}\n",
            r.name,
            r.micro_batch,
            r.steps,
            r.tokens_per_sec,
            r.tokens_per_sec / first
        ));
    }
    s
}

/// One micro-batch as the trainer builds it: right-padded [b, t] matrices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MicroBatch {
    /// Input ids.
    pub inputs: Vec<Vec<u32>>,
    /// Target ids (the next token of each input position).
    pub targets: Vec<Vec<u32>>,
    /// 1 where the target counts.
    pub mask: Vec<Vec<u8>>,
    /// Real (non-padding) input tokens.
    pub input_tokens: usize,
}

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepBatches {
    /// Learning rate of the step (warm-up + schedule applied).
    pub lr: f64,
    /// Target tokens of the whole step (the loss denominator).
    pub denom: usize,
    /// Its micro-batches.
    pub micro: Vec<MicroBatch>,
}

/// What the PyTorch baseline needs besides the steps (JSON camelCase).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineConfig {
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// Target modules.
    pub target_modules: Vec<String>,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW β1, β2, ε (candle_nn's defaults, which the trainer uses).
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Global-norm clipping (0 = off).
    pub max_grad_norm: f64,
}

/// The file the baseline reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineJob {
    /// Hyper-parameters.
    pub config: BaselineConfig,
    /// Every optimizer step.
    pub steps: Vec<StepBatches>,
}

/// The optimizer steps `trainer::train` takes for `cfg` on `rows` (no dropout), exactly as it
/// batches them: same split, shuffles, truncation, packing, padding and learning rates.
pub fn export_steps(
    base: &Pretrained,
    rows: &[(String, Row)],
    cfg: &TrainConfig,
) -> Result<BaselineJob> {
    cfg.validate(&base.config)?;
    let prepared = trainer::prepare(base, rows, cfg)?;
    let train = &prepared.train;
    let total = trainer::total_steps(train, cfg);
    let pad = base.config.eos_ids().first().copied().unwrap_or(0);
    let device = candle_core::Device::Cpu;
    let mut steps = Vec::with_capacity(total);
    let mut epoch = 0;
    while steps.len() < total {
        let micro = trainer::epoch_micro_batches(train, cfg, epoch);
        for group in micro.chunks(cfg.grad_accum) {
            if steps.len() >= total {
                break;
            }
            let mut out = Vec::new();
            let mut denom = 0;
            for seqs in group {
                let owned: Vec<(Vec<u32>, Vec<u8>)> =
                    seqs.iter().map(|s| data::concat(train, s)).collect();
                let refs: Vec<(&[u32], &[u8])> = owned
                    .iter()
                    .map(|(i, m)| (i.as_slice(), m.as_slice()))
                    .collect();
                let b = Batch::new(&refs, pad, &device)?;
                denom += b.target_tokens;
                let mask: Vec<Vec<f32>> = b.mask.to_vec2()?;
                out.push(MicroBatch {
                    inputs: b.inputs.to_vec2()?,
                    targets: b.targets.to_vec2()?,
                    mask: mask
                        .iter()
                        .map(|r| r.iter().map(|&m| u8::from(m != 0.0)).collect())
                        .collect(),
                    input_tokens: b.input_tokens,
                });
            }
            steps.push(StepBatches {
                lr: cfg.lr_at(steps.len() + 1, total),
                denom,
                micro: out,
            });
        }
        epoch += 1;
    }
    let adamw = candle_nn::ParamsAdamW::default();
    Ok(BaselineJob {
        config: BaselineConfig {
            rank: cfg.rank,
            alpha: cfg.alpha,
            target_modules: cfg.target_modules.clone(),
            learning_rate: cfg.learning_rate,
            beta1: adamw.beta1,
            beta2: adamw.beta2,
            eps: adamw.eps,
            weight_decay: cfg.weight_decay,
            max_grad_norm: cfg.max_grad_norm,
        },
        steps,
    })
}

/// (real input tokens, padded positions b·t) over every micro-batch of `job`.
pub fn token_counts(job: &BaselineJob) -> (usize, usize) {
    job.steps
        .iter()
        .flat_map(|s| &s.micro)
        .map(|m| {
            let t = m.inputs.first().map_or(0, Vec::len);
            (m.input_tokens, m.inputs.len() * t)
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
}

/// The adapter `trainer::train` starts from for `cfg` (seeded init), as a blob.
pub fn initial_adapter(base: &Pretrained, cfg: &TrainConfig) -> Result<Vec<u8>> {
    let varmap = VarMap::new();
    let a = LoraAdapter::trainable(
        cfg.lora_config(),
        &base.config,
        &varmap,
        base.model.device(),
        DType::F32,
        cfg.seed,
    )?;
    Ok(a.to_blob()?)
}

/// What `pytorch_lora.py` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineResult {
    /// Training tokens per second.
    pub tokens_per_sec: f64,
    /// Tokens timed.
    pub tokens: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Seconds timed.
    pub secs: f64,
    /// Loss of every step.
    pub losses: Vec<f64>,
    /// `torch.get_num_threads()`.
    pub threads: usize,
    /// transformers' attention implementation (`sdpa`, `eager`).
    pub attn_implementation: String,
    /// LoRA parameters trained.
    pub trainable_params: usize,
    /// python, torch, transformers, peft versions.
    pub versions: serde_json::Value,
}

/// Threads of our CPU kernels (candle's: `RAYON_NUM_THREADS`, else every core); the
/// baseline gets the same number through `torch.set_num_threads`.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// The default venv location: `$OPENLEDGER_CACHE/bench-venv`, else `~/.cache/openledger/bench-venv`.
pub fn default_venv() -> PathBuf {
    let cache = std::env::var_os("OPENLEDGER_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/openledger")))
        .unwrap_or_else(|| PathBuf::from(".cache/openledger"));
    cache.join("bench-venv")
}

fn python_ready(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import torch, transformers, peft, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().rev().take(6).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// The venv's python, installing the venv with `setup-venv.sh` first if it is not ready and
/// `install` is set. `Err` is the reason the baseline cannot run (for the report).
pub fn ensure_venv(venv: &Path, install: bool) -> std::result::Result<PathBuf, String> {
    let python = venv.join("bin/python");
    if python_ready(&python) {
        return Ok(python);
    }
    if !install {
        return Err(format!(
            "no venv with torch, transformers and peft at {} (run without --no-install to make it)",
            venv.display()
        ));
    }
    eprintln!(
        "installing PyTorch + PEFT into {} (PyPI, a few minutes) ...",
        venv.display()
    );
    let out = Command::new("bash")
        .args(["-c", SETUP_SCRIPT, "setup-venv.sh"])
        .arg(venv)
        .output()
        .map_err(|e| format!("could not run bash: {e}"))?;
    if !out.status.success() || !python_ready(&python) {
        return Err(format!(
            "installing PyTorch + PEFT failed ({}): {}",
            out.status,
            tail(&out.stderr)
        ));
    }
    Ok(python)
}

/// Runs the PyTorch + PEFT baseline on `job` from the initial adapter `init_blob`, with
/// `threads` threads, in `work` (scratch files). `Err` is the reason it did not run.
pub fn run_pytorch(
    python: &Path,
    base_dir: &Path,
    job: &BaselineJob,
    init_blob: &[u8],
    threads: usize,
    work: &Path,
) -> std::result::Result<BaselineResult, String> {
    let io = |e: &dyn std::fmt::Display| format!("scratch files in {}: {e}", work.display());
    let (script, job_path, init_dir, out_path) = (
        work.join("pytorch_lora.py"),
        work.join("steps.json"),
        work.join("init-adapter"),
        work.join("pytorch.json"),
    );
    std::fs::write(&script, PYTORCH_SCRIPT).map_err(|e| io(&e))?;
    let json = serde_json::to_vec(job).map_err(|e| io(&e))?;
    std::fs::write(&job_path, json).map_err(|e| io(&e))?;
    openledger_model::blob::blob_to_dir(init_blob, &init_dir).map_err(|e| io(&e))?;
    let out = Command::new(python)
        .arg(&script)
        .arg("--base")
        .arg(base_dir)
        .arg("--job")
        .arg(&job_path)
        .arg("--init-adapter")
        .arg(&init_dir)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--out")
        .arg(&out_path)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .map_err(|e| format!("could not run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "pytorch_lora.py failed ({}): {}",
            out.status,
            tail(&out.stderr)
        ));
    }
    let bytes = std::fs::read(&out_path).map_err(|e| io(&e))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("pytorch_lora.py output: {e}"))
}

/// Largest |a − b| / max(|b|, 1e-6) over the common prefix of two loss curves.
pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-6))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_diff_is_relative_and_takes_the_worst_step() {
        assert_eq!(max_rel_diff(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        let d = max_rel_diff(&[1.1, 2.0], &[1.0, 2.0]);
        assert!((d - 0.1).abs() < 1e-12, "{d}");
        assert_eq!(max_rel_diff(&[], &[1.0]), 0.0);
    }

    #[test]
    fn table_ratios_are_to_the_first_row() {
        let row = |name: &str, tps: f64| BenchRow {
            name: name.into(),
            micro_batch: 8,
            steps: 2,
            tokens_per_sec: tps,
            wall_secs: 1.0,
            losses: vec![],
        };
        let t = table(&[row("a", 200.0), row("b", 100.0)]);
        assert!(
            t.lines()
                .nth(2)
                .is_some_and(|l| l.trim_end().ends_with("0.50")),
            "{t}"
        );
    }
}
