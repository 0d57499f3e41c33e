//! Version manifests and their Merkle tree.
//!
//! A manifest lists the accepted contributions of a version in acceptance order. It is stored
//! content-addressed as canonical JSON (the serialisation of [`Manifest`] by `serde_json`,
//! fields in declaration order, no whitespace); its keccak-256 is the `manifestHash` on chain.
//!
//! Merkle tree (the `merkleRoot` on chain):
//!
//! ```text
//! leaf_i = keccak256(0x00 ‖ abi.encode(contributionId, contentHash, contributor, rowCount, byteSize, rowsRoot))
//! node   = keccak256(0x01 ‖ left ‖ right)
//! ```
//!
//! Levels pair nodes left to right; an odd last node moves up unchanged. `rowsRoot` is the same
//! tree over the rows of the contribution with `leaf = keccak256(0x00 ‖ keccak256(row text))`,
//! so a single row can also be proven.

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;

/// One contribution in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    /// On-chain contribution id.
    pub contribution_id: u64,
    /// keccak-256 of the contribution's bytes.
    pub content_hash: B256,
    /// The contributor.
    pub contributor: Address,
    /// Rows; row `i` has id `contentHash:i`.
    pub row_count: u64,
    /// Bytes.
    pub byte_size: u64,
    /// Merkle root over the rows' text hashes.
    pub rows_root: B256,
    /// Original file name.
    pub file_name: String,
}

/// A version manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub format: u32,
    /// Chain id.
    pub chain_id: u64,
    /// The registry contract.
    pub registry: Address,
    /// Datanet id.
    pub datanet_id: u64,
    /// Accepted contributions in acceptance order.
    pub contributions: Vec<ManifestEntry>,
}

impl Manifest {
    /// Canonical bytes (what is stored and hashed).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// keccak-256 of the canonical bytes.
    pub fn hash(&self) -> B256 {
        keccak256(self.to_bytes())
    }

    /// The Merkle leaves in order.
    pub fn leaves(&self) -> Vec<B256> {
        self.contributions.iter().map(ManifestEntry::leaf).collect()
    }

    /// The Merkle root over the contributions.
    pub fn merkle_root(&self) -> B256 {
        merkle_root(&self.leaves())
    }

    /// Inclusion proof for a contribution id.
    pub fn proof(&self, contribution_id: u64) -> Option<Proof> {
        let index = self
            .contributions
            .iter()
            .position(|e| e.contribution_id == contribution_id)?;
        let leaves = self.leaves();
        Some(Proof {
            index: index as u64,
            leaf: leaves[index],
            siblings: merkle_proof(&leaves, index),
            leaf_count: leaves.len() as u64,
        })
    }
}

impl ManifestEntry {
    /// The entry's Merkle leaf.
    pub fn leaf(&self) -> B256 {
        let enc = (
            U256::from(self.contribution_id),
            self.content_hash,
            self.contributor,
            U256::from(self.row_count),
            U256::from(self.byte_size),
            self.rows_root,
        )
            .abi_encode_params();
        let mut buf = Vec::with_capacity(enc.len() + 1);
        buf.push(0u8);
        buf.extend_from_slice(&enc);
        keccak256(buf)
    }
}

/// Leaf of a row: `keccak256(0x00 ‖ keccak256(text))`.
pub fn row_leaf(row_hash: &B256) -> B256 {
    let mut buf = [0u8; 33];
    buf[1..].copy_from_slice(row_hash.as_slice());
    keccak256(buf)
}

fn node(l: &B256, r: &B256) -> B256 {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(l.as_slice());
    buf[33..].copy_from_slice(r.as_slice());
    keccak256(buf)
}

/// Root of the tree described in the module docs (zero for no leaves).
pub fn merkle_root(leaves: &[B256]) -> B256 {
    openledger_protocol::merkle::root(leaves, node)
}

/// A sibling on the path to the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The sibling's hash.
    pub hash: B256,
    /// Whether the sibling is on the left.
    pub left: bool,
}

/// An inclusion proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    /// Position of the leaf.
    pub index: u64,
    /// The leaf.
    pub leaf: B256,
    /// Siblings from the leaf up (levels where the node moved up alone have none).
    pub siblings: Vec<Sibling>,
    /// Number of leaves.
    pub leaf_count: u64,
}

impl Proof {
    /// Recomputes the root from the leaf and siblings.
    pub fn root(&self) -> B256 {
        self.siblings.iter().fold(self.leaf, |acc, s| {
            if s.left {
                node(&s.hash, &acc)
            } else {
                node(&acc, &s.hash)
            }
        })
    }

    /// Whether the proof leads to `root`.
    pub fn verify(&self, root: &B256) -> bool {
        self.root() == *root
    }
}

fn merkle_proof(leaves: &[B256], index: usize) -> Vec<Sibling> {
    openledger_protocol::merkle::path(leaves, index, node)
        .into_iter()
        .map(|s| Sibling {
            hash: s.sibling,
            left: s.left,
        })
        .collect()
}

/// Root over a contribution's row hashes.
pub fn rows_root(row_hashes: &[B256]) -> B256 {
    let leaves: Vec<B256> = row_hashes.iter().map(row_leaf).collect();
    merkle_root(&leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> ManifestEntry {
        ManifestEntry {
            contribution_id: i,
            content_hash: keccak256(i.to_le_bytes()),
            contributor: Address::with_last_byte(i as u8),
            row_count: i,
            byte_size: 10 * i,
            rows_root: B256::ZERO,
            file_name: format!("f{i}.txt"),
        }
    }

    #[test]
    fn proofs_verify_for_every_size() {
        for n in 1..=9u64 {
            let m = Manifest {
                format: MANIFEST_VERSION,
                chain_id: 1337,
                registry: Address::ZERO,
                datanet_id: 1,
                contributions: (1..=n).map(entry).collect(),
            };
            let root = m.merkle_root();
            for i in 1..=n {
                let p = m.proof(i).unwrap_or_else(|| panic!("proof {i}"));
                assert!(p.verify(&root), "n={n} i={i}");
                let mut bad = p.clone();
                bad.leaf = B256::repeat_byte(9);
                assert!(!bad.verify(&root));
            }
            assert!(m.proof(n + 1).is_none());
        }
    }

    #[test]
    fn manifest_round_trips_canonically() -> Result<(), serde_json::Error> {
        let m = Manifest {
            format: 1,
            chain_id: 1,
            registry: Address::ZERO,
            datanet_id: 2,
            contributions: vec![entry(1), entry(2)],
        };
        let back: Manifest = serde_json::from_slice(&m.to_bytes())?;
        assert_eq!(back.hash(), m.hash());
        assert_eq!(merkle_root(&[]), B256::ZERO);
        assert_eq!(merkle_root(&[m.leaves()[0]]), m.leaves()[0]);
        Ok(())
    }
}
