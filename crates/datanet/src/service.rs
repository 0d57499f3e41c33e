//! The Datanet service: content store + index + chain follower. [`crate::api`] puts HTTP on it.

use crate::index::{ContributionInfo, IndexError, IndexState, UploadInfo};
use crate::manifest::{MANIFEST_VERSION, Manifest, ManifestEntry};
use crate::store::{ContentStore, StoreError};
use crate::validate::{RowIndex, ValidationConfig};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy_primitives::{Address, B256};
use openledger_protocol::ChainError;
use openledger_protocol::bindings::DatanetRegistry;
use openledger_protocol::follower::EventFollower;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Service options.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// JSON-RPC URL of the chain.
    pub rpc_url: String,
    /// The `DatanetRegistry` address.
    pub registry: Address,
    /// Where `index.json` lives.
    pub datadir: PathBuf,
    /// Content store location: a directory or `s3://bucket/prefix`.
    pub store: String,
    /// Validation limits.
    pub validation: ValidationConfig,
    /// First block to scan when the index is empty.
    pub start_block: u64,
    /// Largest `eth_getLogs` block range.
    pub max_log_range: u64,
    /// How often [`DatanetService::spawn_follower`] polls.
    pub poll_interval: Duration,
    /// Staged uploads older than this when the service opens were abandoned by a killed
    /// process and are removed (keep it above the longest upload when several processes
    /// share a bucket).
    pub staging_grace: Duration,
}

impl ServiceConfig {
    /// Defaults for a datadir, chain and registry: store under `<datadir>/content`.
    pub fn new(rpc_url: impl Into<String>, registry: Address, datadir: impl Into<PathBuf>) -> Self {
        let datadir = datadir.into();
        Self {
            rpc_url: rpc_url.into(),
            registry,
            store: datadir.join("content").display().to_string(),
            datadir,
            validation: ValidationConfig::default(),
            start_block: 0,
            max_log_range: 5_000,
            poll_interval: Duration::from_millis(500),
            staging_grace: STAGING_GRACE,
        }
    }
}

/// Service errors.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Content store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Index persistence.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// JSON-RPC.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// A contribution was not uploaded to its Datanet by its contributor (its hash was
    /// recorded on chain around the service): never served, never in a version.
    #[error(
        "contribution {contribution} of datanet {datanet} is not backed by an upload of its \
         contributor to this Datanet: its content is not served and no version can include it"
    )]
    Unbacked {
        /// Datanet.
        datanet: u64,
        /// Contribution.
        contribution: u64,
    },
    /// The blob a version names as its manifest is not that Datanet's manifest on this
    /// registry and chain (another Datanet's manifest, a contribution, or garbage).
    #[error("{hash} is not a manifest of datanet {datanet} on this registry: {reason}")]
    ForeignManifest {
        /// Datanet of the URL.
        datanet: u64,
        /// The manifest hash on chain.
        hash: B256,
        /// What does not match.
        reason: String,
    },
    /// No such contribution in this Datanet.
    #[error("no contribution {contribution} in datanet {datanet}")]
    UnknownContribution {
        /// Datanet.
        datanet: u64,
        /// Contribution.
        contribution: u64,
    },
    /// Nothing accepted to publish.
    #[error("datanet {0} has no accepted contributions")]
    NothingToPublish(u64),
    /// No such Datanet.
    #[error("no datanet {0}")]
    UnknownDatanet(u64),
    /// The used-nonce log.
    #[error(transparent)]
    Nonces(#[from] crate::nonces::NonceError),
}

pub(crate) struct Inner {
    pub(crate) cfg: ServiceConfig,
    pub(crate) store: ContentStore,
    pub(crate) provider: DynProvider,
    pub(crate) chain_id: u64,
    pub(crate) state: tokio::sync::Mutex<IndexState>,
    /// Used nonces of signed requests (`<datadir>/nonces.log`).
    pub(crate) nonces: crate::nonces::NonceStore,
    /// Per Datanet, the rows of [`IndexState::live_uploads`] (owner: the upload's `seq`).
    /// Changed only while `state` is locked, so it always matches the state.
    pub(crate) rows: parking_lot::Mutex<HashMap<u64, RowIndex>>,
    /// Per Datanet, held by an upload from scoring to recording: each upload is scored
    /// against every earlier one, including one that was being scored at the same time.
    pub(crate) upload_turns: parking_lot::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Set while `rows` may lag the state (a reconcile failed half-way, e.g. a store read).
    pub(crate) rows_stale: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// The upload lock of a Datanet.
    pub(crate) fn upload_turn(&self, datanet: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.upload_turns.lock().entry(datanet).or_default().clone()
    }
}

