//! Which adapter each row of a forward pass uses.
//!
//! A forward pass carries a [`BatchAdapters`]: the adapters in play and, per sequence, which
//! one it uses (or none). The model expands it once per pass into a [`RowPlan`] that every
//! layer shares: no adapter, one adapter on every row (LoRA is then two plain matmuls, shrink
//! x·Aᵀ to rank r and expand ·Bᵀ, which is also the differentiable path training takes), or
//! an adapter per row, applied by the per-row kernel ([`crate::kernels::bgmv`]).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::kernels::bgmv::{rows_cpu_add, rows_gathered};
use crate::lora::{LoraAdapter, LoraPair};

/// Which adapter each sequence of a batch uses. Cheap to build per step; the adapters are
/// shared (`Arc`), so a request can pin an immutable adapter for its whole life.
#[derive(Clone, Debug, Default)]
pub struct BatchAdapters {
    adapters: Vec<Arc<LoraAdapter>>,
    per_seq: Vec<Option<usize>>,
}

impl BatchAdapters {
    /// No adapter for any of `n_seqs` sequences (the base model).
    pub fn none(n_seqs: usize) -> Self {
        BatchAdapters {
            adapters: Vec::new(),
            per_seq: vec![None; n_seqs],
        }
    }

    /// The same adapter for all `n_seqs` sequences.
    pub fn uniform(adapter: Arc<LoraAdapter>, n_seqs: usize) -> Self {
        BatchAdapters {
            adapters: vec![adapter],
            per_seq: vec![Some(0); n_seqs],
        }
    }

    /// `per_seq[i]` indexes `adapters` (or is `None` for the base model).
    pub fn new(adapters: Vec<Arc<LoraAdapter>>, per_seq: Vec<Option<usize>>) -> Result<Self> {
        if let Some(bad) = per_seq.iter().flatten().find(|&&i| i >= adapters.len()) {
            return Err(Error::InvalidArgument(format!(
                "adapter index {bad} out of range ({} adapters)",
                adapters.len()
            )));
        }
        Ok(BatchAdapters { adapters, per_seq })
    }

    /// Number of sequences described.
    pub fn num_seqs(&self) -> usize {
        self.per_seq.len()
    }

    /// The adapter index of sequence `i`.
    pub fn of_seq(&self, i: usize) -> Option<usize> {
        self.per_seq.get(i).copied().flatten()
    }

    /// The adapters in play.
    pub fn adapters(&self) -> &[Arc<LoraAdapter>] {
        &self.adapters
    }

    /// Expands the per-sequence choice to rows: sequence `i` owns `rows[i]` consecutive rows.
    pub(crate) fn plan(&self, rows: &[usize], device: &Device) -> Result<RowPlan> {
        if rows.len() != self.per_seq.len() {
            return Err(Error::InvalidArgument(format!(
                "batch has {} sequences but adapters describe {}",
                rows.len(),
                self.per_seq.len()
            )));
        }
        let used: Vec<usize> = {
            let mut u: Vec<usize> = self.per_seq.iter().flatten().copied().collect();
            u.sort_unstable();
            u.dedup();
            u
        };
        if used.is_empty() {
            return Ok(RowPlan::Base);
        }
        if used.len() == 1 && self.per_seq.iter().all(Option::is_some) {
            return Ok(RowPlan::Whole(self.adapters[used[0]].clone()));
        }
        // Several adapters (or some rows without one): the adapter of every row, as an index
        // into the adapters in play (0 = none, k + 1 = adapters[k]).
        let row_slot: Vec<u32> = self
            .per_seq
            .iter()
            .zip(rows)
            .flat_map(|(a, &n)| std::iter::repeat_n(a.map_or(0, |k| k as u32 + 1), n))
            .collect();
        let n = row_slot.len();
        Ok(RowPlan::Rows {
            adapters: self.adapters.clone(),
            slots: Tensor::from_vec(row_slot.clone(), n, device)?,
            row_slot,
        })
    }
}

/// How LoRA applies to the rows of one forward pass; computed once and shared by every layer.
pub(crate) enum RowPlan {
    /// No adapter on any row.
    Base,
    /// One adapter on every row: plain matmuls (differentiable; the training path).
    Whole(Arc<LoraAdapter>),
    /// Per-row adapters (BGMV): any mix of adapters, ranks and prefill/decode rows in one pass.
    Rows {
        adapters: Vec<Arc<LoraAdapter>>,
        /// Per row: 0 = no adapter, k + 1 = `adapters[k]`.
        row_slot: Vec<u32>,
        /// `row_slot` on the model's device (for the gathered tensor path).
        slots: Tensor,
    },
}

