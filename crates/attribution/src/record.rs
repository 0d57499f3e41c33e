//! Attribution records: what was answered, by which model, for how much, and who is credited.
//!
//! A record is stored as its canonical bytes: the `serde_json` serialisation of
//! [`AttributionRecord`] (fields in declaration order, no whitespace, `U256` as a `0x` hex
//! string, contributions sorted by (datanet, version, contribution)). Its keccak-256 is the
//! record id and the content-store address.
//! [`AttributionRecord::from_bytes`] refuses bytes that are not in canonical form, so one
//! record has exactly one id. A charged record settles as the leaf [`AttributionRecord::leaf`]
//! (`openledger_protocol::voucher::Leaf`), which commits to the record id and to everything the
//! contract checks.
//!
//! Weights are parts per million summing to exactly 1,000,000 ([`to_ppm`], largest remainder
//! with ties to the smaller key), or an empty list when nothing was attributed.

use alloy_primitives::{Address, B256, U256, keccak256};
use openledger_protocol::ModelId;
use openledger_protocol::voucher::Leaf;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Record format version (2: `channel` and `fallback` added, the settlement leaf is
/// [`AttributionRecord::leaf`], no longer the record id).
pub const RECORD_VERSION: u32 = 2;
/// Parts per million.
pub const PPM: u32 = 1_000_000;
/// The engine that produced a record (crate name and version).
pub use openledger_protocol::ENGINE;

/// One method's parameters and its share of the final weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodRecord {
    /// `span` or `influence`.
    pub name: String,
    /// Share of the final weights in ppm (the methods' mixes sum to 1,000,000).
    pub mix_ppm: u32,
    /// Parameters as canonical JSON.
    pub params: serde_json::Value,
}

/// One credited contribution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credit {
    /// Datanet id.
    pub datanet: u64,
    /// Datanet version.
    pub version: u64,
    /// On-chain contribution id.
    pub contribution: u64,
    /// Weight in parts per million.
    pub weight_ppm: u32,
}

/// The record of one answered request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributionRecord {
    /// [`RECORD_VERSION`].
    pub format: u32,
    /// Server-assigned request id.
    pub request_id: String,
    /// Chain id of the settlement.
    pub chain_id: u64,
    /// Paying account (`None` when served for free).
    pub payer: Option<Address>,
    /// The payer's voucher channel charged (`keccak256(abi.encode(payer, attributor,
    /// channel))`; `None` when served for free).
    pub channel: Option<B256>,
    /// `ModelRegistry` id (`None` for an unregistered model).
    pub model_id: Option<ModelId>,
    /// Name the client used.
    pub model_name: String,
    /// Base model content hash.
    pub base_model_hash: B256,
    /// Adapter blob hash (`None` for the base model alone).
    pub adapter_hash: Option<B256>,
    /// keccak-256 of the prompt tokens (u32 little-endian each).
    pub prompt_hash: B256,
    /// keccak-256 of the answer tokens (u32 little-endian each).
    pub answer_hash: B256,
    /// Prompt token count.
    pub prompt_tokens: u64,
    /// Answer token count.
    pub completion_tokens: u64,
    /// Price in wei per 1,000 tokens.
    pub price_per_1k_tokens: U256,
    /// Fee in wei: `⌈price × (prompt + completion) / 1000⌉`.
    pub fee: U256,
    /// Methods, parameters and mixes.
    pub methods: Vec<MethodRecord>,
    /// [`ENGINE`].
    pub engine: String,
    /// No contribution was credited: the contributors' pool follows the fallback rule (today:
    /// the treasury). True exactly when `contributions` is empty.
    pub fallback: bool,
    /// Credited contributions, sorted, weights summing to 1,000,000 (or empty).
    pub contributions: Vec<Credit>,
}

/// Why record bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a record.
    #[error("not an attribution record: {0}")]
    Parse(String),
    /// A record, but not in canonical form.
    #[error("record bytes are not canonical (re-encoding differs)")]
    NotCanonical,
    /// A record of another format version.
    #[error("record format {0}, this build reads {RECORD_VERSION}")]
    Version(u32),
    /// Weights do not sum to 1,000,000 or are unsorted / zero.
    #[error("record weights are malformed: {0}")]
    Weights(String),
}

impl AttributionRecord {
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain structs of strings, numbers and JSON values always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record id: keccak-256 of the canonical bytes.
    pub fn id(&self) -> B256 {
        keccak256(self.to_bytes())
    }

