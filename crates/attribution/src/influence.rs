//! Influence attribution from the trainer's gradient sketches (the scoring; [`crate::trained`]
//! loads the sketches, the adapter and computes the answer's sketch).
//!
//! The trainer records, for every training example, a per-layer random projection `g_i ∈
//! R^{L×k}` of the example's loss gradient with respect to the LoRA parameters
//! (`openledger_train::sketch`, format v1). For an answer, the same projection of the answer's
//! loss gradient (loss on the answer tokens only, under the published adapter) gives `q`. Two
//! scoring rules are implemented ([`Score`]):
//!
//! ```text
//! cosine:   s_i = ⟨q, g_i⟩ / (‖q‖ ‖g_i‖)           (all layers concatenated)
//! datainf:  s_i = −DataInf_i(q)                     (openledger_train::sketch::datainf_scores,
//!                                                    per-layer damping λ_l, in sketch space)
//! s'_i = max(0, s_i) / max_j s_j                    (positive influence only, scaled to [0, 1])
//! score(c) = Σ_{i ∈ c, i in the top_k} ⌊10^6 · s'_i⌋
//! ```
//!
//! Which rule goes into records is decided by measured quality (`openledger bench
//! attribution`, see the README): **cosine** is the default. DataInf's closed form
//! approximates the inverse Hessian per layer with the training gradients themselves; on our
//! sketches (few hundred examples, k = 128 per layer) its ranking is close to the raw inner
//! product, which favours examples with large gradients (high loss, badly fit), whereas the
//! cosine removes that length bias (as LESS does for LoRA gradients). Negative scores (examples
//! that push the answer away) are dropped: only positive influence is paid.
//!
//! Determinism: cosines are summed in four fixed f32 lanes then `f64`, DataInf in index order
//! (the trainer's helper), the scale uses the maximum; then everything is floored to integers.

use crate::span::ContributionKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Parameters of the influence method (recorded in every record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfluenceParams {
    /// Scoring rule.
    pub score: Score,
    /// Sketch dimension.
    pub dim: usize,
    /// Only the `top_k` most influential examples count (0 = all).
    pub top_k: usize,
}

/// How training examples are scored against the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Normalised gradient inner product over all layers.
    #[default]
    Cosine,
    /// DataInf closed form with per-layer damping (sign flipped: positive = helped).
    Datainf,
}

impl std::str::FromStr for Score {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(Score::Cosine),
            "datainf" => Ok(Score::Datainf),
            o => Err(format!("unknown influence score {o:?} (cosine, datainf)")),
        }
    }
}

/// DataInf helpfulness of every example (positive = lowered the answer's loss).
pub fn datainf(
    set: &openledger_train::sketch::SketchSet,
    q: &openledger_train::sketch::QuerySketch,
) -> Vec<f64> {
    openledger_train::sketch::datainf_scores(set, q)
        .into_iter()
        .map(|s| -f64::from(s))
        .collect()
}

/// Positive scores scaled by the largest, floored to micro-units and summed per contribution
/// over the `top_k` best examples (0 = all). Examples without a key (rows of no known
/// contribution) are skipped.
pub fn aggregate(
    scores: &[f64],
    keys: &[Option<ContributionKey>],
    top_k: usize,
) -> BTreeMap<ContributionKey, u128> {
    let max = scores
        .iter()
        .zip(keys)
        .filter(|(s, k)| s.is_finite() && k.is_some())
        .fold(0f64, |m, (s, _)| m.max(*s));
    let mut out = BTreeMap::new();
    if max <= 0.0 {
        return out;
    }
    let mut scored: Vec<(usize, u128)> = scores
        .iter()
        .enumerate()
        .filter(|(i, s)| s.is_finite() && **s > 0.0 && keys.get(*i).is_some_and(Option::is_some))
        .map(|(i, s)| (i, (s / max * 1e6).floor() as u128))
        .filter(|(_, s)| *s > 0)
        .collect();
    if top_k > 0 && scored.len() > top_k {
        scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(top_k);
    }
    for (i, s) in scored {
        if let Some(Some(k)) = keys.get(i) {
            *out.entry(*k).or_default() += s;
        }
    }
    out
}

/// Training-example sketches, unit-normalised at load, with the contribution of each example.
#[derive(Clone, Debug, Default)]
pub struct SketchMatrix {
    dim: usize,
    keys: Vec<ContributionKey>,
    data: Vec<f32>,
}

/// A sketch of the wrong size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sketch of dimension {got}, expected {want}")]
pub struct DimMismatch {
    /// Expected.
    pub want: usize,
    /// Got.
    pub got: usize,
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}

