//! Linear layers that serve many LoRA adapters in one pass.
//!
//! A forward pass carries a [`BatchAdapters`]: the adapters in play and, per sequence, which
//! one it uses (or none). When one adapter covers every row, LoRA is two plain matmuls
//! (shrink x·Aᵀ to rank r, expand ·Bᵀ), which is also the differentiable path training takes.
//! Otherwise every row gets its own adapter in one kernel per projection (BGMV, Punica-style):
//! prefill and decode rows, any mix of ranks, rows without an adapter, all in the same pass.
//! On the CPU in f32 that is a single loop over rows; elsewhere A and s·B are zero-padded to
//! the largest rank, stacked, gathered per row and applied with two batched matmuls.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::error::{Error, Result};
use crate::lora::{LoraAdapter, LoraPair, Proj};
use crate::profile::{self, Phase};

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

/// Read access to the f32 data of a contiguous CPU tensor.
pub(crate) struct CpuView<'a> {
    guard: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuView<'a> {
    pub(crate) fn new(t: &'a Tensor) -> Option<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        match &*guard {
            Storage::Cpu(CpuStorage::F32(_)) => Some(CpuView { guard, start, end }),
            _ => None,
        }
    }

    pub(crate) fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => &[],
        }
    }
}

/// Σ a[i]·b[i], eight lanes at a time (vectorizes without fast-math).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// y += alpha·x.
#[inline]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += alpha * xv;
    }
}

/// How one adapter's delta is expanded from h = A·x in the per-row kernel.
enum Expand<'a> {
    /// s·Bᵀ `[r, out]`: δ += h_j · row j.
    Transposed(&'a [f32]),
    /// B `[out, r]` and s (training variables, which have no kept copy): δ_o = B_o · (s·h).
    Plain(CpuView<'a>, f32),
}

/// One adapter's data for [`RowKernel`].
struct HostPair<'a> {
    a: CpuView<'a>,
    r: usize,
    expand: Expand<'a>,
}

