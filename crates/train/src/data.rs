//! Rows → training examples: tokenisation with loss masks, the deterministic train/validation
//! split, per-epoch shuffling, packing and micro-batches.
//!
//! - Text rows: `<bos> text <eos>`, every token a target (causal LM).
//! - Prompt/completion rows are the chat `[user: prompt, assistant: completion]`; chat rows are
//!   rendered with the tokenizer's chat template, one segment per message; only assistant
//!   segments (and the final `<eos>`) are targets. Without a template, `prompt "\n" completion`.
//! - Split: a row is in validation iff `u64_be(keccak256("openledger-split-v1:" seed ":" rowId)[..8])
//!   < valFraction · 2^64`.
//! - Epoch `e` visits the training examples in a Fisher–Yates order from ChaCha8 seeded with
//!   `keccak256("openledger-shuffle-v1:" seed ":" e)`; with packing, consecutive examples of that
//!   order fill sequences of up to `maxSeqLen` tokens.

use alloy_primitives::keccak256;
use openledger_datanet::formats::Row;
use openledger_model::{ChatMessage, ChatTemplate, Pretrained};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use tokenizers::Tokenizer;

use crate::error::{Result, TrainError};

/// A tokenised row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// `0x<contentHash>:<row index>`.
    pub row_id: String,
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 where the token is a target.
    pub mask: Vec<u8>,
}

impl Example {
    /// Number of target tokens (positions ≥ 1 with mask 1).
    pub fn targets(&self) -> usize {
        self.mask.iter().skip(1).filter(|&&m| m != 0).count()
    }
}

/// Turns rows into token ids and masks the way the base model's tokenizer and template do.
pub struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<&'a ChatTemplate>,
    bos: Option<u32>,
    eos: Option<u32>,
}

fn tok_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Model(openledger_model::Error::Tokenizer(e.to_string()))
}

impl<'a> Encoder<'a> {
    /// The encoder of a loaded base model (needs its `tokenizer.json`).
    pub fn new(p: &'a Pretrained) -> Result<Self> {
        let tokenizer = p.tokenizer.as_ref().ok_or_else(|| {
            TrainError::field("baseModel", "the base model has no tokenizer.json")
        })?;
        Ok(Encoder {
            tokenizer,
            template: p.chat_template.as_ref(),
            bos: p.config.bos_token_id.or(p.generation.bos_token_id),
            eos: p.eos_ids().first().copied(),
        })
    }

    /// The end-of-sequence id, if the model has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Token ids of the prompt of a (prompt, completion) pair, ending where the answer starts.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let text = match self.template {
            Some(t) => t.render(&[ChatMessage::new("user", prompt)], true)?,
            None => format!("{prompt}\n"),
        };
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.tokens(&text)?);
        Ok(ids)
    }

    /// Token ids of an answer as the trainer writes it (without the final `<eos>`).
    pub fn answer_ids(&self, completion: &str) -> Result<Vec<u32>> {
        match self.template {
            Some(t) => {
                let user = ChatMessage::new("user", "x");
                let p = t.render(std::slice::from_ref(&user), true)?;
                let full = t.render(&[user, ChatMessage::new("assistant", completion)], false)?;
                self.tokens(full.get(p.len()..).unwrap_or(completion))
            }
            None => self.tokens(completion),
        }
    }

    /// Ids and target mask of one row.
    pub fn encode(&self, row: &Row) -> Result<(Vec<u32>, Vec<u8>)> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        let mut mask: Vec<u8> = vec![0; ids.len()];
        let push = |ids: &mut Vec<u32>, mask: &mut Vec<u8>, toks: Vec<u32>, m: u8| {
            mask.extend(std::iter::repeat_n(m, toks.len()));
            ids.extend(toks);
        };
        match row {
            Row::Text { text } => {
                push(&mut ids, &mut mask, self.tokens(text)?, 1);
            }
            Row::Pair { prompt, completion } => {
                let msgs = [
                    ChatMessage::new("user", prompt),
                    ChatMessage::new("assistant", completion),
                ];
                self.chat(&msgs, &mut ids, &mut mask)?;
            }
            Row::Chat { messages } => {
                let msgs: Vec<ChatMessage> = messages
                    .iter()
                    .map(|m| ChatMessage::new(&m.role, &m.content))
                    .collect();
                self.chat(&msgs, &mut ids, &mut mask)?;
            }
        }
        if let Some(eos) = self.eos {
            ids.push(eos);
            mask.push(1);
        }
        Ok((ids, mask))
    }

    fn chat(&self, msgs: &[ChatMessage], ids: &mut Vec<u32>, mask: &mut Vec<u8>) -> Result<()> {
        let Some(t) = self.template else {
            for m in msgs {
                let toks = self.tokens(&format!("{}\n", m.content))?;
                mask.extend(std::iter::repeat_n(
                    u8::from(m.role == "assistant"),
                    toks.len(),
                ));
                ids.extend(toks);
            }
            return Ok(());
        };
        let mut prev = String::new();
        let mut seg = |text: &str, prev: &str, m: u8| -> Result<()> {
            let rest = text.strip_prefix(prev).ok_or_else(|| {
                TrainError::field(
                    "baseModel",
                    "the chat template does not render conversations prefix by prefix",
                )
            })?;
            let toks = self.tokens(rest)?;
            mask.extend(std::iter::repeat_n(m, toks.len()));
            ids.extend(toks);
            Ok(())
        };
        for i in 0..msgs.len() {
            if msgs[i].role == "assistant" {
                let p = t.render(&msgs[..i], true)?;
                seg(&p, &prev, 0)?;
                let full = t.render(&msgs[..=i], false)?;
                seg(&full, &p, 1)?;
                prev = full;
            } else {
                let full = t.render(&msgs[..=i], false)?;
                seg(&full, &prev, 0)?;
                prev = full;
            }
        }
        Ok(())
    }
}

