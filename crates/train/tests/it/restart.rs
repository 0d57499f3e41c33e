//! The jobs service survives a restart: a child process (this test binary re-executed) serves
//! the jobs API over HTTP, a job submitted to it is SIGKILLed with the service after its
//! first checkpoint, and a new `JobService` opened on the same directory resumes the job from
//! that checkpoint and finishes it with the same adapter (and manifest and sketches) as an
//! uninterrupted run of the same job. A job cancelled there stores and publishes nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, keccak256};
use eyre::{Result, WrapErr, eyre};
use openledger_datanet::ContentStore;
use openledger_train::config::TrainConfig;
use openledger_train::jobs::{Job, JobService, JobsConfig, ReaderConfig, Status, domain};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{World, small_model};

const CHILD_ENV: &str = "OPENLEDGER_JOBS_TEST_CHILD";

/// What the child needs to open the same service (JSON in `CHILD_ENV`).
#[derive(Serialize, Deserialize)]
struct ChildConfig {
    rpc_url: String,
    chain_id: u64,
    datanet_registry: Address,
    model_registry: Address,
    datadir: PathBuf,
    models_store: String,
    base: PathBuf,
    api: String,
    operator_key: B256,
    url_file: PathBuf,
}

impl ChildConfig {
    fn jobs_config(&self) -> Result<JobsConfig> {
        Ok(JobsConfig {
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            datanet_registry: self.datanet_registry,
            model_registry: self.model_registry,
            datadir: self.datadir.clone(),
            models_store: self.models_store.clone(),
            base_models: vec![self.base.clone()],
            reader: ReaderConfig::Api {
                api: self.api.clone(),
                signer: PrivateKeySigner::from_bytes(&self.operator_key)?,
            },
            limits: Default::default(),
        })
    }
}

