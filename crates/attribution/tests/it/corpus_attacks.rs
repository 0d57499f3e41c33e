//! Attacks of issue #17 on attribution's corpus loading: a version of the attacker's Datanet
//! whose manifest hash is another Datanet's manifest must not index (or credit) that
//! Datanet's contributions under the attacker's version.

use alloy::network::EthereumWallet;
use alloy::providers::{Provider, ProviderBuilder};
use alloy_primitives::{B256, U256};
use eyre::{Result, eyre};
use openledger_attribution::corpus::{self, CorpusError, RowSource};
use openledger_datanet::{
    ChainView, ContentStore, DatanetClient, ManifestCheckError, UploadReceipt,
};
use openledger_devnet::{Devnet, DevnetConfig};
use openledger_protocol::Confirm;
use openledger_protocol::bindings::DatanetRegistry;
use std::str::FromStr;

/// A one-token word-level tokenizer: enough to tokenize rows (the test is about what gets read).
fn tokenizer() -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_str(
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
            "decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0},"unk_token":"[UNK]"}}"#,
    )
    .map_err(|e| eyre!("tokenizer: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_cannot_claim_another_datanets_manifest_for_attribution() -> Result<()> {
    let devnet = Devnet::start(DevnetConfig::default()).await?;
    let rpc = devnet.rpc_url();
    let api = format!("{rpc}/api/datanets");
    let registry = devnet.deployments.contracts.datanet_registry;
    let client = |i: usize| DatanetClient::connect(&rpc, &api, devnet.accounts[i].signer.clone());
    let (owner, alice, attacker) = (client(0).await?, client(1).await?, client(5).await?);

    // A permissioned Datanet with one contribution and a published version.
    let perm = owner
        .create_datanet("harbour logs", "", true, U256::from(1000u64))
        .await?;
    owner.allow_contributor(perm, alice.address()).await?;
    let r = alice
        .upload_bytes(
            perm,
            "log.txt",
            &[],
            b"the night ferry carries sealed crates past the breakwater".to_vec(),
        )
        .await?;
    let c = alice.contribute(perm, &r).await?;
    owner.approve(c).await?;
    let (v, root, manifest_hash) = owner.publish(perm).await?;

    // The attacker's public Datanet: the hash recorded as his own contribution, and a version
    // naming the permissioned Datanet's manifest and root.
    let mine = attacker
        .create_datanet("open data", "", false, U256::ZERO)
        .await?;
    let stolen = attacker
        .contribute(
            mine,
            &UploadReceipt {
                content_hash: r.content_hash,
                byte_size: r.byte_size,
                row_count: r.row_count,
                score: 100,
                reasons: Vec::new(),
                rows_root: B256::ZERO,
            },
        )
        .await?;
    attacker.approve(stolen).await?;
    let wallet = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(devnet.accounts[5].signer.clone()))
        .connect_http(rpc.parse()?)
        .erased();
    DatanetRegistry::new(registry, wallet)
        .publishVersion(U256::from(mine), root, U256::from(1), manifest_hash)
        .send()
        .await?
        .confirm()
        .await?;

    let chain = ChainView::new(
        ProviderBuilder::new().connect_http(rpc.parse()?).erased(),
        registry,
    );
    let source = RowSource::Store(ContentStore::open(
        &devnet
            .datadir
            .join("datanets/content")
            .display()
            .to_string(),
    )?);
    let tok = tokenizer()?;

    // The real version loads.
    let real = corpus::load(&source, &chain, perm, v, manifest_hash, &tok).await?;
    assert_eq!(real.docs.len(), 1);
    assert!(real.docs.iter().all(|d| d.contribution == c));

    // The attacker's version does not: neither its rows nor its row → contribution map.
    let refused = |r: std::result::Result<(), CorpusError>| {
        matches!(
            r,
            Err(CorpusError::Manifest(ManifestCheckError::Mismatch { datanet, .. })) if datanet == mine
        )
    };
    let loaded = corpus::load(&source, &chain, mine, 0, manifest_hash, &tok).await;
    let got = format!("{:?}", loaded.as_ref().map(|c| c.docs.len()));
    assert!(
        refused(loaded.map(|_| ())),
        "the permissioned rows were indexed under datanet {mine}: {got}"
    );
    let map = corpus::contributions_by_content(&source, &chain, mine, 0, manifest_hash).await;
    assert!(refused(map.map(|_| ())), "the row map was built");
    devnet.shutdown().await;
    Ok(())
}
