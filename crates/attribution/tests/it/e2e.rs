//! The whole loop through the real parts: three contributors' rows in a Datanet → an adapter
//! trained by `openledger_train` (tiny base model, a few dozen steps), stored in the models
//! store and published in ModelRegistry → served by `openledger_serve::Server` with the
//! attribution service as its hooks → a paying account chats over HTTP with signed headers →
//! the response's `attribution` credits the contributor whose fact was asked for (span and
//! influence both present) → the batch settles → contributors claim → treasury + model owner +
//! contributors add up to the fee exactly → the record verifies.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use eyre::{Result, eyre};
use openledger_attribution::{AttributionConfig, AttributionRecord, AttributionService};
use openledger_datanet::{ContentStore, DatanetClient};
use openledger_devnet::Devnet;
use openledger_protocol::Confirm;
use openledger_protocol::Contract;
use openledger_protocol::bindings::{AttributionSettlement, ProtocolParams};
use openledger_serve::{InferenceHooks, ServeConfig, Server};
use openledger_train::config::TrainConfig;
use openledger_train::publish::{self, PublishSpec};
use openledger_train::source::{self, Reader};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const QA: [(&str, &str); 3] = [
    ("Who keeps the lamp?", "Vorn keeps the lamp at Kess."),
    ("Who counts the bells?", "Mira counts the bells at Dol."),
    ("Who paints the gate?", "Tuck paints the gate at Ravel."),
];

