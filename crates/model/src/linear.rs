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

use crate::dense::{Dense, DenseOp, WeightFormat, bf16, fma8};
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

/// Read access to the bf16 data (as bits) of a contiguous CPU tensor.
pub(crate) struct Bf16View<'a> {
    guard: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> Bf16View<'a> {
    pub(crate) fn new(t: &'a Tensor) -> Option<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        match &*guard {
            Storage::Cpu(CpuStorage::BF16(_)) => Some(Bf16View { guard, start, end }),
            _ => None,
        }
    }

    pub(crate) fn bits(&self) -> &[u16] {
        use half::slice::HalfFloatSliceExt;
        match &*self.guard {
            Storage::Cpu(CpuStorage::BF16(v)) => v[self.start..self.end].reinterpret_cast(),
            _ => &[],
        }
    }
}

/// Σ a[i]·b[i], eight lanes at a time (vectorizes without fast-math).
#[inline(always)]
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
#[inline(always)]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += alpha * xv;
    }
}

/// One adapter's data for [`row_kernel`], borrowed from its pair.
enum HostPair<'a> {
    /// A prepared serving adapter: bf16 A `[r, in]` and Bᵀ `[r, out]`, and s.
    Packed {
        a: &'a [u16],
        bt: &'a [u16],
        scale: f32,
    },
    /// f32 A `[r, in]` and B `[out, r]`, and s (training variables and unprepared adapters,
    /// which have no packed copy): δ_o = B_o · (s·A·x).
    Plain {
        a: &'a [f32],
        b: &'a [f32],
        r: usize,
        scale: f32,
    },
}

impl HostPair<'_> {
    fn rank(&self, inp: usize) -> usize {
        match self {
            HostPair::Packed { a, .. } => a.len() / inp.max(1),
            HostPair::Plain { r, .. } => *r,
        }
    }
}

/// Multiply-adds below which a projection's per-row LoRA stays on the calling thread: a
/// rayon fork/join costs a few microseconds, about what 20k multiply-adds take.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// One row's work: its adapter (index into the pairs), its input and its output.
type RowItem<'a> = (usize, &'a [f32], &'a mut [f32]);

/// Per-row LoRA over host slices: for row i with adapter k, h = s_k·A_k·x_i, then
/// y_i += B_k·h. The rows are taken grouped by adapter, so that an adapter's weights are read
/// from memory once per projection and stay in cache for its other rows (a batch of many
/// adapters is bound by reading them). Rows are independent, so a large batch is split into
/// runs on the rayon pool. A row's arithmetic is the same whatever the order, the split or
/// the other rows of the batch, so its result is too.
fn row_kernel(
    xs: &[f32],
    row_slot: &[u32],
    pairs: &[Option<HostPair<'_>>],
    (inp, out): (usize, usize),
    y: &mut [f32],
) {
    let mut items: Vec<RowItem<'_>> = row_slot
        .iter()
        .zip(xs.chunks_exact(inp))
        .zip(y.chunks_exact_mut(out))
        .filter_map(|((&slot, xi), yi)| {
            let k = slot.checked_sub(1)? as usize;
            pairs.get(k)?.as_ref()?;
            Some((k, xi, yi))
        })
        .collect();
    items.sort_by_key(|it| it.0); // stable: a prefill's rows stay in order
    let macs: usize = items
        .iter()
        .map(|it| pairs[it.0].as_ref().map_or(0, |p| p.rank(inp)) * (inp + out))
        .sum();
    let threads = rayon::current_num_threads();
    if threads < 2 || items.len() < 2 || macs < PARALLEL_MIN_MACS {
        rows_kernel(&mut items, pairs, (inp, out));
        return;
    }
    // a few runs per thread, so that an uneven mix of ranks still balances
    let per_run = items.len().div_ceil(threads * 4).max(1);
    use rayon::prelude::*;
    items
        .par_chunks_mut(per_run)
        .for_each(|run| rows_kernel(run, pairs, (inp, out)));
}

/// [`row_kernel`] for one run of rows on the calling thread, compiled for the widest SIMD the
/// CPU has (picked at run time by [`pulp`]: AVX2 on x86-64 where present, while the build
/// itself targets baseline SSE2).
fn rows_kernel(items: &mut [RowItem<'_>], pairs: &[Option<HostPair<'_>>], dims: (usize, usize)) {
    pulp::Arch::new().dispatch(Rows { items, pairs, dims })
}

/// The arguments of [`rows_kernel`].
struct Rows<'a, 'r, 'p> {
    items: &'a mut [RowItem<'r>],
    pairs: &'a [Option<HostPair<'p>>],
    dims: (usize, usize),
}

