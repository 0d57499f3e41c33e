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
    let nll = token_nll(model, adapter, batch)?;
    Ok((nll.sum_all()? / denominator.max(1.0))?)
}
