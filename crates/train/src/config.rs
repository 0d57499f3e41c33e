//! Hyper-parameters of a fine-tune, as the CLI and the jobs API take them, and the
//! learning-rate schedule.

use openledger_model::{Config, LoraConfig, Proj, TargetModules};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Learning-rate decay after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Half-cosine from the peak to 0.
    Cosine,
    /// Straight line from the peak to 0.
    Linear,
    /// The peak throughout.
    Constant,
}

/// Every knob of a fine-tune (JSON field names in camelCase; all have defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TrainConfig {
    /// LoRA rank r.
    pub rank: usize,
    /// LoRA alpha (scale = alpha / r).
    pub alpha: f64,
    /// Dropout on the LoRA input features, in [0, 1).
    pub dropout: f64,
    /// Adapted projections (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
    /// `down_proj`, or full module paths).
    pub target_modules: Vec<String>,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Decay after warm-up.
    pub schedule: Schedule,
    /// Passes over the training split (ignored when `maxSteps` is set).
    pub epochs: usize,
    /// Optimizer steps; overrides `epochs`.
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub max_grad_norm: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the initial adapter, split, shuffles and dropout.
    pub seed: u64,
    /// Longest training sequence in tokens (examples are truncated to it).
    pub max_seq_len: usize,
    /// Pack several examples into one sequence of up to `maxSeqLen` tokens.
    pub packing: bool,
    /// Share of rows held out for validation (by row-id hash), in [0, 1).
    pub val_fraction: f64,
    /// Stop after this many epochs without improvement of the validation loss.
    pub early_stopping_patience: Option<usize>,
    /// Smallest decrease of the validation loss that counts as an improvement.
    pub early_stopping_min_delta: f64,
    /// Write a checkpoint every this many optimizer steps (0 = never).
    pub checkpoint_every: usize,
    /// Projected dimension per layer of the gradient sketches.
    pub sketch_dim: usize,
}

impl Default for TrainConfig {
    /// The recommended recipe: rank 16, alpha 32, lr 2e-3 (warm-up 10, cosine), batch 4, 50
    /// epochs, all seven projections. Chosen by the recipe sweep (`openledger_bench::recipe`,
    /// `crates/train/README.md` "Recommended recipe"): on the demo fine-tune it reproduced the
    /// most trained answers of lr 1e-3…1e-2 × rank 8, 16 at the same budget. 50 epochs suit
    /// a small Datanet (tens to a few thousand rows); with these defaults the jobs service's
    /// [`JobLimits::default`] token cap admits up to 7,812 rows (lower `epochs` for more).
    fn default() -> Self {
        TrainConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: Proj::ALL.iter().map(|p| p.name().to_string()).collect(),
            learning_rate: 2e-3,
            warmup_steps: 10,
            schedule: Schedule::Cosine,
            epochs: 50,
            max_steps: None,
            batch_size: 4,
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            seed: 0,
            max_seq_len: 128,
            packing: false,
            val_fraction: 0.1,
            early_stopping_patience: None,
            early_stopping_min_delta: 0.0,
            checkpoint_every: 50,
            sketch_dim: crate::sketch::DEFAULT_DIM,
        }
    }
}

fn finite(field: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(TrainError::field(
            field,
            format!("{v} is not a finite number"),
        ))
    }
}

impl TrainConfig {
    /// The PEFT config of the adapter this run trains.
    pub fn lora_config(&self) -> LoraConfig {
        let mut c = LoraConfig::new(self.rank, self.alpha, &[]);
        c.target_modules = TargetModules::List(self.target_modules.clone());
        c.lora_dropout = self.dropout;
        c
    }

