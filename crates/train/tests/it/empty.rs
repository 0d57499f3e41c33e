//! Empty Datanet versions. The Datanet service refuses uploads without rows and the registry
//! refuses a version of zero contributions, so an empty version can only come from a
//! contributor who goes around the service: a contribution recorded on chain straight away
//! whose content parses to no rows (a CSV file with only a header). Version 0 = that
//! contribution, its manifest honest (0 rows): a job is refused at submission, 422
//! `empty_version`, field `version`. Version 1 adds a second such contribution whose manifest
//! entry claims rows: the job passes submission and fails when it reads the rows, with the
//! same error type, and stores nothing.

use alloy::network::EthereumWallet;
use alloy::providers::ProviderBuilder;
use alloy_primitives::{B256, U256, keccak256};
use eyre::{Result, eyre};
use openledger_contracts::bindings::DatanetRegistry;
use openledger_datanet::manifest::MANIFEST_VERSION;
use openledger_datanet::{ContentStore, Manifest, ManifestEntry};
use openledger_devnet::{Devnet, DevnetConfig};
use openledger_train::config::TrainConfig;
use openledger_train::jobs::{JobService, JobsConfig, ReaderConfig, Status, domain};
use openledger_train::source::{self, Reader};
use openledger_train::{TrainError, jobs};
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
    let registry = devnet
        .deployments
        .get("DatanetRegistry")
        .ok_or_else(|| eyre!("no DatanetRegistry"))?;
    let model_registry = devnet
        .deployments
        .get("ModelRegistry")
        .ok_or_else(|| eyre!("no ModelRegistry"))?;
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
            .get_receipt()
            .await?;
        let cid: u64 = receipt
            .decoded_log::<DatanetRegistry::Contributed>()
            .ok_or_else(|| eyre!("no Contributed event"))?
            .contributionId
            .saturating_to();
        reg.approve(U256::from(cid))
            .send()
            .await?
            .get_receipt()
            .await?;
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
            datanet_id: id,
            contributions: entries.clone(),
        };
        let mh = data_store.put(manifest.to_bytes().into()).await?;
        reg.publishVersion(
            U256::from(id),
            manifest.merkle_root(),
            U256::from(entries.len()),
            mh,
        )
        .send()
        .await?
        .get_receipt()
        .await?;
    }

    // The library: reading version 0 finds no rows.
    let provider = source::provider(&devnet.rpc_url())?;
    let v0 = source::check_access(&provider, registry, devnet.accounts[3].address, id, 0).await?;
    let reader = Reader::Store(data_store.clone());
    let empty =
        |r: Result<(), TrainError>| matches!(r, Err(TrainError::EmptyVersion { version: 0, .. }));
    assert!(empty(source::check_not_empty(&reader, &v0).await));
    assert!(empty(source::read_rows(&reader, &v0).await.map(|_| ())));

    // The jobs API (reading rows from the Datanet store).
    let svc = JobService::open(JobsConfig {
        rpc_url: devnet.rpc_url(),
        chain_id: devnet.deployments.chain_id,
        datanet_registry: registry,
        model_registry,
        datadir: tmp.path().join("jobs"),
        models_store: tmp.path().join("models").display().to_string(),
        base_models: vec![base.clone()],
        reader: ReaderConfig::Store(tmp.path().join("data").display().to_string()),
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
    let post = |version: u64| {
        let body =
            json!({"baseModel": base_name, "datanetId": id, "version": version, "config": cfg});
        let url = url.clone();
        let signer = devnet.accounts[3].signer.clone();
        let chain_id = devnet.deployments.chain_id;
        async move {
            let bytes = serde_json::to_vec(&body)?;
            let mut req = reqwest::Client::new().post(&url).body(bytes.clone());
            for (k, v) in openledger_datanet::auth::sign(
                &signer,
                &domain(chain_id, model_registry),
                "create_job",
                id,
                keccak256(&bytes),
                300,
            )? {
                req = req.header(k, v);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            eyre::Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let (s, v) = post(0).await?;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["type"], "empty_version", "{v}");
    assert_eq!(v["error"]["field"], "version", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no rows")),
        "{v}"
    );
    assert!(svc.jobs().is_empty(), "a refused job is not queued");

    // Version 1's manifest claims rows; the job is accepted, then fails on the rows it reads.
    let (s, v) = post(1).await?;
    assert_eq!(s, 201, "{v}");
    let job_id = v["id"].as_str().ok_or_else(|| eyre!("no id"))?.to_string();
    let t0 = std::time::Instant::now();
    let job: jobs::Job = loop {
        let j = svc.job(&job_id).ok_or_else(|| eyre!("no job"))?;
        if j.status.is_terminal() {
            break j;
        }
        if t0.elapsed().as_secs() > 120 {
            return Err(eyre!("job never ended: {j:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(job.status, Status::Failed, "{job:?}");
    assert_eq!(
        job.error.as_ref().map(|e| e.kind.as_str()),
        Some("empty_version")
    );
    assert!(job.result.is_none());
    let models = ContentStore::open(&tmp.path().join("models").display().to_string())?;
    assert!(models.list().await?.is_empty(), "a failed job stored blobs");
    Ok(())
}
