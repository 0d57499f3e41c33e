//! The training loop: LoRA on a frozen base model, AdamW, warm-up + decay, gradient
//! accumulation and clipping, validation each epoch, early stopping, checkpoints, cancel, and
//! the gradient sketches at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use alloy_primitives::keccak256;
use candle_core::{DType, Tensor, Var};
use candle_nn::{ParamsAdamW, VarMap};
use openledger_datanet::formats::Row;
use openledger_model::{LoraAdapter, Pretrained};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointState};
use crate::config::TrainConfig;
use crate::data::{self, Encoder, Example};
use crate::error::{Result, TrainError};
use crate::loss::{Batch, batch_loss, token_nll};
use crate::optim::AdamW;
use crate::sketch::{Projector, SketchConfig, SketchSet, TrainableAdapter};

/// Metrics of one finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochMetrics {
    /// 0-based epoch.
    pub epoch: usize,
    /// Optimizer steps done when it ended.
    pub step: usize,
    /// Token-weighted mean training loss over the epoch.
    pub train_loss: f64,
    /// Mean validation loss per target token (None without a validation split).
    pub val_loss: Option<f64>,
    /// exp(valLoss).
    pub val_perplexity: Option<f64>,
}

/// What the trainer reports while it runs (the jobs API streams these as SSE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A line of log.
    Log {
        /// Text.
        message: String,
    },
    /// One optimizer step finished.
    #[serde(rename_all = "camelCase")]
    Progress {
        /// Steps done.
        step: usize,
        /// Steps planned.
        total_steps: usize,
        /// Epoch in progress.
        epoch: usize,
        /// Loss of the step (token-weighted mean).
        loss: f64,
        /// Learning rate used.
        learning_rate: f64,
        /// Training tokens per second since the run (re)started.
        tokens_per_sec: f64,
        /// Estimated seconds left.
        eta_secs: f64,
    },
    /// An epoch finished (with validation).
    Epoch(EpochMetrics),
    /// A checkpoint was written.
    Checkpoint {
        /// At this step.
        step: usize,
    },
    /// A matching checkpoint in the work directory was resumed (sent once, before any
    /// training step; `step == totalSteps` or an early stop: the run there had finished and
    /// nothing is trained again).
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// The checkpoint's step.
        step: usize,
        /// Steps planned.
        total_steps: usize,
        /// Whether the checkpoint holds the finished run.
        finished: bool,
    },
}

/// Summary metrics of a run (in the training manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Validation loss of the base model before training.
    pub base_val_loss: Option<f64>,
    /// Validation loss of the final adapter.
    pub final_val_loss: Option<f64>,
    /// exp(finalValLoss).
    pub final_val_perplexity: Option<f64>,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Input tokens processed.
    pub tokens: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochMetrics>,
}

/// The result of a run.
pub struct TrainOutput {
    /// The trained adapter (detached).
    pub adapter: LoraAdapter,
    /// Gradient sketches of the training examples.
    pub sketch: SketchSet,
    /// Metrics.
    pub metrics: Metrics,
    /// Row ids trained on, in example order.
    pub train_rows: Vec<String>,
    /// Row ids held out for validation.
    pub val_rows: Vec<String>,
    /// Row ids dropped (no target token left within `maxSeqLen`).
    pub skipped_rows: Vec<String>,
}

/// The examples of a run after encoding, splitting and truncation.
pub struct Prepared {
    /// Training examples.
    pub train: Vec<Example>,
    /// Validation examples.
    pub val: Vec<Example>,
    /// Rows dropped.
    pub skipped: Vec<String>,
}

/// Encodes, splits and truncates `rows`.
pub fn prepare(base: &Pretrained, rows: &[(String, Row)], cfg: &TrainConfig) -> Result<Prepared> {
    prepare_until(base, rows, cfg, &AtomicBool::new(false))
}

/// [`prepare`], stopping with [`TrainError::Cancelled`] as soon as `cancel` is set.
fn prepare_until(
    base: &Pretrained,
    rows: &[(String, Row)],
    cfg: &TrainConfig,
    cancel: &AtomicBool,
) -> Result<Prepared> {
    let enc = Encoder::new(base)?;
    let (mut train, mut val, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (id, row) in rows {
        check(cancel)?;
        let (ids, mask) = enc.encode(row)?;
        let e = Example {
            row_id: id.clone(),
            ids,
            mask,
        };
        match data::truncate(e, cfg.max_seq_len) {
            None => skipped.push(id.clone()),
            Some(e) if data::is_validation(id, cfg.seed, cfg.val_fraction) => val.push(e),
            Some(e) => train.push(e),
        }
    }
    if train.is_empty() {
        return Err(TrainError::field(
            "valFraction",
            format!(
                "no training rows are left ({} validation, {} too long for maxSeqLen)",
                val.len(),
                skipped.len()
            ),
        ));
    }
    Ok(Prepared {
        train,
        val,
        skipped,
    })
}

/// `Err(Cancelled)` once `cancel` is set.
fn check(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        Err(TrainError::Cancelled)
    } else {
        Ok(())
    }
}