async fn serve(svc: &JobService) -> Result<String> {
    let app = axum::Router::new().nest("/api/jobs", svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/jobs", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Runs only when re-executed by `jobs_survive_a_service_kill`: serves the jobs API until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_jobs_service() -> Result<()> {
    let Ok(cfg) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let cfg: ChildConfig = serde_json::from_str(&cfg)?;
    let svc = JobService::open(cfg.jobs_config()?).await?;
    let url = serve(&svc).await?;
    let tmp = cfg.url_file.with_extension("tmp");
    std::fs::write(&tmp, &url)?;
    std::fs::rename(&tmp, &cfg.url_file)?;
    std::future::pending::<()>().await;
    Ok(())
}

/// A signed `create_job` request over HTTP; (status, body).
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

async fn wait_terminal(svc: &JobService, id: &str, secs: u64) -> Result<Job> {
    let t0 = Instant::now();
    loop {
        let j = svc.job(id).ok_or_else(|| eyre!("no job {id}"))?;
        if j.status.is_terminal() {
            return Ok(j);
        }
        if t0.elapsed().as_secs() > secs {
            return Err(eyre!("{id} did not finish in {secs} s: {j:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_for(path: &Path, child: &mut std::process::Child, what: &str) -> Result<()> {
    let t0 = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait()? {
            return Err(eyre!("the child exited ({status}) before {what}"));
        }
        if t0.elapsed().as_secs() > 300 {
            let _ = child.kill();
            return Err(eyre!("no {what} in 300 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn config() -> TrainConfig {
    TrainConfig {
        rank: 4,
        alpha: 8.0,
        max_steps: Some(12),
        batch_size: 4,
        learning_rate: 5e-3,
        warmup_steps: 2,
        val_fraction: 0.2,
        checkpoint_every: 2,
        sketch_dim: 8,
        max_seq_len: 64,
        seed: 3,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_service_kill() -> Result<()> {
    let base = small_model()?;
    let w = World::start(1, 6).await?;
    let tmp = tempfile::tempdir()?;
    let child_cfg = ChildConfig {
        rpc_url: w.devnet.rpc_url(),
        chain_id: w.devnet.deployments.chain_id,
        datanet_registry: w.registry()?,
        model_registry: w.model_registry()?,
        datadir: tmp.path().join("jobs"),
        models_store: tmp.path().join("store").display().to_string(),
        base: base.clone(),
        api: w.api.clone(),
        operator_key: w.devnet.accounts[0].signer.to_bytes(),
        url_file: tmp.path().join("url"),
    };
    let log = std::fs::File::create(tmp.path().join("child.log"))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["restart::child_jobs_service", "--exact", "--nocapture"])
        .env(CHILD_ENV, serde_json::to_string(&child_cfg)?)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let child_log = || std::fs::read_to_string(tmp.path().join("child.log")).unwrap_or_default();
    wait_for(&child_cfg.url_file, &mut child, "jobs API URL")
        .wrap_err_with(|| format!("child log:\n{}", child_log()))?;
    let url = std::fs::read_to_string(&child_cfg.url_file)?;

    // Submit over HTTP to the child; kill it (SIGKILL) once the job has a checkpoint.
    let bases: Value = reqwest::get(format!("{url}/base-models"))
        .await?
        .json()
        .await?;
    let hash = bases["baseModels"][0]["hash"]
        .as_str()
        .ok_or_else(|| eyre!("no base model: {bases}"))?
        .to_string();
    let body = json!({"baseModel": hash, "datanetId": w.public, "version": 0, "config": config()});
    let (s, v) = post_job(&w, &url, 0, &body).await?;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().ok_or_else(|| eyre!("no id"))?.to_string();
    let job_dir = child_cfg.datadir.join("jobs").join(&id);
    let ckpt = job_dir
        .join("work")
        .join(openledger_train::checkpoint::FILE);
    wait_for(&ckpt, &mut child, "checkpoint")
        .wrap_err_with(|| format!("child log:\n{}", child_log()))?;
    child.kill()?;
    child.wait()?;
    let on_disk: Job = serde_json::from_slice(&std::fs::read(job_dir.join("job.json"))?)?;
    assert_eq!(on_disk.status, Status::Running, "killed mid-training");
    assert!(on_disk.result.is_none());

    // A new service on the same directory picks the job up and resumes it.
    let svc = JobService::open(child_cfg.jobs_config()?).await?;
    let url2 = serve(&svc).await?;
    let resumed = wait_terminal(&svc, &id, 600).await?;
    assert_eq!(resumed.status, Status::Succeeded, "{resumed:?}");
    let from = resumed
        .resumed_from
        .ok_or_else(|| eyre!("the job restarted from scratch: {resumed:?}"))?;
    eprintln!("{id}: killed, resumed from the checkpoint at step {from}");
    assert!(
        (2..12).contains(&from) && from % 2 == 0,
        "resumed from step {from}, not a checkpoint"
    );
    assert!(
        !job_dir.join("work").exists(),
        "checkpoints are removed at the end"
    );

    // The same job, uninterrupted, in the same service: the same outputs, bit for bit.
    let owner = w.devnet.accounts[0].address;
    let again = svc.submit(owner, &hash, w.public, 0, config()).await?;
    let again = wait_terminal(&svc, &again.id, 600).await?;
    assert_eq!(again.status, Status::Succeeded, "{again:?}");
    assert!(again.resumed_from.is_none());
    let (r1, r2) = (
        resumed.result.ok_or_else(|| eyre!("no result"))?,
        again.result.ok_or_else(|| eyre!("no result"))?,
    );
    assert_eq!(
        r1.adapter_hash, r2.adapter_hash,
        "resumed adapter differs from the uninterrupted run"
    );
    assert_eq!(r1.sketch_hash, r2.sketch_hash);
    assert_eq!(r1.manifest_hash, r2.manifest_hash);
    assert_eq!(resumed.metrics, again.metrics);

    // A cancelled job stores nothing and cannot be published.
    let store = ContentStore::open(&child_cfg.models_store)?;
    let before = store.list().await?.len();
    let long = TrainConfig {
        max_steps: Some(400),
        ..config()
    };
    let job = svc.submit(owner, &hash, w.public, 0, long).await?;
    let t0 = Instant::now();
    while svc.job(&job.id).and_then(|j| j.progress).is_none() {
        if t0.elapsed().as_secs() > 300 {
            return Err(eyre!("the long job never started"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        svc.cancel(&job.id, Address::repeat_byte(9)).is_err(),
        "only the owner cancels"
    );
    svc.cancel(&job.id, owner)?;
    let cancelled = wait_terminal(&svc, &job.id, 300).await?;
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(cancelled.result.is_none() && cancelled.metrics.is_none());
    assert_eq!(
        store.list().await?.len(),
        before,
        "a cancelled job stored blobs"
    );
    let pb = json!({"pricePer1kTokens": "1000", "metadataURI": "x"});
    let bytes = serde_json::to_vec(&pb)?;
    let mut req = reqwest::Client::new()
        .post(format!("{url2}/{}/publish", job.id))
        .body(bytes.clone());
    for (k, v) in openledger_datanet::auth::sign(
        &w.devnet.accounts[0].signer,
        &domain(w.devnet.deployments.chain_id, w.model_registry()?),
        "publish_job",
        w.public,
        keccak256(&bytes),
        300,
    )? {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    assert_eq!(
        resp.status().as_u16(),
        409,
        "a cancelled job is not publishable"
    );
    Ok(())
}
