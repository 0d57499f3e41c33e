//! Attacks on payment: each test is an exploit a hostile user tried, named after the rule that
//! stops it. A real devnet, the real OpenLoRA server with the attribution service as its hooks,
//! a paid model registered on chain (a random adapter on the `tiny` base: what it answers does
//! not matter here, only who pays for it), real HTTP.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use eyre::{Result, eyre};
use futures::StreamExt;
use openledger_attribution::settle::Settlement;
use openledger_attribution::{AttributionConfig, AttributionService, auth};
use openledger_datanet::{ContentStore, DatanetClient};
use openledger_devnet::{Devnet, DevnetConfig};
use openledger_model::{LoraAdapter, Proj};
use openledger_protocol::bindings::{AttributionSettlement, ModelRegistry};
use openledger_protocol::{Confirm, ModelId};
use openledger_serve::{InferenceHooks, ServeConfig, Server};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// OPEN wei per 1,000 tokens of the paid model.
const PRICE: u64 = 1_000_000_000_000_000;
/// What the payer escrows.
const DEPOSIT: u64 = 10_000_000_000_000_000;

/// A devnet whose challenge window is 10 s (the shortest the bounds allow), so that a test
/// sees credits become claimable.
pub(crate) fn short_window() -> DevnetConfig {
    let mut contracts = openledger_protocol::DeployConfig::dev();
    contracts.dispute.challenge_window = 10;
    DevnetConfig {
        contracts,
        ..DevnetConfig::default()
    }
}

/// What the settlement contract owes `who`: claimable now plus still pending.
pub(crate) async fn owed<P: Provider>(
    s: &AttributionSettlement::AttributionSettlementInstance<P>,
    who: Address,
) -> Result<U256> {
    Ok(s.claimable(who).call().await? + s.pendingOf(who).call().await?.amount)
}

