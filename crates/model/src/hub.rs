//! Loading a Hugging Face model directory: `config.json`, `model.safetensors` (or a sharded
//! index), `tokenizer.json`, `generation_config.json`, and the chat template of
//! `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::config::{Config, GenerationConfig};
use crate::dense::WeightFormat;
use crate::error::{Error, Result, read_json};
use crate::model::Model;
use crate::weights::{check_weights, load_model_weights};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A Jinja chat template (as in `tokenizer_config.json`), rendered with minijinja.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

/// The template environment: Jinja as `transformers` renders chat templates — Python string
/// and dict methods (`.strip()`, `.startswith()`, `.items()`, ...), `raise_exception`,
/// `strftime_now` (Llama 3.x templates print today's date), loop controls.
fn env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("strftime_now", |fmt: String| -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        strftime(secs, &fmt)
    });
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env
}

/// Formats UTC time `secs` with the strftime subset chat templates use (`%d %b %B %m %Y %H
/// %M %S %%`); other directives are kept as written.
fn strftime(secs: u64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let tod = secs % 86_400;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are available to the template.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        env()
            .template_from_str(source)
            .map_err(|e| Error::Template(e.to_string()))?;
        Ok(ChatTemplate {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the template opens an assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let env = env();
        let t = env
            .template_from_str(&self.source)
            .map_err(|e| Error::Template(e.to_string()))?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// Reads the template from `tokenizer_config.json` (`None` if it has none).
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>> {
        let v: serde_json::Value = read_json(path)?;
        let token = |key: &str| -> String {
            match v.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(o) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        let source = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => {
                let default = list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
                match default
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                {
                    Some(s) => s.to_string(),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Self::new(&source, &token("bos_token"), &token("eos_token")).map(Some)
    }
}

/// Loads a tokenizer from `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::MissingFile(path.to_path_buf()));
    }
    Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
}

/// Everything in a model directory, loaded and checked.
#[derive(Clone, Debug)]
pub struct Pretrained {
    /// The directory it came from.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: Config,
    /// The model.
    pub model: Model,
    /// `tokenizer.json` (absent in weight-only directories).
    pub tokenizer: Option<Tokenizer>,
    /// `generation_config.json` (default when absent).
    pub generation: GenerationConfig,
    /// The chat template, if `tokenizer_config.json` has one.
    pub chat_template: Option<ChatTemplate>,
    /// Whether [`Self::encode`] puts the BOS token in front: `add_bos_token` of
    /// `tokenizer_config.json`; false where its `bos_token` is null (Qwen2); true otherwise.
    pub add_bos: bool,
}

/// The format a checkpoint stores its weights in: bf16 for bf16 and f16 files, else f32 (read
/// from the safetensors header of the embedding, without loading any weight).
pub fn stored_format(dir: &Path) -> Result<WeightFormat> {
    let single = dir.join("model.safetensors");
    let file = if single.exists() {
        single
    } else {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::HashMap<String, String>,
        }
        let index: Index = read_json(&dir.join("model.safetensors.index.json"))?;
        let shard = index
            .weight_map
            .get("model.embed_tokens.weight")
            .ok_or_else(|| Error::MissingTensor("model.embed_tokens.weight".into()))?;
        dir.join(shard)
    };
    let mut f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
    let bad = |reason: &str| Error::Safetensors {
        path: file.clone(),
        reason: reason.into(),
    };
    use std::io::Read;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than its header length"))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(bad("header longer than 100 MiB"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|_| bad("truncated header"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| bad("header is not JSON"))?;
    let dtype = v
        .get("model.embed_tokens.weight")
        .and_then(|t| t.get("dtype"))
        .and_then(|d| d.as_str())
        .unwrap_or("F32");
    Ok(match dtype {
        "BF16" | "F16" => WeightFormat::Bf16,
        _ => WeightFormat::F32,
    })
}

/// `add_bos_token` of `tokenizer_config.json` (see [`Pretrained::add_bos`]).
fn add_bos_token(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(true);
    }
    let v: serde_json::Value = read_json(path)?;
    Ok(match v.get("add_bos_token") {
        Some(serde_json::Value::Bool(b)) => *b,
        _ => !matches!(v.get("bos_token"), Some(serde_json::Value::Null)),
    })
}

impl Pretrained {
    /// Loads `dir` onto `device` in `dtype` (f32 or bf16 on CPU). Every file is checked:
    /// missing or truncated safetensors, tensors of the wrong dtype or shape, and malformed
    /// JSON are errors naming the file or tensor.
    ///
    /// On the CPU the activations are f32 and the weights are held as `dtype` says (f32, or
    /// bf16 widened in registers); see [`Self::load_as`] for int8 and as-stored.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let format = match dtype {
            DType::F32 => Some(WeightFormat::F32),
            DType::BF16 => Some(WeightFormat::Bf16),
            _ => None,
        };
        Self::load_inner(dir, device, dtype, format)
    }

    /// Loads `dir` with the frozen weights held in `format` on the CPU (activations f32);
    /// `None` keeps the format the checkpoint stores (bf16 and f16 as bf16, else f32).
    pub fn load_as(dir: &Path, device: &Device, format: Option<WeightFormat>) -> Result<Self> {
        let format = match format {
            Some(f) => f,
            None => stored_format(dir)?,
        };
        let dtype = match format {
            WeightFormat::Bf16 => DType::BF16,
            WeightFormat::F32 | WeightFormat::Int8 => DType::F32,
        };
        Self::load_inner(dir, device, dtype, Some(format))
    }

    fn load_inner(
        dir: &Path,
        device: &Device,
        dtype: DType,
        format: Option<WeightFormat>,
    ) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let weights = load_model_weights(dir, device)?;
        check_weights(&config, &weights)?;
        let vb = VarBuilder::from_tensors(weights, dtype, device);
        let model = Model::new_as(&config, vb, format)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(load_tokenizer(&tok_path)?)
        } else {
            None
        };
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.exists() {
            read_json(&gen_path)?
        } else {
            GenerationConfig::default()
        };
        let tc_path = dir.join("tokenizer_config.json");
        let chat_template = if tc_path.exists() {
            ChatTemplate::from_tokenizer_config(&tc_path)?
        } else {
            None
        };
        let add_bos = add_bos_token(&tc_path)?;
        Ok(Pretrained {
            add_bos,
            dir: dir.to_path_buf(),
            config,
            model,
            tokenizer,
            generation,
            chat_template,
        })
    }

    /// Token ids of `text` as the tokenizer's post-processor makes them (Llama 3's adds
    /// `<|begin_of_text|>`), with the BOS token in front when [`Self::add_bos`] says so and
    /// the ids do not already start with it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| Error::MissingFile(self.dir.join("tokenizer.json")))?;
        let enc = tok
            .encode(text, special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if let Some(bos) = self.config.bos_token_id.or(self.generation.bos_token_id)
            && self.add_bos
            && enc.get_ids().first() != Some(&bos)
        {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids of a conversation rendered with the chat template (assistant turn opened).
    /// The rendered text is encoded without the post-processor's tokens, as `transformers`'
    /// `apply_chat_template` does (a template that wants BOS writes it).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let t = self.chat_template.as_ref().ok_or_else(|| {
            Error::Template(format!("{} has no chat_template", self.dir.display()))
        })?;
        self.encode_with(&t.render(messages, true)?, false)
    }

    /// Sampling parameters from `generation_config.json`, with the model's EOS as stop tokens.
    pub fn default_sampling(&self) -> crate::SamplingParams {
        let g = &self.generation;
        let sample = g.do_sample.unwrap_or(false);
        crate::SamplingParams {
            max_new_tokens: g.max_new_tokens.unwrap_or(64),
            temperature: if sample {
                g.temperature.unwrap_or(1.0)
            } else {
                0.0
            },
            top_k: g.top_k,
            top_p: g.top_p,
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
            stop_token_ids: self.eos_ids(),
            ..Default::default()
        }
    }

    /// End-of-sequence ids from `generation_config.json`, else `config.json`.
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.generation.eos_token_id {
            Some(ids) => ids.to_vec(),
            None => self.config.eos_ids(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_chat_template() -> Result<()> {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}\
             {% if add_generation_prompt %}<|assistant|>{% endif %}",
            "<s>",
            "</s>",
        )?;
        let out = t.render(&[ChatMessage::new("user", "hi")], true)?;
        assert_eq!(out, "<s><|user|>hi</s><|assistant|>");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        Ok(())
    }

    #[test]
    fn templates_may_use_python_methods_and_todays_date() -> Result<()> {
        let t = ChatTemplate::new(
            "{%- if messages[0].content.strip().startswith('Be') %}[{{ strftime_now('%d %b %Y') }}]\
             {%- endif %}{{ messages[0]['content'] | trim }}",
            "",
            "",
        )?;
        let out = t.render(&[ChatMessage::new("system", "  Be brief. ")], false)?;
        let date = out
            .strip_prefix('[')
            .and_then(|s| s.split_once(']'))
            .map(|(d, rest)| (d.to_string(), rest.to_string()));
        let (date, rest) = date.ok_or_else(|| Error::Template(out.clone()))?;
        assert_eq!(rest, "Be brief.");
        assert_eq!(date.len(), 11, "{date}");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(strftime(1_709_210_096, "%d %b %Y"), "29 Feb 2024");
        assert_eq!(
            strftime(1_709_210_096, "%Y-%m-%d %H:%M:%S %B %%"),
            "2024-02-29 12:34:56 February %"
        );
        assert_eq!(strftime(0, "%d %b %Y %q"), "01 Jan 1970 %q");
        Ok(())
    }
}
