//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Tensor names follow PEFT: `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`
//! with A = [r, in] and B = [out, r]; the update is ΔW = s·B·A with s = alpha/r, or alpha/√r
//! under rsLoRA. Options this runtime cannot honour are refused by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result, read_json, write_file};
use crate::weights::{check_float, load_safetensors, uniform};

/// The seven linear projections of a decoder layer that LoRA can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proj {
    /// Attention query.
    Q,
    /// Attention key.
    K,
    /// Attention value.
    V,
    /// Attention output.
    O,
    /// MLP gate.
    Gate,
    /// MLP up.
    Up,
    /// MLP down.
    Down,
}

impl Proj {
    /// All projections, in layer order.
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The Hugging Face module name (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }

    /// The projection with this Hugging Face module name (`q_proj`, ...).
    pub fn from_name(name: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Full module path inside the model, e.g. `model.layers.3.mlp.up_proj`.
    pub fn path(self, layer: usize) -> String {
        let block = if (self as usize) < 4 {
            "self_attn"
        } else {
            "mlp"
        };
        format!("model.layers.{layer}.{block}.{}", self.name())
    }

    /// (out_features, in_features) of this projection in a model with `cfg`.
    pub fn dims(self, cfg: &Config) -> (usize, usize) {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (q, kv, i) = (
            cfg.num_attention_heads * hd,
            cfg.num_kv_heads() * hd,
            cfg.intermediate_size,
        );
        match self {
            Proj::Q => (q, h),
            Proj::K | Proj::V => (kv, h),
            Proj::O => (h, q),
            Proj::Gate | Proj::Up => (i, h),
            Proj::Down => (h, i),
        }
    }
}

/// `target_modules`: a list of module-name suffixes, a regex over full module names, or
/// the string `all-linear`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names (`["q_proj", "v_proj"]`), matched as a suffix after a dot.
    List(Vec<String>),
    /// A regex that must match the full module path, or `all-linear`.
    Pattern(String),
}

fn default_bias() -> String {
    "none".into()
}
fn default_peft_type() -> Option<String> {
    Some("LORA".into())
}

/// `adapter_config.json` of a PEFT LoRA adapter (fields PEFT writes that we do not read are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Always `LORA`.
    #[serde(default = "default_peft_type")]
    pub peft_type: Option<String>,
    /// `CAUSAL_LM`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Informational: which base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Rank.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Which projections carry an adapter.
    pub target_modules: TargetModules,
    /// Dropout during training (ignored at inference).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Must be `none`.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Scale by alpha/√r instead of alpha/r.
    #[serde(default)]
    pub use_rslora: bool,
    /// Refused when true.
    #[serde(default)]
    pub use_dora: bool,
    /// Refused when true.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Refused when non-empty.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Refused when set.
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Per-module rank overrides (pattern → rank).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides (pattern → alpha).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// PEFT writes this; informational.
    #[serde(default)]
    pub inference_mode: bool,
}

