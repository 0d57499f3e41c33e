//! Where a running devnet's parts are, in one place: [`DevnetInfo`]. The devnet answers it at
//! `GET /api/devnet` (on its RPC port and on its web origin) and `openledger devnet` writes it
//! to [`well_known_path`] so that every CLI command finds the chain, the services, the contract
//! addresses and the stores from any directory without flags.
//!
//! ```
//! use openledger_protocol::endpoints::{DevnetInfo, dev_deployments};
//! let d = dev_deployments();
//! assert_eq!(d.chain_id, openledger_protocol::DEV_CHAIN_ID);
//! let info = DevnetInfo::new("http://127.0.0.1:8545", 1337, d, "/tmp/dev".into());
//! assert_eq!(info.datanet_api, "http://127.0.0.1:8545/api/datanets");
//! let back: DevnetInfo = serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
//! assert_eq!(back, info);
//! ```

use crate::{Contracts, DEV_CHAIN_ID, Deployments, GENESIS_DEPLOYER};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The path of [`DevnetInfo`] on the devnet's HTTP servers.
pub const DEVNET_INFO_PATH: &str = "/api/devnet";

/// What a running devnet tells its clients. Paths are on the devnet's machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevnetInfo {
    /// Chain id.
    pub chain_id: u64,
    /// JSON-RPC URL (the wallet port).
    pub rpc_url: String,
    /// The web origin with every service API (`/v1`, `/api/attribution`, `/api/earnings`,
    /// `/api/keys`, `/api/jobs`), if served.
    pub http_url: Option<String>,
    /// The Datanet API base URL.
    pub datanet_api: String,
    /// The devnet's data directory.
    pub datadir: PathBuf,
    /// The content store the server loads adapters from and training writes to (directory or
    /// `s3://bucket/prefix`), once the model services run.
    pub models_store: Option<String>,
    /// The content store of Datanet contributions and manifests.
    pub datanet_store: Option<String>,
    /// The attribution service's directory (records, transcripts).
    pub attribution_dir: Option<PathBuf>,
    /// The base model directory served and trained on, once it is ready.
    pub base_model: Option<PathBuf>,
    /// Process id of the devnet (a written file names it, so a stale file can be told apart).
    pub pid: u32,
    /// The protocol contracts.
    pub deployments: Deployments,
}

impl DevnetInfo {
    /// What a devnet knows as soon as its chain answers: the services' fields are filled in as
    /// they start.
    pub fn new(rpc_url: &str, chain_id: u64, deployments: Deployments, datadir: PathBuf) -> Self {
        let rpc_url = rpc_url.trim_end_matches('/').to_string();
        DevnetInfo {
            chain_id,
            datanet_api: format!("{rpc_url}/api/datanets"),
            rpc_url,
            http_url: None,
            datadir,
            models_store: None,
            datanet_store: None,
            attribution_dir: None,
            base_model: None,
            pid: std::process::id(),
            deployments,
        }
    }
}

/// The protocol contracts as the dev genesis predeploys them (chain id [`DEV_CHAIN_ID`]).
/// Only for that chain: any other chain has its own deployments file.
pub fn dev_deployments() -> Deployments {
    Deployments {
        chain_id: DEV_CHAIN_ID,
        deployer: GENESIS_DEPLOYER,
        block: 0,
        contracts: Contracts::planned(GENESIS_DEPLOYER, 0),
    }
}

/// Where `openledger devnet` writes its [`DevnetInfo`]: `$OPENLEDGER_HOME/devnet.json`, else
/// `$HOME/.openledger/devnet.json`; `None` when neither variable is set.
pub fn well_known_path() -> Option<PathBuf> {
    let home = match std::env::var_os("OPENLEDGER_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => Path::new(&std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".openledger"),
    };
    Some(home.join("devnet.json"))
}
