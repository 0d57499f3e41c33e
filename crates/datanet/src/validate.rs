//! Deterministic validation and quality score. See the crate documentation for the algorithm;
//! everything here depends only on the bytes, the limits and the rows it is compared with
//! (the Datanet's earlier uploads that still count).

use crate::formats::{self, Format, FormatError, Row};
use alloy_primitives::{B256, keccak256};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Number of MinHash functions.
pub const MINHASH_PERMUTATIONS: usize = 64;
/// LSH bands (`MINHASH_PERMUTATIONS / LSH_BANDS` hashes per band).
pub const LSH_BANDS: usize = 16;
const ROWS_PER_BAND: usize = MINHASH_PERMUTATIONS / LSH_BANDS;

/// Limits and thresholds of validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidationConfig {
    /// Largest accepted contribution in bytes (413 beyond).
    pub max_bytes: u64,
    /// Most rows in one contribution (413 beyond).
    pub max_rows: usize,
    /// Text paragraphs are cut to at most this many bytes.
    pub max_row_bytes: usize,
    /// A row whose printable-character ratio is below this is garbage.
    pub min_printable_ratio: f64,
    /// Estimated Jaccard similarity at or above which a row is a near-duplicate.
    pub near_dup_threshold: f64,
    /// Contributions scoring below this are refused (422).
    pub min_score: u32,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_rows: 1_000_000,
            max_row_bytes: 4096,
            min_printable_ratio: 0.9,
            near_dup_threshold: 0.8,
            min_score: 1,
        }
    }
}

/// Why a contribution is refused outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The content could not be parsed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// More rows than allowed.
    #[error("{rows} rows exceed the limit of {limit}")]
    TooManyRows {
        /// Rows found.
        rows: usize,
        /// The limit.
        limit: usize,
    },
    /// No rows at all.
    #[error("the contribution contains no rows")]
    Empty,
    /// The score is below the minimum.
    #[error("quality score {score} is below the minimum {min}: {reasons:?}")]
    LowQuality {
        /// The score.
        score: u32,
        /// The minimum.
        min: u32,
        /// The reasons.
        reasons: Vec<String>,
    },
}

/// The outcome of validating a contribution.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The parsed rows.
    pub rows: Vec<Row>,
    /// keccak-256 of each row's text.
    pub row_hashes: Vec<B256>,
    /// Score 0..=100.
    pub score: u32,
    /// Human-readable reasons for every deduction (empty for a perfect score).
    pub reasons: Vec<String>,
    /// Per-row verdicts, same order as `rows`.
    pub verdicts: Vec<Verdict>,
}

/// The verdict on one row.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Counts fully.
    Ok,
    /// Empty after trimming whitespace.
    Empty,
    /// Printable ratio below the threshold (binary garbage, control characters).
    Garbage,
    /// Same text as a row of an earlier upload or an earlier row of this contribution.
    ExactDuplicate,
    /// Estimated Jaccard ≥ threshold with a row of an earlier upload or an earlier row.
    NearDuplicate,
}

impl Verdict {
    /// The row's weight in the score.
    pub fn weight(self) -> f64 {
        match self {
            Verdict::Ok => 1.0,
            Verdict::NearDuplicate => 0.25,
            _ => 0.0,
        }
    }
}

/// MinHash signature of a row.
pub type Signature = [u64; MINHASH_PERMUTATIONS];

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// MinHash signature over word 3-gram shingles of the lower-cased text (a row with fewer than
/// three words is one shingle). Shingle hash: FNV-1a-64 of the words joined by one space;
/// function `i`: `splitmix64(h ^ splitmix64(i))`.
pub fn signature(text: &str) -> Signature {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let mut sig = [u64::MAX; MINHASH_PERMUTATIONS];
    let seeds: [u64; MINHASH_PERMUTATIONS] = std::array::from_fn(|i| splitmix(i as u64));
    let mut add = |h: u64| {
        for (s, seed) in sig.iter_mut().zip(seeds.iter()) {
            let v = splitmix(h ^ seed);
            if v < *s {
                *s = v;
            }
        }
    };
    if words.len() < 3 {
        add(fnv1a(words.join(" ").as_bytes()));
    } else {
        for w in words.windows(3) {
            let mut h = fnv1a(w[0].as_bytes());
            h = fnv1a(&[&h.to_le_bytes()[..], w[1].as_bytes()].concat());
            h = fnv1a(&[&h.to_le_bytes()[..], w[2].as_bytes()].concat());
            add(h);
        }
    }
    sig
}