impl LoraConfig {
    /// A plain config: rank `r`, `alpha`, the given module names.
    pub fn new(r: usize, alpha: f64, targets: &[Proj]) -> Self {
        LoraConfig {
            peft_type: default_peft_type(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            r,
            lora_alpha: alpha,
            target_modules: TargetModules::List(
                targets.iter().map(|p| p.name().to_string()).collect(),
            ),
            lora_dropout: 0.0,
            bias: default_bias(),
            use_rslora: false,
            use_dora: false,
            fan_in_fan_out: false,
            modules_to_save: None,
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            inference_mode: true,
        }
    }

    /// Refuses options this runtime cannot honour, naming the option.
    pub fn validate(&self) -> Result<()> {
        let refuse = |m: &str| Err(Error::Adapter(m.to_string()));
        if let Some(t) = &self.peft_type
            && t != "LORA"
        {
            return refuse(&format!("peft_type {t:?} is not supported (only LORA)"));
        }
        if self.use_dora {
            return refuse("use_dora = true (DoRA) is not supported");
        }
        if self.fan_in_fan_out {
            return refuse("fan_in_fan_out = true is not supported (Conv1D-style weights)");
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return refuse("modules_to_save is not supported (only LoRA deltas are loaded)");
        }
        if self
            .layers_to_transform
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return refuse("layers_to_transform is not supported");
        }
        if self.bias != "none" {
            return refuse(&format!(
                "bias = {:?} is not supported (only \"none\")",
                self.bias
            ));
        }
        if self.r == 0 || self.rank_pattern.values().any(|&r| r == 0) {
            return refuse("r and rank_pattern values must be > 0");
        }
        if let TargetModules::Pattern(p) = &self.target_modules
            && p != "all-linear"
        {
            regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| Error::Adapter(format!("target_modules regex {p:?}: {e}")))?;
        }
        Ok(())
    }

    /// Checks that every `target_modules` entry names a projection of this model.
    pub fn check_targets(&self, num_layers: usize) -> Result<()> {
        let all: Vec<String> = (0..num_layers)
            .flat_map(|l| Proj::ALL.iter().map(move |p| p.path(l)))
            .collect();
        match &self.target_modules {
            TargetModules::List(names) => {
                for n in names {
                    let extra = [EMBED_PATH, HEAD_PATH].iter().any(|p| suffix_match(p, n));
                    if !extra && !all.iter().any(|path| suffix_match(path, n)) {
                        return Err(Error::Adapter(format!(
                            "target_modules entry {n:?} names no supported module \
                             (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj \
                             of {num_layers} layers, embed_tokens, lm_head)"
                        )));
                    }
                }
            }
            TargetModules::Pattern(p) if p == "all-linear" => {}
            TargetModules::Pattern(p) => {
                if !all.iter().any(|path| self.targets_path(path)) {
                    return Err(Error::Adapter(format!(
                        "target_modules regex {p:?} matches no supported module"
                    )));
                }
            }
        }
        Ok(())
    }

    fn targets_path(&self, path: &str) -> bool {
        match &self.target_modules {
            TargetModules::List(names) => names.iter().any(|n| suffix_match(path, n)),
            // PEFT's all-linear: every linear layer but the output head; no embedding
            TargetModules::Pattern(p) if p == "all-linear" => {
                path != HEAD_PATH && path != EMBED_PATH
            }
            TargetModules::Pattern(p) => {
                regex::Regex::new(&format!("^(?:{p})$")).is_ok_and(|re| re.is_match(path))
            }
        }
    }

    /// Whether projection `proj` of layer `layer` carries an adapter.
    pub fn targets(&self, layer: usize, proj: Proj) -> bool {
        self.targets_path(&proj.path(layer))
    }

    fn pattern_value<T: Copy>(map: &BTreeMap<String, T>, path: &str) -> Option<T> {
        map.iter()
            .find(|(pat, _)| {
                regex::Regex::new(&format!("^(.*\\.)?(?:{pat})$")).is_ok_and(|re| re.is_match(path))
            })
            .map(|(_, v)| *v)
    }

    /// Rank of one module (after `rank_pattern`).
    pub fn rank(&self, layer: usize, proj: Proj) -> usize {
        self.rank_at(&proj.path(layer))
    }

    /// Scale s of one module: alpha/r, or alpha/√r with rsLoRA (after the patterns).
    pub fn scale(&self, layer: usize, proj: Proj) -> f64 {
        self.scale_at(&proj.path(layer))
    }

    /// Whether the token embedding (`model.embed_tokens`) carries an adapter.
    pub fn targets_embed(&self) -> bool {
        self.targets_path(EMBED_PATH)
    }

    /// Whether the output head (`lm_head`) carries an adapter.
    pub fn targets_head(&self) -> bool {
        self.targets_path(HEAD_PATH)
    }

    fn rank_at(&self, path: &str) -> usize {
        Self::pattern_value(&self.rank_pattern, path).unwrap_or(self.r)
    }

    fn scale_at(&self, path: &str) -> f64 {
        let r = self.rank_at(path) as f64;
        let alpha = Self::pattern_value(&self.alpha_pattern, path).unwrap_or(self.lora_alpha);
        if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        }
    }
}

