//! Quality checks of a trained adapter: greedy answers to training prompts.

use std::collections::BTreeMap;
use std::sync::Arc;

use openledger_datanet::formats::Row;
use openledger_model::{LoraAdapter, Pretrained, SamplingParams, generate};
use serde::{Deserialize, Serialize};

use crate::data::Encoder;
use crate::error::Result;

/// How many distinct prompts were answered with one of their trained completions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reproduction {
    /// Distinct prompts tried.
    pub prompts: usize,
    /// Greedy answers equal (after trimming) to a completion trained for that prompt.
    pub reproduced: usize,
}

impl Reproduction {
    /// reproduced / prompts.
    pub fn rate(&self) -> f64 {
        self.reproduced as f64 / self.prompts.max(1) as f64
    }
}

/// Greedy-decodes every distinct prompt of the prompt/completion rows in `rows` (at most
/// `limit`) with `adapter` and counts exact reproductions of a trained completion.
pub fn reproduction(
    base: &Pretrained,
    adapter: Option<Arc<LoraAdapter>>,
    rows: &[(String, Row)],
    limit: usize,
) -> Result<Reproduction> {
    let enc = Encoder::new(base)?;
    let mut by_prompt: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, r) in rows {
        if let Row::Pair { prompt, completion } = r {
            by_prompt.entry(prompt).or_default().push(completion);
        }
    }
    let mut out = Reproduction {
        prompts: 0,
        reproduced: 0,
    };
    for (prompt, completions) in by_prompt.into_iter().take(limit) {
        let ids = enc.prompt_ids(prompt)?;
        let longest = completions
            .iter()
            .map(|c| enc.answer_ids(c).map(|a| a.len()))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(16);
        let params = SamplingParams {
            max_new_tokens: longest + 4,
            temperature: 0.0,
            stop_token_ids: base.eos_ids(),
            ..Default::default()
        };
        let seq = generate(
            &base.model,
            base.tokenizer.as_ref(),
            &ids,
            adapter.clone(),
            &params,
            |_| true,
        )?;
        let text = seq.text().trim();
        out.prompts += 1;
        if completions.iter().any(|c| c.trim() == text) {
            out.reproduced += 1;
        }
    }
    Ok(out)
}

/// How well a base model can model a Datanet version's text, measured before training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseFit {
    /// Rows measured.
    pub rows: usize,
    /// Target tokens scored (the tokens the trainer would learn: answers, or all text).
    pub tokens: usize,
    /// Mean negative log-likelihood of those tokens under the base model (nats per token).
    pub loss_per_token: f64,
    /// The loss of a uniform guess over the vocabulary, ln(vocab_size).
    pub uniform_loss: f64,
    /// Tokens per whitespace-separated word of the text.
    pub tokens_per_word: f64,
    /// Share of tokens that are the tokenizer's unknown token or a single-byte fallback piece.
    pub byte_fallback_share: f64,
    /// `fits`, `poor` or `cannot_model`.
    pub verdict: FitVerdict,
    /// One plain sentence for the user.
    pub message: String,
}

/// The verdict of [`base_fit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitVerdict {
    /// The base predicts the data far better than chance: fine-tuning can build on it.
    Fits,
    /// Much of the text is poorly predicted or split into pieces; results will be weak.
    Poor,
    /// The base predicts the data no better than a uniform guess, or its vocabulary does not
    /// cover the text: fine-tuning it will not reproduce this data.
    CannotModel,
}

/// Thresholds of the verdict: loss as a share of the uniform-guess loss, and tokenization.
const CANNOT_LOSS: f64 = 0.9;
const POOR_LOSS: f64 = 0.6;
const CANNOT_FALLBACK: f64 = 0.3;
const POOR_TOKENS_PER_WORD: f64 = 3.0;

