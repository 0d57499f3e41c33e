//! Empty Datanet versions. The Datanet service refuses uploads without rows and the registry
//! refuses a version of zero contributions, so an empty version can only come from a
//! contributor who goes around the service: a contribution recorded on chain straight away
//! whose content parses to no rows (a CSV file with only a header). Version 0 = that
//! contribution, its manifest honest (0 rows): the library refuses it before reading rows,
//! `empty_version`, field `version`. Version 1 adds a second such contribution whose manifest
//! entry claims rows: the manifest check passes and reading the rows fails with the same error.
//! The jobs service never gets that far: contributions recorded around the service are not
//! backed by an upload of their contributor, so a job on either version is refused at
//! submission, 403 `unbacked_contribution`, and nothing is queued.

use alloy::network::EthereumWallet;
use alloy::providers::ProviderBuilder;
use alloy_primitives::{B256, U256, keccak256};
use eyre::{Result, eyre};
use openledger_datanet::manifest::MANIFEST_VERSION;
use openledger_datanet::{ContentStore, Manifest, ManifestEntry};
use openledger_devnet::{Devnet, DevnetConfig};
use openledger_protocol::Confirm;
use openledger_protocol::bindings::DatanetRegistry;
use openledger_train::TrainError;
use openledger_train::config::TrainConfig;
use openledger_train::jobs::{JobService, JobsConfig, ReaderConfig, domain};
use openledger_train::source::{self, Reader};
use serde_json::{Value, json};

use crate::common::{client, small_model};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_version_is_refused_with_the_field_named() -> Result<()> {
    let base = small_model()?;
    let base_name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let devnet = Devnet::start(DevnetConfig::default()).await?;
    let api = format!("{}/api/datanets", devnet.rpc_url());
    let registry = devnet.deployments.contracts.datanet_registry;
    let model_registry = devnet.deployments.contracts.model_registry;
    let service = devnet
        .datanets
        .clone()
        .ok_or_else(|| eyre!("no Datanet service"))?;
    let owner = client(&devnet, &api, 0).await?;
    let id = owner
        .create_datanet("empty", "no rows", false, U256::ZERO)
        .await?;

    // (Everything below is sent from one provider: it keeps the account's nonces.)
    // Contributions on chain with content of no rows, their bytes and manifests in a store.
    let tmp = tempfile::tempdir()?;
    let data_store = ContentStore::open(&tmp.path().join("data").display().to_string())?;
    let reg = DatanetRegistry::new(
        registry,
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(devnet.accounts[0].signer.clone()))
            .connect_http(devnet.rpc_url().parse()?),
    );
    let mut entries = Vec::new();
    for (k, (header, claimed_rows)) in [("text\n", 0u64), ("prompt,completion\n", 3)]
        .into_iter()
        .enumerate()
    {
        let bytes = bytes::Bytes::from(header);
        let content_hash = data_store.put(bytes.clone()).await?;
        assert_eq!(content_hash, keccak256(&bytes));
        let receipt = reg
            .contribute(
                U256::from(id),
                content_hash,
                bytes.len() as u64,
                claimed_rows,
                0,
                String::new(),
            )
            .send()
            .await?
            .confirm()
            .await?;
        let cid: u64 = receipt
            .decoded_log::<DatanetRegistry::Contributed>()
            .ok_or_else(|| eyre!("no Contributed event"))?
            .contributionId
            .saturating_to();
        reg.approve(U256::from(cid)).send().await?.confirm().await?;
        entries.push(ManifestEntry {
            contribution_id: cid,
            content_hash,
            contributor: devnet.accounts[0].address,
            row_count: claimed_rows,
            byte_size: bytes.len() as u64,
            rows_root: B256::ZERO,
            file_name: format!("part{k}.csv"),
        });
        let manifest = Manifest {
            format: MANIFEST_VERSION,
            chain_id: devnet.deployments.chain_id,
            registry,
            datanet_id: id.get(),
            contributions: entries.clone(),
        };
        let mh = data_store.put(manifest.to_bytes().into()).await?;
        // The manifest is also in the Datanet service's store, so the jobs service gets as far
        // as the backing check.
        service.store().put(manifest.to_bytes().into()).await?;
        reg.publishVersion(
            U256::from(id),
            manifest.merkle_root(),
            U256::from(entries.len()),
            mh,
        )
        .send()
        .await?
        .confirm()
        .await?;
    }

    // The library: reading version 0 finds no rows.
    let provider = source::provider(&devnet.rpc_url())?;
    let v0 =
        source::check_access(&provider, registry, devnet.accounts[3].address, id.get(), 0).await?;
    let reader = Reader::Store(data_store.clone());
    let empty = |r: Result<(), TrainError>, version: u64| matches!(r, Err(TrainError::EmptyVersion { version: v, .. }) if v == version);
    assert!(empty(
        source::check_version(&provider, &reader, &v0)
            .await
            .map(|_| ()),
        0
    ));
    assert!(empty(
        source::read_rows(&provider, &reader, &v0).await.map(|_| ()),
        0
    ));
    // Version 1's manifest claims rows: it passes the cheap check and fails on the rows.
    let v1 =
        source::check_access(&provider, registry, devnet.accounts[3].address, id.get(), 1).await?;
    assert!(source::check_version(&provider, &reader, &v1).await.is_ok());
    assert!(empty(
        source::read_rows(&provider, &reader, &v1).await.map(|_| ()),
        1
    ));

    // The jobs API (reading through the devnet's Datanet service): refused at submission.
    let svc = JobService::open(JobsConfig {
        rpc_url: devnet.rpc_url(),
        chain_id: devnet.deployments.chain_id,
        datanet_registry: registry,
        model_registry,
        datadir: tmp.path().join("jobs"),
        models_store: tmp.path().join("models").display().to_string(),
        base_models: vec![base.clone()],
        reader: ReaderConfig::Service(service.clone()),
        limits: Default::default(),
    })
    .await?;
    let app = axum::Router::new().nest("/api/jobs", svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/jobs", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = TrainConfig {
        rank: 4,
        max_steps: Some(2),
        batch_size: 2,
        sketch_dim: 8,
        ..Default::default()
    };
    for version in [0u64, 1] {
        let body =
            json!({"baseModel": base_name, "datanetId": id, "version": version, "config": cfg});
        let bytes = serde_json::to_vec(&body)?;
        let mut req = reqwest::Client::new().post(&url).body(bytes.clone());
        for (k, v) in openledger_datanet::auth::sign(
            &devnet.accounts[3].signer,
            &domain(devnet.deployments.chain_id, model_registry),
            "create_job",
            id,
            keccak256(&bytes),
            300,
        )? {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 403, "version {version}: {v}");
        assert_eq!(v["error"]["type"], "unbacked_contribution", "{v}");
        assert_eq!(v["error"]["field"], "version", "{v}");
    }
    assert!(svc.jobs().is_empty(), "a refused job is not queued");
    let models = ContentStore::open(&tmp.path().join("models").display().to_string())?;
    assert!(
        models.list().await?.is_empty(),
        "a refused job stored blobs"
    );
    Ok(())
}
