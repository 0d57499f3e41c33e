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

/// A signed 1-wei transfer from dev account 0 with `nonce`.
fn transfer(nonce: u64) -> String {
    use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy::eips::eip2718::Encodable2718;
    use alloy::signers::SignerSync;
    let signer = openledger_chain::dev_accounts(1).expect("accounts")[0]
        .signer
        .clone();
    let tx = TxEip1559 {
        chain_id: 1337,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: alloy::primitives::TxKind::Call(alloy::primitives::Address::repeat_byte(0x77)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = signer.sign_hash_sync(&tx.signature_hash()).expect("sign");
    let env: TxEnvelope = tx.into_signed(sig).into();
    format!("0x{}", hex::encode(env.encoded_2718()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_node_refuses_every_request_instead_of_answering_a_stale_head() {
    let n = TestNode::start().await;
    n.node.inject_seal_panics(u32::MAX);
    let v = n
        .raw(req("eth_sendRawTransaction", json!([transfer(0)])))
        .await;
    assert!(v["result"].is_string(), "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, v) = loop {
        let (status, v) = raw_post(&n.url, req("eth_blockNumber", json!([])).to_string()).await;
        if status != 200 || std::time::Instant::now() > deadline {
            break (status, v);
        }
        assert_eq!(v["result"], "0x0", "no block can be sealed: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], -32603, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("node halted: the block sealer failed 5 times"),
        "{msg}"
    );
    assert!(msg.contains("injected sealing fault"), "{msg}");
    assert!(n.node.halted().is_some());
    n.stop().await;
}

/// Init code that loops forever (`JUMPDEST PUSH1 0 JUMP`): it only stops when out of gas.
const ENDLESS: &str = "0x5b600056";

/// A node whose calls may burn a billion gas but must stop after 300 ms. The tests call with
/// the 1G gas cap: seconds of CPU each, even with revm optimised, when nothing stops them.
async fn node_with_short_call_timeout() -> TestNode {
    let rpc = openledger_rpc::RpcConfig {
        call_timeout: std::time::Duration::from_millis(300),
        gas_cap: 1_000_000_000,
        ..Default::default()
    };
    TestNode::start_with(None, openledger_chain::SealMode::OnDemand, rpc).await
}

/// Waits up to `within` for every EVM execution to end; returns how many still run.
async fn executions_left(n: &TestNode, within: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    while n.rpc.calls_in_flight() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    n.rpc.calls_in_flight()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_call_is_stopped_at_the_call_timeout() {
    let n = node_with_short_call_timeout().await;
    for method in ["eth_call", "eth_estimateGas"] {
        let t = std::time::Instant::now();
        let v = n
            .raw(req(method, json!([{"data": ENDLESS, "gas": "0x3b9aca00"}])))
            .await;
        let took = t.elapsed();
        assert_eq!(v["error"]["code"], -32000, "{method}: {v}");
        assert_eq!(
            v["error"]["message"], "execution aborted (timeout = 300ms)",
            "{method}: {v}"
        );
        assert!(
            took < std::time::Duration::from_secs(3),
            "{method} answered after {took:?}"
        );
        // The execution itself stopped, not only the wait for it.
        let left = executions_left(&n, std::time::Duration::from_secs(2)).await;
        assert_eq!(left, 0, "{method}: EVM still running 2 s after the timeout");
    }
    // The CPU is free: a plain call answers at once.
    let t = std::time::Instant::now();
    let v = n
        .raw(req(
            "eth_call",
            json!([{"to": "0x0000000000000000000000000000000000000077"}]),
        ))
        .await;
    assert_eq!(v["result"], "0x", "{v}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_endless_calls_shares_one_deadline() {
    let n = node_with_short_call_timeout().await;
    let batch: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": i, "method": "eth_call",
                   "params": [{"data": ENDLESS, "gas": "0x3b9aca00"}]})
        })
        .collect();
    let t = std::time::Instant::now();
    let (status, v) = raw_post(&n.url, serde_json::Value::Array(batch).to_string()).await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    let items = v.as_array().expect("batch answer");
    assert_eq!(items.len(), 8);
    for item in items {
        assert_eq!(
            item["error"]["message"], "execution aborted (timeout = 300ms)",
            "{item}"
        );
    }
    assert!(
        took < std::time::Duration::from_secs(3),
        "batch answered after {took:?}"
    );
    let left = executions_left(&n, std::time::Duration::from_secs(2)).await;
    assert_eq!(
        left, 0,
        "EVM executions still running 2 s after the batch timed out"
    );
    n.stop().await;
}

/// A signed EIP-1559 transaction of dev account `from` to 0x…33 with `input` bytes of calldata.
fn signed(
    n: &TestNode,
    from: usize,
    nonce: u64,
    max_fee: u128,
    value: U256,
    input: usize,
) -> String {
    use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy::eips::eip2718::Encodable2718;
    use alloy::signers::SignerSync;
    // Zero bytes: 4 gas each, and 10 per byte under the EIP-7623 floor.
    let gas = 21_000 + 10 * input as u64;
    let tx = TxEip1559 {
        chain_id: 1337,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: max_fee.min(1),
        to: alloy::primitives::TxKind::Call(alloy::primitives::Address::repeat_byte(0x33)),
        value,
        input: vec![0u8; input].into(),
        ..Default::default()
    };
    let sig = n
        .signer(from)
        .sign_hash_sync(&tx.signature_hash())
        .expect("sign");
    let env: TxEnvelope = tx.into_signed(sig).into();
    format!("0x{}", hex::encode(env.encoded_2718()))
}

async fn send_raw(n: &TestNode, raw: &str) -> serde_json::Value {
    n.raw(req("eth_sendRawTransaction", json!([raw]))).await
}

fn error_of(v: &serde_json::Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

/// Fee caps far below the base fee (about 1 gwei): such transactions wait in the pool and
/// are never mined, so these tests see the pool exactly as they filled it.
const WEI: u128 = 1;

async fn node_with_pool(pool: openledger_chain::PoolConfig) -> TestNode {
    TestNode::start_full(
        None,
        openledger_chain::SealMode::OnDemand,
        openledger_rpc::RpcConfig::default(),
        pool,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_cannot_queue_more_than_its_account_queue() {
    let n = TestNode::start().await;
    // Nonce 0 is never sent: everything from nonce 1 on is queued.
    for nonce in 1..=64 {
        let v = send_raw(&n, &signed(&n, 0, nonce, 10 * WEI, U256::from(1), 0)).await;
        assert!(v["result"].is_string(), "nonce {nonce}: {v}");
    }
    let v = send_raw(&n, &signed(&n, 0, 65, 10 * WEI, U256::from(1), 0)).await;
    assert!(
        error_of(&v).starts_with("account limit exceeded"),
        "the 65th queued transaction of one sender: {v}"
    );
    assert_eq!(v["error"]["code"], -32000);
    // Another sender is not affected.
    let v = send_raw(&n, &signed(&n, 1, 1, 10 * WEI, U256::from(1), 0)).await;
    assert!(v["result"].is_string(), "{v}");
    let st = n.raw(req("txpool_status", json!([]))).await;
    assert_eq!(st["result"]["queued"], "0x41", "{st}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_evicts_its_cheapest_transaction_or_refuses_an_underpriced_one() {
    let n = node_with_pool(openledger_chain::PoolConfig {
        account_slots: 1,
        global_slots: 2,
        global_queue: 2,
        ..Default::default()
    })
    .await;
    // Four senders fill the four slots, paying 20, 30, 40 and 50 wei per gas.
    let mut hashes = vec![];
    for (i, fee) in [20, 30, 40, 50].into_iter().enumerate() {
        let v = send_raw(&n, &signed(&n, i + 1, 0, fee * WEI, U256::from(1), 0)).await;
        assert!(v["result"].is_string(), "{v}");
        hashes.push(v["result"].clone());
    }
    // Paying less than the cheapest: refused.
    let v = send_raw(&n, &signed(&n, 5, 0, 10 * WEI, U256::from(1), 0)).await;
    assert!(error_of(&v).starts_with("transaction underpriced"), "{v}");
    // Paying the same as the cheapest: refused too.
    let v = send_raw(&n, &signed(&n, 5, 0, 20 * WEI, U256::from(1), 0)).await;
    assert!(error_of(&v).starts_with("transaction underpriced"), "{v}");
    // Paying more: the cheapest goes.
    let v = send_raw(&n, &signed(&n, 5, 0, 25 * WEI, U256::from(1), 0)).await;
    assert!(v["result"].is_string(), "{v}");
    let gone = n
        .raw(req("eth_getTransactionByHash", json!([hashes[0]])))
        .await;
    assert_eq!(gone["result"], serde_json::Value::Null, "evicted: {gone}");
    for h in &hashes[1..] {
        let kept = n.raw(req("eth_getTransactionByHash", json!([h]))).await;
        assert!(kept["result"].is_object(), "{kept}");
    }
    let st = n.raw(req("txpool_status", json!([]))).await;
    assert_eq!(st["result"]["pending"], "0x4", "{st}");
    assert_eq!(n.node.pool().lock().slots(), 4);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_cannot_pool_more_than_its_balance_covers() {
    let n = TestNode::start().await;
    let open = U256::from(10u128.pow(18));
    // Each dev account holds 10,000 OPEN; one 6,000 OPEN transfer fits, two do not.
    let v = send_raw(&n, &signed(&n, 0, 0, 10 * WEI, open * U256::from(6000), 0)).await;
    assert!(v["result"].is_string(), "{v}");
    let v = send_raw(&n, &signed(&n, 0, 1, 10 * WEI, open * U256::from(6000), 0)).await;
    assert!(
        error_of(&v).starts_with("insufficient funds for gas * price + value"),
        "the second transfer overdraws the account: {v}"
    );
    // A queued one far ahead counts as well.
    let v = send_raw(&n, &signed(&n, 0, 9, 10 * WEI, open * U256::from(6000), 0)).await;
    assert!(
        error_of(&v).starts_with("insufficient funds for gas * price + value"),
        "{v}"
    );
    // What the balance still covers is accepted.
    let v = send_raw(&n, &signed(&n, 0, 1, 10 * WEI, open * U256::from(3000), 0)).await;
    assert!(v["result"].is_string(), "{v}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_transactions_expire_after_the_pool_lifetime() {
    let n = node_with_pool(openledger_chain::PoolConfig {
        lifetime: std::time::Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let v = send_raw(&n, &signed(&n, 0, 3, 10 * WEI, U256::from(1), 0)).await;
    let hash = v["result"].clone();
    assert!(hash.is_string(), "{v}");
    // A pending one (fee cap below the base fee, so it waits) does not expire.
    let v = send_raw(&n, &signed(&n, 1, 0, 10 * WEI, U256::from(1), 0)).await;
    assert!(v["result"].is_string(), "{v}");
    let st = n.raw(req("txpool_status", json!([]))).await;
    assert_eq!(st["result"], json!({"pending": "0x1", "queued": "0x1"}));
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let st = n.raw(req("txpool_status", json!([]))).await;
    assert_eq!(
        st["result"],
        json!({"pending": "0x1", "queued": "0x0"}),
        "expired"
    );
    let v = n.raw(req("eth_getTransactionByHash", json!([hash]))).await;
    assert_eq!(v["result"], serde_json::Value::Null, "{v}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_cannot_grow_the_pool_past_its_byte_bound() {
    let cfg = openledger_chain::PoolConfig {
        account_slots: 2,
        global_slots: 8,
        global_queue: 4,
        ..Default::default()
    };
    let bound = 12 * 32 * 1024;
    let n = node_with_pool(cfg).await;
    // Over 128 KiB: refused outright.
    let v = send_raw(&n, &signed(&n, 0, 0, 10 * WEI, U256::from(1), 130 * 1024)).await;
    assert!(error_of(&v).starts_with("oversized data"), "{v}");
    // Ten senders, three 100 KiB transactions each (4 slots apiece), paying more and more.
    let mut accepted = 0;
    for round in 0..3u64 {
        for from in 0..10 {
            let fee = (10 + round as u128 * 10 + from as u128) * WEI;
            let raw = signed(&n, from, round, fee, U256::from(1), 100 * 1024);
            let v = send_raw(&n, &raw).await;
            if v["result"].is_string() {
                accepted += 1;
            } else {
                let e = error_of(&v);
                assert!(
                    e.starts_with("transaction underpriced") || e.starts_with("txpool is full"),
                    "{v}"
                );
            }
            let (bytes, slots) = {
                let pool = n.node.pool().lock();
                (pool.bytes(), pool.slots())
            };
            assert!(bytes <= bound, "{bytes} bytes pooled, bound {bound}");
            assert!(slots <= 12, "{slots} slots");
        }
    }
    assert!(accepted >= 3, "only {accepted} accepted");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_deeply_nested_bodies_are_refused_without_harm() {
    let n = TestNode::start().await;
    // 100,000 levels of nesting (200 KB, under the body limit): a parse error, at once.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let t = std::time::Instant::now();
    let (status, v) = raw_post(&n.url, deep).await;
    assert_eq!(
        (status, v["error"]["code"].as_i64()),
        (200, Some(-32700)),
        "{v}"
    );
    let deep_params = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{}{}]}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    );
    let (_, v) = raw_post(&n.url, deep_params).await;
    assert_eq!(v["error"]["code"], -32700, "{v}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // Over the 5 MiB default: 413, with a JSON-RPC error.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["{}"]}}"#,
        "x".repeat(5 * 1024 * 1024 + 1)
    );
    let (status, v) = raw_post(&n.url, big).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // 1,001 requests in a batch: refused as a whole.
    let batch: Vec<serde_json::Value> = (0..1001)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId"}))
        .collect();
    let (_, v) = raw_post(&n.url, serde_json::Value::Array(batch).to_string()).await;
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let v = n.raw(req("eth_chainId", json!([]))).await;
    assert_eq!(v["result"], "0x539");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cannot_make_the_node_build_an_unbounded_answer() {
    let rpc = openledger_rpc::RpcConfig {
        max_batch_response_bytes: 20_000,
        ..Default::default()
    };
    let n = TestNode::start_with(None, openledger_chain::SealMode::OnDemand, rpc).await;
    // Each answer is a block of about 1 KB: the first ones fit, the rest are refused.
    let batch: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": ["0x0", true]}))
        .collect();
    let (status, v) = raw_post(&n.url, serde_json::Value::Array(batch).to_string()).await;
    assert_eq!(status, 200);
    let items = v.as_array().expect("batch answer");
    assert_eq!(items.len(), 200, "every request is answered");
    let answered = items.iter().filter(|i| i["result"].is_object()).count();
    assert!((5..60).contains(&answered), "{answered} blocks answered");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["id"], i, "in order");
        if i >= answered {
            assert_eq!(item["error"]["code"], -32003, "{item}");
            assert_eq!(item["error"]["message"], "response too large");
        }
    }
    assert!(v.to_string().len() < 40_000);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_websocket_cannot_queue_unbounded_work() {
    use alloy::providers::{Provider, ProviderBuilder, WsConnect};
    let n = node_with_short_call_timeout().await;
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(n.ws_url.clone()))
        .await
        .expect("ws");
    // 40 endless calls sent at once on one connection. The node reads at most 16 messages
    // ahead, and each message's calls stop 300 ms after the node starts it: three rounds, so
    // at least 900 ms. Without the bound all 40 start (and time out) together.
    let t = std::time::Instant::now();
    let calls = (0..40).map(|_| {
        ws.raw_request::<_, serde_json::Value>(
            "eth_call".into(),
            json!([{"data": ENDLESS, "gas": "0x3b9aca00"}]),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let took = t.elapsed();
    for a in &answers {
        let e = a.as_ref().expect_err("times out").to_string();
        assert!(e.contains("execution aborted (timeout = 300ms)"), "{e}");
    }
    assert!(
        took >= std::time::Duration::from_millis(850),
        "40 messages answered in {took:?}: more than 16 ran at once"
    );
    let left = executions_left(&n, std::time::Duration::from_secs(2)).await;
    assert_eq!(left, 0);
    n.stop().await;
}
