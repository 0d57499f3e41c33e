//! The training-recipe sweep behind `TrainConfig::default()`: fine-tunes the built-in `small`
//! base on the rows of the demo fine-tune (the first demo Datanet, as `openledger devnet
//! --demo` seeds it) with each recipe (learning rate × LoRA rank, alpha = 2 × rank) for the
//! same budget (epochs × batch size over the same rows, so the same optimizer steps), and
//! measures for each the final validation loss, greedy reproduction of trained answers
//! ([`openledger_train::eval::reproduction`], the check the pipeline runs) and wall time.
//!
//! The pick ([`best`]): most prompts reproduced; ties go to the lower validation loss, then to
//! the faster run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use openledger_datanet::formats::{self, Row};
use openledger_model::Pretrained;
use openledger_train::config::TrainConfig;
use openledger_train::{Result, TrainError};
use openledger_train::{eval, source, trainer};
use serde::{Deserialize, Serialize};

/// Seed of the `small` base model `openledger devnet --demo` makes.
pub const BASE_SEED: u64 = 42;
/// Seed, files per contributor and rows per file of the demo Datanets `openledger devnet
/// --demo` seeds; its fine-tune trains on the first of them.
pub const DEMO: (u64, usize, usize) = (7, 2, 12);
/// Distinct training prompts answered greedily per recipe (all of the demo's).
pub const PROMPTS: usize = 64;

/// What the sweep varies and what it holds fixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sweep {
    /// Peak learning rates.
    pub learning_rates: Vec<f64>,
    /// LoRA ranks (alpha = 2 × rank, the scale of the defaults).
    pub ranks: Vec<usize>,
    /// Seeds: each recipe runs once per seed; figures are summed (prompts) or averaged.
    pub seeds: Vec<u64>,
    /// Everything else (epochs, batch size, schedule, ...), the same for every recipe.
    pub base: TrainConfig,
}

impl Sweep {
    /// The sweep of the recorded run: lr 1e-3, 2e-3, 5e-3, 1e-2 × rank 8, 16, seeds 0, 1, 2
    /// (a seed also draws the validation split); `epochs` passes at `batch` sequences per
    /// step; the other fields at their defaults.
    pub fn standard(epochs: usize, batch: usize) -> Self {
        Sweep {
            learning_rates: vec![1e-3, 2e-3, 5e-3, 1e-2],
            ranks: vec![8, 16],
            seeds: vec![0, 1, 2],
            base: TrainConfig {
                epochs,
                max_steps: None,
                batch_size: batch,
                checkpoint_every: 0,
                ..TrainConfig::default()
            },
        }
    }

    /// The configuration of one recipe.
    pub fn config(&self, learning_rate: f64, rank: usize, seed: u64) -> TrainConfig {
        TrainConfig {
            learning_rate,
            rank,
            alpha: 2.0 * rank as f64,
            seed,
            ..self.base.clone()
        }
    }
}

/// The figures of one recipe (over all seeds of the sweep).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeRow {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// Optimizer steps per run.
    pub steps: usize,
    /// Validation loss of the base model (mean over seeds).
    pub base_val_loss: f64,
    /// Validation loss after training (mean over seeds).
    pub final_val_loss: f64,
    /// Distinct training prompts tried (summed over seeds).
    pub prompts: usize,
    /// Of those, answered greedily with a trained completion (summed over seeds).
    pub reproduced: usize,
    /// Wall seconds of training (incl. validation and sketches), summed over seeds.
    pub train_secs: f64,
    /// Wall seconds of the reproduction check, summed over seeds.
    pub reproduction_secs: f64,
}

/// A finished sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Rows trained on (training + validation).
    pub rows: usize,
    /// What was swept.
    pub sweep: Sweep,
    /// One row per recipe, in sweep order (learning rate, then rank).
    pub recipes: Vec<RecipeRow>,
    /// Index into `recipes` of the pick ([`best`]).
    pub best: Option<usize>,
}

