//! Where training rows come from: a published Datanet version, read only after the job
//! owner's licence has been checked on chain and the version's manifest has been checked
//! against the chain.
//!
//! Order of checks (nothing is read from the Datanet service before the licence check, and no
//! contribution's content before the manifest check):
//! 1. `DatanetRegistry.getDatanet(id)` → 404 `datanet_not_found` if it reverts.
//! 2. The owner may use it if the Datanet is public, the owner owns it, or
//!    `hasLicence(id, owner)` → else 403 `not_licensed`.
//! 3. `versionCount(id)` ≤ version → 404 `version_not_found`; `getVersion` count 0 → 422
//!    `empty_version`.
//! 4. The manifest (by the on-chain manifest hash), checked by
//!    [`openledger_datanet::ChainView::check`]: its chain id, registry and datanet id are the
//!    version's, it hashes to the on-chain hash, its root is the on-chain root, and it lists
//!    exactly the version's accepted contributions with their on-chain content hashes and
//!    contributors → else 422 `manifest_mismatch` (a Datanet owner chooses the hash and root
//!    of a version freely; every Datanet shares one store).
//! 5. Every listed contribution must be backed (uploaded to that Datanet by its contributor,
//!    see the Datanet README) → else 403 `unbacked_contribution`: anyone can record another
//!    Datanet's content hash on chain as his own contribution.
//! 6. Each contribution's content, checked against its hash; rows parsed with
//!    `openledger_datanet::formats` by file name; row id = `0x<contentHash>:<index>`.

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy_primitives::{Address, B256, U256, keccak256};
use openledger_datanet::formats::{self, Row};
use openledger_datanet::{
    ChainVersion, ChainView, ClientError, ContentStore, DatanetClient, DatanetService, Manifest,
    ManifestCheckError, ServiceError, StoreError,
};
use openledger_protocol::ChainError;
use openledger_protocol::bindings::DatanetRegistry;
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
    /// The `DatanetRegistry` it was read from.
    #[serde(default)]
    pub registry: Address,
}

impl VersionRef {
    fn chain_version(&self) -> ChainVersion {
        ChainVersion {
            datanet: self.datanet,
            version: self.version,
            merkle_root: self.merkle_root,
            manifest_hash: self.manifest_hash,
            count: self.count,
        }
    }
}

/// How row content is read once the licence is established.
#[derive(Clone, Debug)]
pub enum Reader {
    /// Through the Datanet API with signed reads (the CLI: the user's own key); the service
    /// serves only backed contributions and a Datanet's own manifest.
    Api(DatanetClient),
    /// The Datanet service in this process (the devnet's jobs service): same checks as the
    /// API, without HTTP or a licence of the operator.
    Service(DatanetService),
    /// Straight from a content store, trusting every blob in it: no backing check (the store
    /// does not know who uploaded what). For your own store only, never for requests of
    /// others; every blob is verified against its keccak-256 on read.
    Store(ContentStore),
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
            return Err(ChainError::from(e).into());
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
            .map_err(ChainError::from)?;
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
        .map_err(ChainError::from)?;
    if U256::from(version) >= count {
        return Err(TrainError::VersionNotFound { datanet, version });
    }
    let v = reg
        .getVersion(U256::from(datanet), U256::from(version))
        .call()
        .await
        .map_err(ChainError::from)?;
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
        registry,
    })
}

fn manifest_err(e: ManifestCheckError) -> TrainError {
    match e {
        ManifestCheckError::Chain(m) => TrainError::Chain(m),
        ManifestCheckError::NoVersion { datanet, version } => {
            TrainError::VersionNotFound { datanet, version }
        }
        e @ ManifestCheckError::Mismatch { .. } => TrainError::ManifestMismatch(e.to_string()),
    }
}

/// The Datanet service's refusals as training errors (the same rules over HTTP or in process).
fn service_err(e: ServiceError) -> TrainError {
    match e {
        ServiceError::Unbacked {
            datanet,
            contribution,
        } => TrainError::Unbacked {
            datanet,
            contribution,
        },
        e @ (ServiceError::ForeignManifest { .. } | ServiceError::UnknownContribution { .. }) => {
            TrainError::ManifestMismatch(e.to_string())
        }
        ServiceError::Store(s) => TrainError::Store(s),
        ServiceError::Chain(c) => TrainError::Chain(c),
        e => TrainError::Chain(ChainError::unexpected(e.to_string())),
    }
}

