//! Gradient sketches for attribution (format version 1).
//!
//! For every training example the trainer records the gradient of that example's loss (mean
//! negative log-likelihood over its target tokens) with respect to the LoRA parameters of the
//! final adapter, projected per decoder layer to `dim` numbers:
//!
//! ```text
//! sketch_l(x) = Σ_{m ∈ modules of layer l}  P_{l,m,A} · vec(∂loss/∂A_{l,m})  +  P_{l,m,B} · vec(∂loss/∂B_{l,m})
//! P_{l,m,X} ∈ {+1/√dim, −1/√dim}^{dim × numel(X)}   (Rademacher; E[‖Px‖²] = ‖x‖²)
//! ```
//!
//! Row-major `vec`, A = [r, in], B = [out, r] as in PEFT. The signs of `P_{l,m,X}` are the bits
//! of a ChaCha8 stream seeded with `keccak256("openledger-sketch-v1" ‖ seed_le64 ‖ layer_le64
//! ‖ module ‖ "A"|"B")`, taken 64 per `next_u64`, least significant bit first, bit = 1 → −,
//! filling P column by column in `numel` order (entry (j, i) multiplies element i, output j).
//!
//! [`query_sketch`] computes the same vector for any (prompt, answer) pair with the loss on the
//! answer tokens only, so an influence score is a few dot products per layer (see
//! [`datainf_scores`] for the DataInf closed form on the sketches).
//!
//! Blob (safetensors, deterministic bytes):
//!
//! ```text
//! __metadata__ { "openledger.sketch.v1": SketchHeader as compact JSON }
//!   version 1, dim, seed, layers [{layer, modules, paramDim, meanSqNorm, lambda,
//!   meanProjSqNorm, lambdaProjected}], loss, rows [row ids, "0x<contentHash>:<index>"]
//! grads     f32 [n, L, dim]   projected gradients, row i = rows[i]
//! sq_norms  f32 [n, L]        exact ‖∂loss/∂θ_l‖² (before projection)
//! losses    f32 [n]           the example's loss at the final adapter
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use alloy_primitives::keccak256;
use candle_core::{DType, Device, Tensor, Var};
use openledger_model::{Config, LoraAdapter, Model, Proj};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::loss::{Batch, batch_loss};

/// Metadata key of a version-1 sketch blob.
pub const METADATA_KEY: &str = "openledger.sketch.v1";
/// Format version written in the header.
pub const FORMAT_VERSION: u32 = 1;
/// Default projected dimension per layer.
pub const DEFAULT_DIM: usize = 128;

/// How sketches are projected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SketchConfig {
    /// Projected dimension per layer.
    pub dim: usize,
    /// Seed of the projection.
    pub seed: u64,
}

impl Default for SketchConfig {
    fn default() -> Self {
        SketchConfig {
            dim: DEFAULT_DIM,
            seed: 0,
        }
    }
}

/// One layer's entry in the header, with what a DataInf-style closed form needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    /// Decoder layer index.
    pub layer: usize,
    /// Adapted modules of the layer, in projection order (`q_proj`, ...).
    pub modules: Vec<String>,
    /// Number of LoRA parameters of the layer (d_l).
    pub param_dim: usize,
    /// Mean over examples of the exact ‖g_l‖².
    pub mean_sq_norm: f64,
    /// DataInf damping in parameter space: 0.1 · meanSqNorm / paramDim.
    pub lambda: f64,
    /// Mean over examples of the projected ‖P g_l‖².
    pub mean_proj_sq_norm: f64,
    /// The same damping in sketch space: 0.1 · meanProjSqNorm / dim.
    pub lambda_projected: f64,
}

/// The JSON header of a sketch blob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SketchHeader {
    /// Always 1.
    pub version: u32,
    /// Projected dimension per layer.
    pub dim: usize,
    /// Projection seed.
    pub seed: u64,
    /// Layers with adapters, in order (the L axis of the tensors).
    pub layers: Vec<LayerInfo>,
    /// The per-example loss that was differentiated.
    pub loss: String,
    /// Row ids, one per example, in tensor row order.
    pub rows: Vec<String>,
}