impl pulp::WithSimd for Rows<'_, '_, '_> {
    type Output = ();

    // Everything below is inlined into the dispatched function and written as plain loops
    // over fixed-size arrays (no closures, which would not inherit its target features) for
    // LLVM to vectorize.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Rows {
            items,
            pairs,
            dims: (inp, out),
        } = self;
        let mut h = Vec::new();
        let mut rest = items;
        while let Some(first) = rest.first() {
            let k = first.0;
            let n = rest.iter().take_while(|it| it.0 == k).count();
            let (group, tail) = rest.split_at_mut(n);
            rest = tail;
            match pairs.get(k) {
                Some(Some(HostPair::Packed { a, bt, scale })) => {
                    // rows of one adapter RB at a time: each weight read serves RB rows
                    let packed = PackedRef {
                        a,
                        bt,
                        scale: *scale,
                        inp,
                        out,
                    };
                    let mut blocks = group.chunks_exact_mut(RB);
                    for block in blocks.by_ref() {
                        packed_rows::<S, RB>(simd, &packed, block, &mut h);
                    }
                    for row in blocks.into_remainder().chunks_mut(1) {
                        packed_rows::<S, 1>(simd, &packed, row, &mut h);
                    }
                }
                Some(Some(HostPair::Plain { a, b, r, scale })) => {
                    for (_, xi, yi) in group.iter_mut() {
                        h.clear();
                        for ar in a.chunks_exact(inp) {
                            h.push(dot(ar, xi) * scale);
                        }
                        for (o, yv) in yi.iter_mut().enumerate() {
                            *yv += dot(&b[o * *r..(o + 1) * *r], &h);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Rows of one adapter taken together by the packed kernel.
const RB: usize = 4;

/// A packed pair with the projection's shape.
struct PackedRef<'a> {
    a: &'a [u16],
    bt: &'a [u16],
    scale: f32,
    inp: usize,
    out: usize,
}

/// N rows (`rows.len() == N`) of one packed adapter: h = s·A·x per row, then y += Σ_j h_j·Bᵀ_j;
/// each weight chunk is read once for all N rows.
#[inline(always)]
fn packed_rows<S: pulp::Simd, const N: usize>(
    simd: S,
    p: &PackedRef<'_>,
    rows: &mut [RowItem<'_>],
    h: &mut Vec<f32>,
) {
    let (inp, out) = (p.inp, p.out);
    let r = p.a.len() / inp.max(1);
    h.clear();
    h.resize(N * r, 0.0);
    let mut xs: [(&[[f32; 8]], &[f32]); N] = [(&[], &[]); N];
    for (x, row) in xs.iter_mut().zip(rows.iter()) {
        *x = row.1.as_chunks::<8>();
    }
    // shrink: h[i][j] = s·(A_j · x_i)
    for (j, aj) in p.a.chunks_exact(inp).enumerate() {
        let (ac, at) = aj.as_chunks::<8>();
        let mut acc = [[0f32; 8]; N];
        for (c, a) in ac.iter().enumerate() {
            let a8 = widen8(a);
            for i in 0..N {
                acc[i] = fma8(simd, a8, xs[i].0[c], acc[i]);
            }
        }
        for i in 0..N {
            let mut sum = 0f32;
            for v in acc[i] {
                sum += v;
            }
            for (&a, &x) in at.iter().zip(xs[i].1) {
                sum += bf16(a) * x;
            }
            h[i * r + j] = sum * p.scale;
        }
    }
    // expand: y[i] += h[i][j]·Bᵀ_j for j in order, each Bᵀ chunk read once for all N rows;
    // per row the same operations in the same order whatever N, so a row's result does not
    // depend on the rows beside it
    let mut ys: [&mut [[f32; 8]]; N] = std::array::from_fn(|_| Default::default());
    let mut yt: [&mut [f32]; N] = std::array::from_fn(|_| Default::default());
    for ((yc, ytl), row) in ys.iter_mut().zip(yt.iter_mut()).zip(rows.iter_mut()) {
        (*yc, *ytl) = row.2.as_chunks_mut::<8>();
    }
    for (j, btj) in p.bt.chunks_exact(out).enumerate() {
        let (bc, btt) = btj.as_chunks::<8>();
        for (c, b) in bc.iter().enumerate() {
            let b8 = widen8(b);
            for i in 0..N {
                ys[i][c] = fma8(simd, [h[i * r + j]; 8], b8, ys[i][c]);
            }
        }
        for i in 0..N {
            let hij = h[i * r + j];
            for (y, &b) in yt[i].iter_mut().zip(btt) {
                *y += hij * bf16(b);
            }
        }
    }
}

/// Eight bf16 as f32.
#[inline(always)]
fn widen8(b: &[u16; 8]) -> [f32; 8] {
    let mut v = [0f32; 8];
    for l in 0..8 {
        v[l] = bf16(b[l]);
    }
    v
}

/// [`row_kernel`] as an in-place op on the base matmul's output, which candle hands over
/// with its storage locked for writing.
struct AddRows<'a, 'p> {
    xs: &'a [f32],
    row_slot: &'a [u32],
    pairs: &'a [Option<HostPair<'p>>],
    dims: (usize, usize),
}

impl candle_core::InplaceOp1 for AddRows<'_, '_> {
    fn name(&self) -> &'static str {
        "lora-rows"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(v), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            return Err(candle_core::Error::Msg(
                "lora-rows: the output must be contiguous f32".into(),
            ));
        };
        let y = &mut v[start..end];
        if y.len() != self.row_slot.len() * self.dims.1 {
            return Err(candle_core::Error::Msg(format!(
                "lora-rows: {} output values for {} rows of {}",
                y.len(),
                self.row_slot.len(),
                self.dims.1
            )));
        }
        row_kernel(self.xs, self.row_slot, self.pairs, self.dims, y);
        Ok(())
    }
}

/// The base weight of a projection.
#[derive(Clone, Debug)]
pub(crate) enum BaseWeight {
    /// A tensor: a training variable (read live, so each optimiser step shows), or a frozen
    /// weight off the CPU / in a compute dtype other than f32.
    Tensor {
        /// `W`, `[out, in]` as Hugging Face stores it; for a frozen weight the transposed
        /// view of `wt`.
        weight: Tensor,
        /// `Wᵀ`, `[in, out]`, contiguous, when frozen: candle's gemm then reads its right-hand
        /// side row by row (1.5–4.8× faster at 2–16 rows than through a transposed view).
        wt: Option<Tensor>,
    },
    /// A frozen weight on the CPU, held in its [`WeightFormat`] and multiplied by the dense
    /// kernel (`dense.rs`).
    Dense(Arc<Dense>),
}

/// A projection `y = x·Wᵀ (+ b)` plus per-row LoRA deltas.
#[derive(Clone, Debug)]
pub(crate) struct LoraLinear {
    pub(crate) base: BaseWeight,
    pub(crate) bias: Option<Tensor>,
    out: usize,
    inp: usize,
    layer: usize,
    proj: Proj,
}

impl LoraLinear {
    /// Reads `{proj}.weight` (and `.bias`); a frozen weight on the CPU is held in `format`.
    pub(crate) fn new(
        vb: candle_nn::VarBuilder,
        cfg: &crate::Config,
        layer: usize,
        proj: Proj,
        bias: bool,
        format: Option<WeightFormat>,
    ) -> Result<Self> {
        let (out, inp) = proj.dims(cfg);
        let vb = vb.pp(proj.name());
        let weight = vb.get((out, inp), "weight")?;
        let bias = if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        };
        match format {
            Some(f) if weight.device().is_cpu() && !weight.is_variable() => {
                let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
                Ok(Self::dense(
                    Arc::new(Dense::from_tensor(&weight, f)?),
                    bias,
                    layer,
                    proj,
                ))
            }
            _ => Self::from_weight(weight, bias, layer, proj),
        }
    }

    /// A projection over a dense weight.
    pub(crate) fn dense(d: Arc<Dense>, bias: Option<Tensor>, layer: usize, proj: Proj) -> Self {
        let (out, inp) = d.dims();
        LoraLinear {
            base: BaseWeight::Dense(d),
            bias,
            out,
            inp,
            layer,
            proj,
        }
    }

    /// A projection of the tensor `weight` `[out, in]`; a frozen weight is laid out
    /// transposed.
    pub(crate) fn from_weight(
        weight: Tensor,
        bias: Option<Tensor>,
        layer: usize,
        proj: Proj,
    ) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let (weight, wt) = if weight.is_variable() {
            (weight, None)
        } else {
            let wt = weight.t()?.contiguous()?;
            (wt.t()?, Some(wt))
        };
        Ok(LoraLinear {
            base: BaseWeight::Tensor { weight, wt },
            bias,
            out,
            inp,
            layer,
            proj,
        })
    }

    /// `W` `[out, in]` (for a dense weight: its values as f32, a copy).
    pub(crate) fn weight(&self) -> Result<Tensor> {
        match &self.base {
            BaseWeight::Tensor { weight, .. } => Ok(weight.clone()),
            BaseWeight::Dense(d) => d.to_tensor(&candle_core::Device::Cpu),
        }
    }

    /// Bytes of the base weight in memory.
    pub(crate) fn weight_bytes(&self) -> usize {
        match &self.base {
            BaseWeight::Tensor { weight, .. } => {
                weight.elem_count() * weight.dtype().size_in_bytes()
            }
            BaseWeight::Dense(d) => d.bytes(),
        }
    }

    /// `x·Wᵀ` `[rows, in]` → `[rows, out]`, without bias or adapters.
    fn base_matmul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.base {
            BaseWeight::Dense(d) if x.device().is_cpu() && x.dtype() == DType::F32 => x
                .contiguous()?
                .apply_op1_arc(Arc::new(Box::new(DenseOp(d.clone()))))?,
            BaseWeight::Dense(d) => {
                x.matmul(&d.to_tensor(x.device())?.to_dtype(x.dtype())?.t()?)?
            }
            BaseWeight::Tensor { wt: Some(wt), .. } => x.matmul(wt)?,
            BaseWeight::Tensor { weight, .. } => x.matmul(&weight.t()?)?,
        })
    }

    /// x: [rows, in] → [rows, out].
    pub(crate) fn forward(&self, x: &Tensor, plan: &RowPlan) -> Result<Tensor> {
        let timer = profile::time(Phase::BaseMatmul);
        let mut y = self.base_matmul(x)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        drop(timer);
        let _t = profile::time(Phase::Lora);
        match plan {
            RowPlan::Base => Ok(y),
            RowPlan::Whole(adapter) => match adapter.pair(self.layer, self.proj) {
                None => Ok(y),
                // a serving adapter: the per-row kernel, as when it shares a batch (fewer ops
                // than two matmuls, and a row's result the same alone or batched)
                Some(pair)
                    if pair.packed().is_some()
                        && self.bgmv_cpu_add(x, &[Some(pair)], &vec![1; x.dim(0)?], &y)? =>
                {
                    Ok(y)
                }
                Some(pair) => {
                    // shrink to rank r, then expand (in the activations' dtype)
                    let dt = x.dtype();
                    let (a, b) = (pair.a.to_dtype(dt)?, pair.b.to_dtype(dt)?);
                    let d = (x.matmul(&a.t()?)?.matmul(&b.t()?)? * pair.scale)?;
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
                if self.bgmv_cpu_add(x, &pairs, row_slot, &y)? {
                    return Ok(y);
                }
                let d = self.bgmv_gathered(x, &pairs, slots)?;
                Ok((y + d)?)
            }
        }
    }

    /// [`rows_cpu_add`] for this projection.
    fn bgmv_cpu_add(
        &self,
        x: &Tensor,
        pairs: &[Option<&LoraPair>],
        row_slot: &[u32],
        y: &Tensor,
    ) -> Result<bool> {
        rows_cpu_add(x, pairs, row_slot, y, (self.inp, self.out))
    }

    /// [`rows_gathered`] for this projection.
    fn bgmv_gathered(
        &self,
        x: &Tensor,
        pairs: &[Option<&LoraPair>],
        slots: &Tensor,
    ) -> Result<Tensor> {
        rows_gathered(x, pairs, slots, (self.inp, self.out))
    }

    /// W + s·B·A (computed in f32; a dense weight is stored again in its format).
    pub(crate) fn merged(&self, adapter: &LoraAdapter) -> Result<Self> {
        let Some(pair) = adapter.pair(self.layer, self.proj) else {
            return Ok(self.clone());
        };
        let f = candle_core::DType::F32;
        let (a, b) = (pair.a.to_dtype(f)?, pair.b.to_dtype(f)?);
        match &self.base {
            BaseWeight::Dense(d) => {
                let delta = (b.matmul(&a)? * pair.scale)?.to_device(&candle_core::Device::Cpu)?;
                let w = (d.to_tensor(&candle_core::Device::Cpu)? + delta)?;
                let d = Dense::from_tensor(&w, d.format())?;
                Ok(Self::dense(
                    Arc::new(d),
                    self.bias.clone(),
                    self.layer,
                    self.proj,
                ))
            }
            // Wᵀ + (s·B·A)ᵀ = Wᵀ + s·Aᵀ·Bᵀ: merged in the transposed layout, no copy to turn
            BaseWeight::Tensor { wt: Some(wt), .. } => {
                let dt = wt.dtype();
                let delta_t = (a.t()?.matmul(&b.t()?)? * pair.scale)?;
                let wt = (wt.to_dtype(f)? + delta_t)?.to_dtype(dt)?.contiguous()?;
                Ok(LoraLinear {
                    base: BaseWeight::Tensor {
                        weight: wt.t()?,
                        wt: Some(wt),
                    },
                    ..self.clone()
                })
            }
            BaseWeight::Tensor { weight, wt: None } => {
                let dt = weight.dtype();
                let delta = (b.matmul(&a)? * pair.scale)?;
                let weight = (weight.to_dtype(f)? + delta)?.to_dtype(dt)?;
                Self::from_weight(weight, self.bias.clone(), self.layer, self.proj)
            }
        }
    }
}