fn client_err(datanet: u64, contribution: u64, e: ClientError) -> TrainError {
    match &e {
        ClientError::Api { kind, .. } if kind == "unbacked_contribution" => TrainError::Unbacked {
            datanet,
            contribution,
        },
        ClientError::Api { kind, message, .. }
            if kind == "foreign_manifest" || kind == "contribution_not_found" =>
        {
            TrainError::ManifestMismatch(message.clone())
        }
        _ => TrainError::Datanet(e),
    }
}

/// Steps 4: the manifest of a version whose access was checked, verified against the chain.
pub async fn read_manifest(
    provider: &DynProvider,
    reader: &Reader,
    v: &VersionRef,
) -> Result<Manifest> {
    let missing = |e: TrainError| match e {
        TrainError::Store(StoreError::NotFound(h)) => TrainError::ManifestMismatch(format!(
            "manifest {h} of datanet {} version {} is not in the Datanet store",
            v.datanet, v.version
        )),
        e => e,
    };
    let manifest: Manifest = match reader {
        Reader::Api(c) => {
            c.manifest(v.datanet, v.version)
                .await
                .map_err(|e| client_err(v.datanet, 0, e))?
                .0
        }
        Reader::Service(svc) => {
            svc.sync().await.map_err(service_err)?;
            svc.own_manifest(v.datanet, &v.manifest_hash)
                .await
                .map_err(|e| missing(service_err(e)))?
        }
        Reader::Store(s) => {
            let bytes = s
                .get(&v.manifest_hash)
                .await
                .map_err(|e| missing(e.into()))?;
            serde_json::from_slice(&bytes).map_err(|e| {
                TrainError::ManifestMismatch(format!("{} is not a manifest ({e})", v.manifest_hash))
            })?
        }
    };
    ChainView::new(provider.clone(), v.registry)
        .check(&v.chain_version(), &manifest)
        .await
        .map_err(manifest_err)?;
    Ok(manifest)
}

/// Step 5: every contribution of `m` may be read through its Datanet (backed). The store
/// reader trusts its store.
async fn check_backed(reader: &Reader, v: &VersionRef, m: &Manifest) -> Result<()> {
    match reader {
        Reader::Service(svc) => {
            for e in &m.contributions {
                svc.backed_contribution(v.datanet, e.contribution_id)
                    .await
                    .map_err(service_err)?;
            }
        }
        Reader::Api(c) => {
            let page = c.show(v.datanet).await.map_err(TrainError::Datanet)?;
            let backed: std::collections::HashSet<u64> = page["contributions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|c| c["backed"] == true)
                        .filter_map(|c| c["contribution"]["id"].as_u64())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(e) = m
                .contributions
                .iter()
                .find(|e| !backed.contains(&e.contribution_id))
            {
                return Err(TrainError::Unbacked {
                    datanet: v.datanet,
                    contribution: e.contribution_id,
                });
            }
        }
        Reader::Store(_) => {}
    }
    Ok(())
}

/// Steps 4–5 and a cheap emptiness check before a job is queued: the verified manifest of a
/// readable version. 422 `empty_version` if it lists no rows ([`read_rows`] checks the parsed
/// rows again).
pub async fn check_version(
    provider: &DynProvider,
    reader: &Reader,
    v: &VersionRef,
) -> Result<Manifest> {
    let m = read_manifest(provider, reader, v).await?;
    check_backed(reader, v, &m).await?;
    if m.contributions.iter().all(|e| e.row_count == 0) {
        return Err(TrainError::EmptyVersion {
            datanet: v.datanet,
            version: v.version,
        });
    }
    Ok(m)
}

/// Steps 4–6: the rows of a version whose access was checked, in manifest order.
pub async fn read_rows(
    provider: &DynProvider,
    reader: &Reader,
    v: &VersionRef,
) -> Result<Vec<(String, Row)>> {
    let manifest = read_manifest(provider, reader, v).await?;
    check_backed(reader, v, &manifest).await?;
    let mut rows = Vec::new();
    for e in &manifest.contributions {
        let bytes = match reader {
            Reader::Api(c) => c
                .download(v.datanet, e.contribution_id)
                .await
                .map_err(|x| client_err(v.datanet, e.contribution_id, x))?,
            Reader::Service(svc) => {
                let c = svc
                    .backed_contribution(v.datanet, e.contribution_id)
                    .await
                    .map_err(service_err)?;
                svc.store().get(&c.content_hash).await?
            }
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