/// Estimated Jaccard similarity: the fraction of equal MinHash values.
pub fn similarity(a: &Signature, b: &Signature) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / MINHASH_PERMUTATIONS as f64
}

/// The rows a contribution is compared with: exact row hashes and an LSH index of MinHash
/// signatures. The service keeps one per Datanet holding the rows of every earlier upload that
/// still counts, each upload's rows under an owner key (its upload sequence number) so they can
/// be taken out again when its contribution is rejected or withdrawn; [`validate`] keeps one
/// for the rows of the contribution itself (rows without an owner).
#[derive(Debug, Default, Clone)]
pub struct RowIndex {
    /// Live rows per row hash.
    exact: HashMap<B256, u32>,
    hashes: Vec<B256>,
    sigs: Vec<Signature>,
    /// Rows taken out (tombstones: their ids stay in the LSH buckets, skipped on lookup).
    removed: Vec<bool>,
    bands: Vec<HashMap<u64, Vec<u32>>>,
    /// Each owner's rows (added together, so contiguous).
    owners: HashMap<u64, std::ops::Range<u32>>,
    live: usize,
}

impl RowIndex {
    /// Number of rows indexed (rows taken out not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn band_keys(sig: &Signature) -> impl Iterator<Item = u64> + '_ {
        sig.chunks(ROWS_PER_BAND)
            .map(|c| c.iter().fold(0u64, |acc, v| splitmix(acc ^ v)))
    }

    /// Adds a row without an owner (it stays for the index's life).
    pub fn insert(&mut self, hash: B256, sig: Signature) {
        if self.bands.is_empty() {
            self.bands = vec![HashMap::new(); LSH_BANDS];
        }
        *self.exact.entry(hash).or_default() += 1;
        let id = self.sigs.len() as u32;
        for (band, key) in self.bands.iter_mut().zip(Self::band_keys(&sig)) {
            band.entry(key).or_default().push(id);
        }
        self.hashes.push(hash);
        self.sigs.push(sig);
        self.removed.push(false);
        self.live += 1;
    }

    /// Whether a row with this exact hash is indexed.
    pub fn contains(&self, hash: &B256) -> bool {
        self.exact.contains_key(hash)
    }

    /// Highest estimated similarity among LSH candidates (0 when none).
    pub fn best_match(&self, sig: &Signature) -> f64 {
        let mut best = 0.0f64;
        let mut seen = HashSet::new();
        for (band, key) in self.bands.iter().zip(Self::band_keys(sig)) {
            if let Some(ids) = band.get(&key) {
                for &id in ids {
                    if !self.removed[id as usize] && seen.insert(id) {
                        best = best.max(similarity(sig, &self.sigs[id as usize]));
                    }
                }
            }
        }
        best
    }

    /// Adds every row of a parsed contribution, without an owner.
    pub fn extend(&mut self, rows: &[Row]) {
        for r in rows {
            let t = r.text();
            self.insert(keccak256(t.as_bytes()), signature(&t));
        }
    }

    /// Adds every row of a parsed contribution under `owner`. Returns false (and adds
    /// nothing) when `owner`'s rows are already in, so adding twice never doubles rows.
    pub fn add(&mut self, owner: u64, rows: &[Row]) -> bool {
        if self.owners.contains_key(&owner) {
            return false;
        }
        let start = self.sigs.len() as u32;
        self.extend(rows);
        self.owners.insert(owner, start..self.sigs.len() as u32);
        true
    }

    /// Takes `owner`'s rows out. Returns false when it has none in.
    pub fn remove(&mut self, owner: u64) -> bool {
        let Some(ids) = self.owners.remove(&owner) else {
            return false;
        };
        for id in ids {
            let id = id as usize;
            self.removed[id] = true;
            self.live -= 1;
            if let Some(n) = self.exact.get_mut(&self.hashes[id]) {
                *n -= 1;
                if *n == 0 {
                    self.exact.remove(&self.hashes[id]);
                }
            }
        }
        true
    }

    /// Whether `owner`'s rows are in.
    pub fn has_owner(&self, owner: u64) -> bool {
        self.owners.contains_key(&owner)
    }

    /// The owners whose rows are in.
    pub fn owners(&self) -> impl Iterator<Item = u64> + '_ {
        self.owners.keys().copied()
    }
}

