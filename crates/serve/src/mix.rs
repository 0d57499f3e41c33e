//! Per-request linear merge of several adapters (LoRAX's `adapters: [{id, weight}]`).
//!
//! Σᵢ wᵢ·sᵢ·Bᵢ·Aᵢ is itself a LoRA delta of rank Σᵢ rᵢ: stack the A matrices along the rank
//! dimension and the scaled B matrices along theirs, scale 1. The mix is an ordinary
//! [`LoraAdapter`], so it batches with every other request and merges into weights like one.

use alloy_primitives::{B256, keccak256};
use openledger_model::{Config, LoraAdapter, LoraConfig, Proj, TargetModules, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The combined adapter of `parts` (adapter, weight) for base `model`.
pub fn linear_mix(
    parts: &[(Arc<LoraAdapter>, f32)],
    model: &Config,
) -> Result<LoraAdapter, openledger_model::Error> {
    if parts
        .iter()
        .any(|(a, _)| a.embed_pair().is_some() || a.head_pair().is_some())
    {
        return Err(openledger_model::Error::Adapter(
            "a mix of adapters on embed_tokens or lm_head is not supported".into(),
        ));
    }
    let mut targets = Vec::new();
    let mut ranks = BTreeMap::new();
    let mut alphas = BTreeMap::new();
    let mut tensors = HashMap::new();
    let mut first_rank = None;
    for l in 0..model.num_hidden_layers {
        for p in Proj::ALL {
            let mut a_parts = Vec::new();
            let mut b_parts = Vec::new();
            for (ad, w) in parts {
                if let Some(pair) = ad.pair(l, p) {
                    a_parts.push(pair.a.clone());
                    b_parts.push((&pair.b * (pair.scale * f64::from(*w)))?);
                }
            }
            if a_parts.is_empty() {
                continue;
            }
            let a = Tensor::cat(&a_parts, 0)?;
            let b = Tensor::cat(&b_parts, 1)?;
            let r = a.dim(0)?;
            let path = p.path(l);
            let pat = regex::escape(&path);
            first_rank.get_or_insert(r);
            ranks.insert(pat.clone(), r);
            alphas.insert(pat, r as f64);
            tensors.insert(format!("base_model.model.{path}.lora_A.weight"), a);
            tensors.insert(format!("base_model.model.{path}.lora_B.weight"), b);
            targets.push(path);
        }
    }
    let Some(r) = first_rank else {
        return Err(openledger_model::Error::Adapter(
            "the mix adapts no module".into(),
        ));
    };
    let mut cfg = LoraConfig::new(r, r as f64, &[]);
    cfg.target_modules = TargetModules::List(targets);
    cfg.rank_pattern = ranks;
    cfg.alpha_pattern = alphas;
    let (device, dtype) = match parts.first().and_then(|(a, _)| a.pairs().next()) {
        Some((_, _, p)) => (p.a.device().clone(), p.a.dtype()),
        None => (openledger_model::Device::Cpu, openledger_model::DType::F32),
    };
    LoraAdapter::from_tensors(cfg, model, tensors, &device, dtype)
}

/// The scheduler/cache key of a mix: keccak-256 over (hash, weight bits) in order.
pub fn mix_key(mix: &[(B256, f32)]) -> B256 {
    let mut bytes = Vec::with_capacity(mix.len() * 36);
    for (h, w) in mix {
        bytes.extend_from_slice(h.as_slice());
        bytes.extend_from_slice(&w.to_bits().to_be_bytes());
    }
    keccak256(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openledger_model::{BatchAdapters, DType, Device, KvCache, SeqStep, random_model};

    #[test]
    fn mix_equals_the_weighted_sum_of_deltas() -> Result<(), openledger_model::Error> {
        let cfg = Config::from_json(
            r#"{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":50}"#,
        )?;
        let model = random_model(&cfg, 1, &Device::Cpu, DType::F32)?;
        let mk = |seed: u64,
                  r: usize,
                  targets: &[Proj]|
         -> Result<Arc<LoraAdapter>, openledger_model::Error> {
            let vm = candle_nn::VarMap::new();
            let a = LoraAdapter::trainable(
                LoraConfig::new(r, 2.0 * r as f64, targets),
                &cfg,
                &vm,
                &Device::Cpu,
                DType::F32,
                seed,
            )?;
            // B = 0 after init: give it values so the delta is not zero
            let mut t = a.named_tensors();
            for (k, v) in t.iter_mut() {
                if k.contains("lora_B") {
                    *v = (v.ones_like()? * (0.01 * seed as f64))?;
                }
            }
            Ok(Arc::new(LoraAdapter::from_tensors(
                a.config().clone(),
                &cfg,
                t,
                &Device::Cpu,
                DType::F32,
            )?))
        };
        let a = mk(1, 4, &[Proj::Q, Proj::V])?;
        let b = mk(2, 8, &[Proj::V, Proj::Down])?;
        let mix = linear_mix(&[(a.clone(), 0.25), (b.clone(), 0.75)], &cfg)?;
        // merged weights: W + 0.25·ΔA + 0.75·ΔB, via the model's merge in two steps
        let scaled = |ad: &LoraAdapter, w: f32| -> Result<LoraAdapter, openledger_model::Error> {
            linear_mix(&[(Arc::new(ad.clone()), w)], &cfg)
        };
        let reference = model
            .merged(&scaled(&a, 0.25)?)?
            .merged(&scaled(&b, 0.75)?)?;
        let ids = [3u32, 7, 9, 11];
        let run = |m: &openledger_model::Model,
                   ba: &BatchAdapters|
         -> Result<Vec<f32>, openledger_model::Error> {
            let mut c = KvCache::new(&cfg);
            Ok(m.forward_step(
                &mut [SeqStep {
                    tokens: &ids,
                    cache: &mut c,
                }],
                ba,
            )?
            .flatten_all()?
            .to_vec1()?)
        };
        let got = run(&model, &BatchAdapters::uniform(Arc::new(mix), 1))?;
        let want = run(&reference, &BatchAdapters::none(1))?;
        let base = run(&model, &BatchAdapters::none(1))?;
        let diff = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let moved = got
            .iter()
            .zip(&base)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "mix vs merged differ by {diff}");
        assert!(moved > 1e-3, "the mix changes the output ({moved})");
        assert_ne!(
            mix_key(&[(B256::ZERO, 0.5)]),
            mix_key(&[(B256::ZERO, 0.25)])
        );
        Ok(())
    }
}