    /// Checks every field against its range and the base model; the error names the field.
    pub fn validate(&self, model: &Config) -> Result<()> {
        let f = |field: &str, reason: &dyn std::fmt::Display| {
            TrainError::field(field, reason.to_string())
        };
        if self.rank == 0 {
            return Err(f("rank", &"must be at least 1"));
        }
        if self.rank > 1024 {
            return Err(f("rank", &"must be at most 1024"));
        }
        if finite("alpha", self.alpha)? <= 0.0 {
            return Err(f("alpha", &"must be > 0"));
        }
        if !(0.0..1.0).contains(&finite("dropout", self.dropout)?) {
            return Err(f("dropout", &"must be in [0, 1)"));
        }
        if self.target_modules.is_empty() {
            return Err(f("targetModules", &"name at least one module"));
        }
        self.lora_config()
            .check_targets(model.num_hidden_layers)
            .map_err(|e| f("targetModules", &e))?;
        let lr = finite("learningRate", self.learning_rate)?;
        if lr <= 0.0 {
            return Err(f("learningRate", &format!("must be > 0 (got {lr})")));
        }
        if lr > 1.0 {
            return Err(f("learningRate", &format!("must be ≤ 1 (got {lr})")));
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return Err(f("epochs", &"must be at least 1 (or set maxSteps)"));
        }
        if self.max_steps == Some(0) {
            return Err(f("maxSteps", &"must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return Err(f("batchSize", &"must be in 1..=4096"));
        }
        if self.grad_accum == 0 || self.grad_accum > 4096 {
            return Err(f("gradAccum", &"must be in 1..=4096"));
        }
        if finite("maxGradNorm", self.max_grad_norm)? < 0.0 {
            return Err(f("maxGradNorm", &"must be ≥ 0 (0 = no clipping)"));
        }
        if finite("weightDecay", self.weight_decay)? < 0.0 {
            return Err(f("weightDecay", &"must be ≥ 0"));
        }
        if self.max_seq_len < 2 || self.max_seq_len > model.max_position_embeddings {
            return Err(f(
                "maxSeqLen",
                &format!(
                    "must be in 2..={} (the base model's context)",
                    model.max_position_embeddings
                ),
            ));
        }
        if !(0.0..1.0).contains(&finite("valFraction", self.val_fraction)?) {
            return Err(f("valFraction", &"must be in [0, 1)"));
        }
        if self.early_stopping_patience == Some(0) {
            return Err(f("earlyStoppingPatience", &"must be at least 1"));
        }
        if finite("earlyStoppingMinDelta", self.early_stopping_min_delta)? < 0.0 {
            return Err(f("earlyStoppingMinDelta", &"must be ≥ 0"));
        }
        if self.sketch_dim == 0 || self.sketch_dim > 4096 {
            return Err(f("sketchDim", &"must be in 1..=4096"));
        }
        Ok(())
    }

    /// Learning rate of optimizer step `step` (1-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let peak = self.learning_rate;
        let w = self.warmup_steps;
        if step <= w {
            return peak * step as f64 / w.max(1) as f64;
        }
        let p = (step - w) as f64 / (total.saturating_sub(w)).max(1) as f64;
        let p = p.min(1.0);
        match self.schedule {
            Schedule::Constant => peak,
            Schedule::Linear => peak * (1.0 - p),
            Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }
}

/// What one training job may cost, checked when it is submitted (the jobs service's
/// [`crate::jobs::JobsConfig::limits`]). Tokens are planned as an upper bound:
/// steps × `batchSize` × `gradAccum` × `maxSeqLen`, with steps = `maxSteps`, or `epochs` ×
/// ⌈rows / (`batchSize` × `gradAccum`)⌉ (packing only ever makes fewer sequences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobLimits {
    /// Largest `epochs`.
    pub max_epochs: usize,
    /// Largest `maxSteps` (and planned steps).
    pub max_steps: usize,
    /// Largest planned number of training tokens.
    pub max_tokens: u64,
    /// Queued or running jobs one owner may have.
    pub max_active_per_owner: usize,
    /// Queued or running jobs in the service.
    pub max_active: usize,
}

impl Default for JobLimits {
    /// 1,000 epochs, 100,000 steps, 50 M tokens (about half a day at the 1,000 tokens/s of
    /// the `small` model on two cores), 4 active jobs per owner, 64 in all.
    fn default() -> Self {
        JobLimits {
            max_epochs: 1_000,
            max_steps: 100_000,
            max_tokens: 50_000_000,
            max_active_per_owner: 4,
            max_active: 64,
        }
    }
}

impl JobLimits {
    /// The planned optimizer steps and training tokens of `cfg` over `rows` rows.
    pub fn plan(cfg: &TrainConfig, rows: u64) -> (u128, u128) {
        let per_step = (cfg.batch_size as u128).saturating_mul(cfg.grad_accum as u128);
        let steps = match cfg.max_steps {
            Some(s) => s as u128,
            None => (cfg.epochs as u128).saturating_mul((rows as u128).div_ceil(per_step.max(1))),
        };
        let tokens = steps
            .saturating_mul(per_step)
            .saturating_mul(cfg.max_seq_len as u128);
        (steps, tokens)
    }

