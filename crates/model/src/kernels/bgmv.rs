//! Per-row LoRA (BGMV, Punica-style): every row of a forward pass gets its own adapter in one
//! kernel per projection, prefill and decode rows, any mix of ranks, rows without an adapter,
//! all in the same pass. On the CPU in f32 that is a single loop over rows ([`rows_cpu_add`],
//! SIMD picked at run time by [`pulp`], run in place on the base matmul's output); elsewhere A
//! and s·B are zero-padded to the largest rank, stacked, gathered per row and applied with two
//! batched matmuls ([`rows_gathered`]).

use candle_core::{CpuStorage, DType, Tensor};

use super::{Bf16View, CpuView, dot};
use crate::dense::{bf16, fma8};
use crate::error::{Error, Result};
use crate::lora::LoraPair;

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

/// Per-row LoRA on the CPU in f32, one pass over the rows, added in place to `y`
/// `[rows, out]` (the fresh output of the base matmul): for row i with adapter k,
/// h = s_k·A_k·x_i (rank r_k), y_i += B_k·h. Ranks may differ between rows; rows with no
/// adapter (or whose adapter leaves this module alone) are left as they are. `false` (and `y`
/// untouched) when the tensors are not contiguous f32 on the CPU; then [`rows_gathered`]
/// runs. Not differentiable: serving only (training takes
/// [`RowPlan::Whole`](crate::routing::RowPlan::Whole)).
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
}
