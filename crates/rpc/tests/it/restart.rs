//! Restart with the same datadir: same blocks, balances, state root.

use crate::common::TestNode;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use openledger_chain::SealMode;
use openledger_rpc::RpcConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = TestNode::start_with(Some(dir.path()), SealMode::OnDemand, RpcConfig::default()).await;
    let p = n.provider(0);
    for i in 0..5u64 {
        let r = crate::common::send_wait(
            &p,
            TransactionRequest::default()
                .with_to(Address::repeat_byte(i as u8 + 0x31))
                .with_value(U256::from(1000 + i)),
        )
        .await;
        assert!(r.status());
    }
    let head = p
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .expect("rpc")
        .expect("head");
    let bal = p.get_balance(n.accounts[0].address).await.expect("bal");
    let blocks: Vec<_> = futures::future::join_all((0..=head.header.number).map(|i| {
        let p = p.clone();
        async move {
            p.get_block_by_number(i.into())
                .await
                .expect("rpc")
                .expect("block")
                .header
                .hash
        }
    }))
    .await;
    n.stop().await;

    let n = TestNode::start_with(Some(dir.path()), SealMode::OnDemand, RpcConfig::default()).await;
    let p = n.provider(0);
    let head2 = p
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .expect("rpc")
        .expect("head");
    assert_eq!(head2.header.hash, head.header.hash);
    assert_eq!(head2.header.state_root, head.header.state_root);
    assert_eq!(
        p.get_balance(n.accounts[0].address).await.expect("bal"),
        bal
    );
    for (i, h) in blocks.iter().enumerate() {
        let b = p
            .get_block_by_number((i as u64).into())
            .await
            .expect("rpc")
            .expect("block");
        assert_eq!(&b.header.hash, h);
    }
    assert_eq!(
        p.get_balance(Address::repeat_byte(0x33))
            .await
            .expect("bal"),
        U256::from(1002)
    );
    // The chain continues from where it stopped, and re-execution reproduces it.
    let r = crate::common::send_wait(
        &p,
        TransactionRequest::default()
            .with_to(Address::repeat_byte(0x99))
            .with_value(U256::from(1)),
    )
    .await;
    assert_eq!(r.block_number, Some(head.header.number + 1));
    let scratch = tempfile::tempdir().expect("tmp");
    let checked = n.node.verify_chain(scratch.path()).expect("replay");
    assert_eq!(checked, head.header.number + 1);
    n.stop().await;
}
