//! Generation: sampling, stop conditions, streaming, and batched decoding over KV caches.
//!
//! A [`Sequence`] is one request's decoding state (tokens, KV cache, seeded sampler, stop
//! state). [`decode_step`] advances any number of sequences — each with its own adapter — by
//! one token through a single [`Model::forward_step`]; [`generate`] is the one-sequence loop
//! with a streaming callback.

use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::kv::KvCache;
use crate::lora::LoraAdapter;
use crate::model::{Model, SeqStep};
use crate::profile::{self, Phase};
use crate::routing::BatchAdapters;
use crate::weights::unit;

/// How to pick tokens and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Keep only the k most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (`None`: 1.0).
    pub top_p: Option<f64>,
    /// HF-style penalty (>1 discourages tokens already in prompt or output); 1.0 is off.
    pub repetition_penalty: f64,
    /// Generation ends when the text contains one of these; the text is cut before it.
    pub stop_strings: Vec<String>,
    /// Generation ends when one of these tokens is produced (the model's EOS is added by callers).
    pub stop_token_ids: Vec<u32>,
    /// Seed of the sampler's ChaCha8 stream: same seed, same model, same prompt → same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            stop_strings: Vec::new(),
            stop_token_ids: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Rejects values outside their domains.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number >= 0");
        }
        if self.top_k == Some(0) {
            return bad("top_k must be >= 1");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty must be > 0");
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("stop strings must not be empty");
        }
        Ok(())
    }
}

/// Picks the next token from logits; owns a seeded RNG so sampling reproduces exactly.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for `params`, seeded with `params.seed`.
    pub fn new(params: &SamplingParams) -> Self {
        Sampler {
            params: params.clone(),
            rng: ChaCha8Rng::seed_from_u64(params.seed),
        }
    }

    /// The next token given `logits` (one row, vocab wide) and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let p = &self.params;
        if logits.is_empty() {
            return 0;
        }
        let mut l: Vec<f32> = logits
            .iter()
            .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x })
            .collect();
        if p.repetition_penalty != 1.0 {
            let rp = p.repetition_penalty as f32;
            let mut seen = vec![false; l.len()];
            for &t in context {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let x = &mut l[t as usize];
                    *x = if *x > 0.0 { *x / rp } else { *x * rp };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(&l);
        }
        let mut order: Vec<usize> = (0..l.len()).collect();
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        if let Some(k) = p.top_k {
            order.truncate(k.max(1));
        }
        let t = p.temperature as f32;
        let max = l[order[0]];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (((l[i] - max) / t) as f64).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if let Some(top_p) = p.top_p {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, x) in probs.iter().enumerate() {
                cum += x;
                if cum >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let u = unit(&mut self.rng);
        let mut cum = 0.0;
        for (i, x) in probs.iter().enumerate() {
            cum += x;
            if u < cum {
                return order[i] as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

/// Why a sequence stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` reached (or the position table ran out).
    Length,
    /// A stop token (e.g. EOS) was produced.
    StopToken(u32),
    /// A stop string appeared in the text.
    StopString(String),
}

/// One generated token and the text it releases (stop-string prefixes are held back until
/// they are known not to be a stop string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOut {
    /// The token id.
    pub id: u32,
    /// Text newly safe to show.
    pub text_delta: String,
}

/// One request's decoding state.
#[derive(Clone, Debug)]
pub struct Sequence {
    tokens: Vec<u32>,
    prompt_len: usize,
    pending: Vec<u32>,
    /// The sequence's KV cache.
    pub cache: KvCache,
    sampler: Sampler,
    params: SamplingParams,
    text: String,
    emitted: usize,
    /// `Some` once finished.
    pub finish: Option<FinishReason>,
    /// Index into the adapters passed to [`decode_step`] (`None`: base model).
    pub adapter: Option<usize>,
}

impl Sequence {
    /// A sequence that will first feed `prompt` (prefill), then one token per step.
    pub fn new(
        model: &Model,
        prompt: &[u32],
        params: &SamplingParams,
        adapter: Option<usize>,
    ) -> Result<Self> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument(
                "prompt must have at least one token".into(),
            ));
        }
        Ok(Sequence {
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            pending: prompt.to_vec(),
            cache: KvCache::new(model.config()),
            sampler: Sampler::new(params),
            params: params.clone(),
            text: String::new(),
            emitted: 0,
            finish: if params.max_new_tokens == 0 {
                Some(FinishReason::Length)
            } else {
                None
            },
            adapter,
        })
    }

    /// Generated tokens so far (a stop token included).
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Generated text so far (cut before a stop string once one is found).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Samples from this sequence's logits row and updates the stop state.
    pub fn accept(
        &mut self,
        logits: &[f32],
        tokenizer: Option<&Tokenizer>,
        max_pos: usize,
    ) -> Result<TokenOut> {
        if tokenizer.is_none() && !self.params.stop_strings.is_empty() {
            return Err(Error::InvalidArgument(
                "stop strings need a tokenizer".into(),
            ));
        }
        let id = self.sampler.sample(logits, &self.tokens);
        self.tokens.push(id);
        self.pending = vec![id];
        let n = self.generated().len();
        if self.params.stop_token_ids.contains(&id) {
            self.finish = Some(FinishReason::StopToken(id));
        } else if n >= self.params.max_new_tokens || self.tokens.len() >= max_pos {
            self.finish = Some(FinishReason::Length);
        }
        let mut text_delta = String::new();
        if let Some(tok) = tokenizer {
            let produced: Vec<u32> = self
                .generated()
                .iter()
                .copied()
                .filter(|t| !self.params.stop_token_ids.contains(t))
                .collect();
            let text = tok
                .decode(&produced, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            let mut safe = text.len();
            if let Some((pos, s)) = self
                .params
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()).map(|p| (p, s)))
                .min_by_key(|(p, _)| *p)
            {
                safe = pos;
                self.finish = Some(FinishReason::StopString(s.clone()));
            } else if self.finish.is_none() {
                safe = holdback(&text, &self.params.stop_strings);
            }
            let safe = safe.max(self.emitted.min(text.len()));
            if text.is_char_boundary(self.emitted)
                && text.is_char_boundary(safe)
                && self.emitted <= safe
            {
                text_delta = text[self.emitted..safe].to_string();
                self.emitted = safe;
            }
            self.text = if matches!(self.finish, Some(FinishReason::StopString(_))) {
                text[..safe].to_string()
            } else {
                text
            };
        }
        Ok(TokenOut { id, text_delta })
    }
}