/// Module path of the token embedding, and PEFT's names of its LoRA tensors (PEFT's
/// `lora_embedding_A` `[r, vocab]` and `lora_embedding_B` `[hidden, r]`: e += s·B·A[:, token]).
const EMBED_PATH: &str = "model.embed_tokens";
const EMBED_A: &str = "base_model.model.model.embed_tokens.lora_embedding_A";
const EMBED_B: &str = "base_model.model.model.embed_tokens.lora_embedding_B";
/// Module path of the output head and its LoRA tensors (`[r, hidden]`, `[vocab, r]`).
const HEAD_PATH: &str = "lm_head";
const HEAD_A: &str = "base_model.model.lm_head.lora_A.weight";
const HEAD_B: &str = "base_model.model.lm_head.lora_B.weight";

fn suffix_match(path: &str, name: &str) -> bool {
    path == name || path.ends_with(&format!(".{name}"))
}

/// The A/B pair of one adapted projection.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// [r, in].
    pub a: Tensor,
    /// [out, r].
    pub b: Tensor,
    /// s in y = Wx + s·B(Ax).
    pub scale: f64,
    /// The serving copy for the per-row CPU kernel, made by
    /// [`LoraAdapter::prepare_serving`].
    packed: Option<Arc<Packed>>,
}

/// One pair's serving layout: A `[r, in]` and Bᵀ `[r, out]`, bf16, contiguous. Half the
/// bytes of f32, which is what the per-row kernel is bound by when a batch holds many
/// adapters; Bᵀ makes the expand r contiguous rows of `out`. The pair's `a` and `b` are these
/// same tensors (`b` a transposed view of `bt`), so the adapter is held once.
#[derive(Debug)]
pub(crate) struct Packed {
    pub(crate) a: Tensor,
    pub(crate) bt: Tensor,
}

impl Packed {
    fn bytes(&self) -> usize {
        (self.a.elem_count() + self.bt.elem_count()) * 2
    }
}

impl LoraPair {
    /// The serving layout, once [`LoraAdapter::prepare_serving`] made it.
    pub(crate) fn packed(&self) -> Option<&Packed> {
        self.packed.as_deref()
    }

    /// Rounds A and B to bf16 and lays them out for the per-row kernel; `a` and `b` become
    /// those bf16 tensors, so every path (per-row kernel, plain matmuls, merged weights)
    /// computes with the same numbers. Training variables and tensors off the CPU are left
    /// alone.
    fn prepare(&mut self) -> Result<()> {
        if self.packed.is_some()
            || !self.b.device().is_cpu()
            || self.a.is_variable()
            || self.b.is_variable()
        {
            return Ok(());
        }
        let a = self.a.to_dtype(DType::BF16)?.contiguous()?;
        let bt = self.b.to_dtype(DType::BF16)?.t()?.contiguous()?;
        self.a = a.clone();
        self.b = bt.t()?;
        self.packed = Some(Arc::new(Packed { a, bt }));
        Ok(())
    }
}

/// A loaded (or trainable) LoRA adapter for one base model.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    config: LoraConfig,
    layers: Vec<[Option<LoraPair>; 7]>,
    /// On the token embedding: A `[r, vocab]`, B `[hidden, r]` (PEFT's layout).
    embed: Option<LoraPair>,
    /// On the output head: A `[r, hidden]`, B `[vocab, r]`.
    head: Option<LoraPair>,
}

fn tensor_name(layer: usize, proj: Proj, ab: char) -> String {
    format!("base_model.model.{}.lora_{ab}.weight", proj.path(layer))
}

/// Splits a PEFT tensor name into (layer, projection, 'A' | 'B').
fn parse_name(name: &str) -> Option<(usize, Proj, char)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (block, rest) = rest.split_once('.')?;
    let (proj, rest) = rest.split_once('.')?;
    let proj = Proj::from_name(proj)?;
    if (block == "self_attn") != ((proj as usize) < 4) || !matches!(block, "self_attn" | "mlp") {
        return None;
    }
    match rest {
        "lora_A.weight" => Some((layer, proj, 'A')),
        "lora_B.weight" => Some((layer, proj, 'B')),
        _ => None,
    }
}