/// Per-row LoRA on the CPU in f32, one pass over the rows, added in place to `y`
/// `[rows, out]` (the fresh output of the base matmul): for row i with adapter k,
/// h = s_k·A_k·x_i (rank r_k), y_i += B_k·h. Ranks may differ between rows; rows with no
/// adapter (or whose adapter leaves this module alone) are left as they are. `false` (and `y`
/// untouched) when the tensors are not contiguous f32 on the CPU; then [`rows_gathered`]
/// runs. Not differentiable: serving only (training takes [`RowPlan::Whole`]).
pub(crate) fn rows_cpu_add(
    x: &Tensor,
    pairs: &[Option<&LoraPair>],
    row_slot: &[u32],
    y: &Tensor,
    (inp, out): (usize, usize),
) -> Result<bool> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || y.dtype() != DType::F32 {
        return Ok(false);
    }
    let x = x.contiguous()?;
    let Some(xv) = CpuView::new(&x) else {
        return Ok(false);
    };
    // read guards on the data of every pair first (f32 A and B of pairs without a
    // serving layout, bf16 A and Bᵀ of the others), then plain slices, which the kernel's
    // threads share
    enum Guards<'a> {
        Plain(CpuView<'a>, CpuView<'a>),
        Packed(Bf16View<'a>, Bf16View<'a>),
    }
    let mut views = Vec::with_capacity(pairs.len());
    for p in pairs {
        views.push(match p {
            None => None,
            Some(p) => match p.packed() {
                Some(k) => match (Bf16View::new(&k.a), Bf16View::new(&k.bt)) {
                    (Some(a), Some(bt)) => Some(Guards::Packed(a, bt)),
                    _ => return Ok(false),
                },
                None => match (CpuView::new(&p.a), CpuView::new(&p.b)) {
                    (Some(a), Some(b)) => Some(Guards::Plain(a, b)),
                    _ => return Ok(false),
                },
            },
        });
    }
    let mut host = Vec::with_capacity(pairs.len());
    for (p, v) in pairs.iter().zip(&views) {
        host.push(match (p, v) {
            (Some(p), Some(Guards::Plain(a, b))) => Some(HostPair::Plain {
                a: a.slice(),
                b: b.slice(),
                r: p.a.dim(0)?,
                scale: p.scale as f32,
            }),
            (Some(p), Some(Guards::Packed(a, bt))) => Some(HostPair::Packed {
                a: a.bits(),
                bt: bt.bits(),
                scale: p.scale as f32,
            }),
            _ => None,
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
    if y.dims() != [rows, out] || !y.is_contiguous() {
        return Ok(false);
    }
    y.inplace_op1(&AddRows {
        xs,
        row_slot,
        pairs: &host,
        dims: (inp, out),
    })?;
    Ok(true)
}

/// The same with tensor ops on any device/dtype: every adapter's A and s·B zero-padded to
/// the largest rank (padded rows of A and columns of B add nothing), stacked once with a
/// zero slot for rows without an adapter, gathered per row, two batched matmuls.
pub(crate) fn rows_gathered(
    x: &Tensor,
    pairs: &[Option<&LoraPair>],
    slots: &Tensor,
    (inp, out): (usize, usize),
) -> Result<Tensor> {
    let (dt, dev) = (x.dtype(), x.device());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::LoraConfig;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY)
    }

    /// Packed pairs with odd shapes (vector tails everywhere), ranks 16 and 3.
    fn odd_packs(inp: usize, out: usize) -> Vec<(Vec<u16>, Vec<u16>)> {
        let val = |i: usize, k: usize| {
            let v = ((i * 2654435761 + k * 40503) % 1000) as f32 / 500.0 - 1.0;
            half::bf16::from_f32(v).to_bits()
        };
        [16, 3, 16, 16, 3]
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                (
                    (0..r * inp).map(|i| val(i, k)).collect(),
                    (0..r * out).map(|i| val(i + 7, k + 11)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_row_does_not_depend_on_the_rows_beside_it() {
        let (inp, out) = (21, 37);
        let packs = odd_packs(inp, out);
        let mut pairs: Vec<Option<HostPair<'_>>> = packs
            .iter()
            .map(|(a, bt)| Some(HostPair::Packed { a, bt, scale: 0.75 }))
            .collect();
        pairs.push(None); // an adapter that leaves this projection alone
        // groups of 1..=6 rows per adapter (blocks of RB and remainders), interleaved, some
        // rows without an adapter
        let row_slot: Vec<u32> = (0..96u32)
            .map(|i| match i % 7 {
                6 => 0,
                _ => (i * 5 / 3) % 6 + 1,
            })
            .collect();
        let rows = row_slot.len();
        let xs: Vec<f32> = (0..rows * inp)
            .map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0)
            .collect();
        let y0: Vec<f32> = (0..rows * out).map(|i| (i % 13) as f32 * 0.5).collect();
        // the whole batch, split across four threads
        let mut batch = y0.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("a thread pool");
        assert!(
            rows * 16 * (inp + out) >= PARALLEL_MIN_MACS,
            "the batch must split"
        );
        pool.install(|| row_kernel(&xs, &row_slot, &pairs, (inp, out), &mut batch));
        // every row alone
        for i in 0..rows {
            let mut alone = y0[i * out..(i + 1) * out].to_vec();
            row_kernel(
                &xs[i * inp..(i + 1) * inp],
                &row_slot[i..=i],
                &pairs,
                (inp, out),
                &mut alone,
            );
            let got = &batch[i * out..(i + 1) * out];
            assert!(
                got.iter()
                    .zip(&alone)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "row {i} (slot {}) differs batched and alone",
                row_slot[i]
            );
            let untouched = matches!(row_slot[i], 0 | 6);
            assert_eq!(got == &y0[i * out..(i + 1) * out], untouched, "row {i}");
        }
    }

    /// A one-layer Llama config small enough for exact checks.
    fn tiny_config() -> Result<crate::Config> {
        crate::Config::from_json(
            r#"{"model_type":"llama","hidden_size":24,"intermediate_size":40,"num_hidden_layers":1,
            "num_attention_heads":2,"vocab_size":10,"max_position_embeddings":64}"#,
        )
    }

    #[test]
    fn a_frozen_weight_is_held_once_transposed_and_a_variable_is_read_live() -> Result<()> {
        let cfg = tiny_config()?;
        let dev = Device::Cpu;
        let (out, inp) = Proj::Up.dims(&cfg);
        let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (5, inp), &dev)?;
        let want = x.matmul(&w.t()?.contiguous()?)?;
        // frozen: Wᵀ contiguous, and `weight` a view of that same storage
        let lin = LoraLinear::from_weight(w.copy()?, None, 0, Proj::Up)?;
        let BaseWeight::Tensor {
            weight,
            wt: Some(wt),
        } = &lin.base
        else {
            panic!("a frozen weight is transposed");
        };
        assert!(wt.is_contiguous() && wt.dims() == [inp, out]);
        assert!(
            !weight.is_contiguous(),
            "weight is the view, not a second copy"
        );
        assert_eq!(max_diff(weight, &w), 0.0);
        assert!(max_diff(&lin.forward(&x, &RowPlan::Base)?, &want) < 1e-5);
        // merged in the transposed layout: W + s·B·A, and the same outputs as unmerged
        let vm = candle_nn::VarMap::new();
        let lc = LoraConfig::new(4, 8.0, &[Proj::Up]);
        let mut t =
            LoraAdapter::trainable(lc.clone(), &cfg, &vm, &dev, DType::F32, 9)?.named_tensors();
        for (k, v) in t.iter_mut() {
            if k.contains("lora_B") {
                *v = Tensor::randn(0f32, 0.5, v.shape(), &dev)?;
            }
        }
        let adapter = LoraAdapter::from_tensors(lc, &cfg, t, &dev, DType::F32)?;
        let pair = adapter.pair(0, Proj::Up).expect("up_proj is targeted");
        let merged = lin.merged(&adapter)?;
        assert!(
            matches!(&merged.base, BaseWeight::Tensor { wt: Some(t), .. } if t.is_contiguous())
        );
        let delta = (pair.b.matmul(&pair.a)? * pair.scale)?;
        assert!(max_diff(&merged.weight()?, &(&w + &delta)?) < 1e-5);
        // a dense weight merges the same way, in its own format
        let dense = LoraLinear::dense(
            Arc::new(Dense::from_tensor(&w, WeightFormat::F32)?),
            None,
            0,
            Proj::Up,
        );
        let dm = dense.merged(&adapter)?;
        assert!(matches!(dm.base, BaseWeight::Dense(_)));
        assert!(max_diff(&dm.weight()?, &(&w + delta)?) < 1e-5);
        assert!(
            max_diff(
                &dm.forward(&x, &RowPlan::Base)?,
                &merged.forward(&x, &RowPlan::Base)?
            ) < 1e-4
        );
        let unmerged = lin.forward(&x, &RowPlan::Whole(Arc::new(adapter.clone())))?;
        assert!(max_diff(&merged.forward(&x, &RowPlan::Base)?, &unmerged) < 1e-4);
        // a variable (a base model being trained) is not copied: a step of the optimiser shows
        let var = candle_core::Var::from_tensor(&w)?;
        let trained = LoraLinear::from_weight(var.as_tensor().clone(), None, 0, Proj::Up)?;
        assert!(matches!(trained.base, BaseWeight::Tensor { wt: None, .. }));
        var.set(&(&w * 2.0)?)?;
        let d = max_diff(&trained.forward(&x, &RowPlan::Base)?, &(&want * 2.0)?);
        assert!(d < 1e-4, "the forward reads the variable as it is now: {d}");
        Ok(())
    }

    #[test]
    fn per_row_kernels_equal_per_row_matmuls_with_mixed_ranks() -> Result<()> {
        let cfg = tiny_config()?;
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
            let mut a = LoraAdapter::from_tensors(a.config().clone(), &cfg, t, &dev, DType::F32)?;
            a.prepare_serving()?;
            Ok(Arc::new(a))
        };
        // ranks 8, 3 and 5; the third leaves down_proj alone; the fourth holds training
        // variables (no packed copy: the kernel reads their f32 A and B)
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
            let lin = LoraLinear::from_weight(
                Tensor::randn(0f32, 1.0, (out, inp), &dev)?,
                None,
                0,
                proj,
            )?;
            let x = Tensor::randn(0f32, 1.0, (n, inp), &dev)?;
            let pairs: Vec<_> = adapters.iter().map(|a| a.pair(0, proj)).collect();
            let cpu = Tensor::zeros((n, out), DType::F32, &dev)?;
            assert!(
                lin.bgmv_cpu_add(&x, &pairs, row_slot, &cpu)?,
                "cpu f32 path"
            );
            let kept: Vec<bool> = pairs
                .iter()
                .flatten()
                .map(|p| p.packed().is_some())
                .collect();
            assert_eq!(
                kept.last(),
                Some(&false),
                "no packed copy of training variables"
            );
            assert!(kept[..kept.len() - 1].iter().all(|&k| k));
            let gathered = lin.bgmv_gathered(&x, &pairs, slots)?;
            // reference: each sequence's rows alone through plain matmuls
            let mut start = 0;
            for (s, &len) in rows.iter().enumerate() {
                let xs = x.narrow(0, start, len)?;
                let want = match per_seq[s].and_then(|k| adapters[k].pair(0, proj)) {
                    Some(p) => {
                        let (a, b) = (p.a.to_dtype(DType::F32)?, p.b.to_dtype(DType::F32)?);
                        (xs.matmul(&a.t()?)?.matmul(&b.t()?)? * p.scale)?
                    }
                    None => Tensor::zeros((len, out), DType::F32, &dev)?,
                };
                for got in [&cpu, &gathered] {
                    let d = max_diff(&got.narrow(0, start, len)?, &want);
                    assert!(d < 1e-4, "{proj:?} seq {s}: diff {d}");
                }
                start += len;
            }
            let plain = lin.forward(&x, &plan)?;
            let d = max_diff(&(plain - x.matmul(&lin.weight()?.t()?)?)?, &cpu);
            assert!(d < 1e-4, "forward adds the per-row delta: {d}");
        }
        Ok(())
    }
}
