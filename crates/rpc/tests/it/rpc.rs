//! Basic methods, transfers, receipts and fee fields over HTTP.

use crate::common::{TestNode, req};
use alloy::consensus::Transaction as _;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_identity_and_dev_accounts() {
    let n = TestNode::start().await;
    let p = n.provider(0);
    assert_eq!(p.get_chain_id().await.expect("chain id"), 1337);
    assert_eq!(p.get_block_number().await.expect("number"), 0);
    let accounts = p.get_accounts().await.expect("accounts");
    assert_eq!(accounts.len(), 10);
    assert_eq!(
        accounts[0].to_string(),
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
    let bal = p.get_balance(accounts[3]).await.expect("balance");
    assert_eq!(
        bal,
        U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18))
    );
    let v = n.raw(req("web3_clientVersion", json!([]))).await;
    assert!(
        v["result"]
            .as_str()
            .expect("version")
            .starts_with("openledger/")
    );
    let v = n.raw(req("net_version", json!([]))).await;
    assert_eq!(v["result"], "1337");
    let v = n.raw(req("eth_syncing", json!([]))).await;
    assert_eq!(v["result"], false);
    let genesis = p
        .get_block_by_number(BlockNumberOrTag::Earliest)
        .await
        .expect("rpc")
        .expect("genesis");
    assert_eq!(
        genesis.header.hash,
        genesis.header.inner.hash_slow(),
        "genesis hash is the keccak of its RLP header"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_receipt_and_fees() {
    let n = TestNode::start().await;
    let p = n.provider(0);
    let from = n.accounts[0].address;
    let to = Address::repeat_byte(0x42);
    let before = p.get_balance(from).await.expect("balance");
    let base_fee = p
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .expect("rpc")
        .expect("b")
        .header
        .base_fee_per_gas
        .expect("base fee");
    let value = U256::from(123_456_789u64);
    let tx = TransactionRequest::default().with_to(to).with_value(value);
    let receipt = crate::common::send_wait(&p, tx).await;
    assert!(receipt.status());
    assert_eq!(receipt.gas_used, 21_000);
    assert_eq!(receipt.from, from);
    assert_eq!(receipt.to, Some(to));
    let block_num = receipt.block_number.expect("mined");
    let block = p
        .get_block_by_number(block_num.into())
        .full()
        .await
        .expect("rpc")
        .expect("block");
    assert_eq!(
        block.header.hash,
        block.header.inner.hash_slow(),
        "block hash = keccak(RLP(header))"
    );
    assert_eq!(
        block.header.base_fee_per_gas,
        Some(base_fee.min(block.header.base_fee_per_gas.expect("bf")))
    );
    let txs = block.transactions.as_transactions().expect("full");
    assert_eq!(txs.len(), 1);
    let mined = &txs[0];
    let price = receipt.effective_gas_price;
    let bf = block.header.base_fee_per_gas.expect("bf") as u128;
    assert_eq!(
        price,
        bf + mined
            .inner
            .max_priority_fee_per_gas()
            .expect("tip")
            .min(mined.inner.max_fee_per_gas() - bf)
    );
    // Balances: sender pays value + gas * effective price; recipient gets value; coinbase the tip.
    let after = p.get_balance(from).await.expect("balance");
    assert_eq!(before - after, value + U256::from(21_000u128 * price));
    assert_eq!(p.get_balance(to).await.expect("to"), value);
    let tip = price - bf;
    assert_eq!(
        p.get_balance(Address::repeat_byte(0xfe))
            .await
            .expect("coinbase"),
        U256::from(21_000u128 * tip)
    );
    assert_eq!(p.get_transaction_count(from).await.expect("nonce"), 1);
    // The same receipt via eth_getBlockReceipts and the tx via index lookups.
    let rs = p
        .get_block_receipts(block_num.into())
        .await
        .expect("rpc")
        .expect("receipts");
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].transaction_hash, receipt.transaction_hash);
    let v = n
        .raw(req(
            "eth_getTransactionByBlockNumberAndIndex",
            json!([format!("{block_num:#x}"), "0x0"]),
        ))
        .await;
    assert_eq!(v["result"]["hash"], json!(receipt.transaction_hash));
    let v = n
        .raw(req(
            "eth_getBlockTransactionCountByNumber",
            json!([format!("{block_num:#x}")]),
        ))
        .await;
    assert_eq!(v["result"], "0x1");
    // Fee market RPCs.
    let fh = p
        .get_fee_history(2, BlockNumberOrTag::Latest, &[50.0])
        .await
        .expect("fee history");
    assert_eq!(fh.base_fee_per_gas.len(), 3);
    assert_eq!(fh.reward.expect("reward")[1][0], tip);
    let gp = p.get_gas_price().await.expect("gas price");
    assert!(gp > 0);
    n.stop().await;
}
