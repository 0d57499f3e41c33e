//! WebSocket subscriptions and HTTP polling filters.

use crate::common::{TestNode, artifact_bytecode, req};
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use alloy::rpc::types::{Filter, TransactionRequest};
use futures::StreamExt;
use openledger_protocol::Confirm;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_subscriptions() {
    let n = TestNode::start().await;
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(n.ws_url.clone()))
        .await
        .expect("ws");
    assert_eq!(ws.get_chain_id().await.expect("chain id over ws"), 1337);
    let mut heads = ws.subscribe_blocks().await.expect("newHeads").into_stream();
    let mut pending = ws
        .subscribe_pending_transactions()
        .await
        .expect("pending")
        .into_stream();
    let p = n.provider(0);
    // Deploy Demo and subscribe to its logs.
    let mut code = artifact_bytecode("Demo").to_vec();
    code.extend_from_slice(&U256::from(1).to_be_bytes::<32>());
    let r = p
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .expect("deploy")
        .confirm()
        .await
        .expect("receipt");
    let addr = r.contract_address.expect("address");
    let head = tokio::time::timeout(Duration::from_secs(10), heads.next())
        .await
        .expect("head in time")
        .expect("head");
    assert_eq!(head.number, r.block_number.expect("n"));
    assert_eq!(head.hash, r.block_hash.expect("h"));
    let first_pending = tokio::time::timeout(Duration::from_secs(10), pending.next())
        .await
        .expect("in time")
        .expect("hash");
    assert_eq!(first_pending, r.transaction_hash);
    let mut logs = ws
        .subscribe_logs(&Filter::new().address(addr))
        .await
        .expect("logs")
        .into_stream();
    let mut other = ws
        .subscribe_logs(&Filter::new().address(Address::repeat_byte(9)))
        .await
        .expect("logs")
        .into_stream();
    let r = crate::common::send_wait(
        &p,
        TransactionRequest::default()
            .with_to(addr)
            .with_value(U256::from(77)),
    )
    .await;
    let log = tokio::time::timeout(Duration::from_secs(10), logs.next())
        .await
        .expect("log in time")
        .expect("log");
    assert_eq!(log.address(), addr);
    assert_eq!(log.transaction_hash, Some(r.transaction_hash));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.next())
            .await
            .is_err(),
        "non-matching filter stays silent"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_filters() {
    let n = TestNode::start().await;
    let p = n.provider(0);
    let bf = n.raw(req("eth_newBlockFilter", json!([]))).await["result"].clone();
    let pf = n
        .raw(req("eth_newPendingTransactionFilter", json!([])))
        .await["result"]
        .clone();
    let lf = n
        .raw(req(
            "eth_newFilter",
            json!([{"address": Address::repeat_byte(0x42)}]),
        ))
        .await["result"]
        .clone();
    assert!(bf.is_string() && pf.is_string() && lf.is_string());
    let r = crate::common::send_wait(
        &p,
        TransactionRequest::default()
            .with_to(Address::repeat_byte(0x42))
            .with_value(U256::from(1)),
    )
    .await;
    let blocks = n.raw(req("eth_getFilterChanges", json!([bf]))).await;
    assert_eq!(blocks["result"], json!([r.block_hash.expect("hash")]));
    let again = n.raw(req("eth_getFilterChanges", json!([bf]))).await;
    assert_eq!(again["result"], json!([]), "changes are reported once");
    let txs = n.raw(req("eth_getFilterChanges", json!([pf]))).await;
    assert_eq!(txs["result"], json!([r.transaction_hash]));
    let logs = n.raw(req("eth_getFilterChanges", json!([lf]))).await;
    assert_eq!(logs["result"], json!([]), "a plain transfer has no logs");
    let all = n.raw(req("eth_getFilterLogs", json!([lf]))).await;
    assert_eq!(all["result"], json!([]));
    assert_eq!(
        n.raw(req("eth_uninstallFilter", json!([bf]))).await["result"],
        true
    );
    assert_eq!(
        n.raw(req("eth_uninstallFilter", json!([bf]))).await["result"],
        false
    );
    let gone = n.raw(req("eth_getFilterChanges", json!([bf]))).await;
    assert_eq!(gone["error"]["message"], "filter not found");
    // eth_subscribe over HTTP is refused clearly.
    let v = n.raw(req("eth_subscribe", json!(["newHeads"]))).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("WebSocket")
    );
    n.stop().await;
}