    /// 422 `over_limit` naming the field and the cap if `cfg` over `rows` rows costs more than
    /// these limits allow.
    pub fn check(&self, cfg: &TrainConfig, rows: u64) -> Result<()> {
        let over = |field: &str, value: u128, cap: u128, what: &str| TrainError::OverLimit {
            field: field.into(),
            value,
            cap,
            what: what.into(),
        };
        if cfg.epochs > self.max_epochs {
            return Err(over(
                "epochs",
                cfg.epochs as u128,
                self.max_epochs as u128,
                "epochs",
            ));
        }
        if let Some(s) = cfg.max_steps
            && s > self.max_steps
        {
            return Err(over("maxSteps", s as u128, self.max_steps as u128, "steps"));
        }
        let driver = if cfg.max_steps.is_some() {
            "maxSteps"
        } else {
            "epochs"
        };
        let (steps, tokens) = Self::plan(cfg, rows);
        if steps > self.max_steps as u128 {
            return Err(over(driver, steps, self.max_steps as u128, "planned steps"));
        }
        if tokens > u128::from(self.max_tokens) {
            return Err(over(
                driver,
                tokens,
                u128::from(self.max_tokens),
                "planned training tokens (steps × batchSize × gradAccum × maxSeqLen)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Config {
        openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 1)
            .config()
    }

    #[test]
    fn bad_fields_are_named() {
        type Change = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("rank", Box::new(|c| c.rank = 0)),
            ("learningRate", Box::new(|c| c.learning_rate = -1e-3)),
            ("learningRate", Box::new(|c| c.learning_rate = f64::NAN)),
            (
                "targetModules",
                Box::new(|c| c.target_modules = vec!["mlp.router".into()]),
            ),
            ("dropout", Box::new(|c| c.dropout = 1.0)),
            ("batchSize", Box::new(|c| c.batch_size = 0)),
            ("maxSeqLen", Box::new(|c| c.max_seq_len = 100_000)),
        ];
        for (field, change) in cases {
            let mut c = TrainConfig::default();
            change(&mut c);
            match c.validate(&model()) {
                Err(TrainError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(TrainConfig::default().validate(&model()).is_ok());
    }

    #[test]
    fn limits_name_the_field_and_the_cap() {
        let l = JobLimits::default();
        let over = |c: TrainConfig, rows: u64| match l.check(&c, rows) {
            Err(TrainError::OverLimit {
                field, value, cap, ..
            }) => Some((field, value, cap)),
            _ => None,
        };
        let c = |f: &dyn Fn(&mut TrainConfig)| {
            let mut c = TrainConfig::default();
            f(&mut c);
            c
        };
        assert_eq!(
            over(c(&|c| c.epochs = 1001), 10),
            Some(("epochs".into(), 1001, 1000))
        );
        assert_eq!(
            over(c(&|c| c.max_steps = Some(100_001)), 10),
            Some(("maxSteps".into(), 100_001, 100_000))
        );
        // 1,000 epochs over 8,000 rows at batch 4 = 2,000,000 planned steps.
        assert_eq!(
            over(c(&|c| c.epochs = 1000), 8000),
            Some(("epochs".into(), 2_000_000, 100_000))
        );
        // 100,000 steps × 4 × 128 = 51.2 M tokens; 97,656 steps fit in 50 M.
        assert_eq!(
            over(c(&|c| c.max_steps = Some(100_000)), 10),
            Some(("maxSteps".into(), 51_200_000, 50_000_000))
        );
        assert_eq!(over(c(&|c| c.max_steps = Some(97_656)), 10), None);
        assert_eq!(
            over(c(&|c| c.max_steps = Some(97_657)), 10).map(|o| o.0),
            Some("maxSteps".into())
        );
        // The recommended recipe as it is (50 epochs at batch 4) is admitted up to 7,812 rows
        // (1,953 steps an epoch × 512 tokens a step × 50 epochs ≤ 50 M), as its doc says.
        assert_eq!(over(TrainConfig::default(), 7_812), None);
        assert_eq!(
            over(TrainConfig::default(), 7_813).map(|o| o.0),
            Some("epochs".into())
        );
        // Absurd values saturate instead of wrapping round to something small.
        let huge = c(&|c| {
            c.epochs = usize::MAX;
            c.batch_size = 4096;
        });
        assert_eq!(over(huge, u64::MAX).map(|o| o.0), Some("epochs".into()));
        let permissive = JobLimits {
            max_epochs: usize::MAX,
            max_steps: usize::MAX,
            max_tokens: u64::MAX,
            ..l
        };
        assert!(permissive.check(&TrainConfig::default(), 100).is_ok());
        assert!(l.check(&TrainConfig::default(), 100).is_ok());
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = TrainConfig {
            warmup_steps: 4,
            ..Default::default()
        };
        assert_eq!(c.lr_at(2, 20), c.learning_rate / 2.0);
        assert_eq!(c.lr_at(4, 20), c.learning_rate);
        assert!(c.lr_at(12, 20) < c.learning_rate && c.lr_at(12, 20) > 0.0);
        assert!(c.lr_at(20, 20).abs() < 1e-12);
        let l = TrainConfig {
            schedule: Schedule::Linear,
            ..c
        };
        assert!((l.lr_at(12, 20) - l.learning_rate * 0.5).abs() < 1e-12);
    }
}
