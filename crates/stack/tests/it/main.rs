//! The whole stack in one process, reached the way a browser or SDK reaches it: one HTTP
//! origin with the UI, JSON-RPC at /rpc, and every service API.

// The browser walk of the whole loop, with the ModelFactory tests' browser harness, test wallet
// and page helpers, included by path (one copy of each).
mod base_fit;
mod full;
#[path = "../../../factory/tests/it/harness.rs"]
mod harness;
#[path = "../../../factory/tests/it/ui.rs"]
mod ui;
#[path = "../../../factory/tests/it/wallet.rs"]
mod wallet;

use eyre::{Result, ensure};
use openledger_stack::{Stack, StackConfig};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_serves_ui_rpc_datanets_inference_and_attribution() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("tiny");
    let opts = openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 5);
    openledger_model::init::init(&base, &opts, |_| {})?;

    // Without a base model the AI paths say why they are unavailable.
    let bare = Stack::start(StackConfig::default()).await?;
    let url = bare
        .devnet
        .http_url()
        .ok_or_else(|| eyre::eyre!("no http origin"))?;
    let http = reqwest::Client::new();
    let r = http.get(format!("{url}/v1/models")).send().await?;
    ensure!(r.status() == 503);
    let body: Value = r.json().await?;
    ensure!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--demo"),
        "{body}"
    );
    bare.shutdown().await;

    let stack = Stack::start(StackConfig {
        base_model: Some(base.clone()),
        ..Default::default()
    })
    .await?;
    ensure!(stack.status().ai_ready);
    let url = stack
        .devnet
        .http_url()
        .ok_or_else(|| eyre::eyre!("no http origin"))?;

    let page = http.get(format!("{url}/")).send().await?;
    ensure!(page.status() == 200);
    ensure!(page.text().await?.contains("<html"));

    let rpc: Value = http
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
        .send()
        .await?
        .json()
        .await?;
    ensure!(rpc["result"] == "0x539", "{rpc}");

    let info: Value = http
        .get(format!("{url}/api/datanets/info"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(info["chainId"] == 1337, "{info}");

    let models: Value = http
        .get(format!("{url}/v1/models"))
        .send()
        .await?
        .json()
        .await?;
    let name = models["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(name == "tiny", "{models}");

    let chat: Value = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": name, "max_tokens": 4,
            "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        chat["usage"]["completion_tokens"].as_u64().unwrap_or(0) >= 1,
        "{chat}"
    );
    // The base model is free and has no Datanet behind it, but every answer still gets a record.
    let record = chat["attribution"]["recordId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(record.starts_with("0x"), "{chat}");
    let rec = http
        .get(format!("{url}/api/attribution/{record}"))
        .send()
        .await?;
    let status = rec.status();
    ensure!(
        status == 200,
        "record {record}: {status} {}",
        rec.text().await?
    );

    let bases: Value = http
        .get(format!("{url}/api/jobs/base-models"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(bases["baseModels"][0]["id"] == "tiny", "{bases}");

    let unknown = http
        .get(format!("{url}/api/earnings/not-an-address"))
        .send()
        .await?;
    ensure!(unknown.status().is_client_error());
    stack.shutdown().await;
    Ok(())
}