/// Scores the base model (no adapter) on up to `limit` rows: loss per target token against
/// the uniform-guess loss, tokens per word, and the share of unknown / byte-fallback tokens;
/// then a verdict and a sentence saying what it means.
pub fn base_fit(base: &Pretrained, rows: &[(String, Row)], limit: usize) -> Result<BaseFit> {
    let enc = Encoder::new(base)?;
    let tok = base
        .tokenizer
        .as_ref()
        .ok_or_else(|| crate::error::TrainError::field("baseModel", "no tokenizer.json"))?;
    let vocab = base.config.vocab_size;
    let unk = tok.token_to_id("<unk>");
    let max_len = base.config.max_position_embeddings.min(512);
    let (mut nll, mut tokens, mut words, mut text_tokens, mut fallback) = (0f64, 0usize, 0, 0, 0);
    let mut n = 0;
    for (_, row) in rows.iter().take(limit) {
        let (mut ids, mut mask) = enc.encode(row)?;
        ids.truncate(max_len);
        mask.truncate(max_len);
        if ids.len() < 2 {
            continue;
        }
        n += 1;
        let text = match row {
            Row::Text { text } => text.clone(),
            Row::Pair { prompt, completion } => format!("{prompt} {completion}"),
            Row::Chat { messages } => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        };
        words += text.split_whitespace().count();
        let own = tok
            .encode(text.as_str(), false)
            .map_err(|e| crate::error::TrainError::field("baseModel", e.to_string()))?;
        text_tokens += own.len();
        fallback += own
            .get_ids()
            .iter()
            .zip(own.get_tokens())
            .filter(|(id, t)| Some(**id) == unk || is_byte_piece(t))
            .count();
        let x =
            candle_core::Tensor::new(&ids[..ids.len() - 1], base.model.device())?.unsqueeze(0)?;
        let logits = base
            .model
            .forward(&x, &openledger_model::BatchAdapters::none(1))?
            .squeeze(0)?;
        let lp = candle_nn::ops::log_softmax(&logits.to_dtype(candle_core::DType::F32)?, 1)?;
        let lp = lp.to_vec2::<f32>()?;
        for (i, row_lp) in lp.iter().enumerate() {
            if mask[i + 1] != 0 {
                nll -= f64::from(row_lp[ids[i + 1] as usize]);
                tokens += 1;
            }
        }
    }
    let loss = nll / tokens.max(1) as f64;
    let uniform = (vocab as f64).ln();
    let tpw = text_tokens as f64 / words.max(1) as f64;
    let fb = fallback as f64 / text_tokens.max(1) as f64;
    let verdict = if tokens == 0 {
        FitVerdict::CannotModel
    } else {
        verdict(loss, uniform, tpw, fb)
    };
    let message = match verdict {
        FitVerdict::CannotModel => format!(
            "This base model cannot model this data: {loss:.2} nats per token against {uniform:.2} \
             for a uniform guess over its {vocab}-token vocabulary ({tpw:.1} tokens per word, \
             {:.0} % byte pieces). A fine-tune will not reproduce it; choose a base trained on \
             general text in this language, e.g. HuggingFaceTB/SmolLM2-135M for English or \
             Qwen/Qwen2.5-0.5B for many languages (openledger model pull <repo>).",
            100.0 * fb
        ),
        FitVerdict::Poor => format!(
            "This base model fits this data poorly: {loss:.2} nats per token (uniform guess \
             {uniform:.2}), {tpw:.1} tokens per word. Expect weak results; a larger \
             general-text base would do better, e.g. Qwen/Qwen2.5-0.5B."
        ),
        FitVerdict::Fits => format!(
            "The base model predicts this data well: {loss:.2} nats per token against \
             {uniform:.2} for a uniform guess, {tpw:.1} tokens per word."
        ),
    };
    Ok(BaseFit {
        rows: n,
        tokens,
        loss_per_token: loss,
        uniform_loss: uniform,
        tokens_per_word: tpw,
        byte_fallback_share: fb,
        verdict,
        message,
    })
}

/// The verdict for a loss per token, the uniform-guess loss, tokens per word and the share of
/// byte-fallback tokens.
fn verdict(loss: f64, uniform: f64, tokens_per_word: f64, fallback: f64) -> FitVerdict {
    if loss >= CANNOT_LOSS * uniform || fallback >= CANNOT_FALLBACK {
        FitVerdict::CannotModel
    } else if loss >= POOR_LOSS * uniform || tokens_per_word >= POOR_TOKENS_PER_WORD {
        FitVerdict::Poor
    } else {
        FitVerdict::Fits
    }
}

