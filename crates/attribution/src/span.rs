//! Span attribution (OLMoTrace style) over [`SpanIndex`]es.
//!
//! 1. For every answer position `i`, `L[i]` = length of the longest prefix of `answer[i..]`
//!    that occurs in the training data inside one document (one suffix-array search, seeded
//!    with `L[i-1] - 1`, which is known to occur).
//! 2. A span `(i, L[i])` is *maximal* when it ends after every earlier span
//!    (`i + L[i] > max_{j<i} j + L[j]`): it is not inside a longer match. Keep maximal spans
//!    with `L[i] ≥ min_len`.
//! 3. Drop spans that occur more than `max_occurrences` times: text that common is not
//!    evidence of any one contribution.
//! 4. Weight a span by its rarity: `w = Σ_t ⌊10^6 · −ln p(t)⌋` over its tokens, with the
//!    index's add-one unigram `p(t) = (c(t) + 1) / (N + V)` (fixed point, micro-nats). Frequent
//!    tokens ("of", "the") add little, rare ones much; short spans are already gone.
//! 5. Share `w` among the occurrences: contribution `c` gets `⌊w · occ(c) / occ⌋`.
//!
//! Everything after the logarithm table is integer arithmetic, so scores are bit-identical on
//! a given build.

use crate::index::SpanIndex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;

/// Parameters of the span method (recorded in every record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanParams {
    /// Shortest span kept, in tokens.
    pub min_len: usize,
    /// Spans with more occurrences are dropped as too common.
    pub max_occurrences: usize,
}

impl Default for SpanParams {
    fn default() -> Self {
        Self {
            min_len: 4,
            max_occurrences: 64,
        }
    }
}

/// A maximal matched span of the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Start in the answer.
    pub start: usize,
    /// Length in tokens.
    pub len: usize,
    /// Suffix-array range of its occurrences.
    pub range: Range<usize>,
}

/// `L[i]` for every position of `answer`, with the suffix-array range of each match.
pub fn longest_matches(ix: &SpanIndex, answer: &[u32]) -> Vec<(usize, Range<usize>)> {
    let mut out = Vec::with_capacity(answer.len());
    let mut prev = 0usize;
    for i in 0..answer.len() {
        let (len, r) = ix.longest_prefix(&answer[i..], prev.saturating_sub(1));
        prev = len;
        out.push((len, r));
    }
    out
}

/// The maximal spans of `answer` of at least `min_len` tokens.
pub fn maximal_spans(ix: &SpanIndex, answer: &[u32], min_len: usize) -> Vec<Match> {
    let mut reach = 0usize;
    let mut spans = Vec::new();
    for (i, (len, range)) in longest_matches(ix, answer).into_iter().enumerate() {
        if len > 0 && i + len > reach {
            reach = i + len;
            if len >= min_len.max(1) {
                spans.push(Match {
                    start: i,
                    len,
                    range,
                });
            }
        }
    }
    spans
}

/// Fixed-point rarity of token `t` in micro-nats: `⌊10^6 · −ln((c+1)/(N+V))⌋`.
pub fn token_weight(ix: &SpanIndex, t: u32) -> u64 {
    let c = ix.unigram(t) as f64 + 1.0;
    let total = ix.token_count() as f64 + ix.meta().vocab as f64;
    let nats = (total / c).ln();
    (nats * 1e6).floor().max(0.0) as u64
}

/// One scored span, for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoredSpan {
    /// Datanet of the index it matched.
    pub datanet: u64,
    /// Version of the index.
    pub version: u64,
    /// Start in the answer (tokens).
    pub start: usize,
    /// Length (tokens).
    pub len: usize,
    /// Occurrences in the index.
    pub occurrences: usize,
    /// Weight (micro-nats).
    pub weight: u64,
}

/// Key of a contribution: (datanet, version, contribution id).
pub type ContributionKey = (u64, u64, u64);

/// The span method's output: integer scores per contribution and the spans behind them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanAttribution {
    /// Score per contribution (micro-nats).
    pub scores: BTreeMap<ContributionKey, u128>,
    /// The kept spans.
    pub spans: Vec<ScoredSpan>,
}

