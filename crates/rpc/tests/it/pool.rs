//! Every pool rejection, with the messages wallets match on, and queued-nonce promotion.

use crate::common::{TestNode, req};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};

fn tx1559(
    nonce: u64,
    max_fee: u128,
    tip: u128,
    gas: u64,
    value: U256,
    input: Vec<u8>,
    chain_id: u64,
) -> TxEip1559 {
    TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(Address::repeat_byte(0x33)),
        value,
        input: input.into(),
        ..Default::default()
    }
}

fn sign(s: &PrivateKeySigner, tx: TxEip1559) -> Bytes {
    let sig = s.sign_hash_sync(&tx.signature_hash()).expect("sign");
    let env: TxEnvelope = tx.into_signed(sig).into();
    env.encoded_2718().into()
}

async fn send(n: &TestNode, raw: &Bytes) -> Value {
    n.raw(req("eth_sendRawTransaction", json!([raw]))).await
}

fn err_msg(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const GWEI: u128 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_rejections_and_queue() {
    let n = TestNode::start().await;
    let s = n.signer(0);
    let p = n.provider(0);
    let one = U256::from(1);

    // Wrong chain id (EIP-155).
    let v = send(
        &n,
        &sign(&s, tx1559(0, 10 * GWEI, GWEI, 21_000, one, vec![], 1)),
    )
    .await;
    assert_eq!(v["error"]["code"], -32000);
    assert!(
        err_msg(&v).starts_with("invalid chain id for signer"),
        "{v}"
    );
    // Legacy without chain id.
    let legacy = TxLegacy {
        chain_id: None,
        nonce: 0,
        gas_price: 10 * GWEI,
        gas_limit: 21_000,
        to: TxKind::Call(Address::ZERO),
        value: one,
        input: Bytes::new(),
    };
    let sig = s.sign_hash_sync(&legacy.signature_hash()).expect("sign");
    let env: TxEnvelope = legacy.into_signed(sig).into();
    let v = send(&n, &env.encoded_2718().into()).await;
    assert!(
        err_msg(&v).contains("only replay-protected (EIP-155)"),
        "{v}"
    );
    // Intrinsic gas too low.
    let v = send(
        &n,
        &sign(&s, tx1559(0, 10 * GWEI, GWEI, 20_999, one, vec![], 1337)),
    )
    .await;
    assert!(err_msg(&v).starts_with("intrinsic gas too low"), "{v}");
    let v = send(
        &n,
        &sign(
            &s,
            tx1559(0, 10 * GWEI, GWEI, 21_000, one, vec![1u8; 100], 1337),
        ),
    )
    .await;
    assert!(
        err_msg(&v).starts_with("intrinsic gas too low"),
        "calldata costs gas: {v}"
    );
    // Exceeds block gas limit.
    let v = send(
        &n,
        &sign(
            &s,
            tx1559(0, 10 * GWEI, GWEI, 30_000_001, one, vec![], 1337),
        ),
    )
    .await;
    assert!(err_msg(&v).starts_with("exceeds block gas limit"), "{v}");
    // Tip above fee cap.
    let v = send(
        &n,
        &sign(&s, tx1559(0, GWEI, 2 * GWEI, 21_000, one, vec![], 1337)),
    )
    .await;
    assert!(
        err_msg(&v).contains("max priority fee per gas higher than max fee per gas"),
        "{v}"
    );
    // Insufficient funds: a fresh key with nothing.
    let poor = PrivateKeySigner::random();
    let v = send(
        &n,
        &sign(&poor, tx1559(0, 10 * GWEI, GWEI, 21_000, one, vec![], 1337)),
    )
    .await;
    assert!(
        err_msg(&v).starts_with("insufficient funds for gas * price + value"),
        "{v}"
    );
    // Oversized (> 128 KiB).
    let v = send(
        &n,
        &sign(
            &s,
            tx1559(
                0,
                10 * GWEI,
                GWEI,
                16_000_000,
                one,
                vec![0u8; 130 * 1024],
                1337,
            ),
        ),
    )
    .await;
    assert!(err_msg(&v).starts_with("oversized data"), "{v}");
    // Invalid signature: r = s = 0 recovers to no address.
    let zero = alloy::primitives::Signature::new(U256::ZERO, U256::ZERO, false);
    let env: TxEnvelope = tx1559(0, 10 * GWEI, GWEI, 21_000, one, vec![], 1337)
        .into_signed(zero)
        .into();
    let v = send(&n, &env.encoded_2718().into()).await;
    assert_eq!(err_msg(&v), "invalid sender: invalid signature", "{v}");
    assert_eq!(
        p.get_block_number().await.expect("n"),
        0,
        "nothing was mined by rejected transactions"
    );

    // A future nonce is queued, a too-small replacement refused, a 10% bump accepted.
    let v = send(
        &n,
        &sign(&s, tx1559(1, 10 * GWEI, GWEI, 21_000, one, vec![], 1337)),
    )
    .await;
    assert!(v["result"].is_string(), "{v}");
    let st = n.raw(req("txpool_status", json!([]))).await;
    assert_eq!(st["result"]["queued"], "0x1");
    assert_eq!(st["result"]["pending"], "0x0");
    let v = send(
        &n,
        &sign(
            &s,
            tx1559(
                1,
                10 * GWEI + 1,
                GWEI + 1,
                21_000,
                U256::from(2),
                vec![],
                1337,
            ),
        ),
    )
    .await;
    assert_eq!(err_msg(&v), "replacement transaction underpriced");
    let v = send(
        &n,
        &sign(
            &s,
            tx1559(
                1,
                11 * GWEI,
                GWEI * 11 / 10,
                21_000,
                U256::from(3),
                vec![],
                1337,
            ),
        ),
    )
    .await;
    let replacement: alloy::primitives::B256 =
        serde_json::from_value(v["result"].clone()).expect("accepted");
    let content = n.raw(req("txpool_content", json!([]))).await;
    let q = &content["result"]["queued"][n.accounts[0].address.to_checksum(None)]["1"];
    assert_eq!(q["hash"], json!(replacement));
    // The same transaction again.
    let v = send(
        &n,
        &sign(
            &s,
            tx1559(
                1,
                11 * GWEI,
                GWEI * 11 / 10,
                21_000,
                U256::from(3),
                vec![],
                1337,
            ),
        ),
    )
    .await;
    assert_eq!(err_msg(&v), "already known");
    // Filling the gap promotes it: both are mined.
    let v = send(
        &n,
        &sign(&s, tx1559(0, 10 * GWEI, GWEI, 21_000, one, vec![], 1337)),
    )
    .await;
    assert!(v["result"].is_string(), "{v}");
    let receipt = p
        .watch_pending_transaction(alloy::providers::PendingTransactionConfig::new(replacement))
        .await
        .expect("watch")
        .await
        .expect("mined");
    assert_eq!(receipt, replacement);
    assert_eq!(
        p.get_transaction_count(n.accounts[0].address)
            .await
            .expect("nonce"),
        2
    );
    // Nonce too low now.
    let v = send(
        &n,
        &sign(&s, tx1559(0, 20 * GWEI, GWEI, 21_000, one, vec![], 1337)),
    )
    .await;
    assert!(err_msg(&v).starts_with("nonce too low"), "{v}");

    // Fee cap below the base fee: accepted (as geth does) but waits; it is not mined.
    let s2 = n.signer(2);
    let base = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .expect("rpc")
        .expect("b")
        .header
        .base_fee_per_gas
        .expect("bf") as u128;
    let low = sign(&s2, tx1559(0, base / 4, 0, 21_000, one, vec![], 1337));
    let v = send(&n, &low).await;
    assert!(v["result"].is_string(), "{v}");
    let pending = n
        .raw(req("eth_getTransactionByHash", json!([v["result"]])))
        .await;
    assert_eq!(
        pending["result"]["blockNumber"],
        Value::Null,
        "pending tx visible with null block"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = n
        .raw(req("eth_getTransactionReceipt", json!([v["result"]])))
        .await;
    assert_eq!(r["result"], Value::Null);
    n.stop().await;
}
