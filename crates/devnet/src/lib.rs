//! The one-process devnet: a node with the `dev` genesis (dev accounts funded, protocol
//! contracts predeployed), its JSON-RPC server, and the sealing loop, started and stopped as a
//! unit. The `openledger devnet` command and every service's integration tests use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), openledger_devnet::DevnetError> {
//! let devnet = openledger_devnet::Devnet::start(openledger_devnet::DevnetConfig::default()).await?;
//! println!("{}", devnet.rpc_url());
//! let registry = devnet.deployments.contracts.datanet_registry;
//! assert!(!registry.is_zero());
//! devnet.shutdown().await;
//! # Ok(()) }
//! ```

pub mod demo;
pub mod genesis;
mod http;
pub mod limits;

pub use genesis::{GenesisError, predeploy};
pub use http::{Slot, Slots};
pub use limits::HttpLimits;

use alloy_primitives::Address;
use openledger_chain::{DevAccount, DevPreset, Node, NodeConfig, PoolConfig, SealMode};
use openledger_protocol::endpoints::{DEVNET_INFO_PATH, DevnetInfo};
use openledger_protocol::{DeployConfig, Deployments};
use openledger_rpc::{RpcConfig, RpcState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Errors starting the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Chain setup failed.
    #[error(transparent)]
    Chain(#[from] openledger_chain::ChainError),
    /// Predeploying the protocol contracts failed.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// I/O (datadir, socket).
    #[error("{0}")]
    Io(String),
}

/// Devnet options.
#[derive(Clone, Debug)]
pub struct DevnetConfig {
    /// Datadir; a temporary directory (removed at shutdown) when `None`.
    pub datadir: Option<PathBuf>,
    /// JSON-RPC listen address (port 0 picks a free one).
    pub rpc_addr: SocketAddr,
    /// Where the web UI and every service API listen on one origin (`None`: not served).
    pub http_addr: Option<SocketAddr>,
    /// Block sealing mode.
    pub seal: SealMode,
    /// Number of funded dev accounts.
    pub accounts: usize,
    /// Chain id.
    pub chain_id: u64,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Base-fee treasury (`None` burns).
    pub base_fee_recipient: Option<Address>,
    /// Priority-fee recipient.
    pub fee_recipient: Address,
    /// RPC limits.
    pub rpc: RpcConfig,
    /// Settings of the protocol contracts predeployed at genesis.
    pub contracts: DeployConfig,
    /// Genesis timestamp; `None` uses the current time.
    pub genesis_timestamp: Option<u64>,
    /// Datanet uploads left staged longer than this by a killed process are removed at start.
    pub staging_grace: Duration,
    /// Per-client rate, in-flight and time limits of the HTTP origin.
    pub http_limits: HttpLimits,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            datadir: None,
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            seal: SealMode::OnDemand,
            accounts: 10,
            chain_id: openledger_protocol_chain_id(),
            gas_limit: 30_000_000,
            base_fee_recipient: None,
            fee_recipient: Address::ZERO,
            rpc: RpcConfig::default(),
            contracts: DeployConfig::dev(),
            genesis_timestamp: None,
            staging_grace: openledger_datanet::service::STAGING_GRACE,
            http_limits: HttpLimits::default(),
        }
    }
}

fn openledger_protocol_chain_id() -> u64 {
    1337
}

/// A running devnet.
pub struct Devnet {
    /// The node.
    pub node: Arc<Node>,
    /// Where JSON-RPC listens.
    pub rpc_addr: SocketAddr,
    /// Where the web UI and service APIs listen, if served.
    pub http_addr: Option<SocketAddr>,
    /// The service slots behind the HTTP origin (fill them with [`Slot::set`]).
    pub slots: Slots,
    /// Funded dev accounts with keys.
    pub accounts: Vec<DevAccount>,
    /// Predeployed protocol contracts (empty without contracts).
    pub deployments: Deployments,
    /// The datadir in use.
    pub datadir: PathBuf,
    /// The Datanet service (when the registry is deployed), for in-process readers.
    pub datanets: Option<openledger_datanet::DatanetService>,
    /// What `GET /api/devnet` answers; services fill in their parts with [`Devnet::update_info`].
    info: Arc<std::sync::RwLock<DevnetInfo>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet")
            .field("rpc_addr", &self.rpc_addr)
            .field("datadir", &self.datadir)
            .finish()
    }
}

