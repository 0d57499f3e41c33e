//! Per-sequence KV cache and batched cached attention.
//!
//! On the CPU in f32 a layer's keys and values live in plain vectors, token-major
//! (`[len, kv_heads, head_dim]`, so appending a token is one `extend`), and [`attend_host`]
//! runs the attention of every new row of a batch — decode rows and prefill chunks of any
//! lengths, each against its own sequence's cache — in one pass: rotary on the new q/k rows,
//! append, then per row and head scores, softmax and the weighted sum of values. That replaces
//! about fifteen small tensor ops per sequence per layer. On other devices or dtypes the cache
//! holds tensors (`[1, kv_heads, len, head_dim]`) and attention runs per sequence with tensor
//! ops (`Attention::forward` in `model.rs`); a cache moves between the two forms on demand.

use candle_core::{Device, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kernels::{axpy, dot};
use crate::model::Rotary;

/// One layer's cached keys and values.
#[derive(Clone, Debug, Default)]
pub(crate) enum LayerKv {
    /// Nothing cached yet.
    #[default]
    Empty,
    /// Any device or dtype: keys, values `[1, kv_heads, len, head_dim]`.
    Tensors(Tensor, Tensor),
    /// CPU f32, token-major `[len, kv_heads, head_dim]`.
    Host {
        /// Keys (rotary applied).
        k: Vec<f32>,
        /// Values.
        v: Vec<f32>,
    },
}

impl LayerKv {
    /// The tensor form `[1, kv, len, hd]` (converting host vectors), `None` when empty.
    pub(crate) fn take_tensors(
        &mut self,
        kv: usize,
        hd: usize,
        dev: &Device,
    ) -> Result<Option<(Tensor, Tensor)>> {
        Ok(match std::mem::take(self) {
            LayerKv::Empty => None,
            LayerKv::Tensors(k, v) => Some((k, v)),
            LayerKv::Host { k, v } => {
                let len = k.len() / (kv * hd);
                let t = |x: Vec<f32>| -> Result<Tensor> {
                    Ok(Tensor::from_vec(x, (len, kv, hd), dev)?
                        .transpose(0, 1)?
                        .unsqueeze(0)?
                        .contiguous()?)
                };
                Some((t(k)?, t(v)?))
            }
        })
    }

    /// The host form (converting tensors).
    pub(crate) fn host_mut(&mut self) -> Result<(&mut Vec<f32>, &mut Vec<f32>)> {
        if let LayerKv::Tensors(k, v) = self {
            let h = |x: &Tensor| -> Result<Vec<f32>> {
                Ok(x.squeeze(0)?
                    .transpose(0, 1)?
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            };
            *self = LayerKv::Host { k: h(k)?, v: h(v)? };
        }
        if let LayerKv::Empty = self {
            *self = LayerKv::Host {
                k: Vec::new(),
                v: Vec::new(),
            };
        }
        match self {
            LayerKv::Host { k, v } => Ok((k, v)),
            _ => Err(Error::InvalidArgument(
                "kv cache in an unexpected form".into(),
            )),
        }
    }

    fn size_bytes(&self) -> usize {
        match self {
            LayerKv::Empty => 0,
            LayerKv::Tensors(k, v) => (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes(),
            LayerKv::Host { k, v } => (k.len() + v.len()) * 4,
        }
    }
}

/// Keys and values of one sequence, per layer.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) len: usize,
}

impl KvCache {
    /// An empty cache for a model with `cfg`.
    pub fn new(cfg: &Config) -> Self {
        KvCache {
            layers: vec![LayerKv::Empty; cfg.num_hidden_layers],
            len: 0,
        }
    }

    /// Tokens already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = LayerKv::Empty);
        self.len = 0;
    }

    /// Bytes held by cached keys and values (for a scheduler's memory budget).
    pub fn size_bytes(&self) -> usize {
        self.layers.iter().map(LayerKv::size_bytes).sum()
    }

    /// Bytes one cached token takes in a model with `cfg` stored in `dtype`.
    pub fn bytes_per_token(cfg: &Config, dtype: candle_core::DType) -> usize {
        2 * cfg.num_hidden_layers * cfg.num_kv_heads() * cfg.head_dim() * dtype.size_in_bytes()
    }
}

/// Head layout of one attention layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) window: Option<usize>,
    pub(crate) layer: usize,
}

/// One sequence's part of a batch for [`attend_host`]: `rows` new rows, with its cache.
pub(crate) struct HostSeq<'c> {
    pub(crate) rows: usize,
    pub(crate) cache: &'c mut KvCache,
}

