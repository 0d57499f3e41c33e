//! Adapter blobs: one adapter as one file, for content-addressed stores.
//!
//! A PEFT adapter is a directory of two files; a content store keeps single blobs. An adapter
//! blob (format version 1) is a safetensors file with the PEFT tensor names whose
//! `__metadata__` has exactly one entry:
//!
//! ```text
//! "openledger.adapter_config.v1" : adapter_config.json as compact serde_json
//! tensors                        : base_model.model.model.layers.{i}.{module}.lora_{A,B}.weight, f32 or bf16
//! ```
//!
//! safetensors orders tensors by dtype then name, and a single metadata key has one order, so
//! the same adapter always gives the same bytes. The blob's keccak-256 is the `adapterHash`
//! registered in `ModelRegistry`. [`blob_to_dir`] writes the ordinary PEFT directory back out.

use crate::error::{Error, Result, write_file};
use crate::{Config, LoraAdapter, LoraConfig};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The metadata key that holds `adapter_config.json` in a version-1 blob.
pub const ADAPTER_CONFIG_KEY: &str = "openledger.adapter_config.v1";

fn blob_err(reason: impl std::fmt::Display) -> Error {
    Error::Adapter(format!("not an adapter blob: {reason}"))
}

/// Serialises `config` and PEFT-named tensors into a blob.
pub fn to_blob(config: &LoraConfig, tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let json = serde_json::to_string(config).map_err(|e| Error::Adapter(e.to_string()))?;
    let meta = HashMap::from([(ADAPTER_CONFIG_KEY.to_string(), json)]);
    let mut cpu = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        cpu.push((
            name.clone(),
            t.detach().to_device(&Device::Cpu)?.contiguous()?,
        ));
    }
    safetensors::serialize(cpu, Some(meta)).map_err(|e| Error::Adapter(e.to_string()))
}

/// Splits a blob into its config and tensors (on the CPU), without checking them against a model.
pub fn parse_blob(bytes: &[u8]) -> Result<(LoraConfig, HashMap<String, Tensor>)> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(blob_err)?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(ADAPTER_CONFIG_KEY))
        .ok_or_else(|| blob_err(format!("no {ADAPTER_CONFIG_KEY} metadata")))?;
    let config: LoraConfig = serde_json::from_str(json).map_err(blob_err)?;
    config.validate()?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(blob_err)?;
    Ok((config, tensors))
}

/// Writes a blob out as a PEFT directory (`adapter_config.json`, `adapter_model.safetensors`).
pub fn blob_to_dir(bytes: &[u8], dir: &Path) -> Result<()> {
    let (config, tensors) = parse_blob(bytes)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::json(dir, e))?;
    write_file(&dir.join("adapter_config.json"), &json)?;
    let path = dir.join("adapter_model.safetensors");
    candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::Safetensors {
        path: path.clone(),
        reason: e.to_string(),
    })
}

impl LoraAdapter {
    /// This adapter as a version-1 blob (deterministic bytes).
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        to_blob(self.config(), &self.named_tensors())
    }

    /// Loads a blob, checking every tensor against `model` like [`LoraAdapter::load`].
    pub fn from_blob(bytes: &[u8], model: &Config, device: &Device, dtype: DType) -> Result<Self> {
        let (config, tensors) = parse_blob(bytes)?;
        Self::from_tensors(config, model, tensors, device, dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Proj;

    fn cfg() -> Result<Config> {
        Config::from_json(
            r#"{"model_type":"llama","hidden_size":16,"intermediate_size":32,
            "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":40}"#,
        )
    }

    #[test]
    fn a_random_adapter_is_the_same_for_the_same_seed() -> Result<()> {
        let model = cfg()?;
        let blob = |seed| LoraAdapter::random(&model, 4, &Proj::ALL, seed, 0.3)?.to_blob();
        assert_eq!(blob(7)?, blob(7)?, "the same seed gave two adapters");
        assert_ne!(blob(7)?, blob(8)?, "two seeds gave one adapter");
        Ok(())
    }

    #[test]
    fn blob_round_trips_and_is_deterministic() -> Result<()> {
        let model = cfg()?;
        let varmap = candle_nn::VarMap::new();
        let lc = LoraConfig::new(4, 8.0, &[Proj::Q, Proj::V, Proj::Down]);
        let a = LoraAdapter::trainable(lc, &model, &varmap, &Device::Cpu, DType::F32, 3)?;
        let blob = a.to_blob()?;
        assert_eq!(blob, a.to_blob()?, "same adapter, same bytes");
        let b = LoraAdapter::from_blob(&blob, &model, &Device::Cpu, DType::F32)?;
        assert_eq!(b.config(), a.config());
        assert_eq!(b.to_blob()?, blob);
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        blob_to_dir(&blob, dir.path())?;
        let c = LoraAdapter::load(dir.path(), &model, &Device::Cpu, DType::F32)?;
        assert_eq!(
            c.to_blob()?,
            blob,
            "the PEFT directory holds the same adapter"
        );
        Ok(())
    }

    #[test]
    fn refuses_plain_safetensors_and_foreign_shapes() -> Result<()> {
        let t = HashMap::from([("x".to_string(), Tensor::zeros(3, DType::F32, &Device::Cpu)?)]);
        let plain = safetensors::serialize(t.iter().map(|(k, v)| (k.clone(), v.clone())), None)
            .map_err(|e| Error::Adapter(e.to_string()))?;
        let Err(err) = LoraAdapter::from_blob(&plain, &cfg()?, &Device::Cpu, DType::F32) else {
            panic!("a plain safetensors file is not an adapter blob");
        };
        assert!(err.to_string().contains(ADAPTER_CONFIG_KEY), "{err}");
        let mut big = cfg()?;
        big.hidden_size = 32;
        big.intermediate_size = 64;
        let varmap = candle_nn::VarMap::new();
        let lc = LoraConfig::new(4, 8.0, &[Proj::Q]);
        let other = LoraAdapter::trainable(lc, &big, &varmap, &Device::Cpu, DType::F32, 1)?;
        let Err(err) = LoraAdapter::from_blob(&other.to_blob()?, &cfg()?, &Device::Cpu, DType::F32)
        else {
            panic!("an adapter for another hidden size must be refused");
        };
        assert!(err.to_string().contains("different base model"), "{err}");
        Ok(())
    }
}
