//! Frozen weights as they are stored, or smaller: f32, bf16 or int8 in memory, and the CPU
//! kernel that multiplies f32 activations by them.
//!
//! A weight is held in panels of 16 outputs, each panel `[in][16]` contiguous (packed once at
//! load, as a gemm packs its right-hand side). bf16 stays bf16 (half the bytes of f32; widened
//! in registers). Int8 is weight-only, per output channel: `w ≈ d_o·q`, `d_o = max_i |W[o,i]| /
//! 127`, a little over one byte per weight. Activations and accumulations stay f32.
//!
//! `y = x·Wᵀ` runs over all rows of a step: panels are split across the rayon pool; inside a
//! task each load of 16 weights serves up to six rows (outer products into vector
//! accumulators), rows in chunks that stay in cache while the task's panels pass. A decode
//! step thus streams each weight once, whatever the batch. Compiled for the widest SIMD the
//! CPU has (`pulp` picks it at run time), fused multiply-adds where the CPU has them.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How frozen base weights are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// 4 bytes per weight.
    F32,
    /// 2 bytes per weight (bf16 checkpoints as they are stored).
    Bf16,
    /// A little over 1 byte per weight: int8 with an f32 scale per output channel.
    Int8,
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(WeightFormat::F32),
            "bf16" => Ok(WeightFormat::Bf16),
            "int8" | "q8" => Ok(WeightFormat::Int8),
            _ => Err(Error::InvalidArgument(format!(
                "unknown weight format {s:?} (f32, bf16 or int8)"
            ))),
        }
    }
}

impl WeightFormat {
    /// The name (`f32`, `bf16`, `int8`).
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Int8 => "int8",
        }
    }
}

/// Outputs per panel: the kernel's vectors span 16 outputs (two of eight lanes).
pub(crate) const PANEL: usize = 16;

/// The weight values in panels of [`PANEL`] outputs: panel `p` holds `W[p·16 + j, i]` at
/// `(p·in + i)·16 + j` (outputs past `out` are zero), so a panel is one contiguous stream and
/// the kernel loads 16 outputs of one input at a time.
#[derive(Debug)]
enum Store {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    /// Per-output scale `d[o]`: `W[o, i] ≈ d[o]·q`.
    Int8 {
        q: Vec<i8>,
        d: Vec<f32>,
    },
}

/// A frozen `[out, in]` weight in one of the [`WeightFormat`]s, and the CPU kernel that
/// multiplies f32 activations by it: what a [`Model`](crate::Model) loaded in a format holds its
/// projections in, public so that other weights can be held and multiplied the same way (and
/// the kernel's rate measured).
///
/// ```
/// # fn main() -> Result<(), openledger_model::Error> {
/// use openledger_model::{Dense, Device, Tensor, WeightFormat};
/// use std::sync::Arc;
/// let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu)?;
/// let d = Arc::new(Dense::from_tensor(&w, WeightFormat::Bf16)?);
/// assert_eq!(d.dims(), (3, 2));
/// let y = d.forward(&Tensor::new(&[[1f32, 1.0]], &Device::Cpu)?)?;
/// assert_eq!(y.to_vec2::<f32>()?, [[3.0, 7.0, 11.0]]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Dense {
    out: usize,
    inp: usize,
    store: Store,
}

/// Index of `W[o, i]` in the panel layout.
#[inline(always)]
fn at(inp: usize, o: usize, i: usize) -> usize {
    ((o / PANEL) * inp + i) * PANEL + o % PANEL
}