impl RowPlan {
    /// The plan for a subset of the rows (`rows[i]` = the row the i-th new row was).
    pub(crate) fn select(&self, rows: &[u32], device: &Device) -> Result<RowPlan> {
        Ok(match self {
            RowPlan::Base => RowPlan::Base,
            RowPlan::Whole(a) => RowPlan::Whole(a.clone()),
            RowPlan::Rows {
                adapters, row_slot, ..
            } => {
                let picked: Vec<u32> = rows
                    .iter()
                    .map(|&r| row_slot.get(r as usize).copied().unwrap_or(0))
                    .collect();
                RowPlan::Rows {
                    adapters: adapters.clone(),
                    slots: Tensor::from_vec(picked.clone(), picked.len(), device)?,
                    row_slot: picked,
                }
            }
        })
    }

    /// Adds the LoRA of a model-level module (the output head) to `y` = base output for `x`:
    /// `pair_of` picks each adapter's pair; `dims` = (in, out).
    pub(crate) fn add_module(
        &self,
        x: &Tensor,
        y: Tensor,
        pair_of: impl Fn(&LoraAdapter) -> Option<&LoraPair>,
        dims: (usize, usize),
    ) -> Result<Tensor> {
        match self {
            RowPlan::Base => Ok(y),
            RowPlan::Whole(adapter) => match pair_of(adapter) {
                None => Ok(y),
                Some(pair) => {
                    let dt = x.dtype();
                    let (a, b) = (pair.a.to_dtype(dt)?, pair.b.to_dtype(dt)?);
                    Ok((y + (x.matmul(&a.t()?)?.matmul(&b.t()?)? * pair.scale)?)?)
                }
            },
            RowPlan::Rows {
                adapters,
                row_slot,
                slots,
            } => {
                let pairs: Vec<Option<&LoraPair>> = adapters.iter().map(|a| pair_of(a)).collect();
                if pairs.iter().all(Option::is_none) {
                    return Ok(y);
                }
                let y = y.contiguous()?;
                if rows_cpu_add(x, &pairs, row_slot, &y, dims)? {
                    return Ok(y);
                }
                Ok((y + rows_gathered(x, &pairs, slots, dims)?)?)
            }
        }
    }

    /// The embedding LoRA of every row: `s·B·A[:, token]` per row whose adapter has one
    /// (`[rows, hidden]`), `None` when no row's does. Differentiable for a whole-batch adapter.
    pub(crate) fn embed_delta(&self, ids: &Tensor, hidden: usize) -> Result<Option<Tensor>> {
        let delta = |pair: &LoraPair, ids: &Tensor| -> Result<Tensor> {
            let a = pair.a.index_select(ids, 1)?.t()?; // [n, r]
            let dt = a.dtype();
            Ok((a.matmul(&pair.b.to_dtype(dt)?.t()?)? * pair.scale)?)
        };
        match self {
            RowPlan::Base => Ok(None),
            RowPlan::Whole(adapter) => adapter.embed_pair().map(|p| delta(p, ids)).transpose(),
            RowPlan::Rows {
                adapters, row_slot, ..
            } => {
                if adapters.iter().all(|a| a.embed_pair().is_none()) {
                    return Ok(None);
                }
                let dev = ids.device();
                let all = ids.to_vec1::<u32>()?;
                let mut out = Tensor::zeros((all.len(), hidden), DType::F32, dev)?;
                for (k, adapter) in adapters.iter().enumerate() {
                    let Some(pair) = adapter.embed_pair() else {
                        continue;
                    };
                    let rows: Vec<u32> = (0..all.len() as u32)
                        .filter(|&r| row_slot[r as usize] == k as u32 + 1)
                        .collect();
                    if rows.is_empty() {
                        continue;
                    }
                    let toks: Vec<u32> = rows.iter().map(|&r| all[r as usize]).collect();
                    let n = rows.len();
                    let d = delta(pair, &Tensor::from_vec(toks, n, dev)?)?.to_dtype(DType::F32)?;
                    out = out.index_add(&Tensor::from_vec(rows, n, dev)?, &d, 0)?;
                }
                Ok(Some(out))
            }
        }
    }
}
