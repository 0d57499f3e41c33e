//! A version manifest checked against the version it claims on chain — what anyone who reads
//! a version's rows (training, attribution) runs before trusting the manifest.
//!
//! A Datanet's owner chooses the `merkleRoot` and `manifestHash` of a version freely, and every
//! Datanet shares one content-addressed store, so a manifest that hashes to the on-chain hash
//! and matches the on-chain root proves nothing about whose data it lists. [`ChainView::check`]
//! also requires:
//!
//! 1. `format`, `chainId`, `registry`, `datanetId` are this chain's, this registry's and the
//!    version's Datanet;
//! 2. `keccak256(canonical manifest) == manifestHash` and the recomputed root `== merkleRoot`;
//! 3. the manifest lists exactly the first `count` accepted contributions of that Datanet, in
//!    acceptance order (`acceptedContributions`, pages of [`PAGE`]), and each has on chain the
//!    listed content hash and contributor (`getContribution`, sent as JSON-RPC batches of
//!    [`PAGE`] calls).

use crate::manifest::{MANIFEST_VERSION, Manifest};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::client::BatchRequest;
use alloy::rpc::types::{TransactionInput, TransactionRequest};
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::SolCall;
use openledger_protocol::ChainError;
use openledger_protocol::bindings::DatanetRegistry;

/// Calls per `acceptedContributions` page and per JSON-RPC batch.
pub const PAGE: usize = 256;

/// A version as recorded by `DatanetRegistry.getVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainVersion {
    /// Datanet id.
    pub datanet: u64,
    /// Version number.
    pub version: u64,
    /// Merkle root on chain.
    pub merkle_root: B256,
    /// Manifest hash on chain.
    pub manifest_hash: B256,
    /// Contributions covered (the first `count` accepted ones).
    pub count: u64,
}

/// Why a manifest is not the version it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestCheckError {
    /// A chain call failed (not a verdict on the manifest).
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The version does not exist on chain.
    #[error("datanet {datanet} has no version {version}")]
    NoVersion {
        /// Datanet.
        datanet: u64,
        /// Version.
        version: u64,
    },
    /// The manifest does not match the on-chain version or the registry's records.
    #[error("manifest of datanet {datanet} version {version}: {reason}")]
    Mismatch {
        /// Datanet the version belongs to.
        datanet: u64,
        /// Version.
        version: u64,
        /// What does not match.
        reason: String,
    },
}

/// The registry on one chain, as seen through a read-only provider.
#[derive(Clone, Debug)]
pub struct ChainView {
    /// Provider.
    pub provider: DynProvider,
    /// `DatanetRegistry` address.
    pub registry: Address,
}

impl ChainView {
    /// A view of `registry` through `provider`.
    pub fn new(provider: DynProvider, registry: Address) -> Self {
        Self { provider, registry }
    }

    fn contract(&self) -> DatanetRegistry::DatanetRegistryInstance<DynProvider> {
        DatanetRegistry::new(self.registry, self.provider.clone())
    }

    /// The version's on-chain record.
    pub async fn version(
        &self,
        datanet: u64,
        version: u64,
    ) -> Result<ChainVersion, ManifestCheckError> {
        let reg = self.contract();
        let n = reg
            .versionCount(U256::from(datanet))
            .call()
            .await
            .map_err(ChainError::from)?;
        if U256::from(version) >= n {
            return Err(ManifestCheckError::NoVersion { datanet, version });
        }
        let v = reg
            .getVersion(U256::from(datanet), U256::from(version))
            .call()
            .await
            .map_err(ChainError::from)?;
        Ok(ChainVersion {
            datanet,
            version,
            merkle_root: v.merkleRoot,
            manifest_hash: v.manifestHash,
            count: v.count,
        })
    }