impl Devnet {
    /// Builds the genesis, opens (or resumes) the datadir, starts sealing and JSON-RPC.
    pub async fn start(cfg: DevnetConfig) -> Result<Self, DevnetError> {
        let (tmp, datadir) = match &cfg.datadir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("openledger-devnet-")
                    .tempdir()
                    .map_err(|e| DevnetError::Io(e.to_string()))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let timestamp = cfg.genesis_timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        });
        let preset = DevPreset {
            accounts: cfg.accounts,
            chain_id: cfg.chain_id,
            gas_limit: cfg.gas_limit,
            timestamp,
            base_fee_recipient: cfg.base_fee_recipient,
            ..Default::default()
        };
        let (mut spec, accounts) = preset.build()?;
        let deployments = predeploy(&mut spec, &cfg.contracts)?;
        let node = Node::open(NodeConfig {
            datadir: datadir.clone(),
            spec,
            seal: cfg.seal,
            fee_recipient: cfg.fee_recipient,
            pool: PoolConfig::default(),
            dev_accounts: accounts.clone(),
            dev_methods: true,
        })?;
        let listener = tokio::net::TcpListener::bind(cfg.rpc_addr)
            .await
            .map_err(|e| DevnetError::Io(format!("cannot listen on {}: {e}", cfg.rpc_addr)))?;
        let rpc_addr = listener
            .local_addr()
            .map_err(|e| DevnetError::Io(e.to_string()))?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut r1 = rx.clone();
        let sealer = tokio::spawn(node.clone().run_sealer(async move {
            let _ = r1.changed().await;
        }));
        let info = Arc::new(std::sync::RwLock::new(DevnetInfo::new(
            &format!("http://{rpc_addr}"),
            cfg.chain_id,
            deployments.clone(),
            datadir.clone(),
        )));
        let state = RpcState::new(node.clone(), cfg.rpc.clone());
        // Services that talk to the chain over JSON-RPC are opened once the port answers;
        // until then their paths answer 503.
        let slots = Slots::default();
        let rpc_router = openledger_rpc::router(state).merge(info_router(info.clone()));
        let app = rpc_router.clone().nest_service(
            "/api/datanets",
            slots.datanets.clone().into_service("datanets"),
        );
        let server = tokio::spawn(serve_until(listener, app, rx.clone()));
        let mut tasks = vec![sealer, server];
        let http_addr = match cfg.http_addr {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| DevnetError::Io(format!("cannot listen on {addr}: {e}")))?;
                let bound = l.local_addr().map_err(|e| DevnetError::Io(e.to_string()))?;
                write_info(&info, |i| i.http_url = Some(format!("http://{bound}")));
                let origin =
                    http::origin(rpc_router, &slots).layer(axum::middleware::from_fn_with_state(
                        limits::Limiter::new(cfg.http_limits),
                        limits::limit,
                    ));
                tasks.push(tokio::spawn(serve_until(l, origin, rx)));
                Some(bound)
            }
            None => None,
        };
        let datanets = {
            let registry = deployments.contracts.datanet_registry;
            let mut svc_cfg = openledger_datanet::ServiceConfig::new(
                format!("http://{rpc_addr}"),
                registry,
                datadir.join("datanets"),
            );
            svc_cfg.staging_grace = cfg.staging_grace;
            write_info(&info, |i| {
                i.datanet_store = Some(svc_cfg.store.clone());
            });
            let svc = openledger_datanet::DatanetService::open(svc_cfg)
                .await
                .map_err(|e| DevnetError::Io(format!("datanet service: {e}")))?;
            slots.datanets.set(svc.router());
            tasks.push(svc.spawn_follower(stop.subscribe()));
            Some(svc)
        };
        Ok(Self {
            node,
            rpc_addr,
            http_addr,
            slots,
            accounts,
            deployments,
            datadir,
            datanets,
            info,
            stop,
            tasks,
            tmp,
        })
    }

    /// `http://host:port` of JSON-RPC.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr)
    }

    /// `http://host:port` of the web UI and service APIs, if served.
    pub fn http_url(&self) -> Option<String> {
        self.http_addr.map(|a| format!("http://{a}"))
    }

    /// `ws://host:port` of JSON-RPC.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.rpc_addr)
    }

    /// What the devnet answers at `GET /api/devnet` now.
    pub fn info(&self) -> DevnetInfo {
        read_info(&self.info)
    }

    /// Changes what the devnet answers at `GET /api/devnet` (services announce their stores
    /// and the base model as they start).
    pub fn update_info(&self, f: impl FnOnce(&mut DevnetInfo)) {
        write_info(&self.info, f);
    }

    /// Whether the datadir is temporary.
    pub fn is_temporary(&self) -> bool {
        self.tmp.is_some()
    }

    /// Stops sealing and serving; removes a temporary datadir.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        drop(self.tmp.take());
    }
}

fn read_info(info: &std::sync::RwLock<DevnetInfo>) -> DevnetInfo {
    // a panic while holding the lock cannot leave a half-written value (writers assign whole
    // fields), so a poisoned lock is read as is
    info.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write_info(info: &std::sync::RwLock<DevnetInfo>, f: impl FnOnce(&mut DevnetInfo)) {
    f(&mut info.write().unwrap_or_else(|p| p.into_inner()));
}

/// `GET /api/devnet`: the devnet's [`DevnetInfo`].
fn info_router(info: Arc<std::sync::RwLock<DevnetInfo>>) -> axum::Router {
    axum::Router::new().route(
        DEVNET_INFO_PATH,
        axum::routing::get(move || {
            let info = info.clone();
            async move { axum::Json(read_info(&info)) }
        }),
    )
}

async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.changed().await;
    });
    if let Err(e) = serve.await {
        tracing::error!(target: "devnet", error = %e, "HTTP server stopped");
    }
}
