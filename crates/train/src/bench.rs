//! `openledger bench train`: training throughput (tokens/s) of the trainer on a base model and
//! demo rows, next to baselines measured in the same run on the same rows and model.
//!
//! - `batched`: the configuration under test (micro-batches of `batch` sequences).
//! - `unbatched`: the same optimizer steps with one sequence per forward/backward
//!   (gradient accumulation over `batch` micro-batches): what a naive loop does.
//!
//! Tokens/s counts real (non-padding) input tokens through forward + backward + AdamW, from
//! the trainer's own progress events; validation and sketches are excluded.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use openledger_datanet::formats::Row;
use openledger_model::Pretrained;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::Result;
use crate::trainer::{self, Event};

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
        let cfg = TrainConfig {
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
        };
        // Sketches are not part of the timed loop: give them a single row set anyway.
        let t0 = Instant::now();
        let mut tps = 0.0;
        let never = AtomicBool::new(false);
        trainer::train(base, base_hash, rows, &cfg, None, &never, &mut |e| {
            if let Event::Progress { tokens_per_sec, .. } = e {
                tps = tokens_per_sec;
            }
        })?;
        out.push(BenchRow {
            name: name.into(),
            micro_batch: micro,
            steps,
            tokens_per_sec: tps,
            wall_secs: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(out)
}

/// A text table of `rows` with the ratio to the first row.
pub fn table(rows: &[BenchRow]) -> String {
    let first = rows.first().map_or(1.0, |r| r.tokens_per_sec.max(1e-9));
    let mut s = format!(
        "{:<12} {:>11} {:>6} {:>12} {:>8}\n",
        "run", "micro-batch", "steps", "tokens/s", "ratio"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<12} {:>11} {:>6} {:>12.0} {:>8.2}\n",
            r.name,
            r.micro_batch,
            r.steps,
            r.tokens_per_sec,
            r.tokens_per_sec / first
        ));
    }
    s
}