fn printable_ratio(text: &str) -> f64 {
    let total = text.chars().count();
    if total == 0 {
        return 1.0;
    }
    let printable = text
        .chars()
        .filter(|c| (!c.is_control() || matches!(c, '\n' | '\t' | '\r')) && *c != '\u{FFFD}')
        .count();
    printable as f64 / total as f64
}

/// Parses and scores a contribution against `earlier`: the rows of every earlier upload of
/// the Datanet that still counts (the service's rule, see the crate docs).
pub fn validate(
    bytes: &[u8],
    format: &Format,
    earlier: &RowIndex,
    cfg: &ValidationConfig,
) -> Result<Report, ValidationError> {
    let rows = formats::parse(bytes, format, cfg.max_row_bytes)?;
    if rows.len() > cfg.max_rows {
        return Err(ValidationError::TooManyRows {
            rows: rows.len(),
            limit: cfg.max_rows,
        });
    }
    if rows.is_empty() {
        return Err(ValidationError::Empty);
    }
    let mut local = RowIndex::default();
    let mut verdicts = Vec::with_capacity(rows.len());
    let mut row_hashes = Vec::with_capacity(rows.len());
    for row in &rows {
        let text = row.text();
        let hash = keccak256(text.as_bytes());
        row_hashes.push(hash);
        let verdict = if text.trim().is_empty() {
            Verdict::Empty
        } else if printable_ratio(&text) < cfg.min_printable_ratio {
            Verdict::Garbage
        } else if earlier.contains(&hash) || local.contains(&hash) {
            Verdict::ExactDuplicate
        } else {
            let sig = signature(&text);
            let near = earlier.best_match(&sig).max(local.best_match(&sig));
            local.insert(hash, sig);
            if near >= cfg.near_dup_threshold {
                Verdict::NearDuplicate
            } else {
                Verdict::Ok
            }
        };
        verdicts.push(verdict);
    }
    let total: f64 = verdicts.iter().map(|v| v.weight()).sum();
    let score = ((100.0 * total / rows.len() as f64).floor() as u32).min(100);
    let mut reasons = Vec::new();
    for (v, label) in [
        (Verdict::Empty, "empty"),
        (Verdict::Garbage, "binary or non-printable"),
        (Verdict::ExactDuplicate, "exact duplicate"),
        (Verdict::NearDuplicate, "near-duplicate"),
    ] {
        let idx: Vec<usize> = (0..verdicts.len()).filter(|&i| verdicts[i] == v).collect();
        if !idx.is_empty() {
            let shown: Vec<String> = idx.iter().take(5).map(|i| i.to_string()).collect();
            reasons.push(format!(
                "{} {label} row(s) of {} (rows {}{})",
                idx.len(),
                rows.len(),
                shown.join(", "),
                if idx.len() > 5 { ", ..." } else { "" }
            ));
        }
    }
    if score < cfg.min_score {
        return Err(ValidationError::LowQuality {
            score,
            min: cfg.min_score,
            reasons,
        });
    }
    Ok(Report {
        rows,
        row_hashes,
        score,
        reasons,
        verdicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_reasons() -> Result<(), ValidationError> {
        let mut accepted = RowIndex::default();
        accepted.extend(&[Row::Text {
            text: "the quick brown fox jumps over the lazy dog near the river bank today".into(),
        }]);
        let body = "fresh original content about tidal pools and their tiny crabs\n\n\
            the quick brown fox jumps over the lazy dog near the river bank today\n\n\
            the quick brown fox jumps over the lazy dog near the river bank today!\n\n\
            \u{1}\u{2}\u{3}\u{4}ab";
        let cfg = ValidationConfig::default();
        let r = validate(body.as_bytes(), &Format::Text, &accepted, &cfg)?;
        assert_eq!(
            r.verdicts,
            vec![
                Verdict::Ok,
                Verdict::ExactDuplicate,
                Verdict::NearDuplicate,
                Verdict::Garbage
            ]
        );
        assert_eq!(r.score, 31); // (1 + 0.25) / 4
        assert_eq!(r.reasons.len(), 3);
        // Deterministic.
        assert_eq!(
            r,
            validate(body.as_bytes(), &Format::Text, &accepted, &cfg)?
        );
        Ok(())
    }

    #[test]
    fn limits() {
        let cfg = ValidationConfig {
            max_rows: 2,
            ..Default::default()
        };
        let e = validate(b"a\n\nb\n\nc", &Format::Text, &RowIndex::default(), &cfg);
        assert!(matches!(
            e,
            Err(ValidationError::TooManyRows { rows: 3, .. })
        ));
        let e = validate(b"  \n\n ", &Format::Text, &RowIndex::default(), &cfg);
        assert!(matches!(e, Err(ValidationError::Empty)));
        let e = validate(
            b"{\"text\":\"\"}",
            &Format::Jsonl,
            &RowIndex::default(),
            &cfg,
        );
        assert!(matches!(
            e,
            Err(ValidationError::LowQuality { score: 0, .. })
        ));
    }

    #[test]
    fn owned_rows_come_out_again() -> Result<(), ValidationError> {
        let row = |t: &str| Row::Text { text: t.into() };
        let a = "the harbour master counts the fishing boats that come back before the tide turns";
        let b =
            "a kestrel hovers over the dunes every evening looking for voles in the marram grass";
        let mut idx = RowIndex::default();
        assert!(idx.add(1, &[row(a), row(a)]));
        assert!(!idx.add(1, &[row(a)]), "an owner's rows are added once");
        assert!(idx.add(2, &[row(a), row(b)]));
        assert_eq!(idx.len(), 4);
        let cfg = ValidationConfig::default();
        let near_a = format!("{a} now");
        let score = |idx: &RowIndex| -> Result<Vec<Verdict>, ValidationError> {
            Ok(validate(
                format!("{a}\n\n{near_a}\n\n{b}").as_bytes(),
                &Format::Text,
                idx,
                &cfg,
            )?
            .verdicts)
        };
        use Verdict::{ExactDuplicate as Exact, NearDuplicate as Near, Ok as Fresh};
        assert_eq!(score(&idx)?, vec![Exact, Near, Exact]);
        // Owner 2 out: `a` is still owner 1's, `b` is fresh again.
        assert!(idx.remove(2));
        assert!(!idx.remove(2));
        assert_eq!(idx.len(), 2);
        assert_eq!(score(&idx)?, vec![Exact, Near, Fresh]);
        assert!(idx.remove(1));
        assert!(idx.is_empty() && !idx.contains(&keccak256(a.as_bytes())));
        // Only the contribution's own earlier rows are left to compare with.
        assert_eq!(score(&idx)?, vec![Fresh, Near, Fresh]);
        // An owner taken out can be added again (a withdrawn hash contributed anew).
        assert!(idx.add(1, &[row(b)]));
        assert_eq!(score(&idx)?, vec![Fresh, Near, Exact]);
        assert_eq!(idx.owners().collect::<Vec<_>>(), vec![1]);
        Ok(())
    }

    #[test]
    fn minhash_similarity_tracks_overlap() {
        let a = signature("one two three four five six seven eight nine ten eleven twelve");
        let b = signature("one two three four five six seven eight nine ten eleven thirteen");
        let c = signature("completely different words describing mountain weather patterns here");
        assert!(similarity(&a, &b) > 0.6);
        assert!(similarity(&a, &c) < 0.2);
        assert_eq!(similarity(&a, &a), 1.0);
    }
}
