//! Contract deployment, calls, events, eth_getLogs filters, reverts with reasons.

use crate::common::{TestNode, artifact_bytecode, req};
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256, address};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::sol;
use alloy::sol_types::{SolCall, SolError, SolEvent};
use openledger_protocol::Confirm;
use serde_json::json;

sol! {
    #[sol(rpc)]
    #[derive(Debug)]
    contract Demo {
        uint256 public value;
        event ValueSet(address indexed who, uint256 indexed value, string note);
        event Received(address indexed from, uint256 amount);
        error Unauthorized(address who);
        function set(uint256 v, string calldata note) external;
        function fail() external pure;
        function onlyZero() external view;
        function burnGas(uint256 n) external;
    }
}

async fn deploy(n: &TestNode, initial: u64) -> Address {
    let p = n.provider(0);
    let mut code = artifact_bytecode("Demo").to_vec();
    code.extend_from_slice(&U256::from(initial).to_be_bytes::<32>());
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = p
        .send_transaction(tx)
        .await
        .expect("deploy")
        .confirm()
        .await
        .expect("receipt");
    assert!(receipt.status(), "deployment succeeded");
    receipt.contract_address.expect("contract address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_call_events_and_logs() {
    let n = TestNode::start().await;
    let addr = deploy(&n, 7).await;
    let p = n.provider(0);
    let demo = Demo::new(addr, &p);
    assert_eq!(demo.value().call().await.expect("value"), U256::from(7));
    assert!(!p.get_code_at(addr).await.expect("code").is_empty());
    let mut blocks = vec![];
    for (i, who) in [0usize, 1, 0].iter().enumerate() {
        let pi = n.provider(*who);
        let d = Demo::new(addr, &pi);
        let r = d
            .set(U256::from(100 + i), format!("note {i}"))
            .send()
            .await
            .expect("send")
            .confirm()
            .await
            .expect("receipt");
        assert!(r.status());
        assert_eq!(r.inner.logs().len(), 1);
        let ev = Demo::ValueSet::decode_log(&r.inner.logs()[0].inner).expect("decode");
        assert_eq!(ev.value, U256::from(100 + i));
        assert_eq!(ev.note, format!("note {i}"));
        blocks.push(r.block_number.expect("n"));
    }
    assert_eq!(demo.value().call().await.expect("value"), U256::from(102));
    // storage slot 0 holds `value`
    let slot0 = p.get_storage_at(addr, U256::ZERO).await.expect("slot");
    assert_eq!(slot0, U256::from(102));
    // eth_getLogs: by address, by topic (indexed sender), by block range.
    let all = p
        .get_logs(&Filter::new().address(addr).from_block(0))
        .await
        .expect("logs");
    assert_eq!(all.len(), 3);
    let by_sender = p
        .get_logs(
            &Filter::new()
                .address(addr)
                .from_block(0)
                .event_signature(Demo::ValueSet::SIGNATURE_HASH)
                .topic1(n.accounts[1].address.into_word()),
        )
        .await
        .expect("logs");
    assert_eq!(by_sender.len(), 1);
    assert_eq!(by_sender[0].block_number, Some(blocks[1]));
    let ranged = p
        .get_logs(
            &Filter::new()
                .address(addr)
                .from_block(blocks[1])
                .to_block(blocks[2]),
        )
        .await
        .expect("logs");
    assert_eq!(ranged.len(), 2);
    let none = p
        .get_logs(
            &Filter::new()
                .address(address!("0x00000000000000000000000000000000000000aa"))
                .from_block(0),
        )
        .await
        .expect("logs");
    assert!(none.is_empty());
    let at_hash = p
        .get_block_by_number(blocks[0].into())
        .await
        .expect("rpc")
        .expect("b")
        .header
        .hash;
    let by_hash = p
        .get_logs(&Filter::new().at_block_hash(at_hash))
        .await
        .expect("logs");
    assert_eq!(by_hash.len(), 1);
    // Payable receive emits Received.
    let r = crate::common::send_wait(
        &p,
        TransactionRequest::default()
            .with_to(addr)
            .with_value(U256::from(5)),
    )
    .await;
    assert!(r.status());
    assert_eq!(
        r.inner.logs()[0].topics()[0],
        Demo::Received::SIGNATURE_HASH
    );
    assert_eq!(p.get_balance(addr).await.expect("bal"), U256::from(5));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverts_carry_reason_and_data() {
    let n = TestNode::start().await;
    let addr = deploy(&n, 1).await;
    let from = n.accounts[0].address;
    // eth_call: Error(string)
    let data = Demo::failCall {}.abi_encode();
    let call = json!([{"from": from, "to": addr, "data": alloy::primitives::Bytes::from(data.clone())}, "latest"]);
    let v = n.raw(req("eth_call", call.clone())).await;
    assert_eq!(v["error"]["code"], 3);
    assert_eq!(
        v["error"]["message"],
        "execution reverted: Demo: always fails"
    );
    assert!(
        v["error"]["data"]
            .as_str()
            .expect("data")
            .starts_with("0x08c379a0")
    );
    // eth_estimateGas: same error.
    let v = n.raw(req("eth_estimateGas", json!([call[0]]))).await;
    assert_eq!(v["error"]["code"], 3);
    assert_eq!(
        v["error"]["message"],
        "execution reverted: Demo: always fails"
    );
    // Custom error: data is the selector + args, no decoded reason.
    let data = Demo::onlyZeroCall {}.abi_encode();
    let v = n
        .raw(req(
            "eth_call",
            json!([{"from": from, "to": addr, "data": alloy::primitives::Bytes::from(data)}]),
        ))
        .await;
    assert_eq!(v["error"]["code"], 3);
    let d = v["error"]["data"].as_str().expect("data");
    assert!(d.starts_with(&format!(
        "0x{}",
        alloy::primitives::hex::encode(Demo::Unauthorized::SELECTOR)
    )));
    // alloy surfaces the revert to a contract caller.
    let p = n.provider(0);
    let demo = Demo::new(addr, &p);
    let err = demo.fail().call().await.expect_err("reverts");
    assert!(err.to_string().contains("Demo: always fails"), "{err}");
    // A reverted transaction is mined with status 0.
    let tx = TransactionRequest::default()
        .with_to(addr)
        .with_input(Demo::failCall {}.abi_encode())
        .with_gas_limit(100_000);
    let r = crate::common::send_wait(&p, tx).await;
    assert!(!r.status());
    // estimateGas finds a limit that works for a storage-heavy call, and state overrides apply.
    let burn = Demo::burnGasCall { n: U256::from(20) }.abi_encode();
    let est = p
        .estimate_gas(
            TransactionRequest::default()
                .with_from(from)
                .with_to(addr)
                .with_input(burn.clone()),
        )
        .await
        .expect("estimate");
    assert!(est > 20 * 22_000, "{est}");
    let r = crate::common::send_wait(
        &p,
        TransactionRequest::default()
            .with_to(addr)
            .with_input(burn)
            .with_gas_limit(est),
    )
    .await;
    assert!(r.status(), "the estimate is enough");
    let slot0 = format!("{:#066x}", 0);
    let v = n.raw(req("eth_call", json!([
        {"to": addr, "data": alloy::primitives::Bytes::from(Demo::valueCall {}.abi_encode())},
        "latest",
        {format!("{addr}"): {"stateDiff": {slot0: format!("{:#066x}", 999)}}}
    ]))).await;
    assert_eq!(v["result"], format!("{:#066x}", 999), "{v}");
    n.stop().await;
}
