//! Binary Merkle trees over `bytes32` leaves, generic in how two nodes hash.
//!
//! Levels pair nodes left to right; an odd last node moves up unchanged (it has no sibling at
//! that level, so its path skips the level). A one-leaf tree's root is the leaf; no leaves
//! give zero. Datanet manifests (ordered, domain-separated nodes) and attribution batches
//! (sorted pairs, OpenZeppelin `MerkleProof`) share this shape and differ only in `node`.

use alloy_primitives::B256;

/// A sibling on the path from a leaf to the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The sibling's hash.
    pub sibling: B256,
    /// Whether the sibling is on the left.
    pub left: bool,
}

fn next_level(level: &[B256], node: &impl Fn(&B256, &B256) -> B256) -> Vec<B256> {
    level
        .chunks(2)
        .map(|c| match c {
            [a, b] => node(a, b),
            [a] => *a,
            _ => B256::ZERO,
        })
        .collect()
}

/// The root over `leaves` with `node(left, right)` (zero for none).
pub fn root(leaves: &[B256], node: impl Fn(&B256, &B256) -> B256) -> B256 {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = next_level(&level, &node);
    }
    level.first().copied().unwrap_or(B256::ZERO)
}

/// The siblings from leaf `index` up (empty when out of range or for a one-leaf tree).
pub fn path(
    leaves: &[B256],
    mut index: usize,
    node: impl Fn(&B256, &B256) -> B256,
) -> Vec<Sibling> {
    let mut out = Vec::new();
    if index >= leaves.len() {
        return out;
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let sib = index ^ 1;
        if let Some(h) = level.get(sib) {
            out.push(Sibling {
                sibling: *h,
                left: sib < index,
            });
        }
        level = next_level(&level, &node);
        index /= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;

    fn ordered(a: &B256, b: &B256) -> B256 {
        keccak256([a.as_slice(), b.as_slice()].concat())
    }

    #[test]
    fn every_path_folds_back_to_the_root() {
        for n in 1..=9u8 {
            let leaves: Vec<B256> = (0..n).map(|i| keccak256([i])).collect();
            let r = root(&leaves, ordered);
            for (i, leaf) in leaves.iter().enumerate() {
                let got = path(&leaves, i, ordered).iter().fold(*leaf, |acc, s| {
                    if s.left {
                        ordered(&s.sibling, &acc)
                    } else {
                        ordered(&acc, &s.sibling)
                    }
                });
                assert_eq!(got, r, "n={n} i={i}");
            }
            assert!(path(&leaves, n as usize, ordered).is_empty());
        }
        assert_eq!(root(&[], ordered), B256::ZERO);
    }
}