/// Length of the prefix of `text` that can be shown: a tail that could start a stop string, or
/// an incomplete UTF-8 character (U+FFFD from a partial byte sequence), is held back.
fn holdback(text: &str, stops: &[String]) -> usize {
    let mut safe = text.len();
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                safe = safe.min(text.len() - i);
            }
        }
    }
    let trimmed = text[..safe].trim_end_matches('\u{FFFD}');
    trimmed.len()
}

/// Advances every unfinished sequence by one token in ONE forward pass (rows of different
/// adapters share the batch). Returns, per input sequence, the new token (or `None` if it
/// was already finished).
pub fn decode_step(
    model: &Model,
    seqs: &mut [&mut Sequence],
    adapters: &[Arc<LoraAdapter>],
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<Option<TokenOut>>> {
    let active: Vec<usize> = (0..seqs.len())
        .filter(|&i| seqs[i].finish.is_none())
        .collect();
    let mut out = vec![None; seqs.len()];
    if active.is_empty() {
        return Ok(out);
    }
    let per_seq = active.iter().map(|&i| seqs[i].adapter).collect();
    let ba = BatchAdapters::new(adapters.to_vec(), per_seq)?;
    let logits = {
        let mut steps: Vec<SeqStep> = Vec::with_capacity(active.len());
        for (i, s) in seqs.iter_mut().enumerate() {
            if active.contains(&i) {
                steps.push(SeqStep {
                    tokens: &s.pending,
                    cache: &mut s.cache,
                });
            }
        }
        let logits = model.forward_step(&mut steps, &ba)?;
        let _t = profile::time(Phase::Sample);
        logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?
    };
    let _t = profile::time(Phase::Sample);
    let max_pos = model.config().max_position_embeddings;
    for (row, &i) in active.iter().enumerate() {
        out[i] = Some(seqs[i].accept(&logits[row], tokenizer, max_pos)?);
    }
    Ok(out)
}

/// Generates from one prompt, calling `on_token` for every token (return `false` to stop
/// early). The model's EOS ids should be in `params.stop_token_ids`.
pub fn generate(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    adapter: Option<Arc<LoraAdapter>>,
    params: &SamplingParams,
    mut on_token: impl FnMut(&TokenOut) -> bool,
) -> Result<Sequence> {
    let adapters: Vec<_> = adapter.into_iter().collect();
    let mut seq = Sequence::new(
        model,
        prompt,
        params,
        if adapters.is_empty() { None } else { Some(0) },
    )?;
    while seq.finish.is_none() {
        let step = decode_step(model, &mut [&mut seq], &adapters, tokenizer)?;
        if let Some(Some(t)) = step.first()
            && !on_token(t)
        {
            break;
        }
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_penalty() {
        let logits = [0.0f32, 3.0, 2.9, -1.0];
        let greedy = SamplingParams::default();
        assert_eq!(Sampler::new(&greedy).sample(&logits, &[]), 1);
        let pen = SamplingParams {
            repetition_penalty: 2.0,
            ..greedy.clone()
        };
        assert_eq!(Sampler::new(&pen).sample(&logits, &[1]), 2);
        let k1 = SamplingParams {
            temperature: 5.0,
            top_k: Some(1),
            ..greedy.clone()
        };
        let mut s = Sampler::new(&k1);
        assert!((0..50).all(|_| s.sample(&logits, &[]) == 1));
        let p = SamplingParams {
            temperature: 1.0,
            top_p: Some(0.6),
            ..greedy.clone()
        };
        let mut s = Sampler::new(&p);
        let draws: Vec<u32> = (0..200).map(|_| s.sample(&logits, &[])).collect();
        assert!(
            draws.iter().all(|&t| t == 1 || t == 2) && draws.contains(&1) && draws.contains(&2)
        );
    }

    #[test]
    fn seeded_sampling_reproduces() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams {
            temperature: 1.0,
            seed: 42,
            ..Default::default()
        };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(&p), run(&p));
        assert_ne!(
            run(&p),
            run(&SamplingParams {
                seed: 43,
                ..p.clone()
            })
        );
    }

    #[test]
    fn holdback_keeps_possible_stop_prefix() {
        let stops = vec!["<END>".to_string()];
        assert_eq!(holdback("hello <EN", &stops), 6);
        assert_eq!(holdback("hello", &stops), 5);
        assert_eq!(holdback("ab\u{FFFD}", &[]), 2);
    }

    #[test]
    fn invalid_params_are_rejected() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: Some(0.0),
                ..Default::default()
            },
            SamplingParams {
                top_k: Some(0),
                ..Default::default()
            },
            SamplingParams {
                stop_strings: vec![String::new()],
                ..Default::default()
            },
        ] {
            assert!(matches!(p.validate(), Err(Error::InvalidArgument(_))));
        }
    }
}
