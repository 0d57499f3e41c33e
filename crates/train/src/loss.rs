//! The training objective: next-token cross-entropy on the target tokens of a batch.
//!
//! A sequence of token ids `ids` with a mask `mask` (1 = this token is a target) trains the
//! model to predict `ids[t]` from `ids[..t]` wherever `mask[t] = 1` (t ≥ 1). Text rows mask
//! every token; prompt/completion and chat rows mask only the answer tokens.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use openledger_model::{BatchAdapters, LoraAdapter, Model};

use crate::error::Result;

/// One batch, right-padded: inputs and targets are [b, t]; `mask` is 1.0 at target positions.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Input ids [b, t] (u32).
    pub inputs: Tensor,
    /// Target ids [b, t] (u32): the next token of each input position.
    pub targets: Tensor,
    /// [b, t] f32: 1.0 where the target counts towards the loss.
    pub mask: Tensor,
    /// Number of target tokens (sum of `mask`).
    pub target_tokens: usize,
    /// Number of real (non-padding) input tokens.
    pub input_tokens: usize,
}

impl Batch {
    /// Builds a batch from `(ids, mask)` sequences (each at least two tokens), padding with `pad`.
    pub fn new(seqs: &[(&[u32], &[u8])], pad: u32, device: &Device) -> Result<Self> {
        let t = seqs
            .iter()
            .map(|(ids, _)| ids.len().saturating_sub(1))
            .max()
            .unwrap_or(0)
            .max(1);
        let b = seqs.len();
        let mut inputs = vec![pad; b * t];
        let mut targets = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        let (mut target_tokens, mut input_tokens) = (0, 0);
        for (i, (ids, m)) in seqs.iter().enumerate() {
            let n = ids.len().saturating_sub(1);
            input_tokens += n;
            for j in 0..n {
                inputs[i * t + j] = ids[j];
                targets[i * t + j] = ids[j + 1];
                if m.get(j + 1).copied().unwrap_or(0) != 0 {
                    mask[i * t + j] = 1.0;
                    target_tokens += 1;
                }
            }
        }
        Ok(Batch {
            inputs: Tensor::from_vec(inputs, (b, t), device)?,
            targets: Tensor::from_vec(targets, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            target_tokens,
            input_tokens,
        })
    }
}

/// Per-position negative log-likelihood of the targets, [b, t] f32 (zero where masked out).
pub fn token_nll(
    model: &Model,
    adapter: Option<&Arc<LoraAdapter>>,
    batch: &Batch,
) -> Result<Tensor> {
    let (b, _) = batch.inputs.dims2()?;
    let adapters = match adapter {
        Some(a) => BatchAdapters::uniform(a.clone(), b),
        None => BatchAdapters::none(b),
    };
    let logits = model
        .forward(&batch.inputs, &adapters)?
        .to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&batch.targets.unsqueeze(2)?, 2)?;
    let nll = (lse - picked)?.squeeze(2)?;
    Ok((nll * &batch.mask)?)
}

/// Sum of the target tokens' negative log-likelihood divided by `denominator` (a scalar
/// tensor): the micro-batch's share of a token-weighted mean over a whole optimizer step.
pub fn batch_loss(
    model: &Model,
    adapter: Option<&Arc<LoraAdapter>>,
    batch: &Batch,
    denominator: f64,
) -> Result<Tensor> {
    // Logits only where a target is (padding and prompt positions count zero): the head over
    // the vocabulary is the largest tensor of a step.
    let mask = batch.mask.flatten_all()?.to_vec1::<f32>()?;
    let rows: Vec<u32> = (0..mask.len() as u32)
        .filter(|&i| mask[i as usize] != 0.0)
        .collect();
    if rows.is_empty() {
        let nll = token_nll(model, adapter, batch)?;
        return Ok((nll.sum_all()? / denominator.max(1.0))?);
    }
    let (b, _) = batch.inputs.dims2()?;
    let adapters = match adapter {
        Some(a) => BatchAdapters::uniform(a.clone(), b),
        None => BatchAdapters::none(b),
    };
    let logits = model
        .forward_rows(&batch.inputs, &adapters, &rows)?
        .to_dtype(DType::F32)?;
    let n = rows.len();
    let idx = Tensor::from_vec(rows, n, logits.device())?;
    let targets = batch.targets.flatten_all()?.index_select(&idx, 0)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    let nll = (lse - picked)?;
    Ok((nll.sum_all()? / denominator.max(1.0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss from logits at target positions only equals the masked per-position loss over
    /// the whole batch, value and gradient (padding, prompt positions, a LoRA on lm_head).
    #[test]
    fn the_loss_at_target_rows_equals_the_masked_whole_batch_loss() -> Result<()> {
        let cfg = openledger_model::Config::from_json(
            r#"{"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":97,
            "max_position_embeddings":64}"#,
        )?;
        let dev = Device::Cpu;
        let model = openledger_model::random_model(&cfg, 5, &dev, DType::F32)?;
        let lc = openledger_model::LoraConfig::new(
            4,
            8.0,
            &[openledger_model::Proj::Q, openledger_model::Proj::V],
        );
        let lc = openledger_model::LoraConfig {
            target_modules: openledger_model::TargetModules::List(
                ["q_proj", "v_proj", "lm_head"].map(String::from).to_vec(),
            ),
            ..lc
        };
        let vm = candle_nn::VarMap::new();
        let adapter = Arc::new(LoraAdapter::trainable(lc, &cfg, &vm, &dev, DType::F32, 3)?);
        // nudge B off zero so the adapter changes the logits
        for v in vm.all_vars() {
            let t = v.as_tensor();
            v.set(&(t + Tensor::randn(0f32, 0.05, t.shape(), &dev)?)?)?;
        }
        let a: Vec<u32> = (1..12).collect();
        let b: Vec<u32> = (20..26).collect();
        let ma = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1];
        let mb = [0, 0, 1, 1, 1, 1];
        let batch = Batch::new(&[(&a, &ma), (&b, &mb)], 0, &dev)?;
        let denom = batch.target_tokens as f64;
        let fast = batch_loss(&model, Some(&adapter), &batch, denom)?;
        let full = (token_nll(&model, Some(&adapter), &batch)?.sum_all()? / denom)?;
        let (x, y) = (fast.to_scalar::<f32>()?, full.to_scalar::<f32>()?);
        assert!((x - y).abs() < 1e-5 * y.abs().max(1.0), "{x} vs {y}");
        let (gf, gw) = (fast.backward()?, full.backward()?);
        for v in vm.all_vars() {
            let (p, q) = (
                gf.get(v.as_tensor()).map(|g| g.flatten_all()),
                gw.get(v.as_tensor()).map(|g| g.flatten_all()),
            );
            let (Some(p), Some(q)) = (p, q) else {
                panic!("a trainable tensor got no gradient");
            };
            let d = (p? - q?)?.abs()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "gradients differ by {d}");
        }
        Ok(())
    }
}