/// Waits (up to a minute) until the challenge window of everything owed to `who` has ended by
/// the wall clock, then claims it as `signer` (the claim's block releases it); returns the
/// amount, after checking the balance moved by exactly it and nothing is owed any more.
pub(crate) async fn claim_when_final(
    rpc: &str,
    settlement: Address,
    signer: &PrivateKeySigner,
) -> Result<U256> {
    let p = provider(rpc, signer)?;
    let s = AttributionSettlement::new(settlement, &p);
    let who = signer.address();
    let due = owed(&s, who).await?;
    let until = s.pendingOf(who).call().await?.finalAt;
    let start = Instant::now();
    while openledger_datanet::auth::now() <= until {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(eyre!("the credits of {who} are pending until {until}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before = p.get_balance(who).await?;
    let r = s.claim().send().await?.confirm().await?;
    let gas = U256::from(r.gas_used) * U256::from(r.effective_gas_price);
    if p.get_balance(who).await? + gas != before + due {
        return Err(eyre!("claim of {who} did not pay {due}"));
    }
    if !owed(&s, who).await?.is_zero() {
        return Err(eyre!("{who} is still owed after claiming"));
    }
    Ok(due)
}

/// Headers of a voucher of `payer` for `svc`'s attributor: any model, any price, channel
/// `channel`, at most `cumulative` wei, valid ten minutes.
pub(crate) fn voucher_headers(
    svc: &AttributionService,
    payer: &PrivateKeySigner,
    channel: u64,
    cumulative: U256,
) -> Result<Vec<(&'static str, String)>> {
    let v = auth::sign_voucher(
        payer,
        svc.domain(),
        &auth::VoucherTerms {
            attributor: svc.attributor(),
            model_id: 0,
            max_price_per_1k: U256::MAX,
            channel: U256::from(channel),
            cumulative,
            validity_secs: 600,
        },
    )?;
    Ok(auth::voucher_headers(&v))
}

static BASE: OnceLock<PathBuf> = OnceLock::new();
static MAKING: Mutex<()> = Mutex::new(());

/// The `tiny` base model, made once per machine into the temp dir.
fn base_dir() -> Result<PathBuf> {
    if let Some(p) = BASE.get() {
        return Ok(p.clone());
    }
    let _g = MAKING.lock().map_err(|_| eyre!("lock poisoned"))?;
    if let Some(p) = BASE.get() {
        return Ok(p.clone());
    }
    let dir = std::env::temp_dir().join("openledger-attacks-base-tiny-v1");
    if !dir.join("DONE").exists() {
        let tmp = std::env::temp_dir().join(format!(
            "openledger-attacks-base-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let opts =
            openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 42);
        openledger_model::init::init(&tmp.join("model"), &opts, |_| {})?;
        std::fs::write(tmp.join("DONE"), b"")?;
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&tmp, &dir).is_err() && !dir.join("DONE").exists() {
            return Err(eyre!("could not place the base model at {}", dir.display()));
        }
    }
    let model = dir.join("model");
    let _ = BASE.set(model.clone());
    Ok(model)
}

/// A provider that signs as `s`. Nonces are read per transaction: alloy's default cache takes a
/// nonce even for a transaction whose gas estimate then fails (the refused withdrawal below),
/// and every later transaction would wait behind that gap for good.
pub(crate) fn provider(rpc: &str, s: &PrivateKeySigner) -> Result<DynProvider> {
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(s.clone()))
        .connect_http(rpc.parse()?)
        .erased())
}

pub(crate) async fn send<P: Provider, T: alloy::contract::CallDecoder + Send>(
    c: alloy::contract::CallBuilder<P, T>,
) -> Result<()> {
    let r = c.send().await?.confirm().await?;
    if !r.status() {
        return Err(eyre!("transaction reverted"));
    }
    Ok(())
}

/// A devnet with a public Datanet of three contributions and a paid model trained on it.
pub(crate) struct World {
    pub(crate) devnet: Devnet,
    pub(crate) rpc: String,
    tmp: tempfile::TempDir,
    base: PathBuf,
    models_loc: String,
    pub(crate) model_id: ModelId,
    adapter_hash: B256,
}

impl World {
    pub(crate) async fn start(escrow_withdrawal_delay: u64) -> Result<Self> {
        let base = tokio::task::spawn_blocking(base_dir).await??;
        let mut contracts = openledger_protocol::DeployConfig::dev();
        contracts.escrow_withdrawal_delay = escrow_withdrawal_delay;
        let devnet = Devnet::start(DevnetConfig {
            contracts,
            ..DevnetConfig::default()
        })
        .await?;
        let rpc = devnet.rpc_url();
        let api = format!(
            "{}/api/datanets",
            devnet.http_url().ok_or(eyre!("no http"))?
        );
        let acct = |i: usize| devnet.accounts[i].signer.clone();
        let owner = DatanetClient::connect(&rpc, &api, acct(1)).await?;
        let d = owner.create_datanet("notes", "", false, U256::ZERO).await?;
        for i in 0..3 {
            let c = DatanetClient::connect(&rpc, &api, acct(2 + i)).await?;
            let body = format!(
                "Note {i}: the keeper of gate {i} counts bells at dusk.\n\nShared line {i} for the village notes.\n"
            );
            let r = c
                .upload_bytes(d, &format!("n{i}.txt"), &[], body.into_bytes())
                .await?;
            let id = c.contribute(d, &r).await?;
            owner.approve(id).await?;
        }
        let (version, _, _) = owner.publish(d).await?;

        let tmp = tempfile::tempdir()?;
        let models_loc = tmp.path().join("models").display().to_string();
        let cfg = openledger_model::Config::from_file(&base.join("config.json"))?;
        let adapter = LoraAdapter::random(&cfg, 4, &Proj::ALL, 7, 0.3)?;
        let adapter_hash = ContentStore::open(&models_loc)?
            .put(adapter.to_blob()?.into())
            .await?;
        let base_hash = openledger_model::content_hash(&base)?.0;
        let models = ModelRegistry::new(
            devnet.deployments.contracts.model_registry,
            provider(&rpc, &acct(1))?,
        );
        send(models.registerModel(ModelRegistry::ModelSpec {
            baseModelId: "tiny".into(),
            baseModelHash: openledger_train::publish::base_hash_bytes(&base_hash)?,
            adapterHash: adapter_hash,
            trainingManifestHash: B256::repeat_byte(0x7a),
            trainedOn: vec![ModelRegistry::DatanetVersion {
                datanetId: U256::from(d),
                version: U256::from(version),
            }],
            pricePer1kTokens: U256::from(PRICE),
            metadataURI: String::new(),
        }))
        .await?;
        Ok(Self {
            rpc,
            tmp,
            base,
            models_loc,
            model_id: ModelId(1),
            adapter_hash,
            devnet,
        })
    }

    pub(crate) fn acct(&self, i: usize) -> PrivateKeySigner {
        self.devnet.accounts[i].signer.clone()
    }

    pub(crate) fn settlement_address(&self) -> Result<Address> {
        Ok(self.devnet.deployments.contracts.settlement)
    }

    fn attribution_config(&self, dir: &Path) -> AttributionConfig {
        let mut cfg = AttributionConfig::new(
            &self.rpc,
            &self.devnet.deployments,
            dir,
            self.devnet
                .datadir
                .join("datanets/content")
                .display()
                .to_string(),
        );
        cfg.tokenizer = Some(self.base.join("tokenizer.json"));
        cfg.attributor = Some(self.acct(0));
        cfg.batch_records = 100;
        cfg
    }

    /// The attribution service (records in `<tmp>/attribution`) behind a real OpenLoRA server.
    async fn serve(&self) -> Result<Served> {
        let svc =
            AttributionService::open(self.attribution_config(&self.tmp.path().join("attribution")))
                .await?;
        let mut scfg = ServeConfig::new(&self.base, self.tmp.path().join("serve-cache"));
        scfg.store = Some(self.models_loc.clone());
        scfg.rpc_url = Some(self.rpc.clone());
        scfg.registry = Some(self.devnet.deployments.contracts.model_registry);
        let hooks: Arc<dyn InferenceHooks> = svc.clone();
        let server = Server::start(scfg, hooks).await?;
        let app = server.router().merge(svc.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let served = Served {
            svc,
            _server: server,
            url,
            http: reqwest::Client::new(),
            task,
        };
        // the chain follower lists the model
        let start = Instant::now();
        loop {
            let models: Value = served
                .http
                .get(format!("{}/v1/models", served.url))
                .send()
                .await?
                .json()
                .await?;
            let listed = models["data"]
                .as_array()
                .is_some_and(|d| d.iter().any(|m| m["model_id"] == json!(self.model_id)));
            if listed {
                return Ok(served);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(eyre!("model {} never listed: {models}", self.model_id));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `payer` escrows [`DEPOSIT`] and lets the paid model spend all of it.
    pub(crate) async fn fund(&self, payer: &PrivateKeySigner) -> Result<()> {
        let s = AttributionSettlement::new(self.settlement_address()?, provider(&self.rpc, payer)?);
        send(s.deposit().value(U256::from(DEPOSIT))).await?;
        send(s.setAllowance(U256::from(self.model_id), U256::MAX)).await
    }

    async fn escrow_of(&self, who: Address) -> Result<U256> {
        let p = ProviderBuilder::new().connect_http(self.rpc.parse()?);
        Ok(AttributionSettlement::new(self.settlement_address()?, p)
            .escrowOf(who)
            .call()
            .await?)
    }
}

struct Served {
    svc: Arc<AttributionService>,
    _server: Server,
    url: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Served {
    /// POST /v1/chat/completions, with a voucher of `payer` (up to the whole deposit) when
    /// given; `model` names the model a session would be signed for (a voucher covers any).
    async fn chat(
        &self,
        body: Value,
        signer: Option<(&PrivateKeySigner, &str)>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body);
        if let Some((s, _model)) = signer {
            for (k, v) in voucher_headers(&self.svc, s, 1, U256::from(DEPOSIT))? {
                req = req.header(k, v);
            }
        }
        Ok(req.send().await?)
    }
}

fn question(model: &str, max_tokens: u64) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Who counts bells at dusk?"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    })
}

async fn error_code(r: reqwest::Response) -> Result<(u16, String)> {
    let status = r.status().as_u16();
    let v: Value = r.json().await?;
    Ok((
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_model_cannot_be_had_free_through_a_mix() -> Result<()> {
    let w = World::start(30).await?;
    let s = w.serve().await?;
    let payer = w.acct(6);
    w.fund(&payer).await?;
    let base_name = w
        .base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mix = |signed: bool| {
        let mut b = question(&base_name, 8);
        b["adapters"] = json!([{"id": format!("model-{}", w.model_id), "weight": 1.0}]);
        (b, signed)
    };
    for (body, signed) in [mix(false), mix(true)] {
        let signer = signed.then_some((&payer, base_name.as_str()));
        let r = s.chat(body, signer).await?;
        let (status, code) = error_code(r).await?;
        assert_eq!(
            (status, code.as_str()),
            (400, "paid_model_in_mix"),
            "a paid adapter in a mix must be refused (signed: {signed})"
        );
    }
    assert_eq!(w.escrow_of(payer.address()).await?, U256::from(DEPOSIT));
    // asked alone, the same model is paid for as usual
    let model = format!("model-{}", w.model_id);
    let r = s.chat(question(&model, 4), Some((&payer, &model))).await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closed_early_is_charged_for_the_tokens_produced() -> Result<()> {
    let w = World::start(30).await?;
    let s = w.serve().await?;
    let payer = w.acct(6);
    w.fund(&payer).await?;
    let model = format!("model-{}", w.model_id);
    let mut body = question(&model, 200);
    body["stream"] = json!(true);
    let r = s.chat(body, Some((&payer, &model))).await?;
    assert_eq!(r.status(), 200);
    // read until two content chunks arrived, then hang up
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\"content\"").count() < 3 {
        let chunk = stream
            .next()
            .await
            .ok_or(eyre!("stream ended early: {seen}"))??;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    // the record is written by the server after the client left
    let start = Instant::now();
    let batch = loop {
        if let Some(b) = s.svc.flush().await? {
            break b;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(eyre!(
                "nothing was charged for a stream closed after some tokens"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let paid = U256::from(DEPOSIT) - w.escrow_of(payer.address()).await?;
    assert!(paid > U256::ZERO, "batch {batch} charged nothing");
    // charged for the prompt and the tokens produced: at least the two it saw, less than all 200
    let per_token = U256::from(PRICE) / U256::from(1000u64);
    assert!(
        paid < per_token * U256::from(200u64),
        "charged {paid} wei: more than was produced"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpublished_adapter_is_served_to_its_trainer_only() -> Result<()> {
    let w = World::start(30).await?;
    let s = w.serve().await?;
    let cfg = openledger_model::Config::from_file(&w.base.join("config.json"))?;
    let adapter = LoraAdapter::random(&cfg, 4, &Proj::ALL, 99, 0.3)?;
    let hash = ContentStore::open(&w.models_loc)?
        .put(adapter.to_blob()?.into())
        .await?;
    let name = hash.to_string();
    // a stranger with the hash (e.g. copied from a jobs listing) gets nothing, signed or not
    let stranger = w.acct(7);
    for signer in [None, Some((&stranger, name.as_str()))] {
        let (status, code) = error_code(s.chat(question(&name, 4), signer).await?).await?;
        assert!(
            (status == 403 && code == "adapter_not_registered") || status == 401,
            "unregistered adapter served to a stranger: {status} {code}"
        );
    }
    // its trainer (as the jobs service tells) may try it, free and unrecorded
    let trainer = w.acct(8);
    let who = trainer.address();
    s.svc
        .set_adapter_owner_lookup(Arc::new(move |h| (h == hash).then_some(who)));
    let r = s
        .chat(question(&name, 4), Some((&trainer, name.as_str())))
        .await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    assert!(v["attribution"].is_null(), "a trial writes no record: {v}");
    let (status, code) = error_code(
        s.chat(question(&name, 4), Some((&stranger, name.as_str())))
            .await?,
    )
    .await?;
    assert_eq!((status, code.as_str()), (403, "adapter_not_registered"));
    // the registered model's hash is served (and paid) as its model
    let paid = w.adapter_hash.to_string();
    let (status, code) = error_code(s.chat(question(&paid, 4), None).await?).await?;
    assert_eq!((status, code.as_str()), (402, "payment_required"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_cannot_leave_before_the_answers_it_paid_for_are_settled() -> Result<()> {
    let w = World::start(4).await?;
    let s = w.serve().await?;
    let payer = w.acct(6);
    w.fund(&payer).await?;
    let model = format!("model-{}", w.model_id);
    let r = s.chat(question(&model, 8), Some((&payer, &model))).await?;
    assert_eq!(r.status(), 200);
    let settlement = AttributionSettlement::new(w.settlement_address()?, provider(&w.rpc, &payer)?);
    // the attack: take the whole escrow out right after the answer
    let grab = settlement.withdrawEscrow(U256::from(DEPOSIT)).send().await;
    let reverted = match grab {
        Err(_) => true,
        Ok(p) => !p.confirm().await?.status(),
    };
    assert!(
        reverted,
        "escrow left at once, before the answer was settled"
    );
    // announcing the withdrawal: the escrow no longer pays for new answers ...
    send(settlement.requestWithdrawal(U256::from(DEPOSIT))).await?;
    let (status, code) =
        error_code(s.chat(question(&model, 8), Some((&payer, &model))).await?).await?;
    assert_eq!((status, code.as_str()), (402, "insufficient_escrow"));
    // ... but still pays for the answer already given, settled within the delay
    let batch = s.svc.flush().await?.ok_or(eyre!("nothing to settle"))?;
    let fee = U256::from(DEPOSIT) - w.escrow_of(payer.address()).await?;
    assert!(fee > U256::ZERO, "batch {batch} charged nothing");
    // the delay passes (chain time: the devnet seals on demand, its clock may run ahead)
    let p = ProviderBuilder::new().connect_http(w.rpc.parse()?);
    p.raw_request::<_, Value>("evm_increaseTime".into(), [5u64])
        .await?;
    p.raw_request::<_, Value>("evm_mine".into(), ()).await?;
    let all = settlement.withdrawEscrow(U256::from(DEPOSIT)).call().await;
    assert!(all.is_err(), "more than the escrow left could be withdrawn");
    send(settlement.withdrawEscrow(U256::from(DEPOSIT) - fee)).await?;
    assert_eq!(w.escrow_of(payer.address()).await?, U256::ZERO);
    Ok(())
}

/// A TCP proxy to `target` that can be switched off (open connections cut, new ones refused)
/// and on again.
async fn switchable_proxy(
    target: std::net::SocketAddr,
) -> Result<(String, tokio::sync::watch::Sender<bool>)> {
    let (on, rx) = tokio::sync::watch::channel(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !*rx.borrow() {
                drop(inbound);
                continue;
            }
            let mut off = rx.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = off.wait_for(|on| !*on) => {}
                    }
                }
            });
        }
    });
    Ok((url, on))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charged_record_survives_a_chain_outage() -> Result<()> {
    let w = World::start(30).await?;
    let payer = w.acct(6);
    w.fund(&payer).await?;
    let (url, on) = switchable_proxy(w.devnet.rpc_addr).await?;
    let mut cfg = w.attribution_config(&w.tmp.path().join("outage"));
    cfg.rpc_url = url;
    let svc = AttributionService::open(cfg).await?;
    let ids = charge(&w, &svc, &payer, 1).await?;
    on.send_replace(false);
    assert!(svc.flush().await.is_err(), "a flush without a chain fails");
    assert_eq!(
        svc.settlement_state(&ids[0], true),
        Settlement::Pending,
        "a transient error must not drop a charged record (nor claim it was sent)"
    );
    on.send_replace(true);
    // The batcher flushes again every interval; the first flush after the outage may still meet
    // a pooled connection that the outage closed. Whatever a flush returns, the record stays
    // pending until a flush settles it, and it settles within the next few.
    let mut batch = None;
    for _ in 0..3 {
        match svc.flush().await {
            Ok(b) => {
                batch = b;
                break;
            }
            Err(_) => assert_eq!(
                svc.settlement_state(&ids[0], true),
                Settlement::Pending,
                "a failed flush after the outage dropped the record"
            ),
        }
    }
    let batch = batch.ok_or(eyre!("nothing settled after the chain came back"))?;
    assert!(
        matches!(svc.settlement_state(&ids[0], true), Settlement::Settled { batch_id, .. } if batch_id == batch),
        "{:?}",
        svc.settlement_state(&ids[0], true)
    );
    Ok(())
}

/// Charges `n` answers of the paid model to `payer` through the hooks (as the server calls
/// them); returns the record ids.
async fn charge(
    w: &World,
    svc: &AttributionService,
    payer: &PrivateKeySigner,
    n: usize,
) -> Result<Vec<B256>> {
    use openledger_serve::hooks::{CompletedInference, PendingInference, ServedModel};
    let model = format!("model-{}", w.model_id);
    let served = ServedModel {
        name: model.clone(),
        model_id: Some(w.model_id),
        adapter_hash: Some(w.adapter_hash),
        base_model_hash: openledger_train::publish::base_hash_bytes(
            &openledger_model::content_hash(&w.base)?.0,
        )?,
        mix: vec![],
        unregistered: false,
    };
    let mut ids = Vec::new();
    for i in 0..n {
        let mut headers = axum::http::HeaderMap::new();
        for (k, v) in voucher_headers(svc, payer, 1, U256::from(DEPOSIT))? {
            headers.insert(
                axum::http::HeaderName::from_static(k),
                axum::http::HeaderValue::from_str(&v)?,
            );
        }
        let request_id = format!("req-{i}-{}", rand::random::<u32>());
        let charge = svc
            .authorize(
                &headers,
                &PendingInference {
                    request_id: request_id.clone(),
                    model: served.clone(),
                    prompt_tokens: 5,
                    max_completion_tokens: 10,
                },
            )
            .await
            .map_err(|e| eyre!("{e}"))?;
        let rec = svc
            .record(&CompletedInference {
                request_id,
                model: served.clone(),
                prompt_text: String::new(),
                prompt_tokens: vec![3, 4, 5, 6, 7],
                completion_text: String::new(),
                completion_tokens: (0..(3 + i as u32)).collect(),
                charge,
            })
            .await?;
        ids.push(rec.id());
    }
    Ok(ids)
}

/// Environment of the crash child (see [`a_crash_at_any_point_of_a_flush_charges_once`]).
const CHILD_ENV: &str = "OPENLEDGER_ATTACKS_FLUSH_CHILD";

/// Not a test of its own: the process [`a_crash_at_any_point_of_a_flush_charges_once`] starts
/// and kills. It opens the service over the parent's directory and flushes, pausing at the
/// point the parent names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_crash_at_any_point_of_a_flush_charges_once in a child process"]
async fn flush_child() -> Result<()> {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let v: Value = serde_json::from_str(&spec)?;
    let dep: openledger_protocol::Deployments = serde_json::from_value(v["deployments"].clone())?;
    let mut cfg = AttributionConfig::new(
        v["rpc"].as_str().unwrap_or_default(),
        &dep,
        v["dir"].as_str().unwrap_or_default(),
        v["store"].as_str().unwrap_or_default(),
    );
    cfg.attributor = Some(v["attributor"].as_str().unwrap_or_default().parse()?);
    cfg.batch_records = 100;
    cfg.pause_at = Some(
        v["point"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e: String| eyre!(e))?,
    );
    let svc = AttributionService::open(cfg).await?;
    svc.flush().await?;
    Err(eyre!("the flush did not pause"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_point_of_a_flush_charges_once() -> Result<()> {
    use std::io::BufRead;
    let w = World::start(30).await?;
    let payer = w.acct(6);
    w.fund(&payer).await?;
    let settlement = AttributionSettlement::new(
        w.settlement_address()?,
        ProviderBuilder::new().connect_http(w.rpc.parse()?),
    );
    let mut expected_total = U256::ZERO;
    for point in ["before-send", "after-send", "after-mined"] {
        let dir = w.tmp.path().join(format!("crash-{point}"));
        let fees: Vec<U256>;
        let ids = {
            let svc = AttributionService::open(w.attribution_config(&dir)).await?;
            let ids = charge(&w, &svc, &payer, 3).await?;
            fees = svc_fees(&svc, &ids).await?;
            ids
        };
        let escrow_before = w.escrow_of(payer.address()).await?;
        let spec = json!({
            "rpc": w.rpc, "deployments": w.devnet.deployments, "dir": dir,
            "store": w.devnet.datadir.join("datanets/content"),
            "attributor": format!("{}", alloy_primitives::hex::encode_prefixed(w.acct(0).to_bytes())),
            "point": point,
        });
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "attacks::flush_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, spec.to_string())
            .env("RUST_BACKTRACE", "0")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let stderr = child.stderr.take().ok_or(eyre!("no stderr"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("paused at") => break,
                Ok(l) => log.push(l),
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    return Err(eyre!("child never paused at {point}: {log:?}"));
                }
                Err(_) => {}
            }
        }
        if point == "after-send" {
            // let the node mine what the child sent before the kill lands (or not): both are
            // cases the restart must handle; here the transaction is given time to land
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        child.kill()?; // SIGKILL
        child.wait()?;
        // restart: settle whatever is left; every record ends settled exactly once
        let svc = AttributionService::open(w.attribution_config(&dir)).await?;
        for _ in 0..20 {
            if ids
                .iter()
                .all(|id| matches!(svc.settlement_state(id, true), Settlement::Settled { .. }))
            {
                break;
            }
            let _ = svc.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let total: U256 = fees.iter().copied().sum();
        for id in &ids {
            assert!(
                matches!(svc.settlement_state(id, true), Settlement::Settled { .. }),
                "{point}: record {id} is {:?}",
                svc.settlement_state(id, true)
            );
            let v = svc
                .record_view(*id)
                .await
                .map_err(|e| eyre!("{e:?}"))?
                .ok_or(eyre!("no record {id}"))?;
            let request_id = v["record"]["requestId"].as_str().unwrap_or_default();
            let b: u64 = settlement
                .requestSettledIn(
                    w.acct(0).address(),
                    openledger_attribution::record::request_key(request_id),
                )
                .call()
                .await?
                .saturating_to();
            assert_ne!(b, 0, "{point}: record {id} not settled on chain");
        }
        assert_eq!(
            escrow_before - w.escrow_of(payer.address()).await?,
            total,
            "{point}: the payer is debited exactly once"
        );
        let e = svc.earnings(w.acct(1).address()).await?;
        assert!(
            e["asModelOwner"].as_str().is_some_and(|s| s != "0"),
            "{point}: the model owner's credit is on record: {e}"
        );
        expected_total += total;
    }
    assert_eq!(
        U256::from(DEPOSIT) - w.escrow_of(payer.address()).await?,
        expected_total
    );
    Ok(())
}

/// The fees of stored records.
async fn svc_fees(svc: &AttributionService, ids: &[B256]) -> Result<Vec<U256>> {
    let mut out = Vec::new();
    for id in ids {
        let v = svc
            .record_view(*id)
            .await
            .map_err(|e| eyre!("{e:?}"))?
            .ok_or(eyre!("no record {id}"))?;
        let rec: openledger_attribution::AttributionRecord =
            serde_json::from_value(v["record"].clone())?;
        out.push(rec.fee);
    }
    Ok(out)
}
