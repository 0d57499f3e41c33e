//! `openledger devnet` exits promptly on SIGTERM while a training job runs (issue #17): the job
//! stops within one step, stays resumable on disk, and the process ends.

use alloy::primitives::{U256, keccak256};
use eyre::{Result, bail, ensure, eyre};
use openledger_datanet::DatanetClient;
use openledger_datanet::client::dev_signer;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds the process may take to exit after SIGTERM.
const EXIT_WITHIN: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_exits_on_sigterm_with_a_training_job_running() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("tiny");
    let b = base.clone();
    tokio::task::spawn_blocking(move || {
        let opts =
            openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 3);
        openledger_model::init::init(&b, &opts, |_| {})
    })
    .await??;

    let mut child = Command::new(env!("CARGO_BIN_EXE_openledger"))
        .args([
            "devnet",
            "--port",
            "0",
            "--http-port",
            "0",
            "--accounts",
            "4",
        ])
        .arg("--base")
        .arg(&base)
        .arg("--datadir")
        .arg(dir.path().join("devnet"))
        .env("OPENLEDGER_LOG", "warn")
        .env("OPENLEDGER_HOME", dir.path().join("home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        bail!("devnet has no stdout");
    };
    let mut lines = BufReader::new(stdout).lines();
    let (mut rpc, mut web, mut models, mut chain_id) = (None, None, None, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    while rpc.is_none() && Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        let line = line?;
        if let Some(u) = line.strip_prefix("Web UI:") {
            web = Some(u.trim().to_string());
        }
        if let Some(a) = line.strip_prefix("ModelRegistry ") {
            models = a.trim().parse::<alloy::primitives::Address>().ok();
        }
        if let Some(c) = line.strip_prefix("Chain ID:") {
            chain_id = c.trim().parse::<u64>().ok();
        }
        if let Some(a) = line.strip_prefix("Listening on ") {
            rpc = Some(format!("http://{}", a.trim()));
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (Some(rpc), Some(web), Some(model_registry), Some(chain_id)) = (rpc, web, models, chain_id)
    else {
        let _ = child.kill();
        bail!("devnet did not start (or printed no URLs, ModelRegistry, chain id)");
    };
    let run = async {
        // A public Datanet with a published version.
        let owner =
            DatanetClient::connect(&rpc, &format!("{web}/api/datanets"), dev_signer(0)?).await?;
        let d = owner
            .create_datanet("sigterm", "", false, U256::ZERO)
            .await?;
        let rows: String = (0..12)
            .map(|i| format!("{{\"prompt\": \"Who keeps lamp {i}?\", \"completion\": \"Vorn keeps lamp {i}.\"}}\n"))
            .collect();
        let r = owner
            .upload_bytes(d, "lamps.jsonl", &[], rows.into_bytes())
            .await?;
        let c = owner.contribute(d, &r).await?;
        owner.approve(c).await?;
        let mut published = None;
        for _ in 0..100 {
            match owner.publish(d).await {
                Ok(v) => {
                    published = Some(v);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let (version, _, _) = published.ok_or_else(|| eyre!("publish failed"))?;

        // A long job (within the caps): 100,000 steps.
        let http = reqwest::Client::new();
        let info: Value = http
            .get(format!("{web}/api/jobs/base-models"))
            .send()
            .await?
            .json()
            .await?;
        let hash = info["baseModels"][0]["hash"]
            .as_str()
            .ok_or_else(|| eyre!("no base model: {info}"))?
            .to_string();
        let body = json!({"baseModel": hash, "datanetId": d, "version": version,
            "config": {"maxSteps": 100_000, "batchSize": 1, "maxSeqLen": 64, "sketchDim": 8}});
        let bytes = serde_json::to_vec(&body)?;
        let mut req = http.post(format!("{web}/api/jobs")).body(bytes.clone());
        for (k, v) in openledger_datanet::auth::sign(
            &dev_signer(0)?,
            &openledger_train::jobs::domain(chain_id, model_registry),
            "create_job",
            d,
            keccak256(&bytes),
            300,
        )? {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let job: Value = resp.json().await?;
        ensure!(status == 201, "{status} {job}");
        let id = job["id"]
            .as_str()
            .ok_or_else(|| eyre!("no id"))?
            .to_string();
        let t0 = Instant::now();
        loop {
            let j: Value = http
                .get(format!("{web}/api/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if j["progress"]["step"].as_u64().is_some_and(|s| s >= 1) {
                break;
            }
            ensure!(j["status"] != "failed", "{j}");
            ensure!(t0.elapsed().as_secs() < 300, "the job never trained: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eyre::Ok(())
    };
    if let Err(e) = run.await {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }

    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(sent.success(), "kill -TERM failed");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed().as_secs() > EXIT_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "openledger devnet did not exit within {EXIT_WITHIN} s of SIGTERM while a job ran"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(status.success(), "exit status {status}");
    Ok(())
}