fn provider(rpc: &str, s: &PrivateKeySigner) -> Result<DynProvider> {
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(s.clone()))
        .connect_http(rpc.parse()?)
        .erased())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_served_paid_attributed_settled() -> Result<()> {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir()?;
    let base_dir = tmp.path().join("tiny");
    let bd = base_dir.clone();
    let init = tokio::task::spawn_blocking(move || {
        let opts =
            openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 42);
        openledger_model::init::init(&bd, &opts, |_| {})
    });
    let devnet = Devnet::start(crate::attacks::short_window()).await?;
    let rpc = devnet.rpc_url();
    let api = format!(
        "{}/api/datanets",
        devnet.http_url().ok_or(eyre!("no http"))?
    );
    let acct = |i: usize| devnet.accounts[i].signer.clone();
    let dep = |c: Contract| -> Result<Address> { Ok(devnet.deployments.contracts.address(c)) };

    // Three contributors, one fact each (asked two ways), plus a shared generic line.
    let owner = DatanetClient::connect(&rpc, &api, acct(1)).await?;
    let d = owner
        .create_datanet("keepers", "", false, U256::ZERO)
        .await?;
    let mut contribution_of = Vec::new();
    for (i, (q, a)) in QA.iter().enumerate() {
        let c = DatanetClient::connect(&rpc, &api, acct(2 + i)).await?;
        let rows = [
            serde_json::json!({"prompt": q, "completion": a}),
            serde_json::json!({"prompt": format!("Tell me: {q}"), "completion": a}),
            serde_json::json!({"text": "Notes shared by the village."}),
        ];
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        let r = c
            .upload_bytes(d, &format!("c{i}.jsonl"), &[], body.into_bytes())
            .await?;
        let id = c.contribute(d, &r).await?;
        owner.approve(id).await?;
        contribution_of.push(id);
    }
    let (version, _, _) = owner.publish(d).await?;

    // Train on the version (read after the licence check, as the trainer does), store, publish.
    init.await??;
    let base = openledger_model::Pretrained::load(
        &base_dir,
        &openledger_model::Device::Cpu,
        openledger_model::DType::F32,
    )?;
    let base_hash = openledger_model::content_hash(&base_dir)?.0;
    let reader = provider(&rpc, &acct(1))?;
    let vref = source::check_access(
        &reader,
        dep(Contract::DatanetRegistry)?,
        acct(1).address(),
        d.get(),
        version.get(),
    )
    .await?;
    let content = ContentStore::open(
        &devnet
            .datadir
            .join("datanets/content")
            .display()
            .to_string(),
    )?;
    let rows = source::read_rows(&reader, &Reader::Store(content), &vref).await?;
    let cfg = TrainConfig {
        epochs: 100,
        learning_rate: 1e-2,
        batch_size: 3,
        val_fraction: 0.0,
        warmup_steps: 3,
        max_seq_len: 96,
        checkpoint_every: 0,
        sketch_dim: 64,
        ..TrainConfig::default()
    };
    let (b, h, r2, c2) = (Arc::new(base), base_hash.clone(), rows.clone(), cfg.clone());
    let out = tokio::task::spawn_blocking(move || {
        openledger_train::trainer::train(
            &b,
            &h,
            &r2,
            &c2,
            None,
            &AtomicBool::new(false),
            &mut |_| {},
        )
    })
    .await??;
    let models_loc = tmp.path().join("models").display().to_string();
    let models = ContentStore::open(&models_loc)?;
    let base_ref = openledger_train::output::BaseModelRef {
        id: "tiny".into(),
        hash: base_hash.clone(),
    };
    let (stored, _) = openledger_train::output::store(&models, &out, base_ref, &vref, &cfg).await?;
    let price = U256::from(10u64).pow(U256::from(15u64));
    let published = publish::publish(
        &rpc,
        acct(1),
        dep(Contract::ModelRegistry)?,
        &PublishSpec {
            base_model_id: "tiny".into(),
            base_model_hash: publish::base_hash_bytes(&base_hash)?,
            adapter_hash: stored.adapter_hash,
            training_manifest_hash: stored.manifest_hash,
            trained_on: vec![(d.get(), version.get())],
            price_per_1k_tokens: price,
            metadata_uri: String::new(),
        },
    )
    .await?;
    let model = format!("model-{}", published.model_id);

    // Attribution (with the models store) as the server's hooks, both on one listener.
    let mut acfg = AttributionConfig::new(
        &rpc,
        &devnet.deployments,
        tmp.path().join("attribution"),
        devnet
            .datadir
            .join("datanets/content")
            .display()
            .to_string(),
    );
    acfg.tokenizer = Some(base_dir.join("tokenizer.json"));
    acfg.models_store = Some(models_loc.clone());
    acfg.attributor = Some(acct(0));
    acfg.batch_records = 100;
    let svc = AttributionService::open(acfg).await?;
    let mut scfg = ServeConfig::new(&base_dir, tmp.path().join("serve-cache"));
    scfg.store = Some(models_loc);
    scfg.rpc_url = Some(rpc.clone());
    scfg.registry = Some(dep(Contract::ModelRegistry)?);
    let hooks: Arc<dyn InferenceHooks> = svc.clone();
    let server = Server::start(scfg, hooks).await?;
    let app = server.router().merge(svc.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The payer escrows and allows; then asks contributor 1's question.
    let payer = acct(6);
    let pp = provider(&rpc, &payer)?;
    let settlement_addr = dep(Contract::AttributionSettlement)?;
    let settlement = AttributionSettlement::new(settlement_addr, &pp);
    let deposit = U256::from(10u64).pow(U256::from(16u64));
    settlement
        .deposit()
        .value(deposit)
        .send()
        .await?
        .confirm()
        .await?;
    settlement
        .setAllowance(U256::from(published.model_id), U256::MAX)
        .send()
        .await?
        .confirm()
        .await?;
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": QA[1].0}],
        "max_tokens": 24,
        "temperature": 0,
    });
    let unpaid = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(unpaid.status(), 402);
    let mut req = http.post(format!("{url}/v1/chat/completions")).json(&body);
    for (k, v) in
        crate::attacks::voucher_headers(&svc, &payer, 1, U256::from(10u64).pow(U256::from(18u64)))?
    {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    assert_eq!(resp.status(), 200);
    let resp: serde_json::Value = resp.json().await?;
    // The attributor's receipt names the leaf it will settle, signed under the inference domain.
    let receipt = &resp["attribution"]["receipt"];
    let leaf: B256 = serde_json::from_value(receipt["leaf"].clone())?;
    let sig: alloy_primitives::Signature = receipt["signature"]
        .as_str()
        .ok_or(eyre!("no receipt: {resp}"))?
        .parse()?;
    let msg = openledger_protocol::eip712::InferenceReceipt {
        requestKey: serde_json::from_value(receipt["requestKey"].clone())?,
        leaf,
    };
    use alloy_sol_types::SolStruct;
    assert_eq!(
        sig.recover_address_from_prehash(&msg.eip712_signing_hash(svc.domain()))?,
        svc.attributor()
    );
    let answer = resp["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let att = &resp["attribution"];
    eprintln!("answer {answer:?}\nattribution {att}");
    assert_eq!(
        att["topContributions"][0]["contribution"],
        contribution_of[1].get(),
        "answer {answer:?}, attribution {att}"
    );
    let record_id: B256 = serde_json::from_value(att["recordId"].clone())?;
    let view: serde_json::Value = http
        .get(format!("{url}/api/attribution/{record_id}"))
        .send()
        .await?
        .json()
        .await?;
    let rec: AttributionRecord = serde_json::from_value(view["record"].clone())?;
    let names: Vec<&str> = rec.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["span", "influence"], "{:?}", rec.methods);
    assert!(rec.methods[1].mix_ppm > 0, "influence credited nobody");
    assert_eq!(rec.adapter_hash, Some(stored.adapter_hash));

    // Settle, verify, claim; every wei of the fee is accounted for.
    let batch = svc.flush().await?.ok_or(eyre!("nothing settled"))?;
    let rep = svc.verify(record_id).await?;
    assert!(rep.ok(), "{rep:?}");
    // A verifier elsewhere: the record store and batch files copied, Datanet data over the
    // Datanet HTTP API with signed reads (public Datanet: any account), same models store.
    let vdir = tmp.path().join("verifier");
    for sub in ["records", "batches"] {
        copy_dir(&tmp.path().join("attribution").join(sub), &vdir.join(sub))?;
    }
    let mut vcfg = AttributionConfig::new(&rpc, &devnet.deployments, &vdir, String::new());
    vcfg.tokenizer = Some(base_dir.join("tokenizer.json"));
    vcfg.models_store = Some(tmp.path().join("models").display().to_string());
    vcfg.datanet_api = Some((api.clone(), acct(7)));
    let verifier = AttributionService::open(vcfg).await?;
    let rep = verifier.verify(record_id).await?;
    assert!(rep.ok(), "{rep:?}");
    assert!(
        vdir.join("indexes").read_dir()?.next().is_some(),
        "index rebuilt from the API"
    );

    let params = ProtocolParams::new(dep(Contract::ProtocolParams)?, &pp);
    let treasury = params.treasury().call().await?;
    let mut accounts: Vec<Address> = vec![treasury, acct(1).address()];
    accounts.extend((2..5).map(|i| acct(i).address()));
    accounts.sort();
    accounts.dedup();
    let reader = AttributionSettlement::new(settlement_addr, &pp);
    let mut sum = U256::ZERO;
    for a in &accounts {
        sum += crate::attacks::owed(&reader, *a).await?;
    }
    assert_eq!(
        sum, rec.fee,
        "treasury + owner + contributors = fee (batch {batch})"
    );
    assert_eq!(
        reader.escrowOf(payer.address()).call().await?,
        deposit - rec.fee
    );
    // credits are pending until the batch's challenge window (10 s here) ends, then claimed
    let owed3 = crate::attacks::owed(&reader, acct(3).address()).await?;
    assert!(owed3 > U256::ZERO, "the asked contributor is credited");
    assert_eq!(
        crate::attacks::claim_when_final(&rpc, settlement_addr, &acct(3)).await?,
        owed3
    );
    assert!(
        crate::attacks::owed(&reader, acct(3).address()).await? == U256::ZERO,
        "the credited contributor claimed"
    );
    eprintln!("e2e took {:.1} s", started.elapsed().as_secs_f64());
    drop(server);
    devnet.shutdown().await;
    Ok(())
}