impl Dense {
    /// Converts `w` (`[out, in]`, any float dtype, any device) to `format` on the host.
    pub fn from_tensor(w: &Tensor, format: WeightFormat) -> Result<Self> {
        let (out, inp) = w.dims2()?;
        let panels = out.div_ceil(PANEL);
        let pad = panels * PANEL - out;
        // [panels, 16, in] → [panels, in, 16]
        let panel = |w: Tensor| -> Result<Tensor> {
            Ok(w.pad_with_zeros(0, 0, pad)?
                .reshape((panels, PANEL, inp))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let store = match format {
            WeightFormat::Bf16 => {
                let v = panel(w.to_dtype(DType::BF16)?)?
                    .flatten_all()?
                    .to_vec1::<half::bf16>()?;
                Store::Bf16(v.into_iter().map(half::bf16::to_bits).collect())
            }
            WeightFormat::F32 => Store::F32(
                panel(w.to_dtype(DType::F32)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            ),
            WeightFormat::Int8 => {
                let wf = w.to_dtype(DType::F32)?;
                let amax = wf.abs()?.max_keepdim(1)?; // [out, 1]
                let mut d = amax.flatten_all()?.to_vec1::<f32>()?;
                for x in d.iter_mut() {
                    *x /= 127.0;
                }
                let inv = amax
                    .clamp(f32::MIN_POSITIVE, f32::INFINITY)?
                    .recip()?
                    .affine(127.0, 0.0)?;
                let q = panel(wf.broadcast_mul(&inv)?.round()?.clamp(-127f32, 127f32)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Store::Int8 {
                    q: q.into_iter().map(|x| x as i8).collect(),
                    d,
                }
            }
        };
        Ok(Dense { out, inp, store })
    }

    /// The format.
    pub fn format(&self) -> WeightFormat {
        match self.store {
            Store::F32(_) => WeightFormat::F32,
            Store::Bf16(_) => WeightFormat::Bf16,
            Store::Int8 { .. } => WeightFormat::Int8,
        }
    }

    /// (out, in).
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F32(v) => v.len() * 4,
            Store::Bf16(v) => v.len() * 2,
            Store::Int8 { q, d } => q.len() + d.len() * 4,
        }
    }

    /// `x·Wᵀ` through the kernel: `x` `[.., in]` f32 on the CPU (made contiguous) →
    /// `[.., out]`, differentiable with respect to `x`.
    pub fn forward(self: &Arc<Self>, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?
            .apply_op1_arc(Arc::new(Box::new(DenseOp(self.clone()))))?)
    }

    /// Row `o` as f32 values (`in` of them) appended to `dst`.
    pub(crate) fn row_into(&self, o: usize, dst: &mut Vec<f32>) {
        let inp = self.inp;
        let idx = (0..inp).map(|i| at(inp, o, i));
        match &self.store {
            Store::F32(v) => dst.extend(idx.map(|k| v[k])),
            Store::Bf16(v) => dst.extend(idx.map(|k| bf16(v[k]))),
            Store::Int8 { q, d } => dst.extend(idx.map(|k| f32::from(q[k]) * d[o])),
        }
    }

    /// The weight as an f32 tensor `[out, in]` (the values the kernel computes with).
    pub(crate) fn to_tensor(&self, dev: &candle_core::Device) -> Result<Tensor> {
        let mut v = Vec::with_capacity(self.out * self.inp);
        for o in 0..self.out {
            self.row_into(o, &mut v);
        }
        Ok(Tensor::from_vec(v, (self.out, self.inp), dev)?)
    }

    /// The embedding rows of `ids` as f32 `[n, in]`.
    pub(crate) fn gather(&self, ids: &[u32], dev: &candle_core::Device) -> Result<Tensor> {
        let mut v = Vec::with_capacity(ids.len() * self.inp);
        for &id in ids {
            let o = id as usize;
            if o >= self.out {
                return Err(Error::InvalidArgument(format!(
                    "token id {id} >= vocab_size {}",
                    self.out
                )));
            }
            self.row_into(o, &mut v);
        }
        Ok(Tensor::from_vec(v, (ids.len(), self.inp), dev)?)
    }

    /// `y = x·Wᵀ` for `rows` rows of `x` (`rows·in` values): `rows·out` values.
    pub(crate) fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let panels = self.out.div_ceil(PANEL);
        let macs = rows * panels * PANEL * self.inp;
        let threads = rayon::current_num_threads();
        let per_task = if threads < 2 || macs < PARALLEL_MIN_MACS {
            panels
        } else {
            panels.div_ceil(threads * 4).max(1)
        };
        // each task fills [its panels][rows][16]; then the panels are laid out as rows
        let mut yp = vec![0f32; panels * rows * PANEL];
        let run = |(t, yp): (usize, &mut [f32])| {
            pulp::Arch::new().dispatch(Tile {
                w: self,
                p0: t * per_task,
                xs: x,
                rows,
                yp,
            });
        };
        if per_task >= panels {
            run((0, &mut yp));
        } else {
            yp.par_chunks_mut(per_task * rows * PANEL)
                .enumerate()
                .for_each(run);
        }
        let mut y = vec![0f32; rows * self.out];
        for (p, block) in yp.chunks_exact(rows * PANEL).enumerate() {
            let o0 = p * PANEL;
            let n = PANEL.min(self.out - o0);
            for (r, v) in block.chunks_exact(PANEL).enumerate() {
                y[r * self.out + o0..][..n].copy_from_slice(&v[..n]);
            }
        }
        y
    }
}