fn hash_u64(text: &str) -> u64 {
    let h = keccak256(text.as_bytes());
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// Whether a row goes to the validation split (see the module docs).
pub fn is_validation(row_id: &str, seed: u64, val_fraction: f64) -> bool {
    let x = hash_u64(&format!("openledger-split-v1:{seed}:{row_id}"));
    (x as f64) < val_fraction * 18_446_744_073_709_551_616.0
}

/// Truncates an example to `max` tokens; `None` if no target token is left.
pub fn truncate(mut e: Example, max: usize) -> Option<Example> {
    e.ids.truncate(max);
    e.mask.truncate(max);
    (e.ids.len() >= 2 && e.targets() > 0).then_some(e)
}

/// The visiting order of epoch `epoch` over `n` examples.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let h = keccak256(format!("openledger-shuffle-v1:{seed}:{epoch}").as_bytes());
    let mut rng = ChaCha8Rng::from_seed(h.0);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Groups an order into sequences: one example each, or packed up to `max_len` tokens.
pub fn sequences(
    order: &[usize],
    lens: &[usize],
    packing: bool,
    max_len: usize,
) -> Vec<Vec<usize>> {
    if !packing {
        return order.iter().map(|&i| vec![i]).collect();
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut used = 0;
    for &i in order {
        if !cur.is_empty() && used + lens[i] > max_len {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += lens[i];
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Concatenates the examples of one sequence (each packed example's first token is not a target).
pub fn concat(examples: &[Example], seq: &[usize]) -> (Vec<u32>, Vec<u8>) {
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for (k, &i) in seq.iter().enumerate() {
        let e = &examples[i];
        ids.extend_from_slice(&e.ids);
        mask.extend_from_slice(&e.mask);
        if k > 0 {
            let at = mask.len() - e.mask.len();
            mask[at] = 0;
        }
    }
    (ids, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_near_the_fraction() {
        let ids: Vec<String> = (0..2000).map(|i| format!("0xabc:{i}")).collect();
        let val = ids.iter().filter(|r| is_validation(r, 7, 0.2)).count();
        assert!((300..500).contains(&val), "{val}");
        let again = ids.iter().filter(|r| is_validation(r, 7, 0.2)).count();
        assert_eq!(val, again);
        let other = ids.iter().filter(|r| is_validation(r, 8, 0.2)).count();
        assert_ne!(
            ids.iter()
                .map(|r| is_validation(r, 7, 0.2))
                .collect::<Vec<_>>(),
            ids.iter()
                .map(|r| is_validation(r, 8, 0.2))
                .collect::<Vec<_>>(),
            "{other}"
        );
        assert_eq!(ids.iter().filter(|r| is_validation(r, 7, 0.0)).count(), 0);
    }

    #[test]
    fn orders_are_permutations_and_packing_respects_the_limit() {
        let o = epoch_order(50, 1, 0);
        let mut s = o.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(o, epoch_order(50, 1, 1));
        let lens: Vec<usize> = (0..50).map(|i| 3 + i % 7).collect();
        let seqs = sequences(&o, &lens, true, 20);
        assert!(
            seqs.iter()
                .all(|s| s.iter().map(|&i| lens[i]).sum::<usize>() <= 20)
        );
        assert_eq!(seqs.iter().map(Vec::len).sum::<usize>(), 50);
        assert_eq!(sequences(&o, &lens, false, 20).len(), 50);
    }
}
