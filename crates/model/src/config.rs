//! `config.json` and `generation_config.json` of a Hugging Face Llama-family checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, read_json};

/// The architecture families this runtime runs. All are the same decoder: RMSNorm, RoPE,
/// grouped-query attention, SwiGLU MLP; they differ in biases and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Llama 1/2/3 (`attention_bias` optional on q/k/v/o).
    Llama,
    /// Mistral (GQA, optional sliding window).
    Mistral,
    /// Qwen2 (biases on q/k/v, none on o).
    Qwen2,
}

/// One token id or several (HF writes `eos_token_id` either way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` of `config.json`, parsed ([`Config::rope_scaling`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Absent, null or `default`.
    None,
    /// Positions divided by the factor.
    Linear(f64),
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Slow-down of the long wavelengths.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled fully.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}

/// The model's `config.json`, restricted to the fields this runtime reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: ModelType,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Epsilon of RMSNorm.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling: `{"rope_type": "linear", "factor"}` or Llama 3's `{"rope_type": "llama3",
    /// "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Longest sequence the position table covers.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether `lm_head` shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Llama: biases on q/k/v/o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Llama: biases on MLP projections (unsupported when true).
    #[serde(default)]
    pub mlp_bias: bool,
    /// Activation of the MLP gate; only `silu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Mistral: attention window; `None` means full causal attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Qwen2: whether the sliding window is used (unsupported when true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Informational: the dtype the checkpoint was saved in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Informational: `["LlamaForCausalLM"]` etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: Config = read_json(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates a `config.json` document.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Config = serde_json::from_str(json).map_err(|e| Error::json("config.json", e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the configuration is consistent and supported.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return bad(
                "hidden_size, num_attention_heads and num_hidden_layers must be > 0".into(),
            );
        }
        if self.vocab_size == 0 || self.intermediate_size == 0 {
            return bad("vocab_size and intermediate_size must be > 0".into());
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        let kv = self.num_kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported(format!(
                "hidden_act {:?} (only \"silu\")",
                self.hidden_act
            )));
        }
        if self.mlp_bias {
            return Err(Error::Unsupported("mlp_bias = true".into()));
        }
        if self.use_sliding_window == Some(true) {
            return Err(Error::Unsupported(
                "use_sliding_window = true (Qwen2)".into(),
            ));
        }
        self.rope_scaling()?;
        Ok(())
    }

    /// Number of key/value heads.
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v projections carry a bias.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == ModelType::Qwen2 || self.attention_bias
    }

    /// Whether the output projection carries a bias.
    pub fn o_bias(&self) -> bool {
        self.model_type != ModelType::Qwen2 && self.attention_bias
    }

    /// The attention window, if the model uses one.
    pub fn window(&self) -> Option<usize> {
        match self.model_type {
            ModelType::Mistral => self.sliding_window,
            _ => None,
        }
    }

    /// `rope_scaling`, parsed: an error naming the field for kinds this runtime does not run.
    pub fn rope_scaling(&self) -> Result<RopeScaling> {
        let Some(scaling) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("<missing type>");
        let num = |key: &str| -> Result<f64> {
            scaling
                .get(key)
                .and_then(|v| v.as_f64())
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "rope_scaling.{key} must be a positive number (rope_type {kind:?})"
                    ))
                })
        };
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => match num("factor")? {
                f if f >= 1.0 => Ok(RopeScaling::Linear(f)),
                _ => Err(Error::InvalidConfig(
                    "rope_scaling.factor must be a number >= 1".into(),
                )),
            },
            "llama3" => {
                let s = RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?,
                };
                if let RopeScaling::Llama3 {
                    low_freq_factor: lo,
                    high_freq_factor: hi,
                    ..
                } = s
                    && hi <= lo
                {
                    return Err(Error::InvalidConfig(format!(
                        "rope_scaling.high_freq_factor {hi} must exceed low_freq_factor {lo}"
                    )));
                }
                Ok(s)
            }
            other => Err(Error::Unsupported(format!(
                "rope_scaling type {other:?} (supported: \"linear\", \"llama3\")"
            ))),
        }
    }

    /// The rotary inverse frequencies θ^(−2i/d), i < head_dim/2, after `rope_scaling`, and the
    /// divisor of positions (linear scaling; 1 otherwise).
    pub fn rope_frequencies(&self) -> Result<(Vec<f64>, f64)> {
        let hd = self.head_dim();
        let inv = (0..hd / 2).map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / hd as f64));
        Ok(match self.rope_scaling()? {
            RopeScaling::None => (inv.collect(), 1.0),
            RopeScaling::Linear(f) => (inv.collect(), f),
            // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend
            // between (the formula of Meta's reference code and HF `_compute_llama3_parameters`)
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: lo,
                high_freq_factor: hi,
                original_max_position_embeddings: old,
            } => {
                let (low_wavelen, high_wavelen) = (old / lo, old / hi);
                let scaled = inv
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let s = (old / wavelen - lo) / (hi - lo);
                            (1.0 - s) * f / factor + s * f
                        }
                    })
                    .collect();
                (scaled, 1.0)
            }
        })
    }

    /// End-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Every tensor the checkpoint must hold, with its shape, in a fixed order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * hd, self.num_kv_heads() * hd);
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            for (m, o, inp) in [
                ("q_proj", q, h),
                ("k_proj", kv, h),
                ("v_proj", kv, h),
                ("o_proj", h, q),
            ] {
                out.push((format!("{p}.self_attn.{m}.weight"), vec![o, inp]));
                let bias = if m == "o_proj" {
                    self.o_bias()
                } else {
                    self.qkv_bias()
                };
                if bias {
                    out.push((format!("{p}.self_attn.{m}.bias"), vec![o]));
                }
            }
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }

    /// Total number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// `generation_config.json`: the defaults a checkpoint suggests for sampling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Beginning-of-sequence token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Whether to sample (false: greedy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_sample: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Top-k cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Nucleus cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Repetition penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    /// Generation length cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":128,
        "eos_token_id":[1,2],"rope_scaling":null}"#;

    #[test]
    fn parses_llama_and_counts_parameters() -> Result<()> {
        let c = Config::from_json(LLAMA)?;
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.num_kv_heads(), 2);
        assert_eq!(c.eos_ids(), vec![1, 2]);
        // embed + lm_head + final norm + 2 * (attn 64*64*2 + 64*32*2 + mlp 3*64*128 + 2 norms)
        let per_layer = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128 + 2 * 64;
        assert_eq!(c.num_parameters(), 2 * 100 * 64 + 64 + 2 * per_layer);
        Ok(())
    }

    #[test]
    fn rejects_unsupported_rope_scaling_by_name() {
        let j = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
        );
        let e = Config::from_json(&j)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
        let j = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"type":"linear","factor":2.0}"#,
        );
        assert!(matches!(
            Config::from_json(&j).map(|c| c.rope_scaling().ok()),
            Ok(Some(RopeScaling::Linear(2.0)))
        ));
    }

    #[test]
    fn llama3_scaling_keeps_short_wavelengths_and_slows_long_ones() -> Result<()> {
        // Llama-3.2-1B's values
        let j = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192}"#,
        );
        let c = Config::from_json(&j.replace("10000.0", "500000.0"))?;
        let (inv, div) = c.rope_frequencies()?;
        let plain: Vec<f64> = (0..8).map(|i| 500_000f64.powf(-(i as f64) / 8.0)).collect();
        assert_eq!((inv.len(), div), (8, 1.0));
        let wavelen = |f: f64| 2.0 * std::f64::consts::PI / f;
        for (got, want) in inv.iter().zip(&plain) {
            if wavelen(*want) < 2048.0 {
                assert!((got - want).abs() < 1e-15);
            } else if wavelen(*want) > 8192.0 {
                assert!((got - want / 32.0).abs() < 1e-15);
            } else {
                assert!(
                    *got < *want && *got > want / 32.0,
                    "blended {got} of {want}"
                );
            }
        }
        assert!(inv.iter().zip(&plain).any(|(g, w)| (g - w).abs() > 1e-6));
        Ok(())
    }

    #[test]
    fn rejects_bad_head_counts_and_malformed_json() {
        let j = LLAMA.replace(r#""num_key_value_heads":2"#, r#""num_key_value_heads":3"#);
        assert!(matches!(
            Config::from_json(&j),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Config::from_json("{\"model_type\":"),
            Err(Error::Json { .. })
        ));
        let j = LLAMA.replace("\"llama\"", "\"gpt2\"");
        assert!(matches!(Config::from_json(&j), Err(Error::Json { .. })));
    }
}
