//! Wiring: load the base model, open the adapter cache, start the engine thread and the chain
//! follower, and hand out the router.

use alloy_primitives::{Address, B256};
use axum::Router;
use openledger_datanet::ContentStore;
use openledger_model::{DType, Device, LoraAdapter, Pretrained};
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{AdapterCache, CacheConfig, Tier};
use crate::check::Checker;
use crate::engine::{self, EngineHandle, EngineParts};
use crate::error::ServeError;
use crate::hooks::InferenceHooks;
use crate::metrics::Metrics;
use crate::registry::{ChainFollower, Directory};
use crate::scheduler::SchedulerConfig;

/// Everything `openledger serve` and the devnet configure.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The base model directory (Hugging Face layout).
    pub base_dir: PathBuf,
    /// Name of the base model in `model` (default: the directory's name).
    pub base_name: Option<String>,
    /// Adapter object store (`dir` or `s3://bucket/prefix`), where registered adapters live.
    pub store: Option<String>,
    /// JSON-RPC URL of the chain, to follow `ModelRegistry`.
    pub rpc_url: Option<String>,
    /// `ModelRegistry` address (needed with `rpc_url`).
    pub registry: Option<Address>,
    /// Adapter cache tiers.
    pub cache: CacheConfig,
    /// Batching limits.
    pub scheduler: SchedulerConfig,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// `max_tokens` of a completion request that gives none.
    pub default_max_tokens: usize,
    /// Bearer token of the admin endpoints (`None` disables them).
    pub admin_token: Option<String>,
    /// How often the chain is polled for new models.
    pub poll_interval: Duration,
    /// How long a load check's "cannot load" verdict (blob missing, store unreadable, stored
    /// bytes corrupt) stands before a request or a listing makes the server look again.
    pub recheck_interval: Duration,
    /// Weights dtype (f32 or bf16 on CPU).
    pub dtype: DType,
}

impl ServeConfig {
    /// Defaults for a base model, with the disk cache in `cache_dir`.
    pub fn new(base_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            base_dir: base_dir.into(),
            base_name: None,
            store: None,
            rpc_url: None,
            registry: None,
            cache: CacheConfig {
                disk_dir: cache_dir.into(),
                disk_budget: 4 << 30,
                ram_budget: 1 << 30,
            },
            scheduler: SchedulerConfig::default(),
            max_tokens_limit: 1024,
            default_max_tokens: 16,
            admin_token: None,
            poll_interval: Duration::from_secs(1),
            recheck_interval: Duration::from_secs(2),
            dtype: DType::F32,
        }
    }
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub cfg: ServeConfig,
    pub base: Arc<Pretrained>,
    pub dir: Arc<RwLock<Directory>>,
    pub cache: Arc<AdapterCache>,
    pub checker: Arc<Checker>,
    pub engine: EngineHandle,
    pub hooks: Arc<dyn InferenceHooks>,
    pub metrics: Arc<Metrics>,
    pub created: u64,
    /// The `ModelRegistry` follower, when the server follows a chain.
    pub follower: Option<Arc<tokio::sync::Mutex<ChainFollower>>>,
}

/// A running OpenLoRA server (engine thread, chain follower) and its router.
pub struct Server {
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("base", &self.state.cfg.base_dir)
            .finish()
    }
}

/// `openledger_model::content_hash` as 32 bytes.
pub fn base_model_hash(dir: &Path) -> Result<B256, ServeError> {
    let (h, _) = openledger_model::content_hash(dir)
        .map_err(|e| ServeError::Internal(format!("base model {}: {e}", dir.display())))?;
    h.trim_start_matches("sha256:")
        .parse::<B256>()
        .map_err(|e| ServeError::Internal(format!("content hash {h}: {e}")))
}

