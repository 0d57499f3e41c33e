//! A browser wallet holding a key the node does not know, standing in for MetaMask: an
//! EIP-1193 provider injected into every page before its scripts run (as a wallet extension's
//! content script is), whose `request` goes to a signer this test runs with a fresh key. It
//! signs transactions (sent raw to the node), EIP-712 data and messages itself, and forwards
//! reads to the node; the UI must work with it exactly as with any injected wallet.
//! (Also included by path in `openledger-stack`'s tests; each binary uses part of it.)
#![allow(dead_code)]

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::Signer;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, Bytes, U256};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use eyre::Result;
use fantoccini::Client;
use fantoccini::wd::WebDriverCompatibleCommand;
use openledger_protocol::Confirm;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// The test's wallet: its address, the methods pages asked it for, and its signing server.
pub struct Wallet {
    pub address: Address,
    calls: Arc<Mutex<Vec<String>>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Inner {
    signer: PrivateKeySigner,
    node: String,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Wallet {
    /// A fresh key, funded with `fund` OPEN by `funder` (a dev account), and its server.
    pub async fn start(node: &str, funder: PrivateKeySigner, fund: u64) -> Result<Self> {
        let signer = PrivateKeySigner::random();
        let address = signer.address();
        let p = ProviderBuilder::new()
            .wallet(EthereumWallet::from(funder))
            .connect_http(node.parse()?);
        let tx = TransactionRequest::default()
            .with_to(address)
            .with_value(U256::from(fund) * U256::from(10u64).pow(U256::from(18)));
        p.send_transaction(tx).await?.confirm().await?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let inner = Inner {
            signer,
            node: node.to_string(),
            calls: calls.clone(),
        };
        let app = axum::Router::new()
            .route("/", post(handle))
            .layer(tower_http::cors::CorsLayer::permissive())
            .with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            calls,
            url,
            task,
        })
    }

    /// Methods the pages asked the wallet for, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Injects `window.ethereum` into every document `c` loads from now on.
    pub async fn inject(&self, c: &Client) -> Result<()> {
        let source = format!(
            r#"(() => {{
  const url = {url:?};
  window.ethereum = {{
    isOpenLedgerTestWallet: true,
    async request({{ method, params }}) {{
      const res = await fetch(url, {{ method: "POST", headers: {{ "content-type": "application/json" }},
        body: JSON.stringify({{ method, params: params || [] }}) }});
      const body = await res.json();
      if (body.error) {{ const e = new Error(body.error.message); e.code = body.error.code; e.data = body.error.data; throw e; }}
      return body.result;
    }},
    on() {{}}, removeListener() {{}},
  }};
}})();"#,
            url = self.url
        );
        c.issue_cmd(Cdp {
            cmd: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({ "source": source }),
        })
        .await?;
        Ok(())
    }
}

impl Drop for Wallet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(w): State<Inner>, Json(req): Json<Value>) -> Json<Value> {
    let method = req["method"].as_str().unwrap_or_default().to_string();
    if let Ok(mut c) = w.calls.lock() {
        c.push(method.clone());
    }
    let params = req["params"].clone();
    match answer(&w, &method, &params).await {
        Ok(v) => Json(json!({ "result": v })),
        Err(e) => Json(json!({ "error": { "code": -32000, "message": e.to_string() } })),
    }
}

async fn answer(w: &Inner, method: &str, params: &Value) -> Result<Value> {
    let me = w.signer.address();
    match method {
        "eth_requestAccounts" | "eth_accounts" => Ok(json!([me])),
        "eth_sendTransaction" => {
            let tx: TransactionRequest = serde_json::from_value(params[0].clone())?;
            eyre::ensure!(
                tx.from.is_none_or(|f| f == me),
                "this wallet holds {me}, not {:?}",
                tx.from
            );
            let p = ProviderBuilder::new()
                .wallet(EthereumWallet::from(w.signer.clone()))
                .connect_http(w.node.parse()?);
            let pending = p.send_transaction(tx.from(me)).await?;
            Ok(json!(pending.tx_hash()))
        }
        "eth_signTypedData_v4" => {
            let data = match &params[1] {
                Value::String(s) => serde_json::from_str(s)?,
                v => v.clone(),
            };
            let typed: alloy_dyn_abi::TypedData = serde_json::from_value(data)?;
            let sig = w.signer.sign_hash(&typed.eip712_signing_hash()?).await?;
            Ok(json!(Bytes::from(sig.as_bytes().to_vec())))
        }
        "personal_sign" => {
            let msg: Bytes = serde_json::from_value(params[0].clone())?;
            let sig = w.signer.sign_message(&msg).await?;
            Ok(json!(Bytes::from(sig.as_bytes().to_vec())))
        }
        _ => {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
            let r: Value = reqwest::Client::new()
                .post(&w.node)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            match r.get("error") {
                Some(e) => Err(eyre::eyre!("{}", e["message"])),
                None => Ok(r["result"].clone()),
            }
        }
    }
}

/// A Chrome DevTools Protocol command through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> std::result::Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()),
        )
    }
}
