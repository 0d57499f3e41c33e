//! Attacks of issue #17 on the jobs service: training on someone else's permissioned data
//! through a Datanet the attacker owns.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy_primitives::{B256, U256, keccak256};
use eyre::{Result, eyre};
use openledger_datanet::manifest::MANIFEST_VERSION;
use openledger_datanet::{Manifest, ManifestEntry, UploadReceipt};
use openledger_protocol::Confirm;
use openledger_protocol::bindings::DatanetRegistry;
use openledger_train::config::JobLimits;
use openledger_train::jobs::{Job, JobService, JobsConfig, ReaderConfig, Status, domain};
use serde_json::{Value, json};

use crate::common::{World, client, small_model};

/// The attacker's account.
const ATTACKER: usize = 7;

/// The reader the devnet's jobs service uses.
fn devnet_reader(w: &World) -> Result<ReaderConfig> {
    let svc = w
        .devnet
        .datanets
        .clone()
        .ok_or_else(|| eyre!("the devnet runs no Datanet service"))?;
    Ok(ReaderConfig::Service(svc))
}

/// A jobs service on `w`, served over HTTP; returns it and its URL.
async fn jobs_service(
    w: &World,
    dir: &std::path::Path,
    limits: JobLimits,
) -> Result<(JobService, String)> {
    let svc = JobService::open(JobsConfig {
        rpc_url: w.devnet.rpc_url(),
        chain_id: w.devnet.deployments.chain_id,
        datanet_registry: w.registry()?,
        model_registry: w.model_registry()?,
        datadir: dir.join("jobs"),
        models_store: dir.join("models").display().to_string(),
        base_models: vec![small_model()?],
        reader: devnet_reader(w)?,
        limits,
    })
    .await?;
    let app = axum::Router::new().nest("/api/jobs", svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/jobs", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((svc, url))
}

/// A signed `create_job` by `account`: (status, body).
async fn post_job(w: &World, url: &str, account: usize, body: &Value) -> Result<(u16, Value)> {
    let bytes = serde_json::to_vec(body)?;
    let headers = openledger_datanet::auth::sign(
        &w.devnet.accounts[account].signer,
        &domain(w.devnet.deployments.chain_id, w.model_registry()?),
        "create_job",
        body["datanetId"].as_u64().unwrap_or(0),
        keccak256(&bytes),
        300,
    )?;
    let mut req = reqwest::Client::new().post(url).body(bytes);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The registry as `account` sends it (straight to the chain).
fn registry(
    w: &World,
    account: usize,
) -> Result<DatanetRegistry::DatanetRegistryInstance<DynProvider>> {
    // Nonces read per transaction: the same account also sends through a DatanetClient.
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(
            w.devnet.accounts[account].signer.clone(),
        ))
        .connect_http(w.devnet.rpc_url().parse()?)
        .erased();
    Ok(DatanetRegistry::new(w.registry()?, provider))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_version_cannot_point_training_at_permissioned_data() -> Result<()> {
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    let (svc, url) = jobs_service(&w, tmp.path(), JobLimits::default()).await?;
    let base = small_model()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reg = registry(&w, ATTACKER)?;
    let attacker = client(&w.devnet, &w.api, ATTACKER).await?;
    let me = w.devnet.accounts[ATTACKER].address;

    // What anyone can see of the permissioned Datanet: its version 0 and its first
    // contribution's content hash.
    let perm = U256::from(w.permissioned);
    let v0 = reg.getVersion(perm, U256::ZERO).call().await?;
    let first = reg
        .acceptedContributions(perm, U256::ZERO, U256::from(1))
        .call()
        .await?;
    let first = *first
        .first()
        .ok_or_else(|| eyre!("no accepted contribution"))?;
    let secret = reg.getContribution(first).call().await?;

    // The attacker's public Datanet: the stolen hash contributed on chain (no upload), approved.
    let mine = attacker
        .create_datanet("open data", "", false, U256::ZERO)
        .await?;
    let stolen = attacker
        .contribute(
            mine,
            &UploadReceipt {
                content_hash: secret.contentHash,
                byte_size: secret.byteSize,
                row_count: secret.rowCount,
                score: 100,
                reasons: Vec::new(),
                rows_root: B256::ZERO,
            },
        )
        .await?;
    attacker.approve(stolen).await?;

    // Version 0: the permissioned Datanet's manifest and root, as they are.
    reg.publishVersion(
        U256::from(mine),
        v0.merkleRoot,
        U256::from(1),
        v0.manifestHash,
    )
    .send()
    .await?
    .confirm()
    .await?;
    // Version 1: a manifest of his Datanet listing the stolen contribution, put into the
    // shared store as an ordinary upload to another Datanet of his.
    let crafted = Manifest {
        format: MANIFEST_VERSION,
        chain_id: w.devnet.deployments.chain_id,
        registry: w.registry()?,
        datanet_id: mine.get(),
        contributions: vec![ManifestEntry {
            contribution_id: stolen.get(),
            content_hash: secret.contentHash,
            contributor: me,
            row_count: secret.rowCount,
            byte_size: secret.byteSize,
            rows_root: B256::ZERO,
            file_name: "harbour.jsonl".into(),
        }],
    };
    let other = attacker
        .create_datanet("scratch", "", false, U256::ZERO)
        .await?;
    let up = attacker
        .upload_bytes(other, "notes.txt", &[], crafted.to_bytes())
        .await?;
    if up.content_hash != crafted.hash() {
        return Err(eyre!("the crafted manifest was stored under another hash"));
    }
    reg.publishVersion(
        U256::from(mine),
        crafted.merkle_root(),
        U256::from(1),
        crafted.hash(),
    )
    .send()
    .await?
    .confirm()
    .await?;

    let cfg = json!({"rank": 4, "maxSteps": 2, "batchSize": 2, "sketchDim": 8});
    for (version, status, kind) in [
        (0u64, 422, "manifest_mismatch"),
        (1, 403, "unbacked_contribution"),
    ] {
        let body = json!({"baseModel": base, "datanetId": mine, "version": version, "config": cfg});
        let (s, v) = post_job(&w, &url, ATTACKER, &body).await?;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (status, Some(kind)),
            "version {version}: a job on another Datanet's data was not refused: {v}"
        );
        assert_eq!(v["error"]["field"], "version", "{v}");
    }
    assert!(
        svc.jobs().is_empty(),
        "a refused job was queued: {:?}",
        svc.jobs()
    );
    Ok(())
}

/// The base model's directory name (what a job names).
fn base_name() -> Result<String> {
    Ok(small_model()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

async fn wait_status(svc: &JobService, id: &str, want: Status, secs: u64) -> Result<Job> {
    let t0 = std::time::Instant::now();
    loop {
        let j = svc.job(id).ok_or_else(|| eyre!("no job {id}"))?;
        if j.status == want {
            return Ok(j);
        }
        if t0.elapsed().as_secs() > secs {
            return Err(eyre!("{id} is not {want:?} after {secs} s: {j:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_jobs_are_refused_naming_the_field_and_the_cap() -> Result<()> {
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    let (svc, url) = jobs_service(&w, tmp.path(), JobLimits::default()).await?;
    let base = base_name()?;
    for (cfg, field, cap) in [
        (json!({"epochs": 1_000_000_000_000u64}), "epochs", "1000"),
        (json!({"maxSteps": 1_000_000_000u64}), "maxSteps", "100000"),
        // 50,000 steps × 4096 sequences × 128 tokens: far more tokens than the cap.
        (
            json!({"maxSteps": 50_000, "batchSize": 4096}),
            "maxSteps",
            "50000000",
        ),
    ] {
        let body = json!({"baseModel": base, "datanetId": w.public, "version": 0, "config": cfg});
        let (s, v) = post_job(&w, &url, 0, &body).await?;
        assert_eq!(
            (s, v["error"]["type"].as_str(), v["error"]["field"].as_str()),
            (422, Some("over_limit"), Some(field)),
            "{cfg} was not refused: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.replace(',', "").contains(cap),
            "the message names no cap: {msg}"
        );
    }
    assert!(svc.jobs().is_empty(), "an oversized job was queued");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_are_capped_per_owner_and_in_total() -> Result<()> {
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    // The default per-owner cap (4), a total cap of 5.
    let limits = JobLimits {
        max_active: 5,
        ..JobLimits::default()
    };
    let (svc, url) = jobs_service(&w, tmp.path(), limits).await?;
    let base = base_name()?;
    // Long jobs (cancelled at the end), so none ends while the queue fills.
    let body = json!({"baseModel": base, "datanetId": w.public, "version": 0,
        "config": {"maxSteps": 5000, "batchSize": 1, "maxSeqLen": 32, "sketchDim": 8}});
    for i in 0..4 {
        let (s, v) = post_job(&w, &url, 0, &body).await?;
        assert_eq!(s, 201, "job {i}: {v}");
    }
    let resp = {
        let bytes = serde_json::to_vec(&body)?;
        let mut req = reqwest::Client::new().post(&url).body(bytes.clone());
        for (k, v) in openledger_datanet::auth::sign(
            &w.devnet.accounts[0].signer,
            &domain(w.devnet.deployments.chain_id, w.model_registry()?),
            "create_job",
            w.public,
            keccak256(&bytes),
            300,
        )? {
            req = req.header(k, v);
        }
        req.send().await?
    };
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    let jobs = svc.jobs();
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (429, Some("too_many_jobs")),
        "a fifth active job of one owner: {v}"
    );
    assert!(retry.is_some_and(|s| s >= 1), "no Retry-After: {retry:?}");
    assert_eq!(jobs.len(), 4);
    // Another owner still gets in (the per-owner cap is not the total cap), a third one
    // finds the service full.
    let (s, v) = post_job(&w, &url, 3, &body).await?;
    assert_eq!(s, 201, "{v}");
    let (s, v) = post_job(&w, &url, 5, &body).await?;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (429, Some("too_many_jobs")),
        "a sixth active job in a service capped at 5: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cap is 5")),
        "{v}"
    );
    for j in svc.jobs() {
        let _ = svc.cancel(&j.id, j.owner);
        if !j.status.is_terminal() {
            wait_status(&svc, &j.id, Status::Cancelled, 120).await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_runaway_job() -> Result<()> {
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    // Caps raised as far as they go: an epoch count that plans for ever.
    let limits = JobLimits {
        max_epochs: usize::MAX,
        max_steps: usize::MAX,
        max_tokens: u64::MAX,
        ..JobLimits::default()
    };
    let (svc, url) = jobs_service(&w, tmp.path(), limits).await?;
    let base = base_name()?;
    let body = json!({"baseModel": base, "datanetId": w.public, "version": 0,
        "config": {"epochs": 1_000_000_000_000u64, "batchSize": 1, "sketchDim": 8}});
    let (s, v) = post_job(&w, &url, 0, &body).await?;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().ok_or_else(|| eyre!("no id"))?.to_string();
    wait_status(&svc, &id, Status::Running, 120).await?;
    let bytes = serde_json::to_vec(&Value::Null)?;
    let mut req = reqwest::Client::new()
        .post(format!("{url}/{id}/cancel"))
        .body(bytes);
    for (k, v) in openledger_datanet::auth::sign(
        &w.devnet.accounts[0].signer,
        &domain(w.devnet.deployments.chain_id, w.model_registry()?),
        "cancel_job",
        w.public,
        keccak256(id.as_bytes()),
        300,
    )? {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await?.status().as_u16(), 200);
    let j = wait_status(&svc, &id, Status::Cancelled, 60).await?;
    assert!(j.result.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_running_job_and_keeps_it_resumable() -> Result<()> {
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    let (svc, url) = jobs_service(&w, tmp.path(), JobLimits::default()).await?;
    let body = json!({"baseModel": base_name()?, "datanetId": w.public, "version": 0,
        "config": {"maxSteps": 50_000, "batchSize": 1, "maxSeqLen": 32, "sketchDim": 8}});
    let (s, v) = post_job(&w, &url, 0, &body).await?;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().ok_or_else(|| eyre!("no id"))?.to_string();
    let t0 = std::time::Instant::now();
    while svc.job(&id).and_then(|j| j.progress).is_none() {
        if t0.elapsed().as_secs() > 300 {
            return Err(eyre!("the job never trained"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Returns once the training thread has stopped (it would keep the runtime alive).
    svc.shutdown().await;
    let on_disk: Job = serde_json::from_slice(&std::fs::read(
        tmp.path().join("jobs/jobs").join(&id).join("job.json"),
    )?)?;
    assert_eq!(
        on_disk.status,
        Status::Running,
        "a shutdown is not a cancel"
    );
    drop(svc);
    // The next start picks it up again.
    let (svc, _) = jobs_service(&w, tmp.path(), JobLimits::default()).await?;
    let again = wait_status(&svc, &id, Status::Running, 120).await?;
    assert!(again.result.is_none());
    svc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_job_request_cannot_be_replayed_after_a_restart() -> Result<()> {
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    let (svc, url) = jobs_service(&w, tmp.path(), JobLimits::default()).await?;
    let body = json!({"baseModel": base_name()?, "datanetId": w.public, "version": 0,
        "config": {"maxSteps": 1, "batchSize": 1, "maxSeqLen": 32, "sketchDim": 8}});
    let bytes = serde_json::to_vec(&body)?;
    let headers = openledger_datanet::auth::sign(
        &w.devnet.accounts[0].signer,
        &domain(w.devnet.deployments.chain_id, w.model_registry()?),
        "create_job",
        w.public,
        keccak256(&bytes),
        300,
    )?;
    let send = |url: String| {
        let (bytes, headers) = (bytes.clone(), headers.clone());
        async move {
            let mut req = reqwest::Client::new().post(url).body(bytes);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            eyre::Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let (s, v) = send(url.clone()).await?;
    assert_eq!(s, 201, "{v}");
    let (s, v) = send(url.clone()).await?;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (401, Some("replayed_nonce")),
        "{v}"
    );

    // The same bytes and headers against a restarted service on the same directory.
    svc.shutdown().await;
    drop(svc);
    let (svc, url) = jobs_service(&w, tmp.path(), JobLimits::default()).await?;
    let (s, v) = send(url).await?;
    let jobs = svc.jobs();
    svc.shutdown().await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (401, Some("replayed_nonce")),
        "the request was accepted again after a restart: {v}"
    );
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    Ok(())
}
