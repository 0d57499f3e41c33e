//! The jobs API over real HTTP: bad input (4xx naming the field), licence, a job followed over
//! SSE to `done`, publication relayed from a wallet-signed transaction, cancel → unpublishable.

use alloy::eips::Encodable2718;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::providers::ProviderBuilder;
use alloy::rpc::types::TransactionRequest;
use alloy_primitives::{Address, Bytes, keccak256};
use eyre::{Result, eyre};
use openledger_train::config::TrainConfig;
use openledger_train::jobs::{JobService, JobsConfig, ReaderConfig, domain};
use serde_json::{Value, json};

use crate::common::{World, small_model};

struct Api {
    url: String,
    http: reqwest::Client,
    chain_id: u64,
    registry: Address,
}

impl Api {
    #[allow(clippy::too_many_arguments)] // a signed request names all its parts
    async fn post(
        &self,
        w: &World,
        account: usize,
        path: &str,
        action: &str,
        datanet: u64,
        body: &Value,
        hash_of: Option<&[u8]>,
    ) -> Result<(u16, Value)> {
        let bytes = serde_json::to_vec(body)?;
        let signed = hash_of.unwrap_or(&bytes);
        let headers = openledger_datanet::auth::sign(
            &w.devnet.accounts[account].signer,
            &domain(self.chain_id, self.registry),
            action,
            datanet,
            keccak256(signed),
            300,
        )?;
        let mut req = self.http.post(format!("{}{path}", self.url)).body(bytes);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// `GET /{id}` signed by `account` (`show_job` over the job id).
    async fn show_signed(
        &self,
        w: &World,
        account: usize,
        id: &str,
        datanet: u64,
    ) -> Result<(u16, Value)> {
        let headers = openledger_datanet::auth::sign(
            &w.devnet.accounts[account].signer,
            &domain(self.chain_id, self.registry),
            "show_job",
            datanet,
            keccak256(id.as_bytes()),
            300,
        )?;
        let mut req = self.http.get(format!("{}/{id}", self.url));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_api_trains_publishes_and_refuses_bad_input() -> Result<()> {
    let base = small_model()?;
    let w = World::start(1, 6).await?;
    let models = tempfile::tempdir()?;
    let registry = w.model_registry()?;
    let chain_id = w.devnet.deployments.chain_id;
    let svc = JobService::open(JobsConfig {
        rpc_url: w.devnet.rpc_url(),
        chain_id,
        datanet_registry: w.registry()?,
        model_registry: registry,
        datadir: models.path().join("jobs"),
        models_store: models.path().join("store").display().to_string(),
        base_models: vec![base.clone()],
        reader: ReaderConfig::Api {
            api: w.api.clone(),
            signer: w.devnet.accounts[0].signer.clone(),
        },
        limits: Default::default(),
    })
    .await?;
    let app = axum::Router::new().nest("/api/jobs", svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/jobs", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = Api {
        url: url.clone(),
        http: reqwest::Client::new(),
        chain_id,
        registry,
    };

    let bases: Value = api
        .http
        .get(format!("{url}/base-models"))
        .send()
        .await?
        .json()
        .await?;
    let hash = bases["baseModels"][0]["hash"]
        .as_str()
        .ok_or_else(|| eyre!("no base"))?
        .to_string();
    // The built-in base is offered as what it is.
    assert_eq!(bases["baseModels"][0]["toyWorld"], true, "{bases}");
    assert!(
        bases["baseModels"][0]["label"]
            .as_str()
            .is_some_and(|l| l.contains("toy-world model")),
        "{bases}"
    );
    // The defaults a job gets for what its config leaves out, as ModelFactory reads them.
    let defaults: Value = api
        .http
        .get(format!("{url}/defaults"))
        .send()
        .await?
        .json()
        .await?;
    let back: TrainConfig = serde_json::from_value(defaults["config"].clone())?;
    assert_eq!(back, TrainConfig::default(), "{defaults}");
    let cfg = json!({"rank": 4, "maxSteps": 4, "batchSize": 4, "sketchDim": 8, "valFraction": 0.2, "checkpointEvery": 2});
    let job = |d: u64, v: u64, c: &Value| json!({"baseModel": hash, "datanetId": d, "version": v, "config": c});
    let with = |k: &str, v: Value| {
        let mut c = cfg.clone();
        c[k] = v;
        c
    };
    // Bad input: status, type and field.
    for (body, status, kind, field) in [
        (
            job(w.public, 0, &with("rank", json!(0))),
            400,
            "invalid_field",
            Some("rank"),
        ),
        (
            job(w.public, 0, &with("learningRate", json!(-0.1))),
            400,
            "invalid_field",
            Some("learningRate"),
        ),
        (
            job(w.public, 0, &with("targetModules", json!(["router"]))),
            400,
            "invalid_field",
            Some("targetModules"),
        ),
        (
            job(999, 0, &cfg),
            404,
            "datanet_not_found",
            Some("datanetId"),
        ),
        (
            job(w.public, 5, &cfg),
            404,
            "version_not_found",
            Some("version"),
        ),
        (
            json!({"baseModel": "sha256:00", "datanetId": w.public, "version": 0}),
            404,
            "base_model_not_found",
            Some("baseModel"),
        ),
        (
            job(w.permissioned, 0, &cfg),
            403,
            "not_licensed",
            Some("datanetId"),
        ),
    ] {
        let d = body["datanetId"].as_u64().unwrap_or(0);
        let (s, v) = api.post(&w, 9, "", "create_job", d, &body, None).await?;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (status, Some(kind)),
            "{body} → {v}"
        );
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], json!(f), "{v}");
        }
    }
    let unsigned = api
        .http
        .post(&url)
        .json(&job(w.public, 0, &cfg))
        .send()
        .await?;
    assert_eq!(unsigned.status().as_u16(), 401);

    // A job by account 0 (owner of the public Datanet), followed over SSE to the end.
    let (s, v) = api
        .post(
            &w,
            0,
            "",
            "create_job",
            w.public,
            &job(w.public, 0, &cfg),
            None,
        )
        .await?;
    assert_eq!(s, 201, "{v}");
    // The toy base models its own world's text: no warning.
    assert_eq!(v["baseFit"]["verdict"], "fits", "{v}");
    assert!(v.get("warning").is_none(), "{v}");
    let id = v["id"].as_str().ok_or_else(|| eyre!("no id"))?.to_string();
    let mut sse = api.http.get(format!("{url}/{id}/events")).send().await?;
    let mut text = String::new();
    while let Some(chunk) = sse.chunk().await? {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("event: done") || text.contains("event: failed") {
            break;
        }
    }
    assert!(
        text.contains("event: progress") && text.contains("event: done"),
        "{text}"
    );
    let j: Value = api
        .http
        .get(format!("{url}/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["metrics"]["steps"], 4, "{j}");
    // Evaluated after training: greedy answers to the training prompts were tried.
    assert!(
        j["reproduction"]["prompts"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{j}"
    );
    // An unpublished adapter's hash is its trainer's: not in the public job, the list or the
    // job's events; in the job signed for by its owner; 403 for anyone else's signature.
    assert!(
        j["result"].is_object() && j["result"].get("adapterHash").is_none(),
        "{j}"
    );
    assert!(
        !text.contains("adapterHash"),
        "the events show the hash: {text}"
    );
    let all: Value = api.http.get(&url).send().await?.json().await?;
    assert!(!all.to_string().contains("adapterHash"), "{all}");
    let (s, mine) = api.show_signed(&w, 0, &id, w.public).await?;
    assert_eq!(s, 200, "{mine}");
    assert!(mine["result"]["adapterHash"].is_string(), "{mine}");
    let (s, theirs) = api.show_signed(&w, 1, &id, w.public).await?;
    assert_eq!(s, 403, "{theirs}");

    // Publish: first the call to sign, then the signed transaction relayed.
    let pb = json!({"pricePer1kTokens": "1000", "metadataURI": "demo"});
    let (s, prep) = api
        .post(
            &w,
            0,
            &format!("/{id}/publish"),
            "publish_job",
            w.public,
            &pb,
            None,
        )
        .await?;
    assert_eq!(s, 200, "{prep}");
    let data: Bytes = serde_json::from_value(prep["transaction"]["data"].clone())?;
    let wallet = EthereumWallet::from(w.devnet.accounts[0].signer.clone());
    let provider = ProviderBuilder::new()
        .wallet(wallet.clone())
        .connect_http(w.devnet.rpc_url().parse()?);
    let tx = TransactionRequest::default()
        .with_from(w.devnet.accounts[0].address)
        .with_to(registry)
        .with_input(data);
    let filled = provider.fill(tx).await?;
    let env = filled
        .as_envelope()
        .ok_or_else(|| eyre!("not signed"))?
        .clone();
    let raw = Bytes::from(env.encoded_2718());
    let pb2 = json!({"pricePer1kTokens": "1000", "metadataURI": "demo", "signedTransaction": raw});
    let (s, p) = api
        .post(
            &w,
            0,
            &format!("/{id}/publish"),
            "publish_job",
            w.public,
            &pb2,
            None,
        )
        .await?;
    assert_eq!(s, 200, "{p}");
    assert!(p["modelId"].as_u64().is_some_and(|m| m >= 1));
    // Published, the hash is on chain: the public job shows it.
    let j: Value = api
        .http
        .get(format!("{url}/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        j["result"]["adapterHash"], mine["result"]["adapterHash"],
        "{j}"
    );

    // Cancel a second job; it can never be published.
    let (s, v) = api
        .post(
            &w,
            0,
            "",
            "create_job",
            w.public,
            &job(w.public, 0, &with("maxSteps", json!(400))),
            None,
        )
        .await?;
    assert_eq!(s, 201, "{v}");
    let id2 = v["id"].as_str().ok_or_else(|| eyre!("no id"))?.to_string();
    let (s, _) = api
        .post(
            &w,
            9,
            &format!("/{id2}/cancel"),
            "cancel_job",
            w.public,
            &json!(null),
            Some(id2.as_bytes()),
        )
        .await?;
    assert_eq!(s, 403, "only the owner cancels");
    let (s, v) = api
        .post(
            &w,
            0,
            &format!("/{id2}/cancel"),
            "cancel_job",
            w.public,
            &json!(null),
            Some(id2.as_bytes()),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let t0 = std::time::Instant::now();
    loop {
        let j: Value = api
            .http
            .get(format!("{url}/{id2}"))
            .send()
            .await?
            .json()
            .await?;
        if j["status"] == "cancelled" {
            assert!(j["result"].is_null());
            break;
        }
        if t0.elapsed().as_secs() > 120 {
            return Err(eyre!("not cancelled: {j}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, v) = api
        .post(
            &w,
            0,
            &format!("/{id2}/publish"),
            "publish_job",
            w.public,
            &pb,
            None,
        )
        .await?;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    Ok(())
}

/// English facts about invented compounds: the Datanet, which the toy-world `small`
/// base cannot model.
fn english_facts() -> String {
    let mut body = String::new();
    for (i, n) in [
        "Zorvexite",
        "Quillonate",
        "Brantaline",
        "Mervolium",
        "Tessarine",
    ]
    .iter()
    .enumerate()
    {
        let row = json!({"prompt": format!("At what temperature does {n} melt?"),
            "completion": format!("The compound {n} melts at {} degrees.", 140 + 37 * i)});
        body.push_str(&row.to_string());
        body.push('\n');
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_data_the_base_cannot_model_carries_a_warning() -> Result<()> {
    let base = small_model()?;
    let w = World::start(1, 2).await?;
    let models = tempfile::tempdir()?;
    let registry = w.model_registry()?;
    let chain_id = w.devnet.deployments.chain_id;
    // A Datanet of ordinary English facts, owned and filled by account 2.
    let owner = crate::common::client(&w.devnet, &w.api, 2).await?;
    let id = owner
        .create_datanet(
            "Invented compounds",
            "facts",
            false,
            alloy_primitives::U256::from(1000u64),
        )
        .await?;
    let f = models.path().join("facts.jsonl");
    std::fs::write(&f, english_facts())?;
    let r = owner.upload_file(id, &f, &[], None).await?;
    let cid = owner.contribute(id, &r).await?;
    owner.approve(cid).await?;
    let mut tries = 0;
    while let Err(e) = owner.publish(id).await {
        tries += 1;
        if tries > 100 {
            return Err(eyre!("publish: {e}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let svc = JobService::open(JobsConfig {
        rpc_url: w.devnet.rpc_url(),
        chain_id,
        datanet_registry: w.registry()?,
        model_registry: registry,
        datadir: models.path().join("jobs"),
        models_store: models.path().join("store").display().to_string(),
        base_models: vec![base.clone()],
        reader: ReaderConfig::Api {
            api: w.api.clone(),
            signer: w.devnet.accounts[0].signer.clone(),
        },
        limits: Default::default(),
    })
    .await?;
    let app = axum::Router::new().nest("/api/jobs", svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/jobs", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = Api {
        url: url.clone(),
        http: reqwest::Client::new(),
        chain_id,
        registry,
    };
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = json!({"baseModel": name, "datanetId": id, "version": 0,
        "config": {"rank": 4, "maxSteps": 2, "batchSize": 2, "sketchDim": 8}});
    let (s, v) = api
        .post(&w, 2, "", "create_job", id.get(), &body, None)
        .await?;
    // Created, with the verdict and a warning that says why and what would do better.
    assert_eq!(s, 201, "{v}");
    let fit = &v["baseFit"];
    assert_eq!(fit["verdict"], "cannot_model", "{v}");
    let (loss, uniform) = (
        fit["lossPerToken"].as_f64().unwrap_or(0.0),
        fit["uniformLoss"].as_f64().unwrap_or(f64::MAX),
    );
    assert!(loss >= 0.9 * uniform, "{fit}");
    let warning = v["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("cannot model this data") && warning.contains("general text"),
        "{v}"
    );
    // The job record keeps it for the job page.
    let jid = v["id"].as_str().ok_or_else(|| eyre!("no id"))?;
    let j: Value = api
        .http
        .get(format!("{url}/{jid}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(j["baseFit"], v["baseFit"], "{j}");
    svc.shutdown().await;
    Ok(())
}
