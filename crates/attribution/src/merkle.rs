//! Batch Merkle trees in the OpenZeppelin `MerkleProof` convention, as
//! `AttributionSettlement.verifyRecord` checks them.
//!
//! ```text
//! leaf = record id (keccak-256 of the record's canonical bytes)
//! node = keccak256(min(a, b) ‖ max(a, b))        (sorted pair, bytes compared as big-endian)
//! ```
//!
//! Levels pair nodes left to right; an odd last node moves up unchanged (it has no sibling at
//! that level, so its proof skips the level). A one-leaf tree's root is the leaf.

use alloy_primitives::{B256, keccak256};

/// Hash of a sorted pair.
pub fn hash_pair(a: &B256, b: &B256) -> B256 {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(x.as_slice());
    buf[32..].copy_from_slice(y.as_slice());
    keccak256(buf)
}

/// Root over `leaves` (zero for none).
pub fn root(leaves: &[B256]) -> B256 {
    openledger_protocol::merkle::root(leaves, hash_pair)
}

/// Sibling path of leaf `index` (empty if out of range).
pub fn proof(leaves: &[B256], index: usize) -> Vec<B256> {
    openledger_protocol::merkle::path(leaves, index, hash_pair)
        .into_iter()
        .map(|s| s.sibling)
        .collect()
}

/// `MerkleProof.processProof`: folds the proof into a root.
pub fn process_proof(leaf: B256, proof: &[B256]) -> B256 {
    proof.iter().fold(leaf, |acc, p| hash_pair(&acc, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_proves_and_others_do_not() {
        for n in 1..=9usize {
            let leaves: Vec<B256> = (0..n as u8).map(|i| keccak256([i])).collect();
            let r = root(&leaves);
            for i in 0..n {
                assert_eq!(
                    process_proof(leaves[i], &proof(&leaves, i)),
                    r,
                    "n={n} i={i}"
                );
            }
            let stranger = keccak256(b"stranger");
            assert_ne!(process_proof(stranger, &proof(&leaves, 0)), r);
        }
        assert_eq!(root(&[]), B256::ZERO);
    }
}