/// A byte-fallback piece: SentencePiece's `<0xAB>`, or a byte-level BPE token of one byte that
/// is not a plain ASCII letter, digit, space or punctuation mark (a word spelled out in raw
/// bytes).
fn is_byte_piece(t: &str) -> bool {
    if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
        return true;
    }
    let mut chars = t.chars();
    match (chars.next(), chars.next()) {
        // The byte-level alphabet shows a byte ≥ 0x80 as one char ≥ U+0080 (Latin-1 or, for
        // the unprintable ones, U+0100 and up); a character outside ASCII is two or more
        // bytes, so a lone such char is a raw byte. Space, newline and tab are whole chars.
        (Some(c), None) => c as u32 >= 0x80 && !matches!(c, 'Ġ' | 'Ċ' | 'ĉ'),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_follows_loss_against_a_uniform_guess() {
        // the issue's case: the toy base (723 tokens) at 10.9 nats/token on English facts
        assert_eq!(
            verdict(10.9, 723f64.ln(), 2.4, 0.0),
            FitVerdict::CannotModel
        );
        // a general-text base: far below ln(49152) = 10.8
        assert_eq!(verdict(2.1, 49152f64.ln(), 1.3, 0.0), FitVerdict::Fits);
        assert_eq!(verdict(7.0, 49152f64.ln(), 1.3, 0.0), FitVerdict::Poor);
        assert_eq!(verdict(2.1, 49152f64.ln(), 4.5, 0.0), FitVerdict::Poor);
        assert_eq!(
            verdict(2.1, 49152f64.ln(), 1.3, 0.5),
            FitVerdict::CannotModel
        );
        assert!(is_byte_piece("<0xE2>") && is_byte_piece("â") && !is_byte_piece("Ġ"));
        assert!(!is_byte_piece("a") && !is_byte_piece("the"));
    }

    #[test]
    fn a_random_base_cannot_model_text_and_says_so() -> Result<()> {
        let cfg = openledger_model::Config::from_json(
            r#"{"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,
            "num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,
            "bos_token_id":0,"eos_token_id":1}"#,
        )?;
        let docs: Vec<String> = openledger_model::init::World::new(1).documents(200, 2);
        let tokenizer = openledger_model::init::train_tokenizer(&docs, 300)?;
        let cfg = openledger_model::Config {
            vocab_size: tokenizer.get_vocab_size(true),
            ..cfg
        };
        let model = openledger_model::random_model(
            &cfg,
            3,
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
        )?;
        let base = Pretrained {
            dir: std::path::PathBuf::from("random"),
            config: cfg.clone(),
            model,
            tokenizer: Some(tokenizer),
            generation: Default::default(),
            chat_template: None,
            add_bos: true,
        };
        let rows: Vec<(String, Row)> = (0..6)
            .map(|i| {
                let row = Row::Pair {
                    prompt: format!("At what temperature does compound Z{i} melt?"),
                    completion: format!("The compound Z{i} melts at {} degrees.", 100 + i),
                };
                (format!("r{i}"), row)
            })
            .collect();
        let fit = base_fit(&base, &rows, 4)?;
        assert_eq!(fit.rows, 4);
        assert!(fit.tokens > 20, "{fit:?}");
        // random weights: about a uniform guess
        let uniform = (cfg.vocab_size as f64).ln();
        assert!((fit.uniform_loss - uniform).abs() < 1e-9);
        assert!((fit.loss_per_token - uniform).abs() < 0.5, "{fit:?}");
        assert_eq!(fit.verdict, FitVerdict::CannotModel);
        assert!(fit.message.contains("cannot model"), "{}", fit.message);
        // the toy world's tokenizer splits these English words into pieces
        assert!(fit.tokens_per_word > 1.5, "{fit:?}");
        Ok(())
    }
}
