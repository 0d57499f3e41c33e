//! Influence attribution from the trainer's gradient sketches.
//!
//! The trainer records, for every training example, a random projection `g_i ∈ R^k` of the
//! example's loss gradient with respect to the LoRA parameters (`openledger_train::sketch`).
//! For an answer, the same projection of the answer's loss gradient gives `q`. The score of
//! example `i` is the **normalised gradient inner product** (cosine similarity):
//!
//! ```text
//! s_i = max(0, ⟨q, g_i⟩ / (‖q‖ ‖g_i‖))        score(c) = Σ_{i ∈ c} ⌊10^6 · s_i⌋
//! ```
//!
//! Why cosine: it needs nothing beyond the sketches, costs O(n·k), and normalising (as LESS
//! does for LoRA gradients) removes the length / loss-magnitude bias that lets short, badly
//! fit examples dominate raw inner products. The trainer's sketches are per layer and come
//! with DataInf's per-layer damping (`openledger_train::sketch::datainf_scores`); which of the
//! two goes into records is to be decided by the quality bench (not run yet). Negative scores
//! (examples that would push the answer away) are dropped: only positive influence is paid.
//!
//! Determinism: dot products are summed in `f64` in index order, then floored to integers.

use crate::span::ContributionKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Parameters of the influence method (recorded in every record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfluenceParams {
    /// Scoring rule (always `"cosine"` in this version).
    pub score: String,
    /// Sketch dimension.
    pub dim: usize,
    /// Only the `top_k` most influential examples count (0 = all).
    pub top_k: usize,
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
            score: "cosine".into(),
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
}
