//! Bad input never panics, gets the standard JSON-RPC error, and changes nothing.

use crate::common::{TestNode, raw_post, req};
use alloy::primitives::Address;
use alloy::providers::Provider;
use openledger_chain::SealMode;
use openledger_rpc::RpcConfig;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_standard_errors() {
    let rpc = RpcConfig {
        max_body_bytes: 64 * 1024,
        max_batch: 10,
        ..Default::default()
    };
    let n = TestNode::start_with(None, SealMode::OnDemand, rpc).await;
    let url = n.url.clone();
    // -32700 parse error.
    for body in [
        "{",
        "not json",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\"",
        "\u{0}\u{1}",
    ] {
        let (status, v) = raw_post(&url, body.to_string()).await;
        assert_eq!(status, 200);
        assert_eq!(v["error"]["code"], -32700, "{body:?} -> {v}");
        assert_eq!(v["id"], Value::Null);
    }
    // -32600 invalid request.
    for body in [
        json!(1),
        json!("x"),
        json!({"id": 1, "method": "eth_chainId"}),
        json!({"jsonrpc": "2.0", "id": 1}),
        json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
        json!([]),
        json!({"jsonrpc": "1.0", "id": 1, "method": "eth_chainId"}),
    ] {
        let (_, v) = raw_post(&url, body.to_string()).await;
        assert_eq!(v["error"]["code"], -32600, "{body} -> {v}");
    }
    // Batch over the limit.
    let batch: Vec<Value> = (0..11)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId"}))
        .collect();
    let (_, v) = raw_post(&url, Value::Array(batch).to_string()).await;
    assert_eq!(v["error"]["code"], -32600);
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("exceeds the limit of 10")
    );
    // -32601 unknown method.
    let v = n.raw(req("eth_doesNotExist", json!([]))).await;
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["id"], 1);
    // -32602 bad params.
    for (m, p) in [
        ("eth_getBalance", json!(["0x1234", "latest"])),
        ("eth_getBalance", json!([])),
        ("eth_getBalance", json!([Address::ZERO, "latest", 3])),
        ("eth_getBlockByNumber", json!(["yesterday", false])),
        ("eth_getTransactionReceipt", json!([12])),
        ("eth_call", json!({"to": Address::ZERO})),
        ("eth_sendRawTransaction", json!(["0xzz"])),
        ("eth_getLogs", json!([{"fromBlock": "banana"}])),
        ("eth_feeHistory", json!(["0x2", "latest", [90, 10]])),
    ] {
        let v = n.raw(req(m, p.clone())).await;
        assert_eq!(v["error"]["code"], -32602, "{m} {p} -> {v}");
    }
    // Invalid RLP in a raw transaction.
    for raw in ["0x", "0x02", "0xf8", "0x02f86c0180843b9aca00", "0xdeadbeef"] {
        let v = n.raw(req("eth_sendRawTransaction", json!([raw]))).await;
        assert_eq!(v["error"]["code"], -32602, "{raw} -> {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .expect("msg")
                .contains("decode"),
            "{v}"
        );
    }
    // Oversized body: 413 with a JSON-RPC error.
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": ["x".repeat(70 * 1024)]});
    let (status, v) = raw_post(&url, big.to_string()).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], -32600);
    // Signing for an account the node has no key for.
    let v = n
        .raw(req(
            "eth_sendTransaction",
            json!([{"from": Address::repeat_byte(1), "to": Address::ZERO}]),
        ))
        .await;
    assert_eq!(v["error"]["code"], -32000);
    // Mixed batch: each item answered in order, notifications not answered.
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        7
    ]);
    let (_, v) = raw_post(&url, batch.to_string()).await;
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["result"], "0x539");
    assert_eq!(items[1]["error"]["code"], -32601);
    assert_eq!(items[2]["error"]["code"], -32600);
    // Still serving, and nothing was mined or pooled.
    let p = n.provider(0);
    assert_eq!(p.get_block_number().await.expect("n"), 0);
    let st = n.raw(req("txpool_status", json!([]))).await;
    assert_eq!(st["result"], json!({"pending": "0x0", "queued": "0x0"}));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_panics() {
    use rand::{Rng, SeedableRng};
    let n = TestNode::start().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let methods = [
        "eth_sendRawTransaction",
        "eth_call",
        "eth_getLogs",
        "eth_getBalance",
        "eth_feeHistory",
        "eth_estimateGas",
        "eth_getBlockByNumber",
        "eth_signTypedData_v4",
        "eth_newFilter",
    ];
    for i in 0..300 {
        let m = methods[i % methods.len()];
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let params = match i % 4 {
            0 => json!([format!("0x{}", alloy::primitives::hex::encode(&bytes))]),
            1 => {
                json!([{"to": format!("0x{}", alloy::primitives::hex::encode(&bytes)), "data": "0x"}])
            }
            2 => json!([String::from_utf8_lossy(&bytes)]),
            _ => json!([rng.random::<u64>(), {"x": [1, 2, {"y": null}]}, -1]),
        };
        let v = n.raw(req(m, params)).await;
        assert!(
            v["result"].is_null() || v["error"].is_object() || !v["result"].is_null(),
            "{v}"
        );
        assert_eq!(v["jsonrpc"], "2.0");
    }
    let p = n.provider(0);
    assert_eq!(p.get_chain_id().await.expect("still alive"), 1337);
    n.stop().await;
}