impl LoraAdapter {
    /// The adapter's configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The pair for one projection, if adapted.
    pub fn pair(&self, layer: usize, proj: Proj) -> Option<&LoraPair> {
        self.layers
            .get(layer)
            .and_then(|l| l[proj as usize].as_ref())
    }

    /// The pair on the token embedding: A `[r, vocab]`, B `[hidden, r]`.
    pub fn embed_pair(&self) -> Option<&LoraPair> {
        self.embed.as_ref()
    }

    /// The pair on the output head: A `[r, hidden]`, B `[vocab, r]`.
    pub fn head_pair(&self) -> Option<&LoraPair> {
        self.head.as_ref()
    }

    /// Every pair, the embedding's and the head's included.
    fn all_pairs(&self) -> impl Iterator<Item = &LoraPair> {
        self.pairs()
            .map(|(_, _, p)| p)
            .chain(self.embed.iter())
            .chain(self.head.iter())
    }

    /// Every adapted projection of the decoder layers with its pair.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, Proj, &LoraPair)> {
        self.layers.iter().enumerate().flat_map(|(l, ps)| {
            Proj::ALL
                .into_iter()
                .filter_map(move |p| ps[p as usize].as_ref().map(|pair| (l, p, pair)))
        })
    }

    /// Readies a loaded adapter for serving, on the loading thread rather than in the first
    /// forward pass that needs it: A and B are rounded to bf16 (as fp16/bf16 LoRA serving
    /// does; the relative change per weight is at most 2⁻⁹) and kept packed for the per-row
    /// CPU kernel. Every path then computes with the rounded values, so a request batched
    /// with other adapters, served alone, or served with the adapter merged agrees.
    pub fn prepare_serving(&mut self) -> Result<()> {
        for pair in self.layers.iter_mut().flatten().flatten() {
            pair.prepare()?;
        }
        for pair in self.embed.iter_mut().chain(self.head.iter_mut()) {
            pair.prepare()?;
        }
        Ok(())
    }

    /// Bytes held in memory: A and B (once prepared for serving, their bf16 layout only).
    pub fn resident_bytes(&self) -> usize {
        self.all_pairs()
            .map(|p| match p.packed() {
                Some(k) => k.bytes(),
                None => (p.a.elem_count() + p.b.elem_count()) * p.a.dtype().size_in_bytes(),
            })
            .sum()
    }

    /// Number of trainable parameters (elements of all A and B).
    pub fn num_parameters(&self) -> usize {
        self.all_pairs()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }

    /// Builds an adapter from named tensors (PEFT names), checking them against `model`.
    pub fn from_tensors(
        config: LoraConfig,
        model: &Config,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        config.check_targets(model.num_hidden_layers)?;
        let nl = model.num_hidden_layers;
        let mut found: HashMap<(usize, Proj, char), Tensor> = HashMap::new();
        let mut extra: HashMap<&'static str, Tensor> = HashMap::new();
        for (name, t) in tensors {
            if let Some(key) = [EMBED_A, EMBED_B, HEAD_A, HEAD_B]
                .into_iter()
                .find(|k| *k == name)
            {
                let wanted = if key.contains("embed_tokens") {
                    config.targets_embed()
                } else {
                    config.targets_head()
                };
                if !wanted {
                    return Err(Error::Adapter(format!(
                        "tensor {name} is for a module not in target_modules"
                    )));
                }
                check_float(&name, &t)?;
                extra.insert(key, t);
                continue;
            }
            let Some((layer, proj, ab)) = parse_name(&name) else {
                return Err(Error::Adapter(format!(
                    "unexpected tensor {name:?} (only lora_A/lora_B of q/k/v/o/gate/up/down \
                     projections and lm_head, lora_embedding_A/B of embed_tokens)"
                )));
            };
            if layer >= nl {
                return Err(Error::Adapter(format!(
                    "tensor {name} is for layer {layer}, but the base model has {nl} layers"
                )));
            }
            if !config.targets(layer, proj) {
                return Err(Error::Adapter(format!(
                    "tensor {name} is for a module not in target_modules"
                )));
            }
            check_float(&name, &t)?;
            found.insert((layer, proj, ab), t);
        }
        let mut layers = vec![[None, None, None, None, None, None, None]; nl];
        for (l, slots) in layers.iter_mut().enumerate() {
            for proj in Proj::ALL {
                if !config.targets(l, proj) {
                    continue;
                }
                let (out, inp) = proj.dims(model);
                let r = config.rank(l, proj);
                let mut take = |ab: char, want: [usize; 2]| -> Result<Tensor> {
                    let name = tensor_name(l, proj, ab);
                    let t = found
                        .remove(&(l, proj, ab))
                        .ok_or_else(|| Error::MissingTensor(name.clone()))?;
                    if t.dims() != want {
                        let what = if ab == 'A' {
                            "in_features"
                        } else {
                            "out_features"
                        };
                        return Err(Error::Adapter(format!(
                            "tensor {name} has shape {:?}, expected {want:?} (rank {r}, base {what} {}); \
                             the adapter was made for a different base model (hidden_size {})",
                            t.dims(),
                            if ab == 'A' { inp } else { out },
                            model.hidden_size
                        )));
                    }
                    Ok(t.to_device(device)?.to_dtype(dtype)?)
                };
                let a = take('A', [r, inp])?;
                let b = take('B', [out, r])?;
                slots[proj as usize] = Some(LoraPair {
                    a,
                    b,
                    scale: config.scale(l, proj),
                    packed: None,
                });
            }
        }
        let (v, h) = (model.vocab_size, model.hidden_size);
        let mut side = |path: &str, (a, b): (&str, &str), want: ([usize; 2], [usize; 2])| {
            let r = config.rank_at(path);
            let mut take = |name: &str, shape: [usize; 2]| -> Result<Tensor> {
                let t = extra
                    .remove(name)
                    .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
                if t.dims() != shape {
                    return Err(Error::Adapter(format!(
                        "tensor {name} has shape {:?}, expected {shape:?} (rank {r}, vocab_size \
                         {v}, hidden_size {h}); the adapter was made for a different base model",
                        t.dims()
                    )));
                }
                Ok(t.to_device(device)?.to_dtype(dtype)?)
            };
            let (wa, wb) = want;
            let wa = [r, wa[1]];
            let wb = [wb[0], r];
            Ok::<_, Error>(LoraPair {
                a: take(a, wa)?,
                b: take(b, wb)?,
                scale: config.scale_at(path),
                packed: None,
            })
        };
        let embed = if config.targets_embed() {
            Some(side(EMBED_PATH, (EMBED_A, EMBED_B), ([0, v], [h, 0]))?)
        } else {
            None
        };
        let head = if config.targets_head() {
            Some(side(HEAD_PATH, (HEAD_A, HEAD_B), ([0, h], [v, 0]))?)
        } else {
            None
        };
        Ok(LoraAdapter {
            config,
            layers,
            embed,
            head,
        })
    }

    /// Loads a PEFT adapter directory.
    pub fn load(dir: &Path, model: &Config, device: &Device, dtype: DType) -> Result<Self> {
        let config: LoraConfig = read_json(&dir.join("adapter_config.json"))?;
        config.validate()?;
        let tensors = load_safetensors(&dir.join("adapter_model.safetensors"), &Device::Cpu)?;
        Self::from_tensors(config, model, tensors, device, dtype)
    }

    /// The tensors under their PEFT names, detached, on the CPU.
    pub fn named_tensors(&self) -> HashMap<String, Tensor> {
        let mut map = HashMap::new();
        let host = |t: &Tensor| {
            let t = t.detach();
            t.to_device(&Device::Cpu).unwrap_or(t)
        };
        for (l, p, pair) in self.pairs() {
            for (ab, t) in [('A', &pair.a), ('B', &pair.b)] {
                map.insert(tensor_name(l, p, ab), host(t));
            }
        }
        for (pair, (a, b)) in [
            (&self.embed, (EMBED_A, EMBED_B)),
            (&self.head, (HEAD_A, HEAD_B)),
        ] {
            if let Some(p) = pair {
                map.insert(a.to_string(), host(&p.a));
                map.insert(b.to_string(), host(&p.b));
            }
        }
        map
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT layout) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_vec_pretty(&self.config).map_err(|e| Error::json(dir, e))?;
        write_file(&dir.join("adapter_config.json"), &json)?;
        let map = self.named_tensors();
        let path = dir.join("adapter_model.safetensors");
        candle_core::safetensors::save(&map, &path).map_err(|e| Error::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// A fresh trainable adapter: A ~ U(-1/√in, 1/√in) (PEFT's Kaiming default), B = 0, both
    /// registered as [`Var`]s in `varmap` under their PEFT names, so an optimizer over
    /// `varmap.all_vars()` trains exactly A and B, and `save` writes the trained values. On the
    /// embedding, as PEFT does: A = 0, B ~ N(0, 1).
    pub fn trainable(
        config: LoraConfig,
        model: &Config,
        varmap: &VarMap,
        device: &Device,
        dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        config.check_targets(model.num_hidden_layers)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidArgument("VarMap lock poisoned".into()))?;
        for l in 0..model.num_hidden_layers {
            for proj in Proj::ALL {
                if !config.targets(l, proj) {
                    continue;
                }
                let (out, inp) = proj.dims(model);
                let r = config.rank(l, proj);
                let bound = 1.0 / (inp as f64).sqrt();
                let a = uniform(&mut rng, r * inp, bound);
                let a = Var::from_tensor(&Tensor::from_vec(a, (r, inp), device)?.to_dtype(dtype)?)?;
                let b = Var::zeros((out, r), dtype, device)?;
                for (ab, var) in [('A', a), ('B', b)] {
                    let name = tensor_name(l, proj, ab);
                    tensors.insert(name.clone(), var.as_tensor().clone());
                    data.insert(name, var);
                }
            }
        }
        let (v, h) = (model.vocab_size, model.hidden_size);
        let mut vars: Vec<(&str, Var)> = Vec::new();
        if config.targets_embed() {
            let r = config.rank_at(EMBED_PATH);
            let b = crate::weights::normal(&mut rng, h * r, 1.0);
            vars.push((EMBED_A, Var::zeros((r, v), dtype, device)?));
            let b = Tensor::from_vec(b, (h, r), device)?.to_dtype(dtype)?;
            vars.push((EMBED_B, Var::from_tensor(&b)?));
        }
        if config.targets_head() {
            let r = config.rank_at(HEAD_PATH);
            let a = uniform(&mut rng, r * h, 1.0 / (h as f64).sqrt());
            let a = Tensor::from_vec(a, (r, h), device)?.to_dtype(dtype)?;
            vars.push((HEAD_A, Var::from_tensor(&a)?));
            vars.push((HEAD_B, Var::zeros((v, r), dtype, device)?));
        }
        for (name, var) in vars {
            tensors.insert(name.to_string(), var.as_tensor().clone());
            data.insert(name.to_string(), var);
        }
        drop(data);
        Self::from_tensors(config, model, tensors, device, dtype)
    }

    /// A random adapter for tests and benchmarks, f32 on the CPU: rank `r` (alpha 2r) on the
    /// `targets` of every layer, A initialised as [`trainable`](Self::trainable) does with
    /// `seed`, and B uniform in ±`b`, not zero, so that the adapter changes the model's output
    /// (a larger `b` moves it further from the base).
    pub fn random(model: &Config, r: usize, targets: &[Proj], seed: u64, b: f32) -> Result<Self> {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let lc = LoraConfig::new(r, 2.0 * r as f64, targets);
        let vm = VarMap::new();
        let a = Self::trainable(lc, model, &vm, &Device::Cpu, DType::F32, seed)?;
        let mut t = a.named_tensors();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        // in name order: the map's own order differs from one map to the next, and the same
        // seed must give the same adapter
        let mut names: Vec<String> = t.keys().filter(|k| k.contains("lora_B")).cloned().collect();
        names.sort();
        for k in names {
            if let Some(v) = t.get_mut(&k) {
                let n = v.elem_count();
                let data: Vec<f32> = (0..n).map(|_| rng.random_range(-b..b)).collect();
                *v = Tensor::from_vec(data, v.shape(), &Device::Cpu)?;
            }
        }
        Self::from_tensors(a.config().clone(), model, t, &Device::Cpu, DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_modules_follow_peft_matching() -> Result<()> {
        let mut c = LoraConfig::new(8, 16.0, &[]);
        c.target_modules = TargetModules::List(vec![
            "model.layers.1.self_attn.q_proj".into(),
            "mlp.up_proj".into(),
        ]);
        c.check_targets(2)?;
        assert!(!c.targets(0, Proj::Q) && c.targets(1, Proj::Q));
        assert!(c.targets(0, Proj::Up) && !c.targets(0, Proj::Gate));
        assert!(
            c.check_targets(1).is_err(),
            "layer 1 does not exist in a 1-layer model"
        );
        c.target_modules = TargetModules::Pattern(r"model\.layers\.1\..*(k|v)_proj".into());
        c.check_targets(2)?;
        assert!(
            c.targets(1, Proj::K)
                && c.targets(1, Proj::V)
                && !c.targets(0, Proj::K)
                && !c.targets(1, Proj::Q)
        );
        c.target_modules = TargetModules::Pattern("all-linear".into());
        assert!(Proj::ALL.iter().all(|&p| c.targets(3, p)));
        c.rank_pattern.insert("down_proj".into(), 4);
        c.alpha_pattern
            .insert(r"layers\.0\.self_attn\.q_proj".into(), 2.0);
        assert_eq!((c.rank(0, Proj::Down), c.rank(0, Proj::Up)), (4, 8));
        assert_eq!(
            (
                c.scale(0, Proj::Q),
                c.scale(1, Proj::Q),
                c.scale(0, Proj::Down)
            ),
            (0.25, 2.0, 4.0)
        );
        c.use_rslora = true;
        assert_eq!(c.scale(1, Proj::Q), 16.0 / 8f64.sqrt());
        Ok(())
    }

    #[test]
    fn serving_rounds_to_bf16_once_and_packs_the_same_values() -> Result<()> {
        let cfg = Config::from_json(
            r#"{"model_type":"llama","hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,
            "num_attention_heads":2,"vocab_size":10,"max_position_embeddings":32}"#,
        )?;
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let lc = LoraConfig::new(4, 8.0, &Proj::ALL);
        let trained = LoraAdapter::trainable(lc.clone(), &cfg, &vm, &dev, DType::F32, 3)?;
        let mut t = trained.named_tensors();
        for (k, v) in t.iter_mut() {
            if k.contains("lora_B") {
                *v = Tensor::randn(0f32, 0.5, v.shape(), &dev)?;
            }
        }
        let mut a = LoraAdapter::from_tensors(lc, &cfg, t, &dev, DType::F32)?;
        let before = a.named_tensors();
        assert!(a.pairs().all(|(_, _, p)| p.packed().is_none()));
        a.prepare_serving()?;
        let once = a.named_tensors();
        a.prepare_serving()?; // idempotent
        let mut changed = 0;
        let f32s = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        for (name, t) in &once {
            assert_eq!(t.dtype(), DType::BF16, "{name}");
            let v = f32s(t)?;
            let orig = f32s(&before[name])?;
            let again = f32s(&a.named_tensors()[name])?;
            assert_eq!(v, again, "{name}: a second prepare changes nothing");
            for (x, o) in v.iter().zip(&orig) {
                assert_eq!(x.to_bits() & 0xffff, 0, "{name}: {x} is not a bf16 value");
                assert!(
                    (x - o).abs() <= o.abs() / 256.0,
                    "{name}: {o} rounded to {x}"
                );
                changed += usize::from(x != o);
            }
        }
        assert!(changed > 0, "random f32 weights must round somewhere");
        for (_, _, p) in a.pairs() {
            let k = p.packed().expect("packed");
            assert_eq!(f32s(&k.a)?, f32s(&p.a)?);
            assert_eq!(f32s(&k.bt)?, f32s(&p.b.t()?)?);
            assert!(k.a.is_contiguous() && k.bt.is_contiguous());
        }
        // held once: two bytes per parameter (the pair's tensors are the serving layout)
        assert_eq!(a.resident_bytes(), 2 * a.num_parameters());
        Ok(())
    }
}
