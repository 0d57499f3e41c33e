//! Where training rows come from: a published Datanet version, read only after the job
//! owner's licence has been checked on chain.
//!
//! Order of checks (nothing is read from the Datanet service before the licence check):
//! 1. `DatanetRegistry.getDatanet(id)` → 404 `datanet_not_found` if it reverts.
//! 2. The owner may use it if the Datanet is public, the owner owns it, or
//!    `hasLicence(id, owner)` → else 403 `not_licensed`.
//! 3. `versionCount(id)` ≤ version → 404 `version_not_found`; `getVersion` count 0 → 422
//!    `empty_version`.
//! 4. The manifest (by the on-chain manifest hash) and each contribution's content, checked
//!    against the on-chain Merkle root and the manifest's content hashes; rows parsed with
//!    `openledger_datanet::formats` by file name; row id = `0x<contentHash>:<index>`.

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy_primitives::{Address, B256, U256, keccak256};
use openledger_contracts::bindings::DatanetRegistry;
use openledger_datanet::formats::{self, Row};
use openledger_datanet::{ContentStore, DatanetClient, Manifest};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Largest row the Datanet service accepts (the parser's default bound).
pub const MAX_ROW_BYTES: usize = 4096;

/// A Datanet version as committed on chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    /// Datanet id.
    pub datanet: u64,
    /// Version number (0-based).
    pub version: u64,
    /// Merkle root on chain.
    pub merkle_root: B256,
    /// Manifest hash on chain.
    pub manifest_hash: B256,
    /// Contributions in the version.
    pub count: u64,
    /// Whether the Datanet is permissioned.
    pub permissioned: bool,
}

/// How row content is read once the licence is established.
#[derive(Clone, Debug)]
pub enum Reader {
    /// Through the Datanet API with signed reads (the CLI: the user's own key).
    Api(DatanetClient),
    /// Straight from the Datanet content store (a service co-located with the Datanet store;
    /// every blob is verified against its keccak-256 on read).
    Store(ContentStore),
}

fn chain(e: impl std::fmt::Display) -> TrainError {
    TrainError::Chain(e.to_string())
}

/// A read-only provider for `rpc_url`.
pub fn provider(rpc_url: &str) -> Result<DynProvider> {
    let url = rpc_url
        .parse()
        .map_err(|e| TrainError::field("rpcUrl", format!("{e}")))?;
    Ok(ProviderBuilder::new().connect_http(url).erased())
}

/// Steps 1–3: the licence and the version's on-chain record.
pub async fn check_access(
    provider: &DynProvider,
    registry: Address,
    owner: Address,
    datanet: u64,
    version: u64,
) -> Result<VersionRef> {
    let reg = DatanetRegistry::new(registry, provider.clone());
    let d = match reg.getDatanet(U256::from(datanet)).call().await {
        Ok(d) => d,
        Err(e) => {
            if e.as_decoded_interface_error::<DatanetRegistry::DatanetRegistryErrors>()
                .is_some()
            {
                return Err(TrainError::DatanetNotFound(datanet));
            }
            return Err(chain(e));
        }
    };
    if d.owner == Address::ZERO {
        return Err(TrainError::DatanetNotFound(datanet));
    }
    if d.permissioned && d.owner != owner {
        let licensed = reg
            .hasLicence(U256::from(datanet), owner)
            .call()
            .await
            .map_err(chain)?;
        if !licensed {
            return Err(TrainError::NotLicensed {
                datanet,
                account: owner.to_string(),
            });
        }
    }
    let count = reg
        .versionCount(U256::from(datanet))
        .call()
        .await
        .map_err(chain)?;
    if U256::from(version) >= count {
        return Err(TrainError::VersionNotFound { datanet, version });
    }
    let v = reg
        .getVersion(U256::from(datanet), U256::from(version))
        .call()
        .await
        .map_err(chain)?;
    if v.count == 0 {
        return Err(TrainError::EmptyVersion { datanet, version });
    }
    Ok(VersionRef {
        datanet,
        version,
        merkle_root: v.merkleRoot,
        manifest_hash: v.manifestHash,
        count: v.count,
        permissioned: d.permissioned,
    })
}

/// The manifest of a version whose access was checked, verified against the on-chain root.
pub async fn read_manifest(reader: &Reader, v: &VersionRef) -> Result<Manifest> {
    let manifest: Manifest = match reader {
        Reader::Api(c) => c.manifest(v.datanet, v.version).await?.0,
        Reader::Store(s) => {
            let bytes = s.get(&v.manifest_hash).await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| TrainError::Integrity(format!("manifest: {e}")))?
        }
    };
    if manifest.merkle_root() != v.merkle_root {
        return Err(TrainError::Integrity(format!(
            "manifest of datanet {} version {} does not match the on-chain Merkle root",
            v.datanet, v.version
        )));
    }
    Ok(manifest)
}

/// 422 `empty_version` if the version's manifest lists no rows (a cheap check before a job is
/// queued; [`read_rows`] checks the parsed rows again).
pub async fn check_not_empty(reader: &Reader, v: &VersionRef) -> Result<()> {
    let m = read_manifest(reader, v).await?;
    if m.contributions.iter().all(|e| e.row_count == 0) {
        return Err(TrainError::EmptyVersion {
            datanet: v.datanet,
            version: v.version,
        });
    }
    Ok(())
}

/// Step 4: the rows of a version whose access was checked, in manifest order.
pub async fn read_rows(reader: &Reader, v: &VersionRef) -> Result<Vec<(String, Row)>> {
    let manifest = read_manifest(reader, v).await?;
    let mut rows = Vec::new();
    for e in &manifest.contributions {
        let bytes = match reader {
            Reader::Api(c) => c.download(v.datanet, e.contribution_id).await?,
            Reader::Store(s) => s.get(&e.content_hash).await?,
        };
        if keccak256(&bytes) != e.content_hash {
            return Err(TrainError::Integrity(format!(
                "content of contribution {} does not match its hash",
                e.contribution_id
            )));
        }
        let fmt_err = |r: String| TrainError::Format {
            name: e.file_name.clone(),
            reason: r,
        };
        let fmt = formats::format_for(&e.file_name, &[]).map_err(|x| fmt_err(x.to_string()))?;
        let parsed =
            formats::parse(&bytes, &fmt, MAX_ROW_BYTES).map_err(|x| fmt_err(x.to_string()))?;
        for (i, r) in parsed.into_iter().enumerate() {
            rows.push((row_id(&e.content_hash, i), r));
        }
    }
    if rows.is_empty() {
        return Err(TrainError::EmptyVersion {
            datanet: v.datanet,
            version: v.version,
        });
    }
    Ok(rows)
}

/// `0x<contentHash>:<index>`.
pub fn row_id(content_hash: &B256, index: usize) -> String {
    format!("{content_hash}:{index}")
}