/// Mean loss per target token of `adapter` (or the base model) over `examples`.
pub fn evaluate(
    base: &Pretrained,
    adapter: Option<&Arc<LoraAdapter>>,
    examples: &[Example],
    batch_size: usize,
) -> Result<Option<f64>> {
    evaluate_until(base, adapter, examples, batch_size, &AtomicBool::new(false))
}

/// [`evaluate`], stopping between micro-batches once `cancel` is set.
fn evaluate_until(
    base: &Pretrained,
    adapter: Option<&Arc<LoraAdapter>>,
    examples: &[Example],
    batch_size: usize,
    cancel: &AtomicBool,
) -> Result<Option<f64>> {
    if examples.is_empty() {
        return Ok(None);
    }
    let pad = base.config.eos_ids().first().copied().unwrap_or(0);
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        check(cancel)?;
        let seqs: Vec<(&[u32], &[u8])> = chunk
            .iter()
            .map(|e| (e.ids.as_slice(), e.mask.as_slice()))
            .collect();
        let batch = Batch::new(&seqs, pad, base.model.device())?;
        let nll = token_nll(&base.model, adapter, &batch)?.detach();
        sum += f64::from(nll.sum_all()?.to_scalar::<f32>()?);
        n += batch.target_tokens;
    }
    Ok(Some(sum / n.max(1) as f64))
}

fn fingerprint(base_hash: &str, prepared: &Prepared, cfg: &TrainConfig) -> String {
    let mut h = Vec::new();
    h.extend_from_slice(base_hash.as_bytes());
    for e in prepared.train.iter().chain(&prepared.val) {
        h.extend_from_slice(e.row_id.as_bytes());
        h.extend(e.ids.iter().flat_map(|i| i.to_le_bytes()));
    }
    h.extend(serde_json::to_vec(cfg).unwrap_or_default());
    keccak256(&h).to_string()
}

/// The micro-batches of one epoch: lists of sequences (each a list of example indices).
pub fn epoch_micro_batches(
    train: &[Example],
    cfg: &TrainConfig,
    epoch: usize,
) -> Vec<Vec<Vec<usize>>> {
    let lens: Vec<usize> = train.iter().map(|e| e.ids.len()).collect();
    let order = data::epoch_order(train.len(), cfg.seed, epoch);
    let seqs = data::sequences(&order, &lens, cfg.packing, cfg.max_seq_len);
    seqs.chunks(cfg.batch_size).map(<[_]>::to_vec).collect()
}

fn steps_in_epoch(train: &[Example], cfg: &TrainConfig, epoch: usize) -> usize {
    epoch_micro_batches(train, cfg, epoch)
        .len()
        .div_ceil(cfg.grad_accum)
}

/// Total optimizer steps of the run.
pub fn total_steps(train: &[Example], cfg: &TrainConfig) -> usize {
    total_steps_until(train, cfg, &AtomicBool::new(false)).unwrap_or_default()
}

/// [`total_steps`], stopping between epochs once `cancel` is set (with packing every epoch's
/// sequences are planned, so a large `epochs` takes a while).
fn total_steps_until(train: &[Example], cfg: &TrainConfig, cancel: &AtomicBool) -> Result<usize> {
    match cfg.max_steps {
        Some(s) => Ok(s),
        None => {
            let mut total = 0usize;
            for e in 0..cfg.epochs {
                check(cancel)?;
                total = total.saturating_add(steps_in_epoch(train, cfg, e));
            }
            Ok(total)
        }
    }
}

/// The adapter a micro-batch trains through: A's input features dropped with probability p
/// (one mask per module per micro-batch, from ChaCha8 seeded by (seed, step, micro)).
fn dropout_adapter(
    lora: &openledger_model::LoraConfig,
    base: &Pretrained,
    params: &[(String, Var)],
    cfg: &TrainConfig,
    step: usize,
    micro: usize,
) -> Result<Arc<LoraAdapter>> {
    let seed = keccak256(format!("openledger-dropout-v1:{}:{step}:{micro}", cfg.seed).as_bytes());
    let mut rng = ChaCha8Rng::from_seed(seed.0);
    let keep = 1.0 - cfg.dropout;
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in params {
        let t = if name.contains("lora_A") {
            let inp = var.dim(1)?;
            let mask: Vec<f32> = (0..inp)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    if u < keep { (1.0 / keep) as f32 } else { 0.0 }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (1, inp), var.device())?;
            var.as_tensor().broadcast_mul(&mask)?
        } else {
            var.as_tensor().clone()
        };
        tensors.insert(name.clone(), t);
    }
    Ok(Arc::new(LoraAdapter::from_tensors(
        lora.clone(),
        &base.config,
        tensors,
        base.model.device(),
        DType::F32,
    )?))
}

