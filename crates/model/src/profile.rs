//! Phase timers for profiling a serving run, off unless `OPENLEDGER_PROFILE` is set (then
//! each timed phase costs two clock reads). Totals are process-wide; [`take`] reads and
//! resets them.
//!
//! ```
//! use openledger_model::profile::{self, Phase};
//! {
//!     let _t = profile::time(Phase::Sample);
//! } // counted only when OPENLEDGER_PROFILE is set
//! let totals = profile::take();
//! assert_eq!(totals.len(), Phase::ALL.len());
//! ```

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A timed phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A whole `Model::forward_step`.
    Forward,
    /// Embedding lookup.
    Embed,
    /// RMS norms.
    Norm,
    /// Base projections x·Wᵀ (+ bias), all seven per layer.
    BaseMatmul,
    /// LoRA deltas (per-row kernel or plain matmuls) and adding them.
    Lora,
    /// Cached or uncached attention (rotary, cache append, scores, softmax, values).
    Attention,
    /// Activations and residual adds.
    Elementwise,
    /// Final norm's output to logits (row gather, lm_head).
    LmHead,
    /// Logits to host and sampling, per step.
    Sample,
    /// Merging an adapter into a copy of the weights (`Model::merged`).
    Merge,
    /// Engine: everything in a step outside the forward pass and sampling (batch assembly,
    /// scheduler, channels).
    Engine,
}

impl Phase {
    /// Every phase, in report order.
    pub const ALL: [Phase; 11] = [
        Phase::Forward,
        Phase::Embed,
        Phase::Norm,
        Phase::BaseMatmul,
        Phase::Lora,
        Phase::Attention,
        Phase::Elementwise,
        Phase::LmHead,
        Phase::Sample,
        Phase::Merge,
        Phase::Engine,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Embed => "embed",
            Phase::Norm => "norm",
            Phase::BaseMatmul => "base matmul",
            Phase::Lora => "lora",
            Phase::Attention => "attention",
            Phase::Elementwise => "elementwise",
            Phase::LmHead => "lm_head",
            Phase::Sample => "sample",
            Phase::Merge => "merge",
            Phase::Engine => "engine",
        }
    }
}

const N: usize = Phase::ALL.len();
static NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static COUNT: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

/// Whether `OPENLEDGER_PROFILE` is set (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("OPENLEDGER_PROFILE").is_some_and(|v| !v.is_empty()))
}

/// Adds the time until the guard drops to `phase` (nothing when profiling is off).
#[must_use = "the phase is timed until the guard drops"]
pub struct Timer(Option<(Phase, Instant)>);

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some((p, t)) = self.0 {
            let i = p as usize;
            NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            COUNT[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts timing `phase`.
pub fn time(phase: Phase) -> Timer {
    Timer(enabled().then(|| (phase, Instant::now())))
}

/// Per phase: (phase, seconds, times entered) since the last `take`, then resets.
pub fn take() -> Vec<(Phase, f64, u64)> {
    Phase::ALL
        .iter()
        .map(|&p| {
            let i = p as usize;
            let ns = NANOS[i].swap(0, Ordering::Relaxed);
            (p, ns as f64 * 1e-9, COUNT[i].swap(0, Ordering::Relaxed))
        })
        .collect()
}