/// Multiply-adds below which a matmul stays on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// Rows taken together: each load of 16 weights serves this many rows.
const RB: usize = 6;

/// Rows per chunk: a chunk's activations stay in cache while every panel of a task passes.
const ROW_CHUNK: usize = 96;

/// One task of [`Dense::matmul`]: panels `p0..` (as many as `yp` holds) for every row, into
/// `yp` `[panel][rows][16]`.
struct Tile<'a> {
    w: &'a Dense,
    p0: usize,
    xs: &'a [f32],
    rows: usize,
    yp: &'a mut [f32],
}

impl pulp::WithSimd for Tile<'_> {
    type Output = ();

    // Plain loops over fixed-size arrays, inlined into the dispatched function, for LLVM to
    // vectorize with its target features (closures would not inherit them).
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Tile {
            w,
            p0,
            xs,
            rows,
            yp,
        } = self;
        let inp = w.inp;
        let n_panels = yp.len() / (rows * PANEL);
        let mut c0 = 0;
        while c0 < rows {
            let c1 = (c0 + ROW_CHUNK).min(rows);
            for k in 0..n_panels {
                let p = p0 + k;
                let out = &mut yp[k * rows * PANEL..(k + 1) * rows * PANEL];
                let mut r = c0;
                while r < c1 {
                    let n = (c1 - r).min(RB);
                    let x = &xs[r * inp..(r + n) * inp];
                    let y = &mut out[r * PANEL..(r + n) * PANEL];
                    match &w.store {
                        Store::F32(v) => {
                            let pw = &v[p * inp * PANEL..(p + 1) * inp * PANEL];
                            rows_n(simd, n, x, inp, y, |i| load_f32(pw, i), None);
                        }
                        Store::Bf16(v) => {
                            let pw = &v[p * inp * PANEL..(p + 1) * inp * PANEL];
                            rows_n(simd, n, x, inp, y, |i| load_bf16(pw, i), None);
                        }
                        Store::Int8 { q, d } => {
                            let pw = &q[p * inp * PANEL..(p + 1) * inp * PANEL];
                            let mut s = [0f32; PANEL];
                            for (j, sj) in s.iter_mut().enumerate() {
                                *sj = d.get(p * PANEL + j).copied().unwrap_or(0.0);
                            }
                            rows_n(simd, n, x, inp, y, |i| load_i8(pw, i), Some(&s));
                        }
                    }
                    r += n;
                }
            }
            c0 = c1;
        }
    }
}

/// Dispatches `n` (1..=RB) rows to the kernel compiled for that many.
#[inline(always)]
fn rows_n<S: pulp::Simd, L: Fn(usize) -> [[f32; 8]; 2] + Copy>(
    simd: S,
    n: usize,
    x: &[f32],
    inp: usize,
    y: &mut [f32],
    load: L,
    scale: Option<&[f32; PANEL]>,
) {
    match n {
        1 => panel_rows::<S, L, 1>(simd, x, inp, y, load, scale),
        2 => panel_rows::<S, L, 2>(simd, x, inp, y, load, scale),
        3 => panel_rows::<S, L, 3>(simd, x, inp, y, load, scale),
        4 => panel_rows::<S, L, 4>(simd, x, inp, y, load, scale),
        5 => panel_rows::<S, L, 5>(simd, x, inp, y, load, scale),
        _ => panel_rows::<S, L, RB>(simd, x, inp, y, load, scale),
    }
}