/// The rows of the demo fine-tune: the first demo Datanet as [`DEMO`] writes it, each row
/// with the id the Datanet service gives it (`0x<contentHash>:<index>`).
pub fn demo_rows() -> Result<Vec<(String, Row)>> {
    let dir = std::env::temp_dir().join(format!("openledger-recipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (seed, files, rows) = DEMO;
    let spec = openledger_datanet::demo::write_demo(&dir, seed, files, rows)
        .map_err(|e| TrainError::io(&dir, e))?;
    let mut out = Vec::new();
    let first = spec.datanets.first().map(|d| d.files.as_slice());
    for f in first.unwrap_or_default() {
        let path = dir.join(&f.path);
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = formats::format_for(&name, &[])
            .and_then(|fmt| formats::parse(&bytes, &fmt, source::MAX_ROW_BYTES))
            .map_err(|e| TrainError::corrupt(&name, e))?;
        let hash = alloy_primitives::keccak256(&bytes);
        out.extend(
            parsed
                .into_iter()
                .enumerate()
                .map(|(i, r)| (source::row_id(&hash, i), r)),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// The `small` base of `openledger devnet --demo`, made once under
/// `openledger_model::init::cache_dir()` (the same directory the devnet uses).
pub fn small_base() -> Result<PathBuf> {
    use openledger_model::init::{self, InitOptions, Preset};
    let dir = init::cache_dir().join(format!("base/small-{BASE_SEED}-v{}", init::CORPUS_VERSION));
    if dir.join("model.safetensors").is_file() && dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    let tmp = parent.join(format!(".small-recipe.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    init::init(&tmp, &InitOptions::preset(Preset::Small, BASE_SEED), |_| {})?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join("config.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(TrainError::io(&dir, e)),
    }
}

/// Runs every recipe of `sweep` on `rows`; `progress` gets one line per finished run.
pub fn run(
    base: &Pretrained,
    base_hash: &str,
    rows: &[(String, Row)],
    sweep: &Sweep,
    mut progress: impl FnMut(String),
) -> Result<Report> {
    let never = AtomicBool::new(false);
    let mut recipes = Vec::new();
    for &lr in &sweep.learning_rates {
        for &rank in &sweep.ranks {
            let mut acc: Option<RecipeRow> = None;
            for &seed in &sweep.seeds {
                let cfg = sweep.config(lr, rank, seed);
                let t0 = Instant::now();
                let out = trainer::train(base, base_hash, rows, &cfg, None, &never, &mut |_| {})?;
                let train_secs = t0.elapsed().as_secs_f64();
                let trained: Vec<(String, Row)> = rows
                    .iter()
                    .filter(|(id, _)| out.train_rows.contains(id))
                    .cloned()
                    .collect();
                let t1 = Instant::now();
                let adapter = Some(Arc::new(out.adapter));
                let rep = eval::reproduction(base, adapter, &trained, PROMPTS)?;
                let reproduction_secs = t1.elapsed().as_secs_f64();
                let m = &out.metrics;
                let row = RecipeRow {
                    learning_rate: lr,
                    rank,
                    alpha: cfg.alpha,
                    steps: m.steps,
                    base_val_loss: m.base_val_loss.unwrap_or(f64::NAN),
                    final_val_loss: m.final_val_loss.unwrap_or(f64::NAN),
                    prompts: rep.prompts,
                    reproduced: rep.reproduced,
                    train_secs,
                    reproduction_secs,
                };
                progress(format!(
                    "lr {lr:e} rank {rank} seed {seed}: {} steps, val loss {:.4} → {:.4}, \
                     reproduced {}/{}, {train_secs:.1} s + {reproduction_secs:.1} s",
                    row.steps, row.base_val_loss, row.final_val_loss, row.reproduced, row.prompts
                ));
                acc = Some(match acc {
                    None => row,
                    Some(a) => merge(a, row),
                });
            }
            if let Some(mut a) = acc {
                let n = sweep.seeds.len().max(1) as f64;
                a.base_val_loss /= n;
                a.final_val_loss /= n;
                recipes.push(a);
            }
        }
    }
    Ok(Report {
        rows: rows.len(),
        sweep: sweep.clone(),
        best: best(&recipes),
        recipes,
    })
}

/// Sums two seeds' runs of one recipe (losses summed here, averaged by the caller).
fn merge(a: RecipeRow, b: RecipeRow) -> RecipeRow {
    RecipeRow {
        steps: a.steps.max(b.steps),
        base_val_loss: a.base_val_loss + b.base_val_loss,
        final_val_loss: a.final_val_loss + b.final_val_loss,
        prompts: a.prompts + b.prompts,
        reproduced: a.reproduced + b.reproduced,
        train_secs: a.train_secs + b.train_secs,
        reproduction_secs: a.reproduction_secs + b.reproduction_secs,
        ..a
    }
}

/// The recipe to recommend: most prompts reproduced, then the lower validation loss (a NaN
/// loss loses), then the shorter training time.
pub fn best(rows: &[RecipeRow]) -> Option<usize> {
    let loss = |r: &RecipeRow| {
        if r.final_val_loss.is_nan() {
            f64::INFINITY
        } else {
            r.final_val_loss
        }
    };
    (0..rows.len()).min_by(|&i, &j| {
        let (a, b) = (&rows[i], &rows[j]);
        b.reproduced
            .cmp(&a.reproduced)
            .then(loss(a).total_cmp(&loss(b)))
            .then(a.train_secs.total_cmp(&b.train_secs))
    })
}

/// The report as a table, the pick marked with `*`.
pub fn table(r: &Report) -> String {
    let mut s = String::from(
        "  lr      rank alpha steps  val loss (base → trained)  reproduced  train s  repro s\n",
    );
    for (i, row) in r.recipes.iter().enumerate() {
        s.push_str(&format!(
            "{} {:<7} {:>4} {:>5} {:>5}  {:>7.4} → {:<7.4}            {:>3}/{:<3}  {:>7.1}  {:>7.1}\n",
            if r.best == Some(i) { "*" } else { " " },
            format!("{:e}", row.learning_rate),
            row.rank,
            row.alpha,
            row.steps,
            row.base_val_loss,
            row.final_val_loss,
            row.reproduced,
            row.prompts,
            row.train_secs,
            row.reproduction_secs
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lr: f64, reproduced: usize, loss: f64, secs: f64) -> RecipeRow {
        RecipeRow {
            learning_rate: lr,
            rank: 8,
            alpha: 16.0,
            steps: 10,
            base_val_loss: 3.0,
            final_val_loss: loss,
            prompts: 36,
            reproduced,
            train_secs: secs,
            reproduction_secs: 1.0,
        }
    }

    #[test]
    fn the_pick_is_most_reproduced_then_lowest_loss_then_fastest() {
        let rows = [
            row(1e-3, 10, 0.5, 1.0),
            row(2e-3, 20, 0.9, 9.0),
            row(5e-3, 20, 0.8, 9.0),
            row(1e-2, 20, 0.8, 8.0),
        ];
        assert_eq!(best(&rows), Some(3));
        assert_eq!(best(&rows[..3]), Some(2));
        assert_eq!(best(&rows[..2]), Some(1));
        // A NaN loss never wins a tie.
        let nan = [row(1e-3, 5, f64::NAN, 1.0), row(2e-3, 5, 2.0, 2.0)];
        assert_eq!(best(&nan), Some(1));
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn the_table_marks_the_pick() {
        let sweep = Sweep::standard(2, 4);
        let r = Report {
            rows: 72,
            recipes: vec![row(1e-3, 3, 1.0, 1.0), row(5e-3, 30, 0.7, 2.0)],
            best: Some(1),
            sweep,
        };
        let t = table(&r);
        let marked: Vec<&str> = t.lines().filter(|l| l.starts_with('*')).collect();
        assert_eq!(marked.len(), 1, "{t}");
        assert!(
            marked[0].contains("5e-3") && marked[0].contains("30/36"),
            "{t}"
        );
    }

    #[test]
    fn each_recipe_changes_only_lr_rank_alpha_and_seed() {
        let s = Sweep::standard(30, 4);
        let c = s.config(5e-3, 16, 3);
        assert_eq!(
            (c.learning_rate, c.rank, c.alpha, c.seed),
            (5e-3, 16, 32.0, 3)
        );
        assert_eq!((c.epochs, c.batch_size), (30, 4));
        assert_eq!(
            TrainConfig {
                learning_rate: s.base.learning_rate,
                rank: s.base.rank,
                alpha: s.base.alpha,
                seed: s.base.seed,
                ..c
            },
            s.base
        );
    }
}
