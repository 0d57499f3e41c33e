//! CPU kernels over host slices, and read access to the data of candle tensors on the CPU.
//!
//! - [`bgmv`]: per-row LoRA, every row with its own adapter (Punica's BGMV), in place on the
//!   base matmul's output.
//! - [`dot`], [`axpy`]: the vector loops of attention over the KV cache.

pub(crate) mod bgmv;

use candle_core::{CpuStorage, Storage, Tensor};

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