/// Runs a fine-tune. With `workdir`, checkpoints go there every `checkpointEvery` steps and a
/// matching checkpoint found there is resumed. `cancel` is polled while the data is prepared,
/// between validation batches and between micro-batches, so it takes effect within one
/// optimizer step.
pub fn train(
    base: &Pretrained,
    base_hash: &str,
    rows: &[(String, Row)],
    cfg: &TrainConfig,
    workdir: Option<&std::path::Path>,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrainOutput> {
    cfg.validate(&base.config)?;
    let prepared = prepare_until(base, rows, cfg, cancel)?;
    let device = base.model.device().clone();
    let fp = fingerprint(base_hash, &prepared, cfg);
    let lora = cfg.lora_config();
    let varmap = VarMap::new();
    let trainable = Arc::new(LoraAdapter::trainable(
        lora.clone(),
        &base.config,
        &varmap,
        &device,
        DType::F32,
        cfg.seed,
    )?);
    let mut params: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::corrupt("varmap", "lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let mut opt = AdamW::new(
        params.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let (train_ex, val_ex) = (&prepared.train, &prepared.val);
    let total = total_steps_until(train_ex, cfg, cancel)?;
    let pad = base.config.eos_ids().first().copied().unwrap_or(0);

    let mut st = match workdir {
        Some(d) => checkpoint::load(d, &fp, &names, &mut opt)?,
        None => None,
    };
    // A run that stopped early saved its last checkpoint at the stopping epoch's end only if
    // that step was a checkpoint step; either way the stop is recomputed from the state.
    let stopped = |s: &CheckpointState| {
        cfg.early_stopping_patience
            .is_some_and(|p| s.bad_epochs >= p)
    };
    if let Some(s) = &st {
        on_event(Event::Resumed {
            step: s.step,
            total_steps: total,
            finished: s.step >= total || stopped(s),
        });
        on_event(Event::Log {
            message: format!("resumed from the checkpoint at step {}", s.step),
        });
    }
    let mut st = match st.take() {
        Some(s) => s,
        None => {
            let base_val = evaluate_until(base, None, val_ex, cfg.batch_size, cancel)?;
            on_event(Event::Log {
                message: format!(
                    "{} training / {} validation examples, {} skipped; {total} steps; base validation loss {}",
                    train_ex.len(),
                    val_ex.len(),
                    prepared.skipped.len(),
                    base_val.map_or("n/a".into(), |v| format!("{v:.4}"))
                ),
            });
            CheckpointState {
                fingerprint: fp.clone(),
                step: 0,
                epoch: 0,
                epoch_step: 0,
                epoch_loss_sum: 0.0,
                epoch_tokens: 0,
                tokens_seen: 0,
                base_val_loss: base_val,
                best_val: None,
                bad_epochs: 0,
                history: Vec::new(),
            }
        }
    };
    let started = Instant::now();
    let tokens_at_start = st.tokens_seen;
    let steps_at_start = st.step;
    let mut stopped_early = stopped(&st);
    'epochs: while !stopped_early && st.step < total {
        let micro = epoch_micro_batches(train_ex, cfg, st.epoch);
        let groups: Vec<&[Vec<Vec<usize>>]> = micro.chunks(cfg.grad_accum).collect();
        while st.epoch_step < groups.len() && st.step < total {
            check(cancel)?;
            let step = st.step + 1;
            let lr = cfg.lr_at(step, total);
            opt.params.lr = lr;
            let group = groups[st.epoch_step];
            let batches: Vec<Batch> = group
                .iter()
                .map(|seqs| {
                    let owned: Vec<(Vec<u32>, Vec<u8>)> =
                        seqs.iter().map(|s| data::concat(train_ex, s)).collect();
                    let refs: Vec<(&[u32], &[u8])> = owned
                        .iter()
                        .map(|(i, m)| (i.as_slice(), m.as_slice()))
                        .collect();
                    Batch::new(&refs, pad, &device)
                })
                .collect::<Result<_>>()?;
            let denom: usize = batches.iter().map(|b| b.target_tokens).sum();
            let mut acc: Vec<Option<Tensor>> = vec![None; params.len()];
            let mut step_loss = 0f64;
            for (k, batch) in batches.iter().enumerate() {
                check(cancel)?;
                let adapter = if cfg.dropout > 0.0 {
                    dropout_adapter(&lora, base, &params, cfg, step, k)?
                } else {
                    trainable.clone()
                };
                let loss = batch_loss(&base.model, Some(&adapter), batch, denom as f64)?;
                step_loss += f64::from(loss.to_scalar::<f32>()?);
                let grads = loss.backward()?;
                for ((_, var), a) in params.iter().zip(acc.iter_mut()) {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        *a = Some(match a.take() {
                            Some(prev) => (prev + g)?,
                            None => g.clone(),
                        });
                    }
                }
                st.tokens_seen += batch.input_tokens;
            }
            if cfg.max_grad_norm > 0.0 {
                let mut sq = 0f64;
                for g in acc.iter().flatten() {
                    sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
                }
                let norm = sq.sqrt();
                if norm > cfg.max_grad_norm {
                    let s = cfg.max_grad_norm / (norm + 1e-6);
                    for g in acc.iter_mut().flatten() {
                        *g = (&*g * s)?;
                    }
                }
            }
            opt.step(&acc)?;
            st.step = step;
            st.epoch_step += 1;
            st.epoch_loss_sum += step_loss * denom as f64;
            st.epoch_tokens += denom;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let tps = (st.tokens_seen - tokens_at_start) as f64 / secs;
            let per_step = secs / (st.step - steps_at_start).max(1) as f64;
            on_event(Event::Progress {
                step,
                total_steps: total,
                epoch: st.epoch,
                loss: step_loss,
                learning_rate: lr,
                tokens_per_sec: tps,
                eta_secs: per_step * (total - step) as f64,
            });
            let epoch_done = st.epoch_step >= groups.len() || st.step >= total;
            if epoch_done {
                let val = evaluate_until(base, Some(&trainable), val_ex, cfg.batch_size, cancel)?;
                let m = EpochMetrics {
                    epoch: st.epoch,
                    step: st.step,
                    train_loss: st.epoch_loss_sum / st.epoch_tokens.max(1) as f64,
                    val_loss: val,
                    val_perplexity: val.map(f64::exp),
                };
                on_event(Event::Epoch(m.clone()));
                st.history.push(m);
                st.epoch += 1;
                st.epoch_step = 0;
                st.epoch_loss_sum = 0.0;
                st.epoch_tokens = 0;
                if let (Some(v), Some(patience)) = (val, cfg.early_stopping_patience) {
                    match st.best_val {
                        Some(b) if v >= b - cfg.early_stopping_min_delta => st.bad_epochs += 1,
                        _ => {
                            st.best_val = Some(v);
                            st.bad_epochs = 0;
                        }
                    }
                    if st.bad_epochs >= patience {
                        stopped_early = true;
                    }
                }
            }
            if let Some(d) = workdir
                && cfg.checkpoint_every > 0
                && step % cfg.checkpoint_every == 0
            {
                checkpoint::save(d, &names, &opt, &st)?;
                on_event(Event::Checkpoint { step });
            }
            if stopped_early {
                on_event(Event::Log {
                    message: format!(
                        "early stopping after epoch {}: no improvement for {} epochs",
                        st.epoch - 1,
                        st.bad_epochs
                    ),
                });
                break 'epochs;
            }
            if epoch_done {
                continue 'epochs;
            }
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(TrainError::Cancelled);
    }

    on_event(Event::Log {
        message: format!("computing gradient sketches of {} examples", train_ex.len()),
    });
    let adapter = LoraAdapter::from_tensors(
        lora.clone(),
        &base.config,
        trainable.named_tensors(),
        &device,
        DType::F32,
    )?;
    let sketch_params = TrainableAdapter::from_adapter(&adapter, &base.config, &device)?;
    let projector = Projector::new(
        SketchConfig {
            dim: cfg.sketch_dim,
            seed: cfg.seed,
        },
        &sketch_params.adapter,
        &device,
    )?;
    let mut rows_out = Vec::with_capacity(train_ex.len());
    for e in train_ex {
        if cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled);
        }
        let s = projector.sketch(&base.model, &sketch_params, &e.ids, &e.mask)?;
        rows_out.push((e.row_id.clone(), s));
    }
    let sketch = SketchSet::from_rows(&projector, rows_out);
    let last = st.history.last();
    let metrics = Metrics {
        base_val_loss: st.base_val_loss,
        final_val_loss: last.and_then(|m| m.val_loss),
        final_val_perplexity: last.and_then(|m| m.val_perplexity),
        steps: st.step,
        tokens: st.tokens_seen,
        stopped_early,
        epochs: st.history.clone(),
    };
    Ok(TrainOutput {
        adapter,
        sketch,
        metrics,
        train_rows: train_ex.iter().map(|e| e.row_id.clone()).collect(),
        val_rows: val_ex.iter().map(|e| e.row_id.clone()).collect(),
        skipped_rows: prepared.skipped,
    })
}