    /// Parses canonical bytes and checks the weights.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: Self =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Parse(e.to_string()))?;
        if r.format != RECORD_VERSION {
            return Err(RecordError::Version(r.format));
        }
        if r.to_bytes() != bytes {
            return Err(RecordError::NotCanonical);
        }
        r.check_weights()?;
        Ok(r)
    }

    /// The shares the contract credits: weights summed per contribution id (a record may credit
    /// one contribution under two versions), ids ascending.
    pub fn shares(&self) -> Vec<(u64, u32)> {
        let mut by_id: BTreeMap<u64, u32> = BTreeMap::new();
        for c in &self.contributions {
            *by_id.entry(c.contribution).or_default() += c.weight_ppm;
        }
        by_id.into_iter().collect()
    }

    /// The Merkle leaf this record settles as (`None` for a free record: no payer, channel or
    /// model).
    pub fn leaf(&self) -> Option<Leaf> {
        Some(Leaf {
            record_id: self.id(),
            request_key: request_key(&self.request_id),
            payer: self.payer?,
            channel_key: self.channel?,
            model_id: self.model_id?.to_u256(),
            engine_id: keccak256(self.engine.as_bytes()),
            prompt_hash: self.prompt_hash,
            answer_hash: self.answer_hash,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            price_per_1k: self.price_per_1k_tokens,
            fee: self.fee,
            fallback: self.fallback,
            shares: self.shares(),
        })
    }

    /// Weights sorted, positive, summing to 1,000,000 (or no credits at all, exactly when
    /// `fallback`).
    pub fn check_weights(&self) -> Result<(), RecordError> {
        if self.fallback != self.contributions.is_empty() {
            return Err(RecordError::Weights(
                "fallback must be set exactly when nothing is credited".into(),
            ));
        }
        if self.contributions.is_empty() {
            return Ok(());
        }
        let sum: u64 = self.contributions.iter().map(|c| c.weight_ppm as u64).sum();
        if sum != PPM as u64 {
            return Err(RecordError::Weights(format!("sum {sum} ≠ 1,000,000")));
        }
        if self.contributions.iter().any(|c| c.weight_ppm == 0) {
            return Err(RecordError::Weights("a zero weight".into()));
        }
        if self.contributions.windows(2).any(|w| {
            (w[0].datanet, w[0].version, w[0].contribution)
                >= (w[1].datanet, w[1].version, w[1].contribution)
        }) {
            return Err(RecordError::Weights("credits unsorted or repeated".into()));
        }
        Ok(())
    }

    /// The JSON returned in an answer's `attribution` field: record id and top credits.
    pub fn summary(&self, top: usize) -> serde_json::Value {
        let mut c = self.contributions.clone();
        c.sort_by(|a, b| b.weight_ppm.cmp(&a.weight_ppm).then(a.cmp(b)));
        c.truncate(top);
        serde_json::json!({
            "recordId": self.id(),
            "fee": self.fee.to_string(),
            "methods": self.methods.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            "topContributions": c,
        })
    }
}

/// The settlement key of a request: keccak-256 of its id.
pub fn request_key(request_id: &str) -> B256 {
    keccak256(request_id.as_bytes())
}

/// keccak-256 of tokens as u32 little-endian (the prompt and answer hashes).
pub fn tokens_hash(tokens: &[u32]) -> B256 {
    keccak256(tokens_bytes(tokens))
}

/// Tokens as u32 little-endian bytes.
pub fn tokens_bytes(tokens: &[u32]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
}

/// The fee: `⌈price × tokens / 1000⌉`.
pub fn fee(price_per_1k: U256, tokens: u64) -> U256 {
    let num = price_per_1k.saturating_mul(U256::from(tokens));
    num.div_ceil(U256::from(1000u64))
}

