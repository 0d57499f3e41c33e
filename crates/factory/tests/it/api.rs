//! The `/api/ui` helpers over HTTP against a real devnet: the typed data the UI asks wallets to
//! sign is accepted by the Datanet service, encoded calls execute, bad forms get words.

use crate::harness::Origin;
use eyre::{Result, eyre};
use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<(u16, Value)> {
    let r = http.post(url).json(&body).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

async fn rpc(http: &reqwest::Client, o: &Origin, method: &str, params: Value) -> Result<Value> {
    let (_, v) = post(
        http,
        &format!("{}/rpc", o.url),
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
    .await?;
    match v.get("error") {
        Some(e) => Err(eyre!("{method}: {e}")),
        None => Ok(v["result"].clone()),
    }
}

/// Sends a prepared call as `from` through `/rpc` and waits for its receipt.
async fn send(http: &reqwest::Client, o: &Origin, from: &str, call: &Value) -> Result<Value> {
    let tx = json!({"from": from, "to": call["to"], "data": call["data"], "value": call["value"]});
    let hash = rpc(http, o, "eth_sendTransaction", json!([tx])).await?;
    for _ in 0..200 {
        let r = rpc(http, o, "eth_getTransactionReceipt", json!([hash])).await?;
        if !r.is_null() {
            return Ok(r);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(eyre!("no receipt"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_api_round_trip() -> Result<()> {
    let o = Origin::start().await?;
    let http = reqwest::Client::new();
    let me = o.devnet.accounts[1].address.to_checksum(None);
    let ui = |p: &str| format!("{}/api/ui/{p}", o.url);

    // A Datanet created from an encoded call.
    let (s, call) = post(
        &http,
        &ui("tx/createDatanet"),
        json!({"from": me, "name": "api test", "licenceFee": "0.5"}),
    )
    .await?;
    assert_eq!(s, 200, "{call}");
    assert_eq!(send(&http, &o, &me, &call).await?["status"], "0x1");

    // Upload signed with the typed data the UI builds, through the dev signer at /rpc.
    let body = b"one line of text\nanother line of text\n".to_vec();
    let hash_resp: Value = http
        .post(ui("hash"))
        .body(body.clone())
        .send()
        .await?
        .json()
        .await?;
    let typed = post(
        &http,
        &ui("typed/upload"),
        json!({"signer": me, "datanetId": 1, "contentHash": hash_resp["contentHash"]}),
    )
    .await?
    .1;
    let sig = rpc(
        &http,
        &o,
        "eth_signTypedData_v4",
        json!([me, typed["typedData"].to_string()]),
    )
    .await?;
    let mut req = http
        .post(format!("{}/api/datanets/1/uploads?name=a.txt", o.url))
        .body(body);
    for (k, v) in typed["headers"]
        .as_object()
        .ok_or_else(|| eyre!("no headers"))?
    {
        req = req.header(k.as_str(), v.as_str().unwrap_or_default());
    }
    let sig_hex = sig
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("0x")
        .to_string();
    let up = req.header("x-ol-signature", sig_hex).send().await?;
    assert_eq!(
        up.status().as_u16(),
        200,
        "the Datanet service accepts the UI's EIP-712 request"
    );
    let receipt: Value = up.json().await?;
    assert!(receipt["rowCount"].as_u64().unwrap_or(0) >= 1, "{receipt}");

    // Bad forms: words, 422, and nothing to send.
    let (s, e) = post(
        &http,
        &ui("tx/proposeFeeSplit"),
        json!({"from": me, "treasuryBps": 1, "modelOwnerBps": 2, "contributorsBps": 3}),
    )
    .await?;
    assert_eq!(s, 422);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("add up to 6 basis points"),
        "{e}"
    );
    let (s, e) = post(&http, &ui("tx/wrap"), json!({"from": me, "amount": "lots"})).await?;
    assert_eq!(s, 422);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("amount of OPEN"),
        "{e}"
    );
    let (s, _) = post(&http, &ui("tx/noSuchThing"), json!({"from": me})).await?;
    assert_eq!(s, 404);

    // A revert from the node, explained: approving as someone who does not curate.
    let (_, call) = post(&http, &ui("tx/contribute"), json!({"from": me, "datanetId": 1, "contentHash": receipt["contentHash"], "byteSize": receipt["byteSize"], "rowCount": receipt["rowCount"], "score": receipt["score"], "rowsRoot": receipt["rowsRoot"]})).await?;
    assert_eq!(send(&http, &o, &me, &call).await?["status"], "0x1");
    let (_, call) = post(
        &http,
        &ui("tx/approve"),
        json!({"from": me, "contributionId": 1}),
    )
    .await?;
    let stranger = o.devnet.accounts[2].address.to_checksum(None);
    let tx = json!({"from": stranger, "to": call["to"], "data": call["data"]});
    let err = rpc(&http, &o, "eth_sendTransaction", json!([tx]))
        .await
        .err()
        .ok_or_else(|| eyre!("approve by a stranger went through"))?;
    let (_, v) = post(
        &http,
        &format!("{}/rpc", o.url),
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction", "params": [tx]}),
    )
    .await?;
    let (_, words) = post(
        &http,
        &ui("explain"),
        json!({"data": v["error"]["data"], "message": err.to_string()}),
    )
    .await?;
    assert_eq!(
        words["message"],
        "Only the Datanet's owner or one of its curators can do this."
    );

    // Pages render with the devnet's data; unknown ones say so.
    let html = http
        .get(format!("{}/datanets/1", o.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        html.contains("api test") && html.contains("a.txt"),
        "datanet page shows the contribution"
    );
    let r = http.get(format!("{}/datanets/99", o.url)).send().await?;
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await?.contains("There is no Datanet 99."));
    o.shutdown().await;
    Ok(())
}