/// Sketches of a training set.
#[derive(Clone, Debug, PartialEq)]
pub struct SketchSet {
    /// Header.
    pub header: SketchHeader,
    /// [n, L, dim] row-major.
    pub grads: Vec<f32>,
    /// [n, L].
    pub sq_norms: Vec<f32>,
    /// [n].
    pub losses: Vec<f32>,
}

/// The sketch of one query.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySketch {
    /// [L, dim] row-major.
    pub grads: Vec<f32>,
    /// Exact ‖g_l‖², [L].
    pub sq_norms: Vec<f32>,
    /// Loss on the answer tokens.
    pub loss: f32,
}

struct ModuleProj {
    proj: Proj,
    /// [numel(A), dim] and [numel(B), dim].
    pa: Tensor,
    pb: Tensor,
}

/// Projection matrices for one adapter layout; build once, reuse for every example.
pub struct Projector {
    cfg: SketchConfig,
    layers: Vec<(usize, Vec<ModuleProj>)>,
}

fn rademacher(cfg: &SketchConfig, layer: usize, module: &str, ab: &str, numel: usize) -> Vec<f32> {
    let mut seed_bytes = Vec::new();
    seed_bytes.extend_from_slice(b"openledger-sketch-v1");
    seed_bytes.extend_from_slice(&cfg.seed.to_le_bytes());
    seed_bytes.extend_from_slice(&(layer as u64).to_le_bytes());
    seed_bytes.extend_from_slice(module.as_bytes());
    seed_bytes.extend_from_slice(ab.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(keccak256(&seed_bytes).0);
    let v = 1.0 / (cfg.dim as f32).sqrt();
    // P is [dim, numel]; stored transposed as [numel, dim] so that vec(g)·Pᵀ is one matmul.
    let mut p = vec![0f32; numel * cfg.dim];
    let mut bits = 0u64;
    let mut left = 0;
    for j in 0..cfg.dim {
        for i in 0..numel {
            if left == 0 {
                bits = rng.next_u64();
                left = 64;
            }
            p[i * cfg.dim + j] = if bits & 1 == 1 { -v } else { v };
            bits >>= 1;
            left -= 1;
        }
    }
    p
}

impl Projector {
    /// Projections for every adapted module of `adapter`.
    pub fn new(cfg: SketchConfig, adapter: &LoraAdapter, device: &Device) -> Result<Self> {
        if cfg.dim == 0 {
            return Err(TrainError::field("sketchDim", "must be > 0"));
        }
        let mut layers: Vec<(usize, Vec<ModuleProj>)> = Vec::new();
        for (l, proj, pair) in adapter.pairs() {
            let (na, nb) = (pair.a.elem_count(), pair.b.elem_count());
            let pa = rademacher(&cfg, l, proj.name(), "A", na);
            let pb = rademacher(&cfg, l, proj.name(), "B", nb);
            let m = ModuleProj {
                proj,
                pa: Tensor::from_vec(pa, (na, cfg.dim), device)?,
                pb: Tensor::from_vec(pb, (nb, cfg.dim), device)?,
            };
            match layers.last_mut() {
                Some((last, ms)) if *last == l => ms.push(m),
                _ => layers.push((l, vec![m])),
            }
        }
        Ok(Projector { cfg, layers })
    }

    /// The configuration.
    pub fn config(&self) -> SketchConfig {
        self.cfg
    }

    /// Number of layers with adapters (the L axis).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Header layer entries (statistics zero; filled by [`SketchSet::from_rows`]).
    fn layer_infos(&self) -> Vec<LayerInfo> {
        self.layers
            .iter()
            .map(|(l, ms)| LayerInfo {
                layer: *l,
                modules: ms.iter().map(|m| m.proj.name().to_string()).collect(),
                param_dim: ms
                    .iter()
                    .map(|m| m.pa.dim(0).unwrap_or(0) + m.pb.dim(0).unwrap_or(0))
                    .sum(),
                mean_sq_norm: 0.0,
                lambda: 0.0,
                mean_proj_sq_norm: 0.0,
                lambda_projected: 0.0,
            })
            .collect()
    }

    /// Gradient of the mean NLL over the target tokens of `ids` (mask 1 = target) with respect
    /// to the LoRA parameters of `params`, projected: ([L·dim], exact ‖g_l‖² [L], loss).
    pub fn sketch(
        &self,
        model: &Model,
        params: &TrainableAdapter,
        ids: &[u32],
        mask: &[u8],
    ) -> Result<QuerySketch> {
        let batch = Batch::new(&[(ids, mask)], 0, model.device())?;
        if batch.target_tokens == 0 {
            return Err(TrainError::field(
                "answer",
                "no target tokens to differentiate",
            ));
        }
        let loss = batch_loss(
            model,
            Some(&params.adapter),
            &batch,
            batch.target_tokens as f64,
        )?;
        let grads = loss.backward()?;
        let mut out = Vec::with_capacity(self.layers.len() * self.cfg.dim);
        let mut sq = Vec::with_capacity(self.layers.len());
        for (l, ms) in &self.layers {
            let mut acc: Option<Tensor> = None;
            let mut norm = 0f32;
            for m in ms {
                let (va, vb) = params
                    .vars
                    .get(&(*l, m.proj))
                    .ok_or_else(|| TrainError::corrupt("adapter", "projector/adapter mismatch"))?;
                for (var, p) in [(va, &m.pa), (vb, &m.pb)] {
                    let g = match grads.get(var.as_tensor()) {
                        Some(g) => g.flatten_all()?.unsqueeze(0)?,
                        None => Tensor::zeros((1, var.elem_count()), DType::F32, var.device())?,
                    };
                    norm += g.sqr()?.sum_all()?.to_scalar::<f32>()?;
                    let y = g.matmul(p)?;
                    acc = Some(match acc {
                        Some(a) => (a + y)?,
                        None => y,
                    });
                }
            }
            match acc {
                Some(a) => out.extend(a.flatten_all()?.to_vec1::<f32>()?),
                None => out.extend(std::iter::repeat_n(0.0, self.cfg.dim)),
            }
            sq.push(norm);
        }
        Ok(QuerySketch {
            grads: out,
            sq_norms: sq,
            loss: loss.to_scalar::<f32>()?,
        })
    }

    /// [`Projector::sketch`] for a (prompt, answer) pair: loss on the answer tokens only.
    pub fn query(
        &self,
        model: &Model,
        params: &TrainableAdapter,
        prompt: &[u32],
        answer: &[u32],
    ) -> Result<QuerySketch> {
        if prompt.is_empty() {
            return Err(TrainError::field("prompt", "needs at least one token"));
        }
        if answer.is_empty() {
            return Err(TrainError::field("answer", "needs at least one token"));
        }
        let ids: Vec<u32> = prompt.iter().chain(answer).copied().collect();
        let mask: Vec<u8> = (0..ids.len())
            .map(|i| u8::from(i >= prompt.len()))
            .collect();
        self.sketch(model, params, &ids, &mask)
    }
}

/// An adapter whose A and B are fresh [`Var`]s (copies), so gradients can be taken.
pub struct TrainableAdapter {
    /// The adapter built on the vars.
    pub adapter: Arc<LoraAdapter>,
    /// (layer, projection) → (A, B).
    pub vars: HashMap<(usize, Proj), (Var, Var)>,
}

impl TrainableAdapter {
    /// Copies `adapter`'s tensors into vars on `model`'s device (f32).
    pub fn from_adapter(adapter: &LoraAdapter, model: &Config, device: &Device) -> Result<Self> {
        let mut tensors = HashMap::new();
        let mut vars = HashMap::new();
        for (l, proj, pair) in adapter.pairs() {
            let a = Var::from_tensor(&pair.a.to_device(device)?.to_dtype(DType::F32)?)?;
            let b = Var::from_tensor(&pair.b.to_device(device)?.to_dtype(DType::F32)?)?;
            let prefix = format!("base_model.model.{}", proj.path(l));
            tensors.insert(format!("{prefix}.lora_A.weight"), a.as_tensor().clone());
            tensors.insert(format!("{prefix}.lora_B.weight"), b.as_tensor().clone());
            vars.insert((l, proj), (a, b));
        }
        let adapter = LoraAdapter::from_tensors(
            adapter.config().clone(),
            model,
            tensors,
            device,
            DType::F32,
        )?;
        Ok(TrainableAdapter {
            adapter: Arc::new(adapter),
            vars,
        })
    }
}

/// The projected gradient of the answer's loss for one (prompt, answer) pair under `adapter`
/// (the published adapter at inference time). Builds the projection each call; keep a
/// [`Projector`] and a [`TrainableAdapter`] to amortise that over many queries.
pub fn query_sketch(
    model: &Model,
    adapter: &LoraAdapter,
    prompt: &[u32],
    answer: &[u32],
    cfg: SketchConfig,
) -> Result<QuerySketch> {
    let params = TrainableAdapter::from_adapter(adapter, model.config(), model.device())?;
    let projector = Projector::new(cfg, &params.adapter, model.device())?;
    projector.query(model, &params, prompt, answer)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_vec(what: &str, bytes: &[u8], want: usize) -> Result<Vec<f32>> {
    if bytes.len() != want * 4 {
        return Err(TrainError::corrupt(
            "sketch",
            format!("{what} has {} bytes, expected {}", bytes.len(), want * 4),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl SketchSet {
    /// Assembles a set from per-example sketches and fills the per-layer statistics.
    pub fn from_rows(projector: &Projector, rows: Vec<(String, QuerySketch)>) -> Self {
        let cfg = projector.config();
        let mut layers = projector.layer_infos();
        let nl = layers.len();
        let n = rows.len().max(1) as f64;
        let mut header_rows = Vec::with_capacity(rows.len());
        let (mut grads, mut sq_norms, mut losses) = (Vec::new(), Vec::new(), Vec::new());
        for (id, s) in rows {
            for (l, info) in layers.iter_mut().enumerate() {
                let g = &s.grads[l * cfg.dim..(l + 1) * cfg.dim];
                info.mean_sq_norm += f64::from(s.sq_norms[l]) / n;
                info.mean_proj_sq_norm += g.iter().map(|x| f64::from(x * x)).sum::<f64>() / n;
            }
            header_rows.push(id);
            grads.extend_from_slice(&s.grads);
            sq_norms.extend_from_slice(&s.sq_norms);
            losses.push(s.loss);
        }
        for info in &mut layers {
            info.lambda = 0.1 * info.mean_sq_norm / info.param_dim.max(1) as f64;
            info.lambda_projected = 0.1 * info.mean_proj_sq_norm / cfg.dim as f64;
        }
        debug_assert_eq!(sq_norms.len(), header_rows.len() * nl);
        SketchSet {
            header: SketchHeader {
                version: FORMAT_VERSION,
                dim: cfg.dim,
                seed: cfg.seed,
                layers,
                loss: "mean negative log-likelihood over the example's target tokens".into(),
                rows: header_rows,
            },
            grads,
            sq_norms,
            losses,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.header.rows.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.header.rows.is_empty()
    }

    /// The [L·dim] sketch of example `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.header.layers.len() * self.header.dim;
        &self.grads[i * w..(i + 1) * w]
    }

    /// The blob (safetensors with the header in its metadata; deterministic bytes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::{Dtype, TensorView};
        let (n, l, d) = (self.len(), self.header.layers.len(), self.header.dim);
        let json = serde_json::to_string(&self.header)
            .map_err(|e| TrainError::corrupt("sketch header", e))?;
        let meta = HashMap::from([(METADATA_KEY.to_string(), json)]);
        let (g, s, lo) = (
            f32_bytes(&self.grads),
            f32_bytes(&self.sq_norms),
            f32_bytes(&self.losses),
        );
        fn view(shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>> {
            TensorView::new(Dtype::F32, shape, data).map_err(|e| TrainError::corrupt("sketch", e))
        }
        let tensors = vec![
            ("grads".to_string(), view(vec![n, l, d], &g)?),
            ("sq_norms".to_string(), view(vec![n, l], &s)?),
            ("losses".to_string(), view(vec![n], &lo)?),
        ];
        safetensors::serialize(tensors, Some(meta)).map_err(|e| TrainError::corrupt("sketch", e))
    }

    /// Parses a blob written by [`SketchSet::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| TrainError::corrupt("sketch", e);
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(&e))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| bad(&format!("no {METADATA_KEY} metadata")))?;
        let header: SketchHeader = serde_json::from_str(json).map_err(|e| bad(&e))?;
        if header.version != FORMAT_VERSION {
            return Err(bad(&format!("unsupported version {}", header.version)));
        }
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(&e))?;
        let (n, l) = (header.rows.len(), header.layers.len());
        let get = |name: &str, want: usize| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|e| bad(&e))?;
            f32_vec(name, t.data(), want)
        };
        Ok(SketchSet {
            grads: get("grads", n * l * header.dim)?,
            sq_norms: get("sq_norms", n * l)?,
            losses: get("losses", n)?,
            header,
        })
    }
}