impl SketchMatrix {
    /// An empty matrix of sketch dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Default::default()
        }
    }

    /// Adds one example (normalised; a zero gradient stays zero and never scores).
    pub fn push(&mut self, key: ContributionKey, sketch: &[f32]) -> Result<(), DimMismatch> {
        if sketch.len() != self.dim {
            return Err(DimMismatch {
                want: self.dim,
                got: sketch.len(),
            });
        }
        let n = norm(sketch);
        let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
        self.keys.push(key);
        self.data
            .extend(sketch.iter().map(|x| (*x as f64 * inv) as f32));
        Ok(())
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Sketch dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Per-example cosine scores of `query` (in example order).
    pub fn cosines(&self, query: &[f32]) -> Result<Vec<f64>, DimMismatch> {
        if query.len() != self.dim {
            return Err(DimMismatch {
                want: self.dim,
                got: query.len(),
            });
        }
        let qn = norm(query);
        let inv = if qn > 0.0 { 1.0 / qn } else { 0.0 };
        let q: Vec<f32> = query.iter().map(|x| (*x as f64 * inv) as f32).collect();
        Ok(self
            .data
            .chunks_exact(self.dim.max(1))
            .map(|row| {
                // Four f32 lanes summed in a fixed order, then widened: fast and deterministic.
                let mut acc = [0f32; 4];
                let mut chunks = row.chunks_exact(4);
                let mut qc = q.chunks_exact(4);
                for (r, qq) in (&mut chunks).zip(&mut qc) {
                    for l in 0..4 {
                        acc[l] += r[l] * qq[l];
                    }
                }
                let mut s = (acc[0] as f64 + acc[1] as f64) + (acc[2] as f64 + acc[3] as f64);
                for (r, qq) in chunks.remainder().iter().zip(qc.remainder()) {
                    s += (*r as f64) * (*qq as f64);
                }
                s
            })
            .collect())
    }

    /// Positive influence aggregated per contribution, in micro-units.
    pub fn attribute(
        &self,
        query: &[f32],
        p: &InfluenceParams,
    ) -> Result<BTreeMap<ContributionKey, u128>, DimMismatch> {
        let cos = self.cosines(query)?;
        let mut scored: Vec<(usize, u128)> = cos
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0.0)
            .map(|(i, c)| (i, (c * 1e6).floor() as u128))
            .filter(|(_, s)| *s > 0)
            .collect();
        if p.top_k > 0 && scored.len() > p.top_k {
            scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            scored.truncate(p.top_k);
        }
        let mut out = BTreeMap::new();
        for (i, s) in scored {
            *out.entry(self.keys[i]).or_default() += s;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_positive_only_and_aggregated() -> Result<(), DimMismatch> {
        let mut m = SketchMatrix::new(5);
        m.push((1, 0, 10), &[1.0, 0.0, 0.0, 0.0, 0.0])?;
        m.push((1, 0, 10), &[10.0, 10.0, 0.0, 0.0, 0.0])?; // scale does not matter
        m.push((1, 0, 11), &[-1.0, 0.0, 0.0, 0.0, 0.0])?; // negative: dropped
        m.push((1, 0, 12), &[0.0, 0.0, 0.0, 0.0, 3.0])?; // orthogonal: nothing
        assert!(m.push((1, 0, 13), &[1.0]).is_err());
        let p = InfluenceParams {
            score: Score::Cosine,
            dim: 5,
            top_k: 0,
        };
        let s = m.attribute(&[2.0, 0.0, 0.0, 0.0, 0.0], &p)?;
        assert_eq!(s.len(), 1);
        // 1.0 + cos 45° = 1.7071…
        let got = s[&(1, 0, 10)] as i128;
        assert!((got - 1_707_106).abs() <= 2, "{got}");
        assert!(m.attribute(&[1.0], &p).is_err());
        Ok(())
    }

    #[test]
    fn aggregate_scales_keeps_positive_and_top_k() {
        let k = |c| Some((1u64, 0u64, c));
        let keys = [k(1), k(1), k(2), None, k(3)];
        let s = aggregate(&[0.5, 1.0, -3.0, 9.0, 0.25], &keys, 0);
        // The unkeyed 9.0 neither counts nor sets the scale.
        assert_eq!(s.get(&(1, 0, 1)), Some(&1_500_000));
        assert_eq!(s.get(&(1, 0, 3)), Some(&250_000));
        assert!(!s.contains_key(&(1, 0, 2)));
        let top = aggregate(&[0.5, 1.0, -3.0, 0.0, 0.25], &keys, 1);
        assert_eq!(top.len(), 1);
        assert_eq!(top[&(1, 0, 1)], 1_000_000);
        assert!(aggregate(&[-1.0, f64::NAN], &keys[..2], 0).is_empty());
        assert_eq!("datainf".parse::<Score>(), Ok(Score::Datainf));
        assert!("dot".parse::<Score>().is_err());
    }
}