/// `N` rows × one panel: `y[r][j] = Σ_i x[r][i]·W[p·16 + j, i]` (times the output's scale
/// for int8). Each input's 16 weights are loaded once for the `N` rows (outer products into
/// 2·N vector accumulators). A row's operations and their order do not depend on `N`, so a
/// row's result is the same alone or in any batch.
#[inline(always)]
fn panel_rows<S: pulp::Simd, L: Fn(usize) -> [[f32; 8]; 2], const N: usize>(
    simd: S,
    x: &[f32],
    inp: usize,
    y: &mut [f32],
    load: L,
    scale: Option<&[f32; PANEL]>,
) {
    let mut acc = [[[0f32; 8]; 2]; N];
    for i in 0..inp {
        let w = load(i);
        for r in 0..N {
            let xb = [x[r * inp + i]; 8];
            acc[r][0] = fma8(simd, xb, w[0], acc[r][0]);
            acc[r][1] = fma8(simd, xb, w[1], acc[r][1]);
        }
    }
    for r in 0..N {
        let yr = &mut y[r * PANEL..(r + 1) * PANEL];
        for h in 0..2 {
            for l in 0..8 {
                let s = scale.map_or(1.0, |s| s[h * 8 + l]);
                yr[h * 8 + l] = acc[r][h][l] * s;
            }
        }
    }
}

#[inline(always)]
fn load_f32(pw: &[f32], i: usize) -> [[f32; 8]; 2] {
    let s = &pw[i * PANEL..(i + 1) * PANEL];
    let mut v = [[0f32; 8]; 2];
    v[0].copy_from_slice(&s[..8]);
    v[1].copy_from_slice(&s[8..]);
    v
}

#[inline(always)]
fn load_bf16(pw: &[u16], i: usize) -> [[f32; 8]; 2] {
    let s = &pw[i * PANEL..(i + 1) * PANEL];
    let mut v = [[0f32; 8]; 2];
    for l in 0..8 {
        v[0][l] = bf16(s[l]);
        v[1][l] = bf16(s[8 + l]);
    }
    v
}

#[inline(always)]
fn load_i8(pw: &[i8], i: usize) -> [[f32; 8]; 2] {
    let s = &pw[i * PANEL..(i + 1) * PANEL];
    let mut v = [[0f32; 8]; 2];
    for l in 0..8 {
        v[0][l] = f32::from(s[l]);
        v[1][l] = f32::from(s[8 + l]);
    }
    v
}

/// a·b + c over eight lanes: one fused multiply-add where the dispatched SIMD is eight lanes
/// wide (AVX2 + FMA), lane by lane otherwise.
#[inline(always)]
pub(crate) fn fma8<S: pulp::Simd>(simd: S, a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
    if S::F32_LANES == 8 {
        bytemuck::cast(simd.mul_add_e_f32s(bytemuck::cast(a), bytemuck::cast(b), bytemuck::cast(c)))
    } else {
        let mut r = c;
        for l in 0..8 {
            r[l] += a[l] * b[l];
        }
        r
    }
}

/// A bf16 (its bits) as f32: exact.
#[inline(always)]
pub(crate) fn bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `x·Wᵀ` as a candle op on a contiguous f32 CPU tensor `[rows, in]`, differentiable with
/// respect to `x` (the weight is frozen): the backward pass is `grad·W`.
pub(crate) struct DenseOp(pub(crate) Arc<Dense>);

