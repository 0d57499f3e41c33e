//! Reading and checking safetensors weights (single file or sharded with an index).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::RngCore;
use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result, read_file, read_json};

/// Reads a whole safetensors file into named tensors. Missing files, truncated files and bad
/// headers become errors naming the file.
pub fn load_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = read_file(path)?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Refuses non-float tensors.
pub(crate) fn check_float(name: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::BF16 | DType::F16 => Ok(()),
        d => Err(Error::BadDtype {
            name: name.to_string(),
            dtype: format!("{d:?}"),
        }),
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// Loads `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
pub fn load_model_weights(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return load_safetensors(&single, device);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.exists() {
        return Err(Error::MissingFile(single));
    }
    let index: ShardIndex = read_json(&index_path)?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    let mut all = HashMap::new();
    for shard in shards {
        if shard.contains('/') || shard.contains("..") {
            return Err(Error::InvalidConfig(format!(
                "shard name {shard:?} is not a plain file name"
            )));
        }
        all.extend(load_safetensors(&dir.join(shard), device)?);
    }
    for name in index.weight_map.keys() {
        if !all.contains_key(name) {
            return Err(Error::MissingTensor(format!(
                "{name} (listed in model.safetensors.index.json)"
            )));
        }
    }
    Ok(all)
}

/// Checks a weight map against what `cfg` requires: every tensor present, float, right shape.
/// Extra tensors (e.g. rotary caches of old checkpoints) are ignored.
pub fn check_weights(cfg: &Config, weights: &HashMap<String, Tensor>) -> Result<()> {
    for (name, shape) in cfg.tensor_shapes() {
        let t = weights
            .get(&name)
            .ok_or_else(|| Error::MissingTensor(name.clone()))?;
        check_float(&name, t)?;
        if t.dims() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name,
                expected: shape,
                found: t.dims().to_vec(),
            });
        }
    }
    Ok(())
}

/// `n` samples of U(-bound, bound).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| ((unit(rng) * 2.0 - 1.0) * bound) as f32)
        .collect()
}

/// `n` samples of N(0, std²) (Box–Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = unit(rng).max(f64::MIN_POSITIVE);
        let u2 = unit(rng);
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let th = 2.0 * std::f64::consts::PI * u2;
        out.push((r * th.cos()) as f32);
        out.push((r * th.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A uniform draw in [0, 1) with 53 bits.
pub(crate) fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Random weights for `cfg` (normal(0, std) matrices, unit norms, zero biases), in the order of
/// [`Config::tensor_shapes`], so the same seed gives the same model everywhere.
pub fn random_weights(cfg: &Config, seed: u64, std: f64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let residual_std = std / (2.0 * cfg.num_hidden_layers as f64).sqrt();
    cfg.tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                normal(&mut rng, n, residual_std)
            } else {
                normal(&mut rng, n, std)
            };
            (name, shape, data)
        })
        .collect()
}
