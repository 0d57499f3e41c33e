//! Checkpoints: everything a run needs to continue bit-identically after a crash.
//!
//! One file, `checkpoint.safetensors`, written to a temporary name, fsynced and renamed over
//! the previous one (a crash leaves the old or the new checkpoint, never half of one):
//!
//! ```text
//! __metadata__ { "openledger.checkpoint.v1": CheckpointState as JSON }
//! param.<PEFT name>   f32  the adapter's A / B
//! m.<PEFT name>       f32  AdamW first moment
//! v.<PEFT name>       f32  AdamW second moment
//! ```
//!
//! Shuffles and dropout masks are pure functions of (seed, epoch, step), so the data position
//! (epoch, step within it) is the whole random state.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use crate::trainer::EpochMetrics;

/// Metadata key of a version-1 checkpoint.
pub const METADATA_KEY: &str = "openledger.checkpoint.v1";
/// File name inside a job's work directory.
pub const FILE: &str = "checkpoint.safetensors";

/// Scalar state of a run at an optimizer-step boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointState {
    /// Hash of (base model, rows, config): a checkpoint only resumes the same run.
    pub fingerprint: String,
    /// Optimizer steps done.
    pub step: usize,
    /// Epoch in progress.
    pub epoch: usize,
    /// Optimizer steps done within that epoch.
    pub epoch_step: usize,
    /// Sum over the epoch's steps of (loss × target tokens).
    #[serde(with = "bits")]
    pub epoch_loss_sum: f64,
    /// Target tokens of the epoch so far.
    pub epoch_tokens: usize,
    /// Input tokens processed by the whole run.
    pub tokens_seen: usize,
    /// Validation loss of the base model (adapter B = 0).
    #[serde(with = "opt_bits")]
    pub base_val_loss: Option<f64>,
    /// Best validation loss so far.
    #[serde(with = "opt_bits")]
    pub best_val: Option<f64>,
    /// Epochs since the best validation loss.
    pub bad_epochs: usize,
    /// Metrics of finished epochs.
    #[serde(with = "history_bits")]
    pub history: Vec<EpochMetrics>,
}

// Floats are stored as their IEEE-754 bits so that a resumed run continues from exactly the
// same numbers (decimal JSON floats need not round-trip).
mod bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

mod opt_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(f64::to_bits).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(f64::from_bits))
    }
}

mod history_bits {
    use super::EpochMetrics;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    type Row = (usize, usize, u64, Option<u64>, Option<u64>);
    pub fn serialize<S: Serializer>(v: &[EpochMetrics], s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Row> = v
            .iter()
            .map(|m| {
                (
                    m.epoch,
                    m.step,
                    m.train_loss.to_bits(),
                    m.val_loss.map(f64::to_bits),
                    m.val_perplexity.map(f64::to_bits),
                )
            })
            .collect();
        rows.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EpochMetrics>, D::Error> {
        Ok(Vec::<Row>::deserialize(d)?
            .into_iter()
            .map(|(epoch, step, t, v, p)| EpochMetrics {
                epoch,
                step,
                train_loss: f64::from_bits(t),
                val_loss: v.map(f64::from_bits),
                val_perplexity: p.map(f64::from_bits),
            })
            .collect())
    }
}

/// Writes a checkpoint of `opt` (params and moments, by `names`) and `state` into `dir`.
pub fn save(dir: &Path, names: &[String], opt: &AdamW, state: &CheckpointState) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, slot) in names.iter().zip(&opt.slots) {
        tensors.push((format!("param.{name}"), slot.var.as_tensor().detach()));
        tensors.push((format!("m.{name}"), slot.m.detach()));
        tensors.push((format!("v.{name}"), slot.v.detach()));
    }
    let json = serde_json::to_string(state).map_err(|e| TrainError::corrupt("checkpoint", e))?;
    let meta = HashMap::from([(METADATA_KEY.to_string(), json)]);
    let bytes = safetensors::serialize(tensors, Some(meta))
        .map_err(|e| TrainError::corrupt("checkpoint", e))?;
    write_atomic(&dir.join(FILE), &bytes)
}

/// Writes `bytes` to `path` via a fsynced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| TrainError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TrainError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Loads a checkpoint into `opt` if `dir` has one with this `fingerprint`; returns its state.
pub fn load(
    dir: &Path,
    fingerprint: &str,
    names: &[String],
    opt: &mut AdamW,
) -> Result<Option<CheckpointState>> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let bad = |e: &dyn std::fmt::Display| TrainError::corrupt("checkpoint", e);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| bad(&"no state"))?;
    let state: CheckpointState = serde_json::from_str(json).map_err(|e| bad(&e))?;
    if state.fingerprint != fingerprint {
        return Ok(None);
    }
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(&e))?;
    let get = |k: String| {
        tensors
            .get(&k)
            .cloned()
            .ok_or_else(|| bad(&format!("no {k}")))
    };
    let device = opt
        .slots
        .first()
        .map(|s| s.var.device().clone())
        .unwrap_or(Device::Cpu);
    for (name, slot) in names.iter().zip(opt.slots.iter_mut()) {
        slot.var
            .set(&get(format!("param.{name}"))?.to_device(&device)?)?;
        slot.m = get(format!("m.{name}"))?.to_device(&device)?;
        slot.v = get(format!("v.{name}"))?.to_device(&device)?;
    }
    opt.step_t = state.step;
    Ok(Some(state))
}