/// Runs the span method over every index for `answer`.
pub fn attribute(indexes: &[&SpanIndex], answer: &[u32], p: &SpanParams) -> SpanAttribution {
    let mut out = SpanAttribution::default();
    for ix in indexes {
        let m = ix.meta();
        for s in maximal_spans(ix, answer, p.min_len) {
            let occ = s.range.len();
            if occ == 0 || occ > p.max_occurrences {
                continue;
            }
            let w: u64 = answer[s.start..s.start + s.len]
                .iter()
                .map(|&t| token_weight(ix, t))
                .sum();
            let mut per: BTreeMap<u64, u128> = BTreeMap::new();
            for k in s.range.clone() {
                let doc = ix.doc_of(ix.sa(k));
                *per.entry(ix.doc(doc).1).or_default() += 1;
            }
            for (c, n) in per {
                *out.scores.entry((m.datanet, m.version, c)).or_default() +=
                    w as u128 * n / occ as u128;
            }
            out.spans.push(ScoredSpan {
                datanet: m.datanet,
                version: m.version,
                start: s.start,
                len: s.len,
                occurrences: occ,
                weight: w,
            });
        }
    }
    out.scores.retain(|_, v| *v > 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Document, IndexMeta, build};
    use alloy_primitives::B256;
    use proptest::prelude::*;

    /// Brute force: longest prefix of `q` that is a substring of some document.
    fn brute_longest(docs: &[Document], q: &[u32]) -> (usize, usize) {
        let mut best = 0;
        for len in 1..=q.len() {
            let pat = &q[..len];
            if docs.iter().any(|d| d.tokens.windows(len).any(|w| w == pat)) {
                best = len;
            } else {
                break;
            }
        }
        let count = if best == 0 {
            0
        } else {
            docs.iter()
                .map(|d| d.tokens.windows(best).filter(|w| *w == &q[..best]).count())
                .sum()
        };
        (best, count)
    }

    fn index_of(docs: &[Document], vocab: u32) -> (tempfile::TempDir, SpanIndex) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("p.olspan");
        let meta = IndexMeta {
            datanet: 1,
            version: 0,
            vocab,
            tokenizer_hash: B256::ZERO,
        };
        build(&p, &meta, docs, |_, _| {}).expect("build");
        let ix = SpanIndex::open(&p).expect("open");
        (dir, ix)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_brute_force(
            raw in proptest::collection::vec((0u64..4, proptest::collection::vec(0u32..5, 0..30)), 1..8),
            answer in proptest::collection::vec(0u32..6, 0..40),
        ) {
            // Contributions must come grouped: sort by contribution (stable keeps row order).
            let mut docs: Vec<Document> = raw.into_iter()
                .map(|(c, tokens)| Document { contribution: c, tokens }).collect();
            docs.sort_by_key(|d| d.contribution);
            let (_dir, ix) = index_of(&docs, 6);
            let lm = longest_matches(&ix, &answer);
            for i in 0..answer.len() {
                let (len, count) = brute_longest(&docs, &answer[i..]);
                prop_assert_eq!(lm[i].0, len, "position {}", i);
                prop_assert_eq!(lm[i].1.len(), count, "count at {}", i);
                // Every occurrence starts with the matched span and credits the right doc.
                for k in lm[i].1.clone() {
                    let pos = ix.sa(k);
                    let d = ix.doc_of(pos);
                    let off = pos - ix.doc(d).0 as usize;
                    prop_assert_eq!(&docs[d].tokens[off..off + len], &answer[i..i + len]);
                }
            }
            // Spans: brute-force maximal spans and per-contribution occurrence counts.
            let spans = maximal_spans(&ix, &answer, 2);
            let mut reach = 0;
            let mut want = Vec::new();
            for i in 0..answer.len() {
                let (len, _) = brute_longest(&docs, &answer[i..]);
                if len > 0 && i + len > reach {
                    reach = i + len;
                    if len >= 2 { want.push((i, len)); }
                }
            }
            let got: Vec<(usize, usize)> = spans.iter().map(|s| (s.start, s.len)).collect();
            prop_assert_eq!(got, want);
            let att = attribute(&[&ix], &answer, &SpanParams { min_len: 2, max_occurrences: 1000 });
            for s in &spans {
                let pat = &answer[s.start..s.start + s.len];
                let owners: std::collections::BTreeSet<u64> = docs.iter()
                    .filter(|d| d.tokens.windows(s.len).any(|w| w == pat))
                    .map(|d| d.contribution).collect();
                for c in owners {
                    prop_assert!(att.scores.contains_key(&(1, 0, c)), "contribution {} credited", c);
                }
            }
            let credited: std::collections::BTreeSet<u64> = att.scores.keys().map(|k| k.2).collect();
            for c in credited {
                prop_assert!(spans.iter().any(|s| {
                    let pat = &answer[s.start..s.start + s.len];
                    docs.iter().any(|d| d.contribution == c && d.tokens.windows(s.len).any(|w| w == pat))
                }), "contribution {} credited without a span", c);
            }
        }
    }

    #[test]
    fn common_text_earns_less_than_rare_text() {
        // Token 0 is everywhere ("the"); 7, 8, 9 appear once.
        let mut docs = Vec::new();
        for c in 0..5u64 {
            docs.push(Document {
                contribution: c,
                tokens: vec![0, 1, 0, 1, 0, 1, 0, 2],
            });
        }
        docs.push(Document {
            contribution: 9,
            tokens: vec![7, 8, 9, 6, 0],
        });
        let (_d, ix) = index_of(&docs, 10);
        assert!(token_weight(&ix, 0) < token_weight(&ix, 7) / 3);
        let att = attribute(&[&ix], &[7, 8, 9, 6, 3, 0, 1, 0, 1], &SpanParams::default());
        let top = att.scores.iter().max_by_key(|(_, v)| **v).map(|(k, _)| k.2);
        assert_eq!(top, Some(9));
        // "0 1 0 1" occurs in all five common docs (twice each): shared, each gets a fifth.
        let common: Vec<u128> = (0..5)
            .filter_map(|c| att.scores.get(&(1, 0, c)).copied())
            .collect();
        assert_eq!(common.len(), 5);
        assert!(common.windows(2).all(|w| w[0] == w[1]));
    }
}