/// Cached attention for every row of a batch, on host f32 slices. `q` is `[n, heads·hd]`,
/// `k` and `v` are `[n, kv_heads·hd]` (projected, before rotary); sequence `s` owns the next
/// `seqs[s].rows` rows at positions `cache.len ..`. Appends each sequence's new keys (rotary
/// applied) and values to layer `h.layer` of its cache and returns `[n, heads·hd]`.
/// Sequences are independent: a large batch runs them on the rayon pool, each with the same
/// arithmetic as alone, so a row's result does not depend on the split.
pub(crate) fn attend_host(
    h: Heads,
    rope: &Rotary,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &mut [HostSeq<'_>],
) -> Result<Vec<f32>> {
    let (hd, kvh) = (h.head_dim, h.kv_heads);
    let (qw, kw) = (h.heads * hd, kvh * hd);
    let n: usize = seqs.iter().map(|s| s.rows).sum();
    if q.len() != n * qw
        || k.len() != n * kw
        || v.len() != n * kw
        || kvh == 0
        || !h.heads.is_multiple_of(kvh)
    {
        return Err(Error::InvalidArgument(format!(
            "attention over {n} rows: q {} k {} v {} values do not fit {} heads / {kvh} kv heads of {hd}",
            q.len(),
            k.len(),
            v.len(),
            h.heads
        )));
    }
    let mut out = vec![0f32; n * qw];
    // each sequence's rows of q, k, v and the output, and its cache: independent work
    let mut jobs: Vec<SeqJob<'_, '_>> = Vec::with_capacity(seqs.len());
    let (mut rest, mut start, mut macs) = (&mut out[..], 0, 0usize);
    for seq in seqs.iter_mut() {
        let rows = start..start + seq.rows;
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(seq.rows * qw);
        rest = tail;
        macs += seq.rows * (seq.cache.len + seq.rows) * qw;
        jobs.push(SeqJob {
            q: &q[rows.start * qw..rows.end * qw],
            k: &k[rows.start * kw..rows.end * kw],
            v: &v[rows.start * kw..rows.end * kw],
            seq,
            out: mine,
        });
        start = rows.end;
    }
    if jobs.len() < 2 || macs < PARALLEL_MIN_MACS || rayon::current_num_threads() < 2 {
        for job in jobs {
            attend_seq(h, rope, job)?;
        }
    } else {
        use rayon::prelude::*;
        jobs.into_par_iter()
            .try_for_each(|job| attend_seq(h, rope, job))?;
    }
    Ok(out)
}

/// Multiply-adds (q·k plus p·v) below which attention stays on the calling thread: a rayon
/// fork/join costs a few microseconds.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// One sequence's part of [`attend_host`].
struct SeqJob<'a, 'c> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    seq: &'a mut HostSeq<'c>,
    out: &'a mut [f32],
}

/// Appends one sequence's new keys (rotated) and values to its cache and attends its rows.
/// The same arithmetic in the same order whichever thread runs it, compiled for the widest
/// SIMD the CPU has (picked at run time by [`pulp`]; AVX2 on x86-64 where present, while the
/// build targets SSE2). The dot products and sums keep their order and Rust does not contract
/// a multiply and an add into a fused multiply-add, so both do the same operations.
fn attend_seq(h: Heads, rope: &Rotary, job: SeqJob<'_, '_>) -> Result<()> {
    pulp::Arch::new().dispatch(AttendSeq { h, rope, job })
}

/// The arguments of [`attend_seq`].
struct AttendSeq<'r, 'a, 'c> {
    h: Heads,
    rope: &'r Rotary,
    job: SeqJob<'a, 'c>,
}

impl pulp::WithSimd for AttendSeq<'_, '_, '_> {
    type Output = Result<()>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Result<()> {
        attend_seq_body(self.h, self.rope, self.job)
    }
}

/// The body of [`attend_seq`], inlined into its dispatched function: plain loops and no
/// closures (a closure would not inherit the dispatched function's target features).
#[inline(always)]
fn attend_seq_body(h: Heads, rope: &Rotary, job: SeqJob<'_, '_>) -> Result<()> {
    let SeqJob { q, k, v, seq, out } = job;
    let (hd, kvh) = (h.head_dim, h.kv_heads);
    let (qw, kw) = (h.heads * hd, kvh * hd);
    let n_rep = h.heads / kvh;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let w = h.window.unwrap_or(usize::MAX);
    let mut qh = vec![0f32; hd];
    let mut scores: Vec<f32> = Vec::new();
    let off = seq.cache.len;
    rope.check(off, seq.rows)?;
    let (kc, vc) = seq.cache.layers[h.layer].host_mut()?;
    if kc.len() != off * kw || vc.len() != off * kw {
        return Err(Error::InvalidArgument(format!(
            "kv cache of layer {} holds {} tokens, expected {off}",
            h.layer,
            kc.len() / kw
        )));
    }
    // append the new keys (rotated) and values
    kc.extend_from_slice(k);
    vc.extend_from_slice(v);
    for i in 0..seq.rows {
        let row = &mut kc[(off + i) * kw..(off + i + 1) * kw];
        for head in row.chunks_exact_mut(hd) {
            rope.rotate_host(head, off + i);
        }
    }
    let (kc, vc) = (&kc[..], &vc[..]);
    for i in 0..seq.rows {
        let pos = off + i;
        let lo = (pos + 1).saturating_sub(w);
        for hh in 0..h.heads {
            let g = hh / n_rep;
            qh.copy_from_slice(&q[i * qw + hh * hd..i * qw + (hh + 1) * hd]);
            rope.rotate_host(&mut qh, pos);
            scores.clear();
            for j in lo..=pos {
                scores.push(dot(&qh, &kc[j * kw + g * hd..j * kw + (g + 1) * hd]) * scale);
            }
            let mut max = f32::NEG_INFINITY;
            for &s in scores.iter() {
                max = max.max(s);
            }
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[i * qw + hh * hd..i * qw + (hh + 1) * hd];
            for (j, s) in (lo..=pos).zip(&scores) {
                let vj = &vc[j * kw + g * hd..j * kw + (g + 1) * hd];
                axpy(s / sum, vj, o);
            }
        }
    }
    Ok(())
}
