//! Llama-family language models with PEFT LoRA adapters, on candle.
//!
//! - [`Model`]: Llama / Mistral / Qwen2 decoder (RMSNorm, RoPE with linear or Llama 3
//!   scaling, GQA, SwiGLU), loaded from a Hugging Face directory with [`Pretrained::load`] /
//!   [`Pretrained::load_as`]; on the CPU the frozen weights are held as f32, bf16 (as stored)
//!   or int8 ([`WeightFormat`]) and the activations are f32; [`Dense`] is such a weight and
//!   its kernel, for weights of one's own.
//! - [`LoraAdapter`]: PEFT adapters (load, save, trainable, random for tests and benchmarks);
//!   [`BatchAdapters`] tells one forward pass which adapter each sequence uses, so rows of
//!   different adapters share a batch.
//! - [`generate`]: KV-cached decoding with greedy / temperature / top-k / top-p sampling,
//!   repetition penalty, stop strings and tokens, seeded reproducible sampling, streaming.
//! - [`init`]: builds a small base model from scratch (generated corpus, BPE tokenizer,
//!   pre-training), or a random-weight directory in the exact layout of a real checkpoint
//!   ([`init::Shape`]); [`info`] identifies a model directory by a content hash.
//!
//! ```
//! # fn main() -> Result<(), openledger_model::Error> {
//! use openledger_model::{BatchAdapters, Config, KvCache, Model, SeqStep, random_model};
//! let cfg = Config::from_json(r#"{"model_type":"llama","hidden_size":32,"intermediate_size":64,
//!     "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":50}"#)?;
//! let model: Model = random_model(&cfg, 7, &candle_core::Device::Cpu, candle_core::DType::F32)?;
//! let mut cache = KvCache::new(&cfg);
//! let logits = model.forward_step(
//!     &mut [SeqStep { tokens: &[1, 2, 3], cache: &mut cache }],
//!     &BatchAdapters::none(1),
//! )?;
//! assert_eq!(logits.dims(), &[1, 50]);
//! assert_eq!(cache.len(), 3);
//! # Ok(()) }
//! ```
//!
//! No cargo features: CPU only for now; the code takes a `candle_core::Device` throughout.

pub mod blob;
mod config;
mod dense;
mod error;
mod generate;
mod hub;
mod info;
pub mod init;
mod kernels;
mod kv;
mod linear;
mod lora;
mod model;
pub mod profile;
pub mod pull;
mod routing;
mod weights;

pub use candle_core::{self as candle, DType, Device, Tensor};
pub use config::{Config, GenerationConfig, ModelType, RopeScaling, TokenIds};
pub use dense::{Dense, WeightFormat};
pub use error::{Error, Result};
pub use generate::{
    FinishReason, Sampler, SamplingParams, Sequence, TokenOut, decode_step, generate,
};
pub use hub::{ChatMessage, ChatTemplate, Pretrained, load_tokenizer, stored_format};
pub use info::{FileEntry, ModelInfo, content_hash, info};
pub use kv::KvCache;
pub use lora::{LoraAdapter, LoraConfig, LoraPair, Proj, TargetModules};
pub use model::{Model, SeqStep};
pub use routing::BatchAdapters;
pub use weights::{check_weights, load_model_weights, load_safetensors, random_weights};

/// A model with random weights from [`random_weights`] (normal, std 0.02), for tests and examples.
pub fn random_model(
    cfg: &Config,
    seed: u64,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<Model> {
    let mut map = std::collections::HashMap::new();
    for (name, shape, data) in random_weights(cfg, seed, 0.02) {
        map.insert(name, candle_core::Tensor::from_vec(data, shape, device)?);
    }
    Model::new(cfg, candle_nn::VarBuilder::from_tensors(map, dtype, device))
}
