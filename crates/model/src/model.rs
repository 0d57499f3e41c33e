//! The Llama-family decoder: RMSNorm, rotary embeddings, SwiGLU MLP, grouped-query attention
//! with a per-sequence KV cache, decoder layer, model. Weight names follow Hugging Face.
//!
//! Rows are flattened: a batch is a list of sequences, each contributing some new tokens;
//! every projection runs once over all rows of the batch (with per-row LoRA). Cached attention
//! runs over all rows in one pass on the CPU in f32 (`kv::attend_host`), per sequence with
//! tensor ops elsewhere; without a cache (training) all sequences have the same length and
//! attention is batched.

use std::sync::Arc;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::config::Config;
use crate::dense::{Dense, WeightFormat};
use crate::error::{Error, Result};
use crate::kernels::CpuView;
use crate::kv::{Heads, HostSeq, KvCache, LayerKv, attend_host};
use crate::linear::LoraLinear;
use crate::lora::{LoraAdapter, Proj};
use crate::profile::{self, Phase};
use crate::routing::{BatchAdapters, RowPlan};

/// Root-mean-square layer norm (computed in f32).
#[derive(Clone, Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// The weight in the activations' dtype `act`.
    fn new(size: usize, eps: f64, vb: VarBuilder, act: DType) -> Result<Self> {
        let weight = vb.get(size, "weight")?;
        let weight = if weight.dtype() == act {
            weight
        } else {
            weight.to_dtype(act)?
        };
        Ok(RmsNorm { weight, eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _t = profile::time(Phase::Norm);
        let dt = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(ms + self.eps)?.sqrt()?)?.to_dtype(dt)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// cos/sin tables for rotary position embeddings (the "rotate half" layout of HF Llama).
#[derive(Debug)]
pub(crate) struct Rotary {
    cos: Tensor,
    sin: Tensor,
    /// The same tables as host f32 `[table, hd]` (CPU f32 models only, for cached attention).
    host: Option<(Vec<f32>, Vec<f32>)>,
    /// Positions covered by the precomputed tables.
    table: usize,
    /// max_position_embeddings.
    max: usize,
    inv: Vec<f64>,
    factor: f64,
    dtype: DType,
}

/// Positions precomputed at load; later ones are computed when needed (a 128k-position model
/// does not pay 128k × head_dim × 2 values up front).
const ROPE_TABLE: usize = 4096;

impl Rotary {
    fn new(cfg: &Config, dtype: DType, dev: &Device) -> Result<Self> {
        let (inv, factor) = cfg.rope_frequencies()?;
        let max = cfg.max_position_embeddings;
        let table = max.min(ROPE_TABLE);
        let (cos, sin) = Self::tables(&inv, factor, 0, table, dtype, dev)?;
        let host = if dev.is_cpu() && dtype == DType::F32 {
            Some((
                cos.flatten_all()?.to_vec1::<f32>()?,
                sin.flatten_all()?.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        Ok(Rotary {
            cos,
            sin,
            host,
            table,
            max,
            inv,
            factor,
            dtype,
        })
    }

    /// cos and sin [len, hd] for positions start..start+len (both halves repeat the frequencies).
    fn tables(
        inv: &[f64],
        factor: f64,
        start: usize,
        len: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let hd = inv.len() * 2;
        let mut cos = Vec::with_capacity(len * hd);
        let mut sin = Vec::with_capacity(len * hd);
        for p in start..start + len {
            let pos = p as f64 / factor;
            for _ in 0..2 {
                for f in inv {
                    cos.push((pos * f).cos() as f32);
                    sin.push((pos * f).sin() as f32);
                }
            }
        }
        let cos = Tensor::from_vec(cos, (len, hd), dev)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, hd), dev)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// Refuses positions offset..offset+t past max_position_embeddings.
    pub(crate) fn check(&self, offset: usize, t: usize) -> Result<()> {
        if offset + t > self.max {
            return Err(Error::InvalidArgument(format!(
                "position {} exceeds max_position_embeddings {}",
                offset + t,
                self.max
            )));
        }
        Ok(())
    }

    /// Rotates one head vector `x` (head_dim f32 values) to position `pos` in place, as
    /// [`Self::apply`] does: x·cos + rotate_half(x)·sin.
    pub(crate) fn rotate_host(&self, x: &mut [f32], pos: usize) {
        let hd = x.len();
        let table = self.host.as_ref().and_then(|(c, s)| {
            Some((
                c.get(pos * hd..(pos + 1) * hd)?,
                s.get(pos * hd..(pos + 1) * hd)?,
            ))
        });
        let computed: (Vec<f32>, Vec<f32>);
        let (cos, sin) = match table {
            Some(t) if pos < self.table => t,
            _ => {
                // past the precomputed table: the same values `tables` would give
                let p = pos as f64 / self.factor;
                computed = self
                    .inv
                    .iter()
                    .chain(&self.inv)
                    .map(|f| ((p * f).cos() as f32, (p * f).sin() as f32))
                    .unzip();
                (&computed.0[..], &computed.1[..])
            }
        };
        let half = hd / 2;
        let (x1, x2) = x.split_at_mut(half);
        for d in 0..half {
            let (a, b) = (x1[d], x2[d]);
            x1[d] = a * cos[d] - b * sin[d];
            x2[d] = b * cos[half + d] + a * sin[half + d];
        }
    }

    /// x: [b, heads, t, hd] at positions offset..offset+t.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let t = x.dim(2)?;
        self.check(offset, t)?;
        let (cos, sin) = if offset + t <= self.table {
            (
                self.cos.narrow(0, offset, t)?,
                self.sin.narrow(0, offset, t)?,
            )
        } else {
            Self::tables(&self.inv, self.factor, offset, t, self.dtype, x.device())?
        };
        let half = x.dim(3)? / 2;
        let x1 = x.narrow(3, 0, half)?;
        let x2 = x.narrow(3, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}

/// SwiGLU: down(silu(gate(x)) ⊙ up(x)).
#[derive(Clone, Debug)]
struct Mlp {
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
}

impl Mlp {
    fn new(cfg: &Config, layer: usize, vb: VarBuilder, f: Option<WeightFormat>) -> Result<Self> {
        Ok(Mlp {
            gate: LoraLinear::new(vb.clone(), cfg, layer, Proj::Gate, false, f)?,
            up: LoraLinear::new(vb.clone(), cfg, layer, Proj::Up, false, f)?,
            down: LoraLinear::new(vb, cfg, layer, Proj::Down, false, f)?,
        })
    }

    fn forward(&self, x: &Tensor, plan: &RowPlan) -> Result<Tensor> {
        let g = self.gate.forward(x, plan)?;
        let u = self.up.forward(x, plan)?;
        let gu = {
            let _t = profile::time(Phase::Elementwise);
            (g.silu()? * u)?
        };
        self.down.forward(&gu, plan)
    }
}

/// New tokens of one sequence for [`Model::forward_step`], with that sequence's cache.
pub struct SeqStep<'a> {
    /// Tokens to append (the whole prompt at prefill, one token per decode step).
    pub tokens: &'a [u32],
    /// The sequence's cache, extended in place.
    pub cache: &'a mut KvCache,
}

/// How rows are laid out for attention.
enum Layout<'s, 'a> {
    /// `b` sequences of `t` rows each, no cache, positions from 0.
    Uniform { b: usize, t: usize },
    /// One segment per sequence, each with its cache.
    Cached(&'s mut [SeqStep<'a>]),
}

fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, n_rep, t, hd))?
        .reshape((b, kv * n_rep, t, hd))?)
}

