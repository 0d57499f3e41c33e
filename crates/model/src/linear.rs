//! Linear layers that serve many LoRA adapters in one pass.
//!
//! A forward pass carries a [`BatchAdapters`]: the adapters in play and, per sequence, which
//! one it uses (or none). Internally rows (tokens) are grouped into segments that share an
//! adapter (SGMV-style): gather the segment's rows, shrink (x·Aᵀ, to rank r), expand (·Bᵀ),
//! scale, and scatter-add into the base output y = x·Wᵀ + b. When one adapter covers every
//! row the gather/scatter is skipped, which is also the path training takes.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::lora::{LoraAdapter, Proj};

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
        let total: usize = rows.iter().sum();
        let mut segments = Vec::new();
        for (a, adapter) in self.adapters.iter().enumerate() {
            let mut idx = Vec::new();
            let mut start = 0u32;
            for (s, &n) in rows.iter().enumerate() {
                if self.per_seq[s] == Some(a) {
                    idx.extend(start..start + n as u32);
                }
                start += n as u32;
            }
            if idx.is_empty() {
                continue;
            }
            let rows = if idx.len() == total {
                None
            } else {
                let n = idx.len();
                Some(Tensor::from_vec(idx, n, device)?)
            };
            segments.push(Segment {
                adapter: adapter.clone(),
                rows,
            });
        }
        // One row per sequence (a decode step) with several adapters: gather per row (BGMV).
        let per_row = if segments.len() > 1 && rows.iter().all(|&n| n == 1) {
            Some(
                self.per_seq
                    .iter()
                    .map(|a| a.map(|i| self.adapters[i].clone()))
                    .collect(),
            )
        } else {
            None
        };
        Ok(RowPlan { segments, per_row })
    }
}

/// Rows grouped by adapter, computed once per forward and shared by every layer.
pub(crate) struct RowPlan {
    segments: Vec<Segment>,
    /// Set for decode steps that mix adapters: the adapter of every row.
    per_row: Option<Vec<Option<Arc<LoraAdapter>>>>,
}

struct Segment {
    adapter: Arc<LoraAdapter>,
    /// Row indices, or `None` when the segment is every row.
    rows: Option<Tensor>,
}

enum Bgmv {
    Delta(Tensor),
    Nothing,
    MixedRanks,
}

/// A projection `y = x·Wᵀ (+ b)` plus per-row LoRA deltas.
#[derive(Clone, Debug)]
pub(crate) struct LoraLinear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    layer: usize,
    proj: Proj,
}

impl LoraLinear {
    pub(crate) fn new(
        vb: candle_nn::VarBuilder,
        cfg: &crate::Config,
        layer: usize,
        proj: Proj,
        bias: bool,
    ) -> Result<Self> {
        let (out, inp) = proj.dims(cfg);
        let vb = vb.pp(proj.name());
        let weight = vb.get((out, inp), "weight")?;
        let bias = if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        };
        Ok(LoraLinear {
            weight,
            bias,
            layer,
            proj,
        })
    }

    /// x: [rows, in] → [rows, out].
    pub(crate) fn forward(&self, x: &Tensor, plan: &RowPlan) -> Result<Tensor> {
        let mut y = x.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(rows) = &plan.per_row {
            match self.bgmv(x, rows)? {
                Bgmv::Delta(d) => return Ok((y + d)?),
                Bgmv::Nothing => return Ok(y),
                Bgmv::MixedRanks => {}
            }
        }
        for seg in &plan.segments {
            let Some(pair) = seg.adapter.pair(self.layer, self.proj) else {
                continue;
            };
            let xs = match &seg.rows {
                None => x.clone(),
                Some(idx) => x.index_select(idx, 0)?,
            };
            // shrink to rank r, then expand
            let d = (xs.matmul(&pair.a.t()?)?.matmul(&pair.b.t()?)? * pair.scale)?;
            y = match &seg.rows {
                None => (y + d)?,
                Some(idx) => y.index_add(idx, &d, 0)?,
            };
        }
        Ok(y)
    }

    /// Per-row LoRA in one gather: stack each row's A [r, in] and B [out, r] (zeros for rows
    /// without this projection adapted), two batched matmuls, one per-row scale: a handful of
    /// ops whatever the number of adapters, instead of five per adapter.
    fn bgmv(&self, x: &Tensor, rows: &[Option<Arc<LoraAdapter>>]) -> Result<Bgmv> {
        let pairs: Vec<_> = rows
            .iter()
            .map(|a| a.as_ref().and_then(|a| a.pair(self.layer, self.proj)))
            .collect();
        let Some(first) = pairs.iter().flatten().next() else {
            return Ok(Bgmv::Nothing);
        };
        let r = first.a.dim(0)?;
        if pairs.iter().flatten().any(|p| p.a.dim(0).ok() != Some(r)) {
            return Ok(Bgmv::MixedRanks);
        }
        let (dt, dev) = (x.dtype(), x.device());
        let (out, inp) = (self.weight.dim(0)?, self.weight.dim(1)?);
        let za = Tensor::zeros((r, inp), dt, dev)?;
        let zb = Tensor::zeros((out, r), dt, dev)?;
        let a: Vec<&Tensor> = pairs.iter().map(|p| p.map_or(&za, |p| &p.a)).collect();
        let b: Vec<&Tensor> = pairs.iter().map(|p| p.map_or(&zb, |p| &p.b)).collect();
        let scales: Vec<f32> = pairs
            .iter()
            .map(|p| p.map_or(0.0, |p| p.scale as f32))
            .collect();
        let n = scales.len();
        let scales = Tensor::from_vec(scales, (n, 1, 1), dev)?.to_dtype(dt)?;
        let a = Tensor::stack(&a, 0)?; // [n, r, in]
        let b = Tensor::stack(&b, 0)?; // [n, out, r]
        let d = x
            .unsqueeze(1)?
            .matmul(&a.transpose(1, 2)?)?
            .matmul(&b.transpose(1, 2)?)?;
        Ok(Bgmv::Delta(d.broadcast_mul(&scales)?.squeeze(1)?))
    }

    /// W + s·B·A (computed in f32).
    pub(crate) fn merged(&self, adapter: &LoraAdapter) -> Result<Self> {
        let Some(pair) = adapter.pair(self.layer, self.proj) else {
            return Ok(self.clone());
        };
        let dt = self.weight.dtype();
        let f = candle_core::DType::F32;
        let delta = (pair.b.to_dtype(f)?.matmul(&pair.a.to_dtype(f)?)? * pair.scale)?;
        let weight = (self.weight.to_dtype(f)? + delta)?.to_dtype(dt)?;
        Ok(LoraLinear {
            weight,
            ..self.clone()
        })
    }
}