    /// Checks `m` against `v` and the registry (module docs).
    pub async fn check(&self, v: &ChainVersion, m: &Manifest) -> Result<(), ManifestCheckError> {
        let bad = |reason: String| ManifestCheckError::Mismatch {
            datanet: v.datanet,
            version: v.version,
            reason,
        };
        let chain_id = self
            .provider
            .get_chain_id()
            .await
            .map_err(ChainError::from)?;
        if m.format != MANIFEST_VERSION {
            return Err(bad(format!("unknown manifest format {}", m.format)));
        }
        if m.chain_id != chain_id || m.registry != self.registry {
            return Err(bad(format!(
                "it names registry {} on chain {}, not {} on chain {chain_id}",
                m.registry, m.chain_id, self.registry
            )));
        }
        if m.datanet_id != v.datanet {
            return Err(bad(format!(
                "it is a manifest of datanet {}, not of datanet {}",
                m.datanet_id, v.datanet
            )));
        }
        if m.hash() != v.manifest_hash {
            return Err(bad(format!(
                "it hashes to {}, the chain says {}",
                m.hash(),
                v.manifest_hash
            )));
        }
        if m.merkle_root() != v.merkle_root {
            return Err(bad("its Merkle root differs from the on-chain root".into()));
        }
        if m.contributions.len() as u64 != v.count {
            return Err(bad(format!(
                "it lists {} contributions, the version covers {}",
                m.contributions.len(),
                v.count
            )));
        }
        let listed: Vec<u64> = m.contributions.iter().map(|e| e.contribution_id).collect();
        let accepted = self.accepted(v.datanet, v.count).await?;
        if listed != accepted {
            return Err(bad(format!(
                "it lists contributions {} where the registry's first {} accepted ones are {}",
                short(&listed),
                v.count,
                short(&accepted)
            )));
        }
        let onchain = self.contributions(&listed).await?;
        for (e, c) in m.contributions.iter().zip(&onchain) {
            if c.contentHash != e.content_hash || c.contributor != e.contributor {
                return Err(bad(format!(
                    "contribution {} is {} by {} on chain, the manifest says {} by {}",
                    e.contribution_id, c.contentHash, c.contributor, e.content_hash, e.contributor
                )));
            }
        }
        Ok(())
    }

    /// The first `count` accepted contribution ids of `datanet`, in acceptance order.
    async fn accepted(&self, datanet: u64, count: u64) -> Result<Vec<u64>, ManifestCheckError> {
        let reg = self.contract();
        let mut ids = Vec::new();
        while (ids.len() as u64) < count {
            let start = ids.len() as u64;
            let limit = (count - start).min(PAGE as u64);
            let page = reg
                .acceptedContributions(U256::from(datanet), U256::from(start), U256::from(limit))
                .call()
                .await
                .map_err(ChainError::from)?;
            if page.is_empty() {
                break;
            }
            ids.extend(page.iter().map(|i| i.saturating_to::<u64>()));
        }
        Ok(ids)
    }

    /// `getContribution` of every id, as JSON-RPC batches.
    async fn contributions(
        &self,
        ids: &[u64],
    ) -> Result<Vec<DatanetRegistry::Contribution>, ManifestCheckError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PAGE) {
            let client = self.provider.client();
            let mut batch = BatchRequest::new(client);
            let mut waiters = Vec::with_capacity(chunk.len());
            for id in chunk {
                let call = DatanetRegistry::getContributionCall {
                    contributionId: U256::from(*id),
                };
                let tx = TransactionRequest::default()
                    .to(self.registry)
                    .input(TransactionInput::new(Bytes::from(call.abi_encode())));
                let w = batch
                    .add_call::<_, Bytes>("eth_call", &(tx, "latest"))
                    .map_err(ChainError::from)?;
                waiters.push(w);
            }
            batch.send().await.map_err(ChainError::from)?;
            for (id, w) in chunk.iter().zip(waiters) {
                let ret = w
                    .await
                    .map_err(|e| ChainError::Rpc(format!("getContribution({id}): {e}")))?;
                let c = DatanetRegistry::getContributionCall::abi_decode_returns(&ret)
                    .map_err(|e| ChainError::Rpc(format!("getContribution({id}): {e}")))?;
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// At most eight ids, then a count.
fn short(ids: &[u64]) -> String {
    if ids.len() <= 8 {
        format!("{ids:?}")
    } else {
        format!("{:?}… ({} in all)", &ids[..8], ids.len())
    }
}