/// Per-row LoRA over host slices: for row i with adapter k, h = A_k·x_i, then δ_i from h.
fn row_kernel(
    xs: &[f32],
    row_slot: &[u32],
    pairs: &[Option<HostPair<'_>>],
    (inp, out): (usize, usize),
    d: &mut [f32],
) {
    let mut h = Vec::new();
    for ((&slot, xi), di) in row_slot
        .iter()
        .zip(xs.chunks_exact(inp))
        .zip(d.chunks_exact_mut(out))
    {
        let Some(Some(Some(p))) = slot.checked_sub(1).map(|k| pairs.get(k as usize)) else {
            continue;
        };
        let a = p.a.slice();
        h.clear();
        match &p.expand {
            Expand::Transposed(bt) => {
                h.extend(a.chunks_exact(inp).map(|ar| dot(ar, xi)));
                for (&hj, row) in h.iter().zip(bt.chunks_exact(out)) {
                    axpy(hj, row, di);
                }
            }
            Expand::Plain(b, scale) => {
                let (b, r) = (b.slice(), p.r);
                h.extend(a.chunks_exact(inp).map(|ar| dot(ar, xi) * scale));
                for (o, dv) in di.iter_mut().enumerate() {
                    *dv = dot(&b[o * r..(o + 1) * r], &h);
                }
            }
        }
    }
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
        let timer = profile::time(Phase::BaseMatmul);
        let mut y = x.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        drop(timer);
        let _t = profile::time(Phase::Lora);
        match plan {
            RowPlan::Base => Ok(y),
            RowPlan::Whole(adapter) => match adapter.pair(self.layer, self.proj) {
                None => Ok(y),
                Some(pair) => {
                    // shrink to rank r, then expand
                    let d = (x.matmul(&pair.a.t()?)?.matmul(&pair.b.t()?)? * pair.scale)?;
                    Ok((y + d)?)
                }
            },
            RowPlan::Rows {
                adapters,
                row_slot,
                slots,
            } => {
                let pairs: Vec<Option<&LoraPair>> = adapters
                    .iter()
                    .map(|a| a.pair(self.layer, self.proj))
                    .collect();
                if pairs.iter().all(Option::is_none) {
                    return Ok(y);
                }
                let d = match self.bgmv_cpu(x, &pairs, row_slot)? {
                    Some(d) => d,
                    None => self.bgmv_gathered(x, &pairs, slots)?,
                };
                Ok((y + d)?)
            }
        }
    }

    /// Per-row LoRA on the CPU in f32, one pass over the rows: for row i with adapter k,
    /// h = A_k·x_i (rank r_k), δ_i = s_k·B_k·h. Ranks may differ between rows; rows with no
    /// adapter (or whose adapter leaves this projection alone) get zero. `None` when the
    /// tensors are not contiguous f32 on the CPU (then [`Self::bgmv_gathered`] runs).
    /// Not differentiable: serving only (training takes [`RowPlan::Whole`]).
    fn bgmv_cpu(
        &self,
        x: &Tensor,
        pairs: &[Option<&LoraPair>],
        row_slot: &[u32],
    ) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let (out, inp) = self.weight.dims2()?;
        let x = x.contiguous()?;
        let Some(xv) = CpuView::new(&x) else {
            return Ok(None);
        };
        let mut views = Vec::with_capacity(pairs.len());
        for p in pairs {
            views.push(match p {
                None => None,
                Some(p) => {
                    let expand = match p.expand_host()? {
                        Some(bt) => Some(Expand::Transposed(bt)),
                        None => CpuView::new(&p.b).map(|b| Expand::Plain(b, p.scale as f32)),
                    };
                    match (CpuView::new(&p.a), expand) {
                        (Some(a), Some(expand)) => Some(HostPair {
                            a,
                            r: p.a.dim(0)?,
                            expand,
                        }),
                        _ => return Ok(None),
                    }
                }
            });
        }
        let xs = xv.slice();
        let rows = row_slot.len();
        if xs.len() != rows * inp {
            return Err(Error::InvalidArgument(format!(
                "{} rows of {inp} features expected, got {} values",
                rows,
                xs.len()
            )));
        }
        let mut d = vec![0f32; rows * out];
        row_kernel(xs, row_slot, &views, (inp, out), &mut d);
        Ok(Some(Tensor::from_vec(d, (rows, out), x.device())?))
    }

    /// The same with tensor ops on any device/dtype: every adapter's A and s·B zero-padded to
    /// the largest rank (padded rows of A and columns of B add nothing), stacked once with a
    /// zero slot for rows without an adapter, gathered per row, two batched matmuls.
    fn bgmv_gathered(
        &self,
        x: &Tensor,
        pairs: &[Option<&LoraPair>],
        slots: &Tensor,
    ) -> Result<Tensor> {
        let (dt, dev) = (x.dtype(), x.device());
        let (out, inp) = self.weight.dims2()?;
        let mut rank = 0;
        for p in pairs.iter().flatten() {
            rank = rank.max(p.a.dim(0)?);
        }
        let mut a = vec![Tensor::zeros((rank, inp), dt, dev)?];
        let mut b = vec![Tensor::zeros((out, rank), dt, dev)?];
        for p in pairs {
            match p {
                None => {
                    a.push(a[0].clone());
                    b.push(b[0].clone());
                }
                Some(p) => {
                    let pad = rank - p.a.dim(0)?;
                    a.push(p.a.to_dtype(dt)?.pad_with_zeros(0, 0, pad)?);
                    b.push((p.b.to_dtype(dt)? * p.scale)?.pad_with_zeros(1, 0, pad)?);
                }
            }
        }
        let a = Tensor::stack(&a, 0)?.index_select(slots, 0)?; // [rows, r, in]
        let b = Tensor::stack(&b, 0)?.index_select(slots, 0)?; // [rows, out, r]
        Ok(x.unsqueeze(1)?
            .matmul(&a.transpose(1, 2)?)?
            .matmul(&b.transpose(1, 2)?)?
            .squeeze(1)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::LoraConfig;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY)
    }

    #[test]
    fn per_row_kernels_equal_per_row_matmuls_with_mixed_ranks() -> Result<()> {
        let cfg = crate::Config::from_json(
            r#"{"model_type":"llama","hidden_size":24,"intermediate_size":40,"num_hidden_layers":1,
            "num_attention_heads":2,"vocab_size":10,"max_position_embeddings":64}"#,
        )?;
        let dev = Device::Cpu;
        let adapter = |r: usize, targets: &[Proj], seed: u64| -> Result<Arc<LoraAdapter>> {
            let vm = candle_nn::VarMap::new();
            let lc = LoraConfig::new(r, 2.0 * r as f64, targets);
            let a = LoraAdapter::trainable(lc, &cfg, &vm, &dev, DType::F32, seed)?;
            let mut t = a.named_tensors();
            for (k, v) in t.iter_mut() {
                if k.contains("lora_B") {
                    *v = Tensor::randn(0f32, 0.5, v.shape(), &dev)?;
                }
            }
            Ok(Arc::new(LoraAdapter::from_tensors(
                a.config().clone(),
                &cfg,
                t,
                &dev,
                DType::F32,
            )?))
        };
        // ranks 8, 3 and 5; the third leaves down_proj alone; the fourth holds training
        // variables (no kept s·Bᵀ: the kernel expands from B itself)
        let vars = {
            let mut t = adapter(6, &Proj::ALL, 4)?.named_tensors();
            for v in t.values_mut() {
                *v = candle_core::Var::from_tensor(v)?.as_tensor().clone();
            }
            let lc = LoraConfig::new(6, 12.0, &Proj::ALL);
            Arc::new(LoraAdapter::from_tensors(lc, &cfg, t, &dev, DType::F32)?)
        };
        let adapters = vec![
            adapter(8, &Proj::ALL, 1)?,
            adapter(3, &Proj::ALL, 2)?,
            adapter(5, &[Proj::Q, Proj::Up], 3)?,
            vars,
        ];
        let per_seq = vec![Some(0), None, Some(1), Some(2), Some(0), Some(1), Some(3)];
        let rows = [5, 1, 1, 7, 1, 3, 2]; // prefill chunks and decode rows mixed
        let plan = BatchAdapters::new(adapters.clone(), per_seq.clone())?.plan(&rows, &dev)?;
        let RowPlan::Rows {
            row_slot, slots, ..
        } = &plan
        else {
            panic!("a mixed batch must plan per-row adapters");
        };
        let n: usize = rows.iter().sum();
        for proj in [Proj::Up, Proj::Down] {
            let (out, inp) = proj.dims(&cfg);
            let lin = LoraLinear {
                weight: Tensor::randn(0f32, 1.0, (out, inp), &dev)?,
                bias: None,
                layer: 0,
                proj,
            };
            let x = Tensor::randn(0f32, 1.0, (n, inp), &dev)?;
            let pairs: Vec<_> = adapters.iter().map(|a| a.pair(0, proj)).collect();
            let cpu = lin.bgmv_cpu(&x, &pairs, row_slot)?.expect("cpu f32 path");
            let kept: Vec<bool> = pairs
                .iter()
                .flatten()
                .map(|p| p.expand_host().map(|e| e.is_some()))
                .collect::<Result<_>>()?;
            assert_eq!(
                kept.last(),
                Some(&false),
                "no kept copy of training variables"
            );
            assert!(kept[..kept.len() - 1].iter().all(|&k| k));
            let gathered = lin.bgmv_gathered(&x, &pairs, slots)?;
            // reference: each sequence's rows alone through plain matmuls
            let mut start = 0;
            for (s, &len) in rows.iter().enumerate() {
                let xs = x.narrow(0, start, len)?;
                let want = match per_seq[s].and_then(|k| adapters[k].pair(0, proj)) {
                    Some(p) => (xs.matmul(&p.a.t()?)?.matmul(&p.b.t()?)? * p.scale)?,
                    None => Tensor::zeros((len, out), DType::F32, &dev)?,
                };
                for got in [&cpu, &gathered] {
                    let d = max_diff(&got.narrow(0, start, len)?, &want);
                    assert!(d < 1e-4, "{proj:?} seq {s}: diff {d}");
                }
                start += len;
            }
            let plain = lin.forward(&x, &plan)?;
            let d = max_diff(&(plain - x.matmul(&lin.weight.t()?)?)?, &cpu);
            assert!(d < 1e-4, "forward adds the per-row delta: {d}");
        }
        Ok(())
    }
}