/// Softmax over the last dimension, composed of differentiable ops, in f32.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Additive mask [t, total]: query i (absolute position offset+i) sees key j iff j ≤ offset+i
/// and, with a window w, offset+i − j < w.
fn mask(t: usize, offset: usize, window: Option<usize>, dev: &Device) -> Result<Tensor> {
    let total = offset + t;
    let w = window.unwrap_or(usize::MAX);
    let m: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                let q = offset + i;
                if j <= q && q - j < w {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (t, total), dev)?)
}

/// q: [b, h, t, hd]; k, v: [b, kv, total, hd] → [b, t, h·hd].
fn attend(h: Heads, q: &Tensor, k: Tensor, v: Tensor, offset: usize) -> Result<Tensor> {
    let (b, _, t, _) = q.dims4()?;
    let dt = q.dtype();
    let n_rep = h.heads / h.kv_heads;
    let k = repeat_kv(k, n_rep)?.contiguous()?;
    let v = repeat_kv(v, n_rep)?.contiguous()?;
    let scale = 1.0 / (h.head_dim as f64).sqrt();
    let att = (q.contiguous()?.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let m = mask(t, offset, h.window, q.device())?;
    let p = softmax_last(&att.broadcast_add(&m)?)?.to_dtype(dt)?;
    let out = p.matmul(&v)?;
    Ok(out.transpose(1, 2)?.reshape((b, t, h.heads * h.head_dim))?)
}

/// Cached attention with tensor ops, one sequence at a time (any device and dtype): q is
/// [n, heads·hd], k and v [n, kv_heads·hd], projected and not yet rotated → [n, heads·hd].
fn attend_cached_tensors(
    h: Heads,
    rope: &Rotary,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &mut [SeqStep],
) -> Result<Tensor> {
    let hd = h.head_dim;
    let mut outs = Vec::with_capacity(seqs.len());
    let mut start = 0;
    for seq in seqs.iter_mut() {
        let n = seq.tokens.len();
        let offset = seq.cache.len;
        let split = |x: &Tensor, heads: usize| -> Result<Tensor> {
            Ok(x.narrow(0, start, n)?
                .reshape((1, n, heads, hd))?
                .transpose(1, 2)?)
        };
        let qs = rope.apply(&split(q, h.heads)?, offset)?;
        let ks = rope.apply(&split(k, h.kv_heads)?, offset)?.contiguous()?;
        let vs = split(v, h.kv_heads)?.contiguous()?;
        let slot = &mut seq.cache.layers[h.layer];
        let (ka, va) = match slot.take_tensors(h.kv_heads, hd, q.device())? {
            Some((kc, vc)) => (
                Tensor::cat(&[&kc, &ks.to_dtype(kc.dtype())?], 2)?,
                Tensor::cat(&[&vc, &vs.to_dtype(vc.dtype())?], 2)?,
            ),
            None => (ks, vs),
        };
        *slot = LayerKv::Tensors(ka.clone(), va.clone());
        outs.push(attend(h, &qs, ka, va, offset)?.reshape((n, h.heads * hd))?);
        start += n;
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// The same for CPU f32 in one pass over all rows ([`attend_host`]); `None` elsewhere.
fn attend_cached_cpu(
    h: Heads,
    rope: &Rotary,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &mut [SeqStep],
) -> Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (Some(qv), Some(kv), Some(vv)) = (CpuView::new(&q), CpuView::new(&k), CpuView::new(&v))
    else {
        return Ok(None);
    };
    let mut host: Vec<HostSeq> = seqs
        .iter_mut()
        .map(|s| HostSeq {
            rows: s.tokens.len(),
            cache: &mut *s.cache,
        })
        .collect();
    let out = attend_host(h, rope, qv.slice(), kv.slice(), vv.slice(), &mut host)?;
    let n = q.dim(0)?;
    Ok(Some(Tensor::from_vec(
        out,
        (n, h.heads * h.head_dim),
        q.device(),
    )?))
}

/// Multi-head attention with grouped key/value heads.
#[derive(Clone, Debug)]
struct Attention {
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    heads: Heads,
    rotary: Arc<Rotary>,
}

impl Attention {
    fn new(
        cfg: &Config,
        layer: usize,
        rotary: Arc<Rotary>,
        vb: VarBuilder,
        f: Option<WeightFormat>,
    ) -> Result<Self> {
        let (qb, ob) = (cfg.qkv_bias(), cfg.o_bias());
        Ok(Attention {
            q: LoraLinear::new(vb.clone(), cfg, layer, Proj::Q, qb, f)?,
            k: LoraLinear::new(vb.clone(), cfg, layer, Proj::K, qb, f)?,
            v: LoraLinear::new(vb.clone(), cfg, layer, Proj::V, qb, f)?,
            o: LoraLinear::new(vb, cfg, layer, Proj::O, ob, f)?,
            heads: Heads {
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_kv_heads(),
                head_dim: cfg.head_dim(),
                window: cfg.window(),
                layer,
            },
            rotary,
        })
    }

    fn forward(&self, x: &Tensor, layout: &mut Layout, plan: &RowPlan) -> Result<Tensor> {
        let q = self.q.forward(x, plan)?;
        let k = self.k.forward(x, plan)?;
        let v = self.v.forward(x, plan)?;
        let hs = self.heads;
        let (h, kv, hd) = (hs.heads, hs.kv_heads, hs.head_dim);
        let timer = profile::time(Phase::Attention);
        let out = match layout {
            Layout::Uniform { b, t } => {
                let split = |x: Tensor, n: usize| -> Result<Tensor> {
                    Ok(x.reshape((*b, *t, n, hd))?.transpose(1, 2)?)
                };
                let q = self.rotary.apply(&split(q, h)?, 0)?;
                let k = self.rotary.apply(&split(k, kv)?, 0)?;
                let out = attend(hs, &q, k, split(v, kv)?, 0)?;
                out.reshape((*b * *t, h * hd))?
            }
            Layout::Cached(seqs) => match attend_cached_cpu(hs, &self.rotary, &q, &k, &v, seqs)? {
                Some(out) => out,
                None => attend_cached_tensors(hs, &self.rotary, &q, &k, &v, seqs)?,
            },
        };
        drop(timer);
        self.o.forward(&out, plan)
    }
}

/// Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(·)).
#[derive(Clone, Debug)]
struct DecoderLayer {
    attn: Attention,
    mlp: Mlp,
    input_norm: RmsNorm,
    post_norm: RmsNorm,
}

impl DecoderLayer {
    fn new(
        cfg: &Config,
        layer: usize,
        rotary: Arc<Rotary>,
        vb: VarBuilder,
        (f, act): (Option<WeightFormat>, DType),
    ) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(DecoderLayer {
            attn: Attention::new(cfg, layer, rotary, vb.pp("self_attn"), f)?,
            mlp: Mlp::new(cfg, layer, vb.pp("mlp"), f)?,
            input_norm: RmsNorm::new(h, eps, vb.pp("input_layernorm"), act)?,
            post_norm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"), act)?,
        })
    }

    fn forward(&self, x: &Tensor, layout: &mut Layout, plan: &RowPlan) -> Result<Tensor> {
        let a = self
            .attn
            .forward(&self.input_norm.forward(x)?, layout, plan)?;
        let x = {
            let _t = profile::time(Phase::Elementwise);
            (x + a)?
        };
        let m = self.mlp.forward(&self.post_norm.forward(&x)?, plan)?;
        let _t = profile::time(Phase::Elementwise);
        Ok((&x + m)?)
    }
}

/// The token embedding.
#[derive(Clone, Debug)]
enum Embed {
    /// A tensor (a training variable, or off the CPU).
    Tensor(Embedding),
    /// Frozen on the CPU in its format; rows widened to f32 when looked up.
    Dense(Arc<Dense>),
}

/// The output head `[vocab, hidden]`.
#[derive(Clone, Debug)]
enum Head {
    /// A tensor (for a tied head: the embedding matrix itself).
    Tensor(Tensor),
    /// Frozen on the CPU (for a tied head: the embedding's own store).
    Dense(Arc<Dense>),
}

/// A Llama / Mistral / Qwen2 causal language model.
#[derive(Clone, Debug)]
pub struct Model {
    cfg: Config,
    embed: Embed,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Head,
    device: Device,
    /// The activations' dtype (f32 whenever the weights are dense).
    dtype: DType,
    /// The format of frozen weights on the CPU (`None`: tensors).
    format: Option<WeightFormat>,
}

impl Model {
    /// Builds the model from weights with Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, ...).
    /// On the CPU, frozen weights are held in the format of the builder's dtype (f32 or bf16)
    /// and the activations are f32; trainable variables are read as they are.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let format = match (vb.device().is_cpu(), vb.dtype()) {
            (true, DType::F32) => Some(WeightFormat::F32),
            (true, DType::BF16) => Some(WeightFormat::Bf16),
            _ => None,
        };
        Self::new_as(cfg, vb, format)
    }

    /// [`Model::new`] with frozen weights on the CPU held in `format` (`None`: as tensors of
    /// the builder's dtype, which is then also the activations' dtype).
    pub fn new_as(cfg: &Config, vb: VarBuilder, format: Option<WeightFormat>) -> Result<Self> {
        cfg.validate()?;
        let device = vb.device().clone();
        let format = format.filter(|_| device.is_cpu());
        let act = if format.is_some() {
            DType::F32
        } else {
            vb.dtype()
        };
        let rotary = Arc::new(Rotary::new(cfg, act, &device)?);
        let m = vb.pp("model");
        let embed_w = m.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let vb = m.pp(format!("layers.{l}"));
                DecoderLayer::new(cfg, l, rotary.clone(), vb, (format, act))
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"), act)?;
        let dense = |w: &Tensor| -> Result<Option<Arc<Dense>>> {
            Ok(match format {
                Some(f) if !w.is_variable() => Some(Arc::new(Dense::from_tensor(w, f)?)),
                _ => None,
            })
        };
        let (embed, lm_head) = match dense(&embed_w)? {
            Some(d) => {
                let head = if cfg.tie_word_embeddings {
                    Head::Dense(d.clone())
                } else {
                    let w = vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?;
                    match dense(&w)? {
                        Some(h) => Head::Dense(h),
                        None => Head::Tensor(w),
                    }
                };
                (Embed::Dense(d), head)
            }
            None => {
                let head = if cfg.tie_word_embeddings {
                    embed_w.clone()
                } else {
                    vb.get((cfg.vocab_size, cfg.hidden_size), "lm_head.weight")?
                };
                (
                    Embed::Tensor(Embedding::new(embed_w, cfg.hidden_size)),
                    Head::Tensor(head),
                )
            }
        };
        Ok(Model {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            device,
            dtype: act,
            format,
        })
    }

    /// The format frozen weights are held in (`None`: tensors of [`Self::dtype`]).
    pub fn weight_format(&self) -> Option<WeightFormat> {
        self.format
    }

    /// Bytes the base weights hold in memory (a tied head counted once).
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let mut n = match &self.embed {
            Embed::Tensor(e) => t(e.embeddings()),
            Embed::Dense(d) => d.bytes(),
        };
        if !self.cfg.tie_word_embeddings {
            n += match &self.lm_head {
                Head::Tensor(h) => t(h),
                Head::Dense(d) => d.bytes(),
            };
        }
        for l in &self.layers {
            let (a, m) = (&l.attn, &l.mlp);
            for lin in [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down] {
                n += lin.weight_bytes() + lin.bias.as_ref().map_or(0, t);
            }
            n += t(&l.input_norm.weight) + t(&l.post_norm.weight);
        }
        n + t(&self.norm.weight)
    }

    /// `h·headᵀ` plus the head LoRA of each row's adapter: `h` `[rows, hidden]` → logits
    /// `[rows, vocab]`.
    fn head(&self, h: &Tensor, plan: &RowPlan) -> Result<Tensor> {
        let _t = profile::time(Phase::LmHead);
        let y = self.head_base(h)?;
        let dims = (self.cfg.hidden_size, self.cfg.vocab_size);
        plan.add_module(h, y, |a| a.head_pair(), dims)
    }

    fn head_base(&self, h: &Tensor) -> Result<Tensor> {
        Ok(match &self.lm_head {
            Head::Dense(d) if h.dtype() == DType::F32 => h
                .contiguous()?
                .apply_op1_arc(Arc::new(Box::new(crate::dense::DenseOp(d.clone()))))?,
            Head::Dense(d) => h.matmul(&d.to_tensor(h.device())?.to_dtype(h.dtype())?.t()?)?,
            Head::Tensor(w) => h.matmul(&w.t()?)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            Some(bad) => Err(Error::InvalidArgument(format!(
                "token id {bad} >= vocab_size {}",
                self.cfg.vocab_size
            ))),
            None => Ok(()),
        }
    }

    fn run(&self, ids: &Tensor, layout: &mut Layout, plan: &RowPlan) -> Result<Tensor> {
        let mut x = {
            let _t = profile::time(Phase::Embed);
            let x = match &self.embed {
                Embed::Tensor(e) => e.forward(ids)?,
                Embed::Dense(d) => d.gather(&ids.to_vec1::<u32>()?, &self.device)?,
            };
            match plan.embed_delta(ids, self.cfg.hidden_size)? {
                Some(d) => (x + d.to_dtype(self.dtype)?)?,
                None => x,
            }
        };
        for layer in &self.layers {
            x = layer.forward(&x, layout, plan)?;
        }
        self.norm.forward(&x)
    }

    /// Full forward without a cache: `ids` is [b, t] (u32), returns logits [b, t, vocab].
    /// Differentiable with respect to the weights and any trainable adapter.
    pub fn forward(&self, ids: &Tensor, adapters: &BatchAdapters) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 || b == 0 {
            return Err(Error::InvalidArgument("empty batch".into()));
        }
        self.check_ids(&ids.flatten_all()?.to_vec1::<u32>()?)?;
        let plan = adapters.plan(&vec![t; b], &self.device)?;
        let flat = ids.flatten_all()?;
        let h = self.run(&flat, &mut Layout::Uniform { b, t }, &plan)?;
        Ok(self.head(&h, &plan)?.reshape((b, t, self.cfg.vocab_size))?)
    }

    /// [`Model::forward`] with logits only at the positions `rows` (indices into the `b·t`
    /// positions, row-major): [rows.len(), vocab]. Training needs logits where a target is;
    /// the output head over a large vocabulary is the largest tensor of a step, and padding
    /// and prompt positions would only be multiplied by zero. Differentiable.
    pub fn forward_rows(
        &self,
        ids: &Tensor,
        adapters: &BatchAdapters,
        rows: &[u32],
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 || b == 0 || rows.is_empty() {
            return Err(Error::InvalidArgument("empty batch".into()));
        }
        if let Some(bad) = rows.iter().find(|&&r| r as usize >= b * t) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} outside a batch of {b}×{t} positions"
            )));
        }
        self.check_ids(&ids.flatten_all()?.to_vec1::<u32>()?)?;
        let plan = adapters.plan(&vec![t; b], &self.device)?;
        let flat = ids.flatten_all()?;
        let h = self.run(&flat, &mut Layout::Uniform { b, t }, &plan)?;
        let head_plan = plan.select(rows, &self.device)?;
        let idx = Tensor::from_vec(rows.to_vec(), rows.len(), &self.device)?;
        self.head(&h.index_select(&idx, 0)?, &head_plan)
    }

    /// One step of incremental decoding for a batch of sequences: appends each sequence's new
    /// tokens to its cache and returns the logits at each sequence's last new token, [b, vocab].
    pub fn forward_step(
        &self,
        seqs: &mut [SeqStep<'_>],
        adapters: &BatchAdapters,
    ) -> Result<Tensor> {
        let _t = profile::time(Phase::Forward);
        let rows: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
        if rows.is_empty() || rows.contains(&0) {
            return Err(Error::InvalidArgument(
                "every sequence needs at least one new token".into(),
            ));
        }
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        self.check_ids(&ids)?;
        let plan = adapters.plan(&rows, &self.device)?;
        let n = ids.len();
        let flat = Tensor::from_vec(ids, n, &self.device)?;
        let h = self.run(&flat, &mut Layout::Cached(seqs), &plan)?;
        let mut last = Vec::with_capacity(rows.len());
        let mut end = 0u32;
        for (seq, r) in seqs.iter_mut().zip(&rows) {
            end += *r as u32;
            last.push(end - 1);
            seq.cache.len += r;
        }
        let head_plan = plan.select(&last, &self.device)?;
        let last = Tensor::from_vec(last, rows.len(), &self.device)?;
        self.head(&h.index_select(&last, 0)?, &head_plan)
    }

    /// A copy of this model with `adapter` merged into the base weights (W + s·B·A).
    pub fn merged(&self, adapter: &LoraAdapter) -> Result<Model> {
        let _t = profile::time(Phase::Merge);
        let mut m = self.clone();
        let f32 = DType::F32;
        // the embedding: E + s·(B·A)ᵀ = E + s·Aᵀ·Bᵀ (a tied head keeps the embedding it had,
        // as PEFT's embedding LoRA leaves the head alone)
        if let Some(p) = adapter.embed_pair() {
            let delta = (p.a.to_dtype(f32)?.t()?.matmul(&p.b.to_dtype(f32)?.t()?)? * p.scale)?;
            m.embed = match &self.embed {
                Embed::Dense(d) => {
                    let w = (d.to_tensor(&self.device)? + delta)?;
                    Embed::Dense(Arc::new(Dense::from_tensor(&w, d.format())?))
                }
                Embed::Tensor(e) => {
                    let w = e.embeddings();
                    let w = (w.to_dtype(f32)? + delta)?.to_dtype(w.dtype())?;
                    Embed::Tensor(Embedding::new(w, self.cfg.hidden_size))
                }
            };
        }
        // the head: W + s·B·A
        if let Some(p) = adapter.head_pair() {
            let delta = (p.b.to_dtype(f32)?.matmul(&p.a.to_dtype(f32)?)? * p.scale)?;
            m.lm_head = match &self.lm_head {
                Head::Dense(d) => {
                    let w = (d.to_tensor(&self.device)? + delta)?;
                    Head::Dense(Arc::new(Dense::from_tensor(&w, d.format())?))
                }
                Head::Tensor(w) => Head::Tensor((w.to_dtype(f32)? + delta)?.to_dtype(w.dtype())?),
            };
        }
        for layer in &mut m.layers {
            let a = &mut layer.attn;
            for lin in [&mut a.q, &mut a.k, &mut a.v, &mut a.o] {
                *lin = lin.merged(adapter)?;
            }
            let p = &mut layer.mlp;
            for lin in [&mut p.gate, &mut p.up, &mut p.down] {
                *lin = lin.merged(adapter)?;
            }
        }
        Ok(m)
    }

    /// All weights under their Hugging Face names (tied `lm_head` omitted); dense weights as
    /// f32 copies of the values they hold.
    pub fn named_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            match &self.embed {
                Embed::Tensor(e) => e.embeddings().clone(),
                Embed::Dense(d) => d.to_tensor(&self.device)?,
            },
        )];
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                layer.input_norm.weight.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_norm.weight.clone(),
            ));
            let a = &layer.attn;
            let m = &layer.mlp;
            for (lin, name) in [
                (&a.q, "self_attn.q_proj"),
                (&a.k, "self_attn.k_proj"),
                (&a.v, "self_attn.v_proj"),
                (&a.o, "self_attn.o_proj"),
                (&m.gate, "mlp.gate_proj"),
                (&m.up, "mlp.up_proj"),
                (&m.down, "mlp.down_proj"),
            ] {
                out.push((format!("{p}.{name}.weight"), lin.weight()?));
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{name}.bias"), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.weight.clone()));
        if !self.cfg.tie_word_embeddings {
            let head = match &self.lm_head {
                Head::Tensor(h) => h.clone(),
                Head::Dense(d) => d.to_tensor(&self.device)?,
            };
            out.push(("lm_head.weight".to_string(), head));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_beyond_the_table_matches_the_table() -> Result<()> {
        let cfg = Config::from_json(
            r#"{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,
            "num_attention_heads":2,"vocab_size":10,"max_position_embeddings":5000}"#,
        )?;
        let r = Rotary::new(&cfg, DType::F32, &Device::Cpu)?;
        assert_eq!(r.table, ROPE_TABLE);
        let (cos, sin) = Rotary::tables(&r.inv, r.factor, 4090, 6, DType::F32, &Device::Cpu)?;
        let d = (cos - r.cos.narrow(0, 4090, 6)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        let e = (sin - r.sin.narrow(0, 4090, 6)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d == 0.0 && e == 0.0);
        // past the table and past max_position_embeddings
        let x = Tensor::ones((1, 2, 3, 16), DType::F32, &Device::Cpu)?;
        assert_eq!(r.apply(&x, 4500)?.dims(), &[1, 2, 3, 16]);
        assert!(matches!(r.apply(&x, 4998), Err(Error::InvalidArgument(_))));
        // the host rotation equals the tensor one, in the table and past it
        let x = Tensor::randn(0f32, 1.0, (1, 1, 1, 16), &Device::Cpu)?;
        for pos in [0, 7, 4095, 4500] {
            let want = r.apply(&x, pos)?.flatten_all()?.to_vec1::<f32>()?;
            let mut got = x.flatten_all()?.to_vec1::<f32>()?;
            r.rotate_host(&mut got, pos);
            let d = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-6, "pos {pos}: diff {d}");
        }
        Ok(())
    }

    /// Runs one step of cached attention over `caches` (sequence i gets `rows[i]` new rows)
    /// through the one-pass CPU kernel or the per-sequence tensor path.
    fn cached_step(
        h: Heads,
        rope: &Rotary,
        qkv: [&Tensor; 3],
        caches: &mut [KvCache],
        rows: &[usize],
        kernel: bool,
    ) -> Result<Tensor> {
        let toks: Vec<Vec<u32>> = rows.iter().map(|&r| vec![0; r]).collect();
        let mut seqs: Vec<SeqStep> = toks
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, c)| SeqStep {
                tokens: t,
                cache: c,
            })
            .collect();
        let [q, k, v] = qkv;
        let out = if kernel {
            attend_cached_cpu(h, rope, q, k, v, &mut seqs)?
                .ok_or_else(|| Error::InvalidArgument("cpu f32 takes the kernel".into()))?
        } else {
            attend_cached_tensors(h, rope, q, k, v, &mut seqs)?
        };
        for (c, &r) in caches.iter_mut().zip(rows) {
            c.len += r;
        }
        Ok(out)
    }

    #[test]
    fn batched_cached_attention_equals_the_per_sequence_path() -> Result<()> {
        let dev = Device::Cpu;
        for json in [
            // GQA (4 heads over 2 kv heads) with a sliding window of 4
            r#"{"model_type":"mistral","hidden_size":32,"intermediate_size":40,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,
            "max_position_embeddings":64,"sliding_window":4,"rope_theta":1000.0}"#,
            // plain multi-head attention with linear rope scaling, no window
            r#"{"model_type":"llama","hidden_size":48,"intermediate_size":40,"num_hidden_layers":2,
            "num_attention_heads":3,"vocab_size":10,"max_position_embeddings":64,
            "rope_scaling":{"type":"linear","factor":2.0}}"#,
        ] {
            let cfg = Config::from_json(json)?;
            let rope = Rotary::new(&cfg, DType::F32, &dev)?;
            let h = Heads {
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_kv_heads(),
                head_dim: cfg.head_dim(),
                window: cfg.window(),
                layer: 1,
            };
            let mut fast: Vec<KvCache> = (0..4).map(|_| KvCache::new(&cfg)).collect();
            let mut slow = fast.clone();
            // prefill chunks of different lengths, then steps mixing decode rows and chunks;
            // the last step swaps the paths, so each cache changes form (host ⇄ tensors)
            let plan = [
                [5, 1, 9, 3],
                [1, 1, 4, 1],
                [1, 6, 1, 1],
                [1, 1, 1, 2],
                [2, 1, 1, 1],
            ];
            for (step, rows) in plan.iter().enumerate() {
                let n: usize = rows.iter().sum();
                let q = Tensor::randn(0f32, 1.0, (n, h.heads * h.head_dim), &dev)?;
                let k = Tensor::randn(0f32, 1.0, (n, h.kv_heads * h.head_dim), &dev)?;
                let v = Tensor::randn(0f32, 1.0, (n, h.kv_heads * h.head_dim), &dev)?;
                let swap = step == plan.len() - 1;
                let a = cached_step(h, &rope, [&q, &k, &v], &mut fast, rows, !swap)?;
                let b = cached_step(h, &rope, [&q, &k, &v], &mut slow, rows, swap)?;
                assert_eq!(a.dims(), &[n, h.heads * h.head_dim]);
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "step {step}: diff {d}");
            }
            // the caches hold the same keys and values, and count the same bytes
            for (f, s) in fast.iter_mut().zip(slow.iter_mut()) {
                assert_eq!(f.size_bytes(), s.size_bytes());
                assert_eq!(
                    f.size_bytes(),
                    f.len() * KvCache::bytes_per_token(&cfg, DType::F32) / 2
                );
                let (hd, kv) = (h.head_dim, h.kv_heads);
                let (Some((fk, fv)), Some((sk, sv))) = (
                    f.layers[1].take_tensors(kv, hd, &dev)?,
                    s.layers[1].take_tensors(kv, hd, &dev)?,
                ) else {
                    panic!("both caches hold layer 1");
                };
                let dk = (fk - sk)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let dv = (fv - sv)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(dk < 1e-6 && dv == 0.0, "cached keys {dk}, values {dv}");
            }
        }
        Ok(())
    }

    #[test]
    fn attention_rows_do_not_depend_on_the_sequences_beside_them() -> Result<()> {
        let cfg = Config::from_json(
            r#"{"model_type":"llama","hidden_size":128,"intermediate_size":40,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,
            "vocab_size":10,"max_position_embeddings":128}"#,
        )?;
        let rope = Rotary::new(&cfg, DType::F32, &Device::Cpu)?;
        let h = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            window: None,
            layer: 0,
        };
        let (qw, kw) = (128, 64);
        let mut seed = 7u64;
        let mut noise = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        // 12 sequences with caches of different lengths, then one step of decode rows and
        // prefill chunks: enough work that the batch takes the thread pool
        let mut batched: Vec<KvCache> = (0..12).map(|_| KvCache::new(&cfg)).collect();
        for (i, c) in batched.iter_mut().enumerate() {
            let rows = 3 + 5 * i;
            let (q, k, v) = (noise(rows * qw), noise(rows * kw), noise(rows * kw));
            attend_host(h, &rope, &q, &k, &v, &mut [HostSeq { rows, cache: c }])?;
            c.len += rows;
        }
        let mut alone = batched.clone();
        let rows: Vec<usize> = (0..12).map(|i| if i % 4 == 0 { 9 } else { 1 }).collect();
        let n: usize = rows.iter().sum();
        let (q, k, v) = (noise(n * qw), noise(n * kw), noise(n * kw));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let together = pool.install(|| {
            let mut host: Vec<HostSeq<'_>> = batched
                .iter_mut()
                .zip(&rows)
                .map(|(cache, &rows)| HostSeq { rows, cache })
                .collect();
            attend_host(h, &rope, &q, &k, &v, &mut host)
        })?;
        let mut start = 0;
        for (c, &r) in alone.iter_mut().zip(&rows) {
            let one = attend_host(
                h,
                &rope,
                &q[start * qw..(start + r) * qw],
                &k[start * kw..(start + r) * kw],
                &v[start * kw..(start + r) * kw],
                &mut [HostSeq { rows: r, cache: c }],
            )?;
            assert_eq!(
                one,
                together[start * qw..(start + r) * qw],
                "rows from {start}"
            );
            start += r;
        }
        for (a, b) in batched.iter_mut().zip(alone.iter_mut()) {
            assert_eq!(a.layers[0].host_mut()?, b.layers[0].host_mut()?);
        }
        Ok(())
    }

    #[test]
    fn model_and_adapters_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Model>();
        shared::<LoraAdapter>();
        shared::<BatchAdapters>();
        shared::<KvCache>();
    }
}