/// Scales integer scores to parts per million summing to exactly 1,000,000 (largest
/// remainder; ties go to the smaller key). Zero scores are dropped; all-zero gives nothing.
pub fn to_ppm<K: Ord + Clone>(scores: &BTreeMap<K, u128>) -> Vec<(K, u32)> {
    let total: u128 = scores.values().sum();
    if total == 0 {
        return Vec::new();
    }
    // Keep the arithmetic in range: scale scores down if ×10^6 could overflow.
    let shift = (128 - total.leading_zeros()).saturating_sub(100);
    let total = scores.values().map(|v| v >> shift).sum::<u128>().max(1);
    let mut parts: Vec<(K, u128, u128)> = scores
        .iter()
        .map(|(k, v)| {
            let x = (v >> shift) * PPM as u128;
            (k.clone(), x / total, x % total)
        })
        .collect();
    let given: u128 = parts.iter().map(|p| p.1).sum();
    let mut left = (PPM as u128).saturating_sub(given) as usize;
    let mut order: Vec<usize> = (0..parts.len()).collect();
    // Stable sort by remainder, descending: equal remainders keep key order.
    order.sort_by(|&a, &b| parts[b].2.cmp(&parts[a].2));
    for &i in order.iter() {
        if left == 0 {
            break;
        }
        parts[i].1 += 1;
        left -= 1;
    }
    parts
        .into_iter()
        .filter(|p| p.1 > 0)
        .map(|(k, q, _)| (k, q as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> AttributionRecord {
        AttributionRecord {
            format: RECORD_VERSION,
            request_id: "chatcmpl-1".into(),
            chain_id: 1337,
            payer: Some(Address::with_last_byte(7)),
            channel: Some(B256::repeat_byte(9)),
            model_id: Some(ModelId(1)),
            model_name: "m".into(),
            base_model_hash: B256::repeat_byte(1),
            adapter_hash: Some(B256::repeat_byte(2)),
            prompt_hash: tokens_hash(&[1, 2]),
            answer_hash: tokens_hash(&[3]),
            prompt_tokens: 2,
            completion_tokens: 1,
            price_per_1k_tokens: U256::from(1000u64),
            fee: fee(U256::from(1000u64), 3),
            methods: vec![MethodRecord {
                name: "span".into(),
                mix_ppm: PPM,
                params: serde_json::json!({"minLen": 4}),
            }],
            engine: ENGINE.into(),
            fallback: false,
            contributions: vec![
                Credit {
                    datanet: 1,
                    version: 0,
                    contribution: 3,
                    weight_ppm: 600_000,
                },
                Credit {
                    datanet: 1,
                    version: 0,
                    contribution: 4,
                    weight_ppm: 400_000,
                },
            ],
        }
    }

    #[test]
    fn canonical_round_trip_and_tamper() -> Result<(), RecordError> {
        let r = sample();
        let bytes = r.to_bytes();
        assert_eq!(AttributionRecord::from_bytes(&bytes)?, r);
        assert_eq!(r.id(), keccak256(&bytes));
        // Whitespace or reordering changes the bytes: refused, so one record has one id.
        let mut v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RecordError::Parse(e.to_string()))?;
        let pretty = serde_json::to_vec_pretty(&v).unwrap_or_default();
        assert!(matches!(
            AttributionRecord::from_bytes(&pretty),
            Err(RecordError::NotCanonical)
        ));
        v["contributions"][0]["weightPpm"] = 700_000.into();
        let reordered = serde_json::to_vec(&v).unwrap_or_default();
        assert!(AttributionRecord::from_bytes(&reordered).is_err());
        let mut t = r.clone();
        t.contributions[0].weight_ppm = 700_000;
        assert!(matches!(
            AttributionRecord::from_bytes(&t.to_bytes()),
            Err(RecordError::Weights(_))
        ));
        assert_ne!(t.id(), r.id());
        assert_eq!(fee(U256::from(1000u64), 3), U256::from(3u64));
        assert_eq!(fee(U256::from(1u64), 3), U256::from(1u64), "rounded up");
        // fallback is set exactly when nothing is credited
        let mut f = r.clone();
        f.fallback = true;
        assert!(matches!(
            AttributionRecord::from_bytes(&f.to_bytes()),
            Err(RecordError::Weights(_))
        ));
        f.contributions.clear();
        assert!(AttributionRecord::from_bytes(&f.to_bytes()).is_ok());
        Ok(())
    }

    #[test]
    fn the_leaf_sums_a_contribution_credited_under_two_versions() {
        let mut r = sample();
        r.contributions = vec![
            Credit {
                datanet: 1,
                version: 0,
                contribution: 4,
                weight_ppm: 300_000,
            },
            Credit {
                datanet: 1,
                version: 1,
                contribution: 3,
                weight_ppm: 200_000,
            },
            Credit {
                datanet: 1,
                version: 1,
                contribution: 4,
                weight_ppm: 500_000,
            },
        ];
        let leaf = r.leaf().expect("charged");
        assert_eq!(leaf.shares, vec![(3, 200_000), (4, 800_000)]);
        assert_eq!(leaf.record_id, r.id());
        assert_eq!(leaf.request_key, keccak256(b"chatcmpl-1"));
        let mut free = r.clone();
        free.channel = None;
        assert!(free.leaf().is_none());
        // every field moves the leaf
        let mut other = r.clone();
        other.completion_tokens += 1;
        assert_ne!(other.leaf().map(|l| l.hash()), Some(leaf.hash()));
    }

    #[test]
    fn ppm_ties_and_examples() {
        let s: BTreeMap<u32, u128> = [(1, 1), (2, 1), (3, 1)].into();
        assert_eq!(to_ppm(&s), vec![(1, 333_334), (2, 333_333), (3, 333_333)]);
        let s: BTreeMap<u32, u128> = [(1, 0), (2, 5)].into();
        assert_eq!(to_ppm(&s), vec![(2, 1_000_000)]);
        assert!(to_ppm(&BTreeMap::<u32, u128>::new()).is_empty());
        let s: BTreeMap<u32, u128> = [(1, u128::MAX / 2), (2, u128::MAX / 4)].into();
        let p = to_ppm(&s);
        assert_eq!(p.iter().map(|x| x.1).sum::<u32>(), PPM);
    }

    proptest! {
        #[test]
        fn ppm_sums_exactly(scores in proptest::collection::btree_map(0u32..50, 0u128..1_000_000_000_000, 0..40)) {
            let p = to_ppm(&scores);
            if scores.values().all(|v| *v == 0) {
                prop_assert!(p.is_empty());
            } else {
                prop_assert_eq!(p.iter().map(|x| x.1 as u64).sum::<u64>(), PPM as u64);
                // Each weight is within one ppm of the exact share.
                let total: u128 = scores.values().sum();
                for (k, w) in &p {
                    let exact = scores[k] as f64 * 1e6 / total as f64;
                    prop_assert!((*w as f64 - exact).abs() < 1.0 + 1e-6);
                }
            }
        }
    }
}
