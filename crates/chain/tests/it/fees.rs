//! Where fees go.

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, TxKind, U256};
use alloy_signer::SignerSync;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_fee_can_go_to_a_treasury() {
    // Exercised at the chain level: the genesis parameter routes base fees to the treasury.
    let treasury = Address::repeat_byte(0x77);
    let dir = tempfile::tempdir().expect("tmp");
    let (mut spec, accounts) = openledger_chain::DevPreset {
        accounts: 2,
        ..Default::default()
    }
    .build()
    .expect("dev");
    spec.params.base_fee_recipient = Some(treasury);
    let node = openledger_chain::Node::open(openledger_chain::NodeConfig {
        datadir: dir.path().into(),
        spec,
        seal: openledger_chain::SealMode::OnDemand,
        fee_recipient: Address::ZERO,
        pool: Default::default(),
        dev_accounts: accounts.clone(),
        dev_methods: true,
    })
    .expect("node");
    let tx = TxEip1559 {
        chain_id: 1337,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(Address::repeat_byte(1)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = accounts[0]
        .signer
        .sign_hash_sync(&tx.signature_hash())
        .expect("sign");
    node.submit_tx(tx.into_signed(sig).into()).expect("submit");
    let block = node.seal().expect("seal");
    assert_eq!(block.tx_hashes.len(), 1);
    let bf = block.header.base_fee_per_gas.expect("bf") as u128;
    let got = node
        .reader()
        .expect("r")
        .account(&treasury)
        .expect("acct")
        .expect("exists")
        .balance;
    assert_eq!(got, U256::from(21_000u128 * bf));
}