impl Server {
    /// Loads the base model, opens the cache, starts the engine and (with `rpc_url`) catches
    /// up with `ModelRegistry`, then follows it.
    pub async fn start(
        cfg: ServeConfig,
        hooks: Arc<dyn InferenceHooks>,
    ) -> Result<Self, ServeError> {
        let (dir, dtype) = (cfg.base_dir.clone(), cfg.dtype);
        let (base, base_hash) = tokio::task::spawn_blocking(move || {
            let p = Pretrained::load(&dir, &Device::Cpu, dtype)
                .map_err(|e| ServeError::Internal(format!("base model {}: {e}", dir.display())))?;
            Ok::<_, ServeError>((p, base_model_hash(&dir)?))
        })
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))??;
        let base = Arc::new(base);
        let base_name = cfg.base_name.clone().unwrap_or_else(|| {
            cfg.base_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "base".into())
        });
        let metrics = Arc::new(Metrics::default());
        let store = match &cfg.store {
            Some(loc) => Some(
                ContentStore::open(loc)
                    .map_err(|e| ServeError::Internal(format!("adapter store {loc}: {e}")))?,
            ),
            None => None,
        };
        let cache = Arc::new(AdapterCache::open(
            cfg.cache.clone(),
            store,
            base.config.clone(),
            Device::Cpu,
            dtype,
            metrics.clone(),
        )?);
        let (engine, thread) = engine::spawn(EngineParts {
            model: Arc::new(base.model.clone()),
            tokenizer: base.tokenizer.clone(),
            scheduler: cfg.scheduler.clone(),
            metrics: metrics.clone(),
        })
        .map_err(|e| ServeError::Internal(format!("engine thread: {e}")))?;
        let dir = Arc::new(RwLock::new(Directory::new(base_name, base_hash)));
        let checker = Arc::new(Checker::new(
            cache.clone(),
            dir.clone(),
            cfg.store.clone(),
            cfg.recheck_interval,
        ));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let follower = match (&cfg.rpc_url, cfg.registry) {
            (Some(url), Some(registry)) => {
                let mut f = ChainFollower::connect(url, registry)?;
                f.sync(&dir)
                    .await
                    .map_err(|e| ServeError::Internal(format!("ModelRegistry at {url}: {e}")))?;
                checker.spawn_due();
                let f = Arc::new(tokio::sync::Mutex::new(f));
                spawn_follower(f.clone(), checker.clone(), cfg.poll_interval, stop_rx);
                Some(f)
            }
            (Some(_), None) => {
                return Err(ServeError::Internal(
                    "rpc_url needs a ModelRegistry address".into(),
                ));
            }
            _ => None,
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Ok(Server {
            state: Arc::new(AppState {
                cfg,
                base,
                dir,
                cache,
                checker,
                engine,
                hooks,
                metrics,
                created,
                follower,
            }),
            stop,
            thread: Some(thread),
        })
    }

    /// The OpenAI-compatible router (`/v1/...`, `/metrics`, `/health`).
    pub fn router(&self) -> Router {
        crate::api::router(self.state.clone())
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// The adapter cache.
    pub fn cache(&self) -> Arc<AdapterCache> {
        self.state.cache.clone()
    }

    /// The base model's name and content hash.
    pub fn base(&self) -> (String, B256) {
        let d = self.state.dir.read();
        (d.base_name.clone(), d.base_hash)
    }

    /// Catches up with the chain now (the follower also does so every `poll_interval`).
    /// New registrations' load checks start in the background.
    pub async fn sync_chain(&self) -> Result<usize, ServeError> {
        self.state.sync_chain(None).await
    }

    /// Adds a local adapter under `name` (what `POST /v1/load_lora_adapter` does).
    pub async fn load_local(
        &self,
        name: &str,
        path: &Path,
        expected: Option<B256>,
    ) -> Result<B256, ServeError> {
        load_local(&self.state, name, path, expected).await
    }

    /// Requests holding a slot (queued or running).
    pub fn inflight(&self) -> usize {
        self.state.engine.inflight()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.state.engine.shutdown();
        if let Some(t) = self.thread.take() {
            drop(t); // the thread ends after its current step; do not block a runtime on it
        }
    }
}

impl AppState {
    /// Catches up with the chain unless a sync that read the head at or after `since` already
    /// did (so a flood of requests for unknown ids costs one sync at a time, not one each).
    /// New registrations' load checks start in the background.
    pub(crate) async fn sync_chain(&self, since: Option<Instant>) -> Result<usize, ServeError> {
        let Some(f) = &self.follower else {
            return Ok(0);
        };
        let mut f = f.lock().await;
        if since.is_some_and(|t| f.covers(t)) {
            return Ok(0);
        }
        let n = f
            .sync(&self.dir)
            .await
            .map_err(|e| ServeError::Internal(format!("following ModelRegistry: {e}")))?;
        drop(f);
        if n > 0 {
            self.checker.spawn_due();
        }
        Ok(n)
    }
}

/// Polls the chain every `every`; each batch of new events starts the load checks of the
/// registrations it brought.
fn spawn_follower(
    f: Arc<tokio::sync::Mutex<ChainFollower>>,
    checker: Arc<Checker>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match f.lock().await.sync(checker.dir()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(target: "serve::registry", events = n, "ModelRegistry events applied");
                    checker.spawn_due();
                }
                Err(e) => {
                    tracing::warn!(target: "serve::registry", error = %e, "chain sync failed")
                }
            }
        }
    });
}

/// Loads a PEFT directory or an adapter blob file from local disk and names it.
pub(crate) async fn load_local(
    st: &AppState,
    name: &str,
    path: &Path,
    expected: Option<B256>,
) -> Result<B256, ServeError> {
    // refuse reserved names before any work
    st.dir.read().clone().add_local(name, B256::ZERO, "")?;
    let model = st.base.config.clone();
    let (p, nm) = (path.to_path_buf(), name.to_string());
    let blob = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ServeError> {
        let refuse = |reason: String| ServeError::AdapterRefused {
            name: nm.clone(),
            reason,
        };
        if p.is_dir() {
            let a = LoraAdapter::load(&p, &model, &Device::Cpu, DType::F32)
                .map_err(|e| refuse(e.to_string()))?;
            a.to_blob().map_err(|e| refuse(e.to_string()))
        } else {
            std::fs::read(&p).map_err(|e| refuse(format!("{}: {e}", p.display())))
        }
    })
    .await
    .map_err(|e| ServeError::Internal(e.to_string()))??;
    let (hash, _) = st.cache.insert_blob(blob, name, expected).await?;
    st.dir
        .write()
        .add_local(name, hash, &path.display().to_string())?;
    // loaded just now: its check is this load
    st.checker.record(hash, Ok(Tier::Ram));
    tracing::info!(target: "serve::api", name, %hash, "local adapter loaded");
    Ok(hash)
}
