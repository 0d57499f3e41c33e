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