impl candle_core::CustomOp1 for DenseOp {
    fn name(&self) -> &'static str {
        "dense-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
            return Err(candle_core::Error::Msg(
                "dense-matmul: the input must be contiguous f32".into(),
            ));
        };
        let dims = l.dims();
        let inp = dims.last().copied().unwrap_or(0);
        if inp != self.0.inp {
            return Err(candle_core::Error::Msg(format!(
                "dense-matmul: {inp} input features for a weight of {}",
                self.0.inp
            )));
        }
        let rows = (b - a) / inp.max(1);
        let y = self.0.matmul(&v[a..b], rows);
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.0.out;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self
            .0
            .to_tensor(grad.device())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let dims = grad.dims();
        let rows = grad.elem_count() / self.0.out.max(1);
        let g = grad.reshape((rows, self.0.out))?.matmul(&w)?;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.0.inp;
        }
        Ok(Some(g.reshape(shape)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_format_equals_a_plain_matmul_of_its_own_values() -> Result<()> {
        let dev = Device::Cpu;
        // odd shapes: row tails, output tails, padded strides
        for (out, inp) in [(37, 21), (64, 96), (5, 40), (130, 64)] {
            let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
            for rows in [1, 3, 4, 9] {
                let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev)?;
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                for f in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::Int8] {
                    let d = Dense::from_tensor(&w, f)?;
                    let want = x.matmul(&d.to_tensor(&dev)?.t()?)?.flatten_all()?;
                    let got = d.matmul(&xs, rows);
                    let diff = max_diff(&got, &want.to_vec1::<f32>()?);
                    assert!(diff < 1e-4, "{f:?} {out}x{inp} rows {rows}: {diff}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_row_is_the_same_alone_and_in_a_batch_split_across_threads() -> Result<()> {
        let dev = Device::Cpu;
        let (out, inp) = (300, 128);
        let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
        let rows = 11;
        let xs = Tensor::randn(0f32, 1.0, (rows, inp), &dev)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        for f in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::Int8] {
            let d = Dense::from_tensor(&w, f)?;
            let batch = pool.install(|| d.matmul(&xs, rows));
            for r in 0..rows {
                let alone = d.matmul(&xs[r * inp..(r + 1) * inp], 1);
                assert_eq!(alone, batch[r * out..(r + 1) * out], "{f:?} row {r}");
            }
        }
        Ok(())
    }

    #[test]
    fn int8_and_bf16_stay_close_to_the_f32_weight() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.02, (64, 256), &dev)?;
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        for (f, tol, bytes) in [
            (WeightFormat::Bf16, 2f32.powi(-8), 2 * 64 * 256),
            (WeightFormat::Int8, 1.0 / 254.0 * 1.0001, 64 * 256 + 4 * 64),
        ] {
            let d = Dense::from_tensor(&w, f)?;
            let back = d.to_tensor(&dev)?.flatten_all()?.to_vec1::<f32>()?;
            // per row: relative to each value (bf16) or to the row's largest value (int8)
            for (got, want) in back.chunks(256).zip(wv.chunks(256)) {
                let amax = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = max_diff(got, want) / amax;
                assert!(err <= tol, "{f:?}: {err}");
            }
            assert_eq!(d.bytes(), bytes);
        }
        Ok(())
    }

    #[test]
    fn the_op_is_differentiable_with_respect_to_its_input() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (24, 16), &dev)?;
        let d = Arc::new(Dense::from_tensor(&w, WeightFormat::F32)?);
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 16), &dev)?)?;
        let y = x
            .as_tensor()
            .apply_op1_arc(Arc::new(Box::new(DenseOp(d))))?;
        assert_eq!(y.dims(), &[2, 3, 24]);
        let want = x.as_tensor().broadcast_matmul(&w.t()?)?;
        let diff = (&y - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "forward {diff}");
        let g = y.sqr()?.sum_all()?.backward()?;
        let gx = g
            .get(x.as_tensor())
            .ok_or_else(|| Error::InvalidArgument("no grad".into()))?;
        // d/dx Σ (xWᵀ)² = 2·(xWᵀ)·W
        let want = (want.broadcast_matmul(&w)? * 2.0)?;
        let diff = (gx - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-3, "backward {diff}");
        Ok(())
    }
}