/// A handle to the service (cheap to clone).
#[derive(Clone)]
pub struct DatanetService {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for DatanetService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatanetService")
            .field("registry", &self.inner.cfg.registry)
            .finish()
    }
}

/// Default [`ServiceConfig::staging_grace`].
pub const STAGING_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

impl DatanetService {
    /// Opens the store and index, connects to the chain, rebuilds the near-duplicate index
    /// (the rows of every upload that still counts, [`IndexState::live_uploads`]) and catches
    /// up with the chain.
    pub async fn open(cfg: ServiceConfig) -> Result<Self, ServiceError> {
        let store = ContentStore::open(&cfg.store)?;
        Self::with_store(cfg, store).await
    }

    /// Same as [`DatanetService::open`] with a given store (tests run every backend).
    pub async fn with_store(cfg: ServiceConfig, store: ContentStore) -> Result<Self, ServiceError> {
        // Uploads staged by a process that was killed before committing them are garbage.
        let swept = store.sweep_staging(cfg.staging_grace).await?;
        if swept > 0 {
            tracing::info!(target: "datanet::store", swept, "removed abandoned staged uploads");
        }
        let url = cfg
            .rpc_url
            .parse()
            .map_err(|e| ChainError::bad_url(&cfg.rpc_url, e))?;
        let provider = ProviderBuilder::new().connect_http(url).erased();
        let chain_id = provider.get_chain_id().await.map_err(ChainError::from)?;
        let state = IndexState::load(&cfg.datadir)?;
        let nonces =
            crate::nonces::NonceStore::open(cfg.datadir.join("nonces.log"), crate::auth::now())?;
        let svc = Self {
            inner: Arc::new(Inner {
                cfg,
                store,
                provider,
                chain_id,
                state: tokio::sync::Mutex::new(state),
                nonces,
                rows: parking_lot::Mutex::new(HashMap::new()),
                upload_turns: parking_lot::Mutex::new(HashMap::new()),
                rows_stale: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        {
            let st = svc.inner.state.lock().await;
            svc.reconcile_rows(&st).await?;
        }
        svc.sync().await?;
        Ok(svc)
    }

    /// The content store.
    pub fn store(&self) -> &ContentStore {
        &self.inner.store
    }

    /// Chain id.
    pub fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    /// Registry address.
    pub fn registry(&self) -> Address {
        self.inner.cfg.registry
    }

    /// The read-only provider.
    pub fn provider(&self) -> &DynProvider {
        &self.inner.provider
    }

    /// A snapshot of the index.
    pub async fn snapshot(&self) -> IndexState {
        self.inner.state.lock().await.clone()
    }

    /// Brings the near-duplicate index in line with `st` (the locked state): takes out the
    /// rows of uploads that no longer count (every contribution made from them rejected or
    /// withdrawn) and reads in those of uploads that count but are not in (all of them at
    /// open; one contributed again after a withdrawal). The same rule at open and while
    /// running, so a restart rebuilds exactly the index it had.
    pub(crate) async fn reconcile_rows(&self, st: &IndexState) -> Result<(), ServiceError> {
        use std::sync::atomic::Ordering;
        self.inner.rows_stale.store(true, Ordering::SeqCst);
        let live: Vec<&UploadInfo> = st.live_uploads().collect();
        let missing: Vec<&UploadInfo> = {
            let mut rows = self.inner.rows.lock();
            let keep: HashSet<(u64, u64)> = live.iter().map(|u| (u.datanet_id, u.seq)).collect();
            for (d, idx) in rows.iter_mut() {
                let dead: Vec<u64> = idx.owners().filter(|s| !keep.contains(&(*d, *s))).collect();
                for seq in dead {
                    idx.remove(seq);
                }
            }
            live.into_iter()
                .filter(|u| !rows.get(&u.datanet_id).is_some_and(|i| i.has_owner(u.seq)))
                .collect()
        };
        for u in missing {
            let bytes = self.inner.store.get(&u.content_hash).await?;
            // The upload parsed when it was validated; same bytes, same parser.
            let rows =
                crate::formats::parse(&bytes, &u.format, self.inner.cfg.validation.max_row_bytes)
                    .unwrap_or_default();
            self.inner
                .rows
                .lock()
                .entry(u.datanet_id)
                .or_default()
                .add(u.seq, &rows);
        }
        self.inner.rows_stale.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Applies every registry event up to the chain head; returns the last processed block.
    /// Each block range is applied and persisted as one unit.
    pub async fn sync(&self) -> Result<u64, ServiceError> {
        let follower = EventFollower::<DatanetRegistry::DatanetRegistryEvents>::new(
            self.inner.provider.clone(),
            self.inner.cfg.registry,
            self.inner.cfg.max_log_range,
        );
        let head = follower.head().await?;
        let mut st = self.inner.state.lock().await;
        loop {
            let from = st
                .last_block
                .map(|b| b + 1)
                .unwrap_or(self.inner.cfg.start_block);
            let Some(range) = follower.range(from, head).await? else {
                return Ok(st.last_block.unwrap_or_default());
            };
            let mut next = st.clone();
            for (ev, block) in &range.events {
                next.apply(ev, *block);
            }
            next.last_block = Some(range.to);
            next.save(&self.inner.cfg.datadir)?;
            *st = next;
            let stale = self
                .inner
                .rows_stale
                .load(std::sync::atomic::Ordering::SeqCst);
            if !range.events.is_empty() || stale {
                self.reconcile_rows(&st).await?;
            }
        }
    }

    /// Polls the chain until `stop` flips; errors are logged and retried.
    pub fn spawn_follower(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = svc.sync().await {
                    tracing::warn!(target: "datanet::index", error = %e, "sync failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(svc.inner.cfg.poll_interval) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// Builds (and stores) the manifest of the next version: every accepted contribution.
    pub async fn prepare_version(&self, datanet: u64) -> Result<Manifest, ServiceError> {
        self.sync().await?;
        let st = self.inner.state.lock().await;
        let d = st
            .datanets
            .get(&datanet)
            .ok_or(ServiceError::UnknownDatanet(datanet))?;
        if d.accepted.is_empty() {
            return Err(ServiceError::NothingToPublish(datanet));
        }
        let mut entries = Vec::with_capacity(d.accepted.len());
        for id in &d.accepted {
            let Some(c) = st.contributions.get(id) else {
                continue;
            };
            let up = st.backing(c).ok_or(ServiceError::Unbacked {
                datanet,
                contribution: *id,
            })?;
            entries.push(ManifestEntry {
                contribution_id: *id,
                content_hash: c.content_hash,
                contributor: c.contributor,
                row_count: up.row_count,
                byte_size: up.byte_size,
                rows_root: up.rows_root,
                file_name: up.file_name.clone(),
            });
        }
        drop(st);
        let manifest = Manifest {
            format: MANIFEST_VERSION,
            chain_id: self.inner.chain_id,
            registry: self.inner.cfg.registry,
            datanet_id: datanet,
            contributions: entries,
        };
        self.inner.store.put(manifest.to_bytes().into()).await?;
        Ok(manifest)
    }

    /// The manifest `hash` (a version's on-chain manifest hash) if it is `datanet`'s own: the
    /// canonical bytes of a [`Manifest`] whose format, chain id, registry and datanet id are
    /// this service's and `datanet`. Anything else in the shared store (another Datanet's
    /// manifest, a contribution's bytes) is [`ServiceError::ForeignManifest`].
    pub async fn own_manifest(&self, datanet: u64, hash: &B256) -> Result<Manifest, ServiceError> {
        let bytes = self.inner.store.get(hash).await?;
        let foreign = |reason: String| ServiceError::ForeignManifest {
            datanet,
            hash: *hash,
            reason,
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| foreign(format!("not a manifest ({e})")))?;
        if m.to_bytes() != bytes.as_ref() {
            return Err(foreign("not in canonical form".into()));
        }
        if m.format != MANIFEST_VERSION {
            return Err(foreign(format!("format {}", m.format)));
        }
        if m.chain_id != self.inner.chain_id || m.registry != self.inner.cfg.registry {
            return Err(foreign(format!(
                "it belongs to registry {} on chain {}",
                m.registry, m.chain_id
            )));
        }
        if m.datanet_id != datanet {
            return Err(foreign(format!("it is datanet {}'s", m.datanet_id)));
        }
        Ok(m)
    }

    /// A contribution of `datanet` whose content may be served: it exists in that Datanet
    /// and its contributor uploaded it there ([`IndexState::backing`]). Catches up with the
    /// chain first when the contribution is not indexed yet.
    pub async fn backed_contribution(
        &self,
        datanet: u64,
        contribution: u64,
    ) -> Result<ContributionInfo, ServiceError> {
        let find = |st: &IndexState| {
            st.contributions
                .get(&contribution)
                .filter(|c| c.datanet_id == datanet)
                .map(|c| (c.clone(), st.backing(c).is_some()))
        };
        let mut found = find(&*self.inner.state.lock().await);
        if found.is_none() {
            self.sync().await?;
            found = find(&*self.inner.state.lock().await);
        }
        match found {
            Some((c, true)) => Ok(c),
            Some((_, false)) => Err(ServiceError::Unbacked {
                datanet,
                contribution,
            }),
            None => Err(ServiceError::UnknownContribution {
                datanet,
                contribution,
            }),
        }
    }
}
