//! A hostile JSON-RPC client: each test is named after the rule it defends (issue #17).

use crate::common::{TestNode, raw_post, req};
use alloy::primitives::{U256, hex};
use serde_json::json;

/// Init code that reverts with `Panic(code)`: the selector and the code in memory, then
/// `REVERT(0, 36)`.
fn reverts_with_panic(code: U256) -> String {
    let mut c = vec![0x63, 0x4e, 0x48, 0x7b, 0x71]; // PUSH4 Panic(uint256) selector
    c.extend([0x60, 0xe0, 0x1b, 0x60, 0x00, 0x52]); // << 224, MSTORE at 0
    c.push(0x7f); // PUSH32 code
    c.extend(code.to_be_bytes::<32>());
    c.extend([0x60, 0x04, 0x52]); // MSTORE at 4
    c.extend([0x60, 0x24, 0x60, 0x00, 0xfd]); // REVERT(0, 36)
    format!("0x{}", hex::encode(c))
}

fn panic_data(code: U256) -> String {
    format!("0x4e487b71{}", hex::encode(code.to_be_bytes::<32>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_data_from_a_contract_never_panics_the_rpc() {
    let n = TestNode::start().await;
    for code in [U256::from(1u64) << 64, U256::MAX, U256::from(0x11)] {
        for method in ["eth_call", "eth_estimateGas"] {
            let v = n
                .raw(req(method, json!([{"data": reverts_with_panic(code)}])))
                .await;
            assert_eq!(v["error"]["code"], 3, "{method} Panic({code:#x}) -> {v}");
            assert_eq!(v["error"]["data"], panic_data(code), "{v}");
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                msg.starts_with("execution reverted: panic: "),
                "{method} Panic({code:#x}) -> {v}"
            );
            assert!(msg.contains(&format!("{code:#x}")), "{v}");
        }
    }
    // The node still answers.
    let v = n.raw(req("eth_chainId", json!([]))).await;
    assert_eq!(v["result"], "0x539");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_methods_refuse_quantities_that_would_overflow_the_clock() {
    let n = TestNode::start().await;
    for (method, q) in [
        ("evm_increaseTime", "0xffffffffffffffff"),
        ("evm_increaseTime", "0x8000000000000000"),
        ("evm_increaseTime", "0x1ffffffffffffffff"),
        ("evm_setNextBlockTimestamp", "0xffffffffffffffff"),
        ("evm_setNextBlockTimestamp", "0x10000000000000000"),
    ] {
        let (status, v) = raw_post(&n.url, req(method, json!([q])).to_string()).await;
        assert_eq!(status, 200, "{method}({q}) -> {v}");
        assert_eq!(v["error"]["code"], -32602, "{method}({q}) -> {v}");
    }
    // The clock was not moved, and blocks are still sealed with sane timestamps.
    let v = n.raw(req("evm_mine", json!([]))).await;
    assert_eq!(v["result"], "0x1", "{v}");
    let b = n
        .raw(req("eth_getBlockByNumber", json!(["latest", false])))
        .await;
    let ts = u64::from_str_radix(
        b["result"]["timestamp"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("0x"),
        16,
    )
    .expect("timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(ts <= now + 60, "timestamp {ts} jumped ahead of {now}");
    // A large but sane jump is still allowed (a year), and sealing goes on after it.
    let v = n.raw(req("evm_increaseTime", json!(["0x1e13380"]))).await;
    assert!(v["result"].is_string(), "{v}");
    let v = n.raw(req("evm_mine", json!([]))).await;
    assert_eq!(v["result"], "0x2", "{v}");
    n.stop().await;
}

/// Every out-of-range index or count in a request is an answer, never a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_indices_and_counts_get_answers() {
    let n = TestNode::start().await;
    let max = "0xffffffffffffffff";
    for (method, params) in [
        (
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["latest", max]),
        ),
        ("eth_getTransactionByBlockNumberAndIndex", json!([max, max])),
        ("eth_getBlockByNumber", json!([max, false])),
        ("eth_feeHistory", json!([max, "latest", [50]])),
        ("eth_feeHistory", json!([max, max, []])),
        ("eth_getLogs", json!([{"fromBlock": max, "toBlock": max}])),
        ("eth_getLogs", json!([{"fromBlock": "0x0", "toBlock": max}])),
        (
            "eth_call",
            json!([{"gas": max, "gasPrice": max, "value": max, "nonce": max}]),
        ),
        (
            "eth_estimateGas",
            json!([{"from": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "gasPrice": "0x1", "value": max}]),
        ),
        ("eth_newFilter", json!([{"fromBlock": max}])),
    ] {
        let (status, v) = raw_post(&n.url, req(method, params.clone()).to_string()).await;
        assert_eq!(status, 200, "{method} {params} -> {v}");
        assert!(
            v.get("result").is_some() || v["error"]["code"].is_i64(),
            "{method} {params} -> {v}"
        );
    }
    let v = n.raw(req("eth_chainId", json!([]))).await;
    assert_eq!(v["result"], "0x539");
    n.stop().await;
}
