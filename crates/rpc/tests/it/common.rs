//! Test harness: an in-process node (`openledger_chain` + `openledger_rpc`) on a loopback port.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use openledger_chain::{DevAccount, DevPreset, Node, NodeConfig, PoolConfig, SealMode};
use openledger_protocol::Confirm;
use openledger_rpc::{RpcConfig, RpcState};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

/// A running node.
pub struct TestNode {
    pub node: Arc<Node>,
    /// The RPC server's state (its limits and execution gauges).
    pub rpc: Arc<RpcState>,
    pub url: String,
    pub ws_url: String,
    pub accounts: Vec<DevAccount>,
    #[allow(dead_code)]
    pub datadir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(None, SealMode::OnDemand, RpcConfig::default()).await
    }

    pub async fn start_with(datadir: Option<&Path>, seal: SealMode, rpc: RpcConfig) -> Self {
        Self::start_full(datadir, seal, rpc, PoolConfig::default()).await
    }

    /// A node with its own pool policy as well.
    pub async fn start_full(
        datadir: Option<&Path>,
        seal: SealMode,
        rpc: RpcConfig,
        pool: PoolConfig,
    ) -> Self {
        let (dir, path) = match datadir {
            Some(p) => (None, p.to_path_buf()),
            None => {
                let d = tempfile::tempdir().expect("tempdir");
                let p = d.path().to_path_buf();
                (Some(d), p)
            }
        };
        let (spec, accounts) = DevPreset {
            timestamp: 1_700_000_000,
            ..Default::default()
        }
        .build()
        .expect("dev preset");
        let node = Node::open(NodeConfig {
            datadir: path.clone(),
            spec,
            seal,
            fee_recipient: alloy::primitives::Address::repeat_byte(0xfe),
            pool,
            dev_accounts: accounts.clone(),
            dev_methods: true,
        })
        .expect("open node");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut r1 = rx.clone();
        let mut r2 = rx.clone();
        let sealer = tokio::spawn(node.clone().run_sealer(async move {
            let _ = r1.changed().await;
        }));
        let state = RpcState::new(node.clone(), rpc);
        let rpc = state.clone();
        let server = tokio::spawn(async move {
            let _ = openledger_rpc::serve(state, listener, async move {
                let _ = r2.changed().await;
            })
            .await;
        });
        Self {
            node,
            rpc,
            url: format!("http://{addr}"),
            ws_url: format!("ws://{addr}"),
            accounts,
            datadir: path,
            stop,
            tasks: vec![sealer, server],
            _dir: dir,
        }
    }

    /// Stops the node and waits for its tasks (the datadir is kept if it was given).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }

    pub fn signer(&self, i: usize) -> PrivateKeySigner {
        self.accounts[i].signer.clone()
    }

    /// An HTTP provider signing as dev account `i`.
    pub fn provider(&self, i: usize) -> DynProvider {
        let wallet = EthereumWallet::from(self.signer(i));
        ProviderBuilder::new()
            .wallet(wallet)
            .connect_http(self.url.parse().expect("url"))
            .erased()
    }

    /// A raw JSON-RPC call returning the whole response object.
    pub async fn raw(&self, body: Value) -> Value {
        raw_post(&self.url, body.to_string()).await.1
    }
}

/// Sends a transaction through `p` and waits for its receipt.
pub async fn send_wait(
    p: &DynProvider,
    tx: alloy::rpc::types::TransactionRequest,
) -> alloy::rpc::types::TransactionReceipt {
    p.send_transaction(tx)
        .await
        .expect("send")
        .confirm()
        .await
        .expect("receipt")
}

/// POSTs a body; returns (status, JSON response or Null).
pub async fn raw_post(url: &str, body: String) -> (u16, Value) {
    let client = reqwest::Client::new();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `{"jsonrpc":"2.0","id":1,"method":m,"params":p}`.
pub fn req(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

/// Bytecode of a committed contract artifact.
pub fn artifact_bytecode(name: &str) -> alloy::primitives::Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contracts/out")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("artifact");
    let v: Value = serde_json::from_str(&text).expect("artifact json");
    v["bytecode"]
        .as_str()
        .expect("bytecode")
        .parse()
        .expect("hex")
}