/// DataInf influence of every example on the query, in sketch space: per layer,
/// u_l = (v_l − (1/n) Σ_i c_i g_il) / λ_l with c_i = (v_l·g_il)/(λ_l + ‖g_il‖²) and
/// λ_l = `lambdaProjected`; score_k = −Σ_l u_l·g_kl. Negative = the example lowered the
/// query's loss (helped). O(n·L·dim).
pub fn datainf_scores(set: &SketchSet, q: &QuerySketch) -> Vec<f32> {
    let (n, d) = (set.len(), set.header.dim);
    let nl = set.header.layers.len();
    let mut scores = vec![0f32; n];
    if n == 0 || q.grads.len() != nl * d {
        return scores;
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for (l, info) in set.header.layers.iter().enumerate() {
        let lambda = info.lambda_projected.max(1e-12) as f32;
        let v = &q.grads[l * d..(l + 1) * d];
        let mut acc = vec![0f32; d];
        for i in 0..n {
            let g = &set.row(i)[l * d..(l + 1) * d];
            let c = dot(v, g) / (lambda + dot(g, g));
            for (a, x) in acc.iter_mut().zip(g) {
                *a += c * x;
            }
        }
        let u: Vec<f32> = v
            .iter()
            .zip(&acc)
            .map(|(x, a)| (x - a / n as f32) / lambda)
            .collect();
        for (k, s) in scores.iter_mut().enumerate() {
            *s -= dot(&u, &set.row(k)[l * d..(l + 1) * d]);
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use openledger_model::{LoraConfig, random_model};

    fn setup() -> Result<(Model, LoraAdapter)> {
        let cfg = Config::from_json(
            r#"{"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":40}"#,
        )?;
        let model = random_model(&cfg, 3, &Device::Cpu, DType::F32)?;
        let varmap = candle_nn::VarMap::new();
        let lc = LoraConfig::new(4, 8.0, &[Proj::Q, Proj::V, Proj::Down]);
        let adapter = LoraAdapter::trainable(lc, &cfg, &varmap, &Device::Cpu, DType::F32, 5)?;
        // B = 0 gives zero gradients for A; give B some values so both parts matter.
        for (name, var) in varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Cancelled)?
            .iter()
        {
            if name.contains("lora_B") {
                var.set(&(var.randn_like(0.0, 0.05)?))?;
            }
        }
        Ok((model, adapter))
    }

    #[test]
    fn sketch_is_the_projected_gradient_and_round_trips() -> Result<()> {
        let (model, adapter) = setup()?;
        let cfg = SketchConfig { dim: 16, seed: 9 };
        let (prompt, answer) = ([0u32, 5, 7, 9], [11u32, 12, 13]);
        let q = query_sketch(&model, &adapter, &prompt, &answer, cfg)?;
        assert_eq!(q.grads.len(), 2 * 16);
        assert_eq!(q, query_sketch(&model, &adapter, &prompt, &answer, cfg)?);

        // Independent computation: exact gradient by backward, projection written out in f64.
        let params = TrainableAdapter::from_adapter(&adapter, model.config(), &Device::Cpu)?;
        let ids: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
        let mask = [0u8, 0, 0, 0, 1, 1, 1];
        let batch = Batch::new(&[(&ids, &mask)], 0, &Device::Cpu)?;
        let grads = batch_loss(&model, Some(&params.adapter), &batch, 3.0)?.backward()?;
        for (li, layer) in [0usize, 1].iter().enumerate() {
            let mut want = [0f64; 16];
            let mut norm = 0f64;
            for proj in [Proj::Q, Proj::V, Proj::Down] {
                let (va, vb) = &params.vars[&(*layer, proj)];
                for (var, ab) in [(va, "A"), (vb, "B")] {
                    let g: Vec<f32> = grads
                        .get(var.as_tensor())
                        .ok_or(TrainError::Cancelled)?
                        .flatten_all()?
                        .to_vec1()?;
                    let p = rademacher(&cfg, *layer, proj.name(), ab, g.len());
                    for (i, gi) in g.iter().enumerate() {
                        norm += f64::from(gi * gi);
                        for (j, w) in want.iter_mut().enumerate() {
                            *w += f64::from(*gi) * f64::from(p[i * 16 + j]);
                        }
                    }
                }
            }
            for (j, w) in want.iter().enumerate() {
                let got = f64::from(q.grads[li * 16 + j]);
                assert!((got - w).abs() < 1e-4 * (1.0 + w.abs()), "{got} vs {w}");
            }
            assert!((f64::from(q.sq_norms[li]) - norm).abs() < 1e-4 * (1.0 + norm));
            assert!(norm > 0.0);
        }

        let projector = Projector::new(cfg, &params.adapter, &Device::Cpu)?;
        let rows = vec![
            ("0xaa:0".to_string(), q.clone()),
            (
                "0xaa:1".to_string(),
                projector.query(&model, &params, &[0, 30], &[31, 32])?,
            ),
        ];
        let set = SketchSet::from_rows(&projector, rows);
        let back = SketchSet::from_bytes(&set.to_bytes()?)?;
        assert_eq!(
            (&back.grads, &back.sq_norms, &back.losses),
            (&set.grads, &set.sq_norms, &set.losses)
        );
        assert_eq!(back.header.rows, set.header.rows);
        for (a, b) in back.header.layers.iter().zip(&set.header.layers) {
            assert!((a.lambda_projected - b.lambda_projected).abs() <= 1e-12 * b.lambda_projected);
        }
        assert_eq!(set.to_bytes()?, set.to_bytes()?);
        assert!(
            set.header
                .layers
                .iter()
                .all(|l| l.lambda > 0.0 && l.param_dim > 0)
        );
        // The example identical to the query is the most helpful (most negative score).
        let s = datainf_scores(&set, &q);
        assert!(s[0] < s[1], "{s:?}");
        Ok(())
    }

    #[test]
    fn projection_preserves_norms_on_average() {
        let cfg = SketchConfig { dim: 256, seed: 1 };
        let numel = 300;
        let p = rademacher(&cfg, 0, "q_proj", "A", numel);
        let x: Vec<f32> = (0..numel)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let norm: f32 = x.iter().map(|v| v * v).sum();
        let y: Vec<f32> = (0..cfg.dim)
            .map(|j| (0..numel).map(|i| x[i] * p[i * cfg.dim + j]).sum())
            .collect();
        let pn: f32 = y.iter().map(|v| v * v).sum();
        assert!((pn / norm - 1.0).abs() < 0.3, "{pn} vs {norm}");
        assert_ne!(p, rademacher(&cfg, 1, "q_proj", "A", numel));
    }
}
