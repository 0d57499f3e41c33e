//! The attribution service: payment checks before compute, a record per answer, batched
//! on-chain settlement. It implements [`InferenceHooks`] for the OpenLoRA server.
//!
//! ```text
//! <dir>/records/        content store: canonical records (id = keccak-256 = Merkle leaf)
//! <dir>/indexes/        span indexes, one file per (Datanet, version, tokenizer)
//! <dir>/batches/N.json  settled batch N: root, tx, every record's proof, credits per account
//! <dir>/pending.json    records charged but not yet settled (survives restarts)
//! <dir>/inflight.json   the batch being sent: written before its transaction, removed once
//!                       the batch is on disk (a restart reconciles it with the chain)
//! <dir>/dropped.json    records the contract refused for good, with its reason
//! <dir>/keys.json       API keys (keccak-256 → address) and used key-request nonces
//! ```

use crate::auth::{self, KeyStore, SignedVoucher};
use crate::corpus::{self, RowSource};
use crate::index::{IndexMeta, SpanIndex};
use crate::influence::{InfluenceParams, Score};
use crate::record::{self, AttributionRecord, Credit, ENGINE, MethodRecord, PPM, RECORD_VERSION};
use crate::settle::{BatchFile, FlushPoint, Inflight, PendingRecord};
use crate::span::{self, SpanParams};
use crate::trained::TrainedModel;
use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::Eip712Domain;
use axum::http::{HeaderMap, StatusCode};
use openledger_datanet::ChainView;
use openledger_datanet::ContentStore;
use openledger_protocol::bindings::{AttributionSettlement, DatanetRegistry, ModelRegistry};
use openledger_protocol::hooks::{
    BoxFuture, Charge, CompletedInference, HookError, InferenceHooks, PendingInference,
};
use openledger_protocol::{ApiError, ChainError, DatanetId, IdError, ModelId, Version};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;

/// Service configuration.
#[derive(Clone, Debug)]
pub struct AttributionConfig {
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// `AttributionSettlement`.
    pub settlement: Address,
    /// `ModelRegistry`.
    pub models: Address,
    /// `DatanetRegistry`.
    pub datanets: Address,
    /// The service's directory (devnet: `<datadir>/attribution`).
    pub dir: PathBuf,
    /// Content store holding Datanet manifests and contributions (devnet:
    /// `<datadir>/datanets/content`).
    pub datanet_store: String,
    /// The base model's `tokenizer.json` (no span attribution without it).
    pub tokenizer: Option<PathBuf>,
    /// The account that submits batches (must have `minAttributorStake` bonded in
    /// `AttributorStaking`).
    pub attributor: Option<PrivateKeySigner>,
    /// Submit a batch once this many records are pending.
    pub batch_records: usize,
    /// ... or this long after the last batch.
    pub batch_interval: Duration,
    /// Span method parameters.
    pub span: SpanParams,
    /// The models content store (trained adapters, training manifests, gradient sketches;
    /// devnet: `<datadir>/models`). Without it there is no influence method.
    pub models_store: Option<String>,
    /// The base model directory (for the answer's gradient). Defaults to the tokenizer's
    /// directory when that holds `config.json`.
    pub base_model: Option<PathBuf>,
    /// Influence method parameters and its share when both methods credit someone.
    pub influence: InfluenceConfig,
    /// Read Datanet data over the Datanet HTTP API (`{origin}/api/datanets`) with signed,
    /// licensed reads by this account, instead of from `datanet_store` (e.g. a verifier who
    /// holds a licence but not the service's disks).
    pub datanet_api: Option<(String, PrivateKeySigner)>,
    /// Crash tests only: a flush waits forever at this point (the test then kills the process).
    pub pause_at: Option<FlushPoint>,
}

/// How influence enters records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfluenceConfig {
    /// Scoring rule.
    pub score: Score,
    /// Only the most influential examples count (0 = all).
    pub top_k: usize,
    /// Influence's share of the final weights, in ppm, when span attribution also credits
    /// someone; a method that credits nobody gives its share to the other.
    pub mix_ppm: u32,
}

impl Default for InfluenceConfig {
    fn default() -> Self {
        Self {
            score: Score::Cosine,
            top_k: 0,
            mix_ppm: 300_000,
        }
    }
}

impl AttributionConfig {
    /// Defaults for a devnet-like deployment.
    pub fn new(
        rpc_url: impl Into<String>,
        deployments: &openledger_protocol::Deployments,
        dir: impl Into<PathBuf>,
        datanet_store: impl Into<String>,
    ) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            settlement: deployments.contracts.settlement,
            models: deployments.contracts.model_registry,
            datanets: deployments.contracts.datanet_registry,
            dir: dir.into(),
            datanet_store: datanet_store.into(),
            tokenizer: None,
            attributor: None,
            batch_records: 16,
            batch_interval: Duration::from_secs(10),
            span: SpanParams::default(),
            models_store: None,
            base_model: None,
            influence: InfluenceConfig::default(),
            datanet_api: None,
            pause_at: None,
        }
    }
}

/// Errors opening the service or serving its API.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Chain access failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// Disk or store access failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Datanet data could not be read or indexed.
    #[error(transparent)]
    Corpus(#[from] corpus::CorpusError),
}

pub(crate) fn storage_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Storage(e.to_string())
}

/// (Datanet, version) pairs a model was trained on, and its training manifest hash.
type TrainedOn = (Vec<(u64, u64)>, B256);
/// A Datanet version's span index, built once.
type IndexCell = Arc<tokio::sync::OnceCell<Arc<SpanIndex>>>;
/// A model's training artifacts, or `None` when it was not trained here.
type MaybeTrained = Option<Arc<TrainedModel>>;

/// Mutable state behind one lock (never held across an await).
#[derive(Default)]
pub(crate) struct State {
    /// Charged, not yet settled.
    pub pending: Vec<PendingRecord>,
    /// Authorised requests in flight: request id → its reservation.
    pub reserved: HashMap<String, Reservation>,
    /// Record id → (batch id, proof).
    pub settled: HashMap<B256, (u64, Vec<B256>)>,
    /// Settled batches.
    pub batches: BTreeMap<u64, BatchFile>,
    /// The batch being sent (or left by a crash), until it is reconciled.
    pub inflight: Option<Inflight>,
    /// Records the contract refused for good → its reason.
    pub dropped: BTreeMap<B256, String>,
}

/// An authorised request's worst-case fee, held until it completes or is abandoned.
#[derive(Clone, Debug)]
pub(crate) struct Reservation {
    pub payer: Address,
    pub model_id: ModelId,
    pub channel: B256,
    pub worst: U256,
    pub since: Instant,
}

/// Who asks, and the voucher that pays when one was presented.
struct Credential {
    who: Address,
    voucher: Option<SignedVoucher>,
}

/// The attribution service.
pub struct AttributionService {
    pub(crate) cfg: AttributionConfig,
    pub(crate) provider: DynProvider,
    pub(crate) chain_id: u64,
    pub(crate) domain: Eip712Domain,
    pub(crate) records: ContentStore,
    pub(crate) keys: KeyStore,
    tokenizer: Option<(Tokenizer, B256)>,
    rows: RowSource,
    /// One cell per Datanet version: the map's lock is held only to find the cell, so building
    /// one version's index never blocks requests that use another.
    indexes: Mutex<HashMap<(u64, u64), IndexCell>>,
    trained_on: Mutex<HashMap<ModelId, TrainedOn>>,
    models: Option<ContentStore>,
    base: tokio::sync::OnceCell<Option<Arc<openledger_model::Pretrained>>>,
    trained: tokio::sync::Mutex<HashMap<(B256, B256), MaybeTrained>>,
    pub(crate) state: Mutex<State>,
    pub(crate) notify: tokio::sync::Notify,
    adapter_owner: parking_lot::RwLock<Option<AdapterOwner>>,
    /// This service, for tasks it starts itself.
    me: std::sync::Weak<AttributionService>,
}

/// Who trained an adapter that is not published yet (the training service knows).
pub type AdapterOwner = Arc<dyn Fn(B256) -> Option<Address> + Send + Sync>;

/// How long an authorisation holds its worst-case fee without completing.
const RESERVATION_TTL: Duration = Duration::from_secs(600);
/// The longest a voucher built by `GET /api/vouchers/typed-data` may be valid (30 days).
pub const MAX_VOUCHER_VALIDITY_SECS: u64 = 30 * 86_400;
/// Most contributions credited by one record.
pub const MAX_CREDITS: usize = 64;

/// 503 `chain_unavailable`: the chain could not be read; nothing was computed.
fn unavailable(e: &dyn std::fmt::Display) -> HookError {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "chain_unavailable",
        e.to_string(),
    )
}

fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> HookError {
    HookError {
        status,
        kind: kind.into(),
        message: message.into(),
    }
}

impl AttributionService {
    /// Opens the directories, connects to the chain, loads settled batches and pending records.
    pub async fn open(cfg: AttributionConfig) -> Result<Arc<Self>, ServiceError> {
        for sub in ["records", "indexes", "batches"] {
            std::fs::create_dir_all(cfg.dir.join(sub)).map_err(storage_err)?;
        }
        let records = ContentStore::open(&cfg.dir.join("records").display().to_string())
            .map_err(storage_err)?;
        let rows = match &cfg.datanet_api {
            Some((api, signer)) => RowSource::Client(Box::new(
                openledger_datanet::DatanetClient::connect(&cfg.rpc_url, api, signer.clone())
                    .await
                    .map_err(|e| ServiceError::Storage(format!("Datanet API {api}: {e}")))?,
            )),
            None => RowSource::Store(ContentStore::open(&cfg.datanet_store).map_err(storage_err)?),
        };
        let url = cfg
            .rpc_url
            .parse()
            .map_err(|e| ChainError::bad_url(&cfg.rpc_url, e))?;
        let provider = match &cfg.attributor {
            // nonces read per transaction (a failed commit must not leave a nonce gap)
            Some(s) => ProviderBuilder::new()
                .disable_recommended_fillers()
                .with_gas_estimation()
                .with_simple_nonce_management()
                .fetch_chain_id()
                .wallet(EthereumWallet::from(s.clone()))
                .connect_http(url)
                .erased(),
            None => ProviderBuilder::new().connect_http(url).erased(),
        };
        let chain_id = provider.get_chain_id().await.map_err(ChainError::from)?;
        let tokenizer = match &cfg.tokenizer {
            Some(p) => Some((
                openledger_model::load_tokenizer(p).map_err(storage_err)?,
                corpus::tokenizer_hash(p)?,
            )),
            None => None,
        };
        let keys = KeyStore::open(cfg.dir.join("keys.json")).map_err(storage_err)?;
        let models = match &cfg.models_store {
            Some(l) => Some(ContentStore::open(l).map_err(storage_err)?),
            None => None,
        };
        let mut state = State::default();
        crate::settle::load_state(&cfg.dir, &mut state)?;
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            domain: auth::domain(chain_id, cfg.settlement),
            cfg,
            provider,
            chain_id,
            records,
            keys,
            tokenizer,
            rows,
            indexes: Default::default(),
            trained_on: Default::default(),
            models,
            base: Default::default(),
            trained: Default::default(),
            state: Mutex::new(state),
            notify: tokio::sync::Notify::new(),
            adapter_owner: Default::default(),
        }))
    }

    /// Lets the trainer of an unpublished adapter try it: `lookup` names who trained the
    /// adapter with that hash (the training jobs service). Without it, only adapters registered
    /// in `ModelRegistry` (or loaded by the operator) are served.
    pub fn set_adapter_owner_lookup(&self, lookup: AdapterOwner) {
        *self.adapter_owner.write() = Some(lookup);
    }

    /// The EIP-712 domain payers sign under.
    pub fn domain(&self) -> &Eip712Domain {
        &self.domain
    }

    /// The record store.
    pub fn records(&self) -> &ContentStore {
        &self.records
    }

    /// The span index of a Datanet version, built on first use (once, however many requests
    /// ask at the same time).
    pub async fn index(&self, datanet: u64, version: u64) -> Result<Arc<SpanIndex>, ServiceError> {
        let cell = self
            .indexes
            .lock()
            .entry((datanet, version))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.build_index(datanet, version))
            .await
            .cloned()
    }

    async fn build_index(
        &self,
        datanet: u64,
        version: u64,
    ) -> Result<Arc<SpanIndex>, ServiceError> {
        let (tok, tok_hash) = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| ServiceError::Storage("no base model tokenizer configured".into()))?;
        let path = corpus::index_path(&self.cfg.dir.join("indexes"), datanet, version, tok_hash);
        let ix = if path.exists() {
            SpanIndex::open(&path).map_err(corpus::CorpusError::from)?
        } else {
            let reg = DatanetRegistry::new(self.cfg.datanets, self.provider.clone());
            let v = reg
                .getVersion(U256::from(datanet), U256::from(version))
                .call()
                .await
                .map_err(ChainError::from)?;
            let chain = ChainView::new(self.provider.clone(), self.cfg.datanets);
            let corpus =
                corpus::load(&self.rows, &chain, datanet, version, v.manifestHash, tok).await?;
            let meta = IndexMeta {
                datanet,
                version,
                vocab: tok.get_vocab_size(true) as u32,
                tokenizer_hash: *tok_hash,
            };
            tokio::task::spawn_blocking(move || {
                corpus::build_index(&path, &meta, &corpus, |_, _| {})
            })
            .await
            .map_err(storage_err)??
        };
        Ok(Arc::new(ix))
    }

    /// Starts building the span indexes a model's records will need, off the request path
    /// (the answer is computed meanwhile).
    fn warm_indexes(&self, model_id: ModelId) {
        let Some(me) = self.me.upgrade().filter(|_| self.tokenizer.is_some()) else {
            return;
        };
        tokio::spawn(async move {
            let Ok((versions, _)) = me.trained_on(model_id).await else {
                return;
            };
            for (d, v) in versions {
                if let Err(e) = me.index(d, v).await {
                    tracing::warn!(target: "attribution", datanet = d, version = v, error = %e, "span index not built");
                }
            }
        });
    }

    /// The Datanet versions a registered model was trained on, and its training manifest hash.
    async fn trained_on(&self, model_id: ModelId) -> Result<TrainedOn, ServiceError> {
        if let Some(v) = self.trained_on.lock().get(&model_id) {
            return Ok(v.clone());
        }
        let m = ModelRegistry::new(self.cfg.models, self.provider.clone())
            .getModel(U256::from(model_id))
            .call()
            .await
            .map_err(ChainError::from)?;
        let v = m
            .trainedOn
            .iter()
            .map(|d| {
                let datanet = DatanetId::try_from(d.datanetId)?;
                let version = Version::try_from(d.version)?;
                Ok((datanet.get(), version.get()))
            })
            .collect::<Result<Vec<(u64, u64)>, IdError>>()
            .map_err(|e| ChainError::unexpected(format!("model {model_id}: {e}")))?;
        let v = (v, m.trainingManifestHash);
        self.trained_on.lock().insert(model_id, v.clone());
        Ok(v)
    }

    /// The base model (loaded once, f32 on the CPU); `None` when none is configured.
    async fn base_model(&self) -> Option<Arc<openledger_model::Pretrained>> {
        self.base
            .get_or_init(|| async {
                let dir = self.cfg.base_model.clone().or_else(|| {
                    let d = self.cfg.tokenizer.as_ref()?.parent()?.to_path_buf();
                    d.join("config.json").is_file().then_some(d)
                })?;
                let r = tokio::task::spawn_blocking(move || {
                    openledger_model::Pretrained::load(
                        &dir,
                        &openledger_model::Device::Cpu,
                        openledger_model::DType::F32,
                    )
                })
                .await;
                match r {
                    Ok(Ok(p)) => Some(Arc::new(p)),
                    Ok(Err(e)) => {
                        tracing::error!(target: "attribution", error = %e, "no base model: influence disabled");
                        None
                    }
                    Err(e) => {
                        tracing::error!(target: "attribution", error = %e, "no base model: influence disabled");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// The training artifacts of a served adapter, when it was trained here (cached, also
    /// when absent: a model not trained here has no influence method).
    pub async fn trained_model(
        &self,
        manifest_hash: B256,
        adapter_hash: B256,
        base_model_hash: B256,
    ) -> Option<(Arc<TrainedModel>, Arc<openledger_model::Pretrained>)> {
        let models = self.models.as_ref()?;
        let base = self.base_model().await?;
        let mut map = self.trained.lock().await;
        if let Some(t) = map.get(&(manifest_hash, adapter_hash)) {
            return t.clone().map(|t| (t, base));
        }
        let t = match TrainedModel::load(
            models,
            &self.rows,
            &ChainView::new(self.provider.clone(), self.cfg.datanets),
            &base,
            base_model_hash,
            manifest_hash,
            adapter_hash,
        )
        .await
        {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                tracing::info!(target: "attribution", manifest = %manifest_hash, error = %e, "no influence for this model");
                None
            }
        };
        map.insert((manifest_hash, adapter_hash), t.clone());
        t.map(|t| (t, base))
    }

    /// Influence scores of an answer, with the method's record parameters.
    async fn influence(
        &self,
        inf: &CompletedInference,
        manifest_hash: B256,
    ) -> Result<Option<(BTreeMap<span::ContributionKey, u128>, serde_json::Value)>, ServiceError>
    {
        let Some(adapter_hash) = inf.model.adapter_hash else {
            return Ok(None);
        };
        if inf.completion_tokens.is_empty() || inf.prompt_tokens.is_empty() {
            return Ok(None);
        }
        let Some((t, base)) = self
            .trained_model(manifest_hash, adapter_hash, inf.model.base_model_hash)
            .await
        else {
            return Ok(None);
        };
        let p = InfluenceParams {
            score: self.cfg.influence.score,
            dim: t.set.header.dim,
            top_k: self.cfg.influence.top_k,
        };
        let (prompt, answer) = (inf.prompt_tokens.clone(), inf.completion_tokens.clone());
        let t2 = t.clone();
        let p2 = p.clone();
        let scores = tokio::task::spawn_blocking(move || {
            let q = t2.query(&base, &prompt, &answer)?;
            t2.attribute(&q, &p2)
        })
        .await
        .map_err(storage_err)?
        .map_err(|e| ServiceError::Storage(e.to_string()))?;
        let params = serde_json::json!({
            "score": p.score,
            "dim": p.dim,
            "layers": t.set.header.layers.len(),
            "topK": p.top_k,
            "examples": t.set.len(),
            "trainingManifest": t.manifest_hash,
            "sketch": t.sketch_hash,
        });
        Ok(Some((scores, params)))
    }

    /// The account that redeems vouchers (zero when none is configured: nothing can be paid).
    pub fn attributor(&self) -> Address {
        self.cfg
            .attributor
            .as_ref()
            .map(|s| s.address())
            .unwrap_or_default()
    }

    /// What a client needs to sign vouchers for this server (`GET /api/attribution/terms`).
    pub async fn terms(&self) -> Result<serde_json::Value, ApiError> {
        let (grace, price_grace) = self.voucher_terms().await?;
        Ok(serde_json::json!({
            "attributor": self.attributor(),
            "chainId": self.chain_id,
            "settlement": self.cfg.settlement,
            "voucherGrace": grace,
            "priceGracePeriod": price_grace,
            "maxVoucherValidity": MAX_VOUCHER_VALIDITY_SECS,
        }))
    }

    async fn voucher_terms(&self) -> Result<(u64, u64), ApiError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "chain_unavailable",
                e.to_string(),
            )
        };
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let params = settlement
            .params()
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        let t = openledger_protocol::bindings::ProtocolParams::new(params, self.provider.clone())
            .batchTerms()
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok((t.voucherGrace, t.priceGracePeriod_))
    }

    /// A voucher of `payer` for this server, ready to sign (`GET /api/vouchers/typed-data`):
    /// `{typedData, voucher, headers}` (the headers lack only `x-ol-signature`).
    pub async fn typed_voucher(
        &self,
        payer: Address,
        model_id: u64,
        cumulative: Option<U256>,
        channel: Option<U256>,
        validity: Option<u64>,
        max_price: Option<U256>,
    ) -> Result<serde_json::Value, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
        let validity = validity.unwrap_or(86_400);
        if validity == 0 || validity > MAX_VOUCHER_VALIDITY_SECS {
            return Err(bad(format!(
                "validity must be 1 to {MAX_VOUCHER_VALIDITY_SECS} seconds"
            )));
        }
        let max_price = match (max_price, model_id) {
            (Some(p), _) => p,
            (None, 0) => {
                return Err(bad(
                    "a voucher for any model needs max_price (wei per 1,000 tokens)".into(),
                ));
            }
            (None, id) => {
                ModelRegistry::new(self.cfg.models, self.provider.clone())
                    .getModel(U256::from(id))
                    .call()
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "model_not_found",
                            format!("model {id}: {e}"),
                        )
                    })?
                    .pricePer1kTokens
            }
        };
        let msg = auth::InferenceVoucher {
            payer,
            attributor: self.attributor(),
            modelId: U256::from(model_id),
            maxPricePer1k: max_price,
            channel: channel.unwrap_or_else(|| U256::from(rand::random::<u64>())),
            cumulative: cumulative.unwrap_or(U256::from(openledger_protocol::OPEN)),
            expiry: U256::from(openledger_datanet::auth::now() + validity),
        };
        let unsigned = SignedVoucher::new(&msg, Default::default());
        let headers: serde_json::Map<String, serde_json::Value> = auth::voucher_headers(&unsigned)
            .into_iter()
            .filter(|(k, _)| *k != auth::headers::SIGNATURE)
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        Ok(serde_json::json!({
            "typedData": openledger_protocol::eip712::typed_data(&msg, self.domain.clone()),
            "voucher": unsigned,
            "headers": headers,
        }))
    }

    /// The attributor's signed receipt of what it will settle for a request: EIP-712
    /// `InferenceReceipt(requestKey, leaf)` (`None` without an attributor key or a leaf).
    pub fn receipt(&self, rec: &AttributionRecord) -> Option<serde_json::Value> {
        use alloy::signers::SignerSync;
        use alloy_sol_types::SolStruct;
        let leaf = rec.leaf()?;
        let signer = self.cfg.attributor.as_ref()?;
        let msg = openledger_protocol::eip712::InferenceReceipt {
            requestKey: leaf.request_key,
            leaf: leaf.hash(),
        };
        let sig = signer
            .sign_hash_sync(&msg.eip712_signing_hash(&self.domain))
            .ok()?;
        Some(serde_json::json!({
            "requestKey": msg.requestKey,
            "leaf": msg.leaf,
            "attributor": signer.address(),
            "signature": format!("0x{}", hex::encode(sig.as_bytes())),
        }))
    }

    /// Identifies who asks, and the voucher that pays, from a request's headers: an API key,
    /// voucher headers, or a session.
    fn credential(
        &self,
        headers: &HeaderMap,
        model: &str,
    ) -> Result<Option<Credential>, HookError> {
        let get = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(bearer) =
            get("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
            && bearer.starts_with("olk_")
        {
            return self
                .keys
                .lookup(&bearer)
                .map(|(who, voucher)| Some(Credential { who, voucher }))
                .ok_or_else(|| {
                    refuse(
                        StatusCode::UNAUTHORIZED,
                        "invalid_api_key",
                        "unknown API key",
                    )
                });
        }
        if get(auth::headers::SIGNATURE).is_none() {
            return Ok(None);
        }
        if let Some(v) = auth::parse_voucher(get, self.attributor())
            .map_err(|e| refuse(StatusCode::UNAUTHORIZED, "bad_voucher", e))?
        {
            v.verify(&self.domain).map_err(|e| {
                refuse(
                    StatusCode::UNAUTHORIZED,
                    "bad_voucher",
                    format!(
                        "{e} for attributor {} (GET /api/attribution/terms names it) on this chain and settlement contract",
                        self.attributor()
                    ),
                )
            })?;
            return Ok(Some(Credential {
                who: v.payer,
                voucher: Some(v),
            }));
        }
        let req = openledger_datanet::auth::parse(get)
            .map_err(|e| refuse(StatusCode::UNAUTHORIZED, "missing_signature", e.to_string()))?;
        auth::verify_session(&req, &self.domain, model, openledger_datanet::auth::now())
            .map(|who| Some(Credential { who, voucher: None }))
            .map_err(|e| refuse(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))
    }

    async fn authorize_inner(
        &self,
        headers: &HeaderMap,
        req: &PendingInference,
    ) -> Result<Option<Charge>, HookError> {
        if req.model.unregistered || req.model.mix.iter().any(|p| p.unregistered) {
            return self.authorize_unpublished(headers, req).map(|()| None);
        }
        for part in &req.model.mix {
            let Some(id) = part.model_id else { continue };
            let m = ModelRegistry::new(self.cfg.models, self.provider.clone())
                .getModel(U256::from(id))
                .call()
                .await
                .map_err(|e| unavailable(&e))?;
            if !m.pricePer1kTokens.is_zero() {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "paid_model_in_mix",
                    format!(
                        "model {id} costs {} wei per 1,000 tokens: a paid model cannot be mixed with others; ask it alone with \"model\": \"model-{id}\"",
                        m.pricePer1kTokens
                    ),
                ));
            }
        }
        let Some(model_id) = req.model.model_id else {
            return Ok(None);
        };
        let m = ModelRegistry::new(self.cfg.models, self.provider.clone())
            .getModel(U256::from(model_id))
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        if !m.active {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "model_inactive",
                format!("model {model_id} is deactivated"),
            ));
        }
        let price = m.pricePer1kTokens;
        if price.is_zero() {
            return Ok(None);
        }
        let how = "sign an InferenceVoucher (headers x-ol-signer, x-ol-channel, x-ol-cumulative, x-ol-max-price, x-ol-model-id, x-ol-expiry, x-ol-signature; GET /api/vouchers/typed-data builds one) or send an API key bound to one";
        let cred = self.credential(headers, &req.model.name)?.ok_or_else(|| {
            refuse(
                StatusCode::PAYMENT_REQUIRED,
                "payment_required",
                format!(
                    "model {} costs {price} wei per 1,000 tokens: {how}",
                    req.model.name
                ),
            )
        })?;
        let v = cred.voucher.ok_or_else(|| {
            refuse(
                StatusCode::PAYMENT_REQUIRED,
                "payment_required",
                format!(
                    "model {} costs {price} wei per 1,000 tokens and {} presented no voucher: {how}",
                    req.model.name, cred.who
                ),
            )
        })?;
        self.check_voucher(&v, model_id, price, req).await
    }

    /// Checks that voucher `v` can pay for `req` on model `model_id` at `price` (model, expiry,
    /// price, channel open, what is left of its cap, the payer's escrow) and reserves the
    /// request's worst-case fee.
    async fn check_voucher(
        &self,
        v: &SignedVoucher,
        model_id: ModelId,
        price: U256,
        req: &PendingInference,
    ) -> Result<Option<Charge>, HookError> {
        let payer = v.payer;
        if v.attributor != self.attributor() {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "bad_voucher",
                format!(
                    "the voucher is for attributor {}, this server's is {}",
                    v.attributor,
                    self.attributor()
                ),
            ));
        }
        if !v.model_id.is_zero() && v.model_id != U256::from(model_id) {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "voucher_model_mismatch",
                format!(
                    "the voucher pays for model {} only, not model {model_id}",
                    v.model_id
                ),
            ));
        }
        let now = openledger_datanet::auth::now();
        if v.expiry <= U256::from(now) {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "voucher_expired",
                format!(
                    "the voucher expired at {} (now {now}): sign a new one",
                    v.expiry
                ),
            ));
        }
        if price > v.max_price_per_1k {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "price_above_voucher",
                format!(
                    "model {model_id} costs {price} wei per 1,000 tokens, the voucher allows at most {}",
                    v.max_price_per_1k
                ),
            ));
        }
        let channel = v.channel_key();
        let worst = record::fee(
            price,
            (req.prompt_tokens + req.max_completion_tokens) as u64,
        );
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let closes = settlement
            .closesAt(channel)
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        if closes != 0 {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "voucher_closed",
                format!(
                    "{payer} closed voucher channel {} (it stops settling at {closes}): sign a voucher on a new channel",
                    v.channel
                ),
            ));
        }
        let spent = settlement
            .spent(channel)
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        let escrow = settlement
            .escrowOf(payer)
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        let allowance = settlement
            .allowance(payer, U256::from(model_id))
            .call()
            .await
            .map_err(|e| unavailable(&e))?;
        // Escrow announced for withdrawal leaves after the governed delay: it may still pay for
        // answers already given, never for new ones.
        let leaving = settlement
            .withdrawalRequest(payer)
            .call()
            .await
            .map_err(|e| unavailable(&e))?
            .amount;
        let escrow = escrow.saturating_sub(leaving);
        let mut st = self.state.lock();
        st.reserved
            .retain(|_, r| r.since.elapsed() < RESERVATION_TTL);
        let owed = |pred: &dyn Fn(Address, ModelId, B256) -> bool| -> U256 {
            st.pending
                .iter()
                .filter(|p| pred(p.leaf.payer, p.model_id, p.leaf.channel_key))
                .map(|p| p.leaf.fee)
                .chain(
                    st.reserved
                        .values()
                        .filter(|r| pred(r.payer, r.model_id, r.channel))
                        .map(|r| r.worst),
                )
                .fold(U256::ZERO, |a, b| a.saturating_add(b))
        };
        let owed_channel = owed(&|_, _, c| c == channel);
        let used = spent.saturating_add(owed_channel);
        if v.cumulative < used.saturating_add(worst) {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "voucher_exhausted",
                format!(
                    "the voucher on channel {} allows {} wei; {spent} wei settled and {owed_channel} owed by unsettled answers, and this request may cost up to {worst} wei: sign one with a higher x-ol-cumulative (at least {})",
                    v.channel,
                    v.cumulative,
                    used.saturating_add(worst)
                ),
            ));
        }
        let owed_all = owed(&|p, _, _| p == payer);
        if escrow < owed_all.saturating_add(worst) {
            return Err(refuse(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_escrow",
                format!(
                    "{payer} has {escrow} wei in AttributionSettlement escrow (not counting {leaving} wei announced for withdrawal), {owed_all} owed by unsettled answers, and this request may cost up to {worst} wei ({} tokens at {price} per 1,000): deposit more with AttributionSettlement.deposit()",
                    req.prompt_tokens + req.max_completion_tokens
                ),
            ));
        }
        if allowance != U256::MAX {
            let owed_model = owed(&|p, m, _| p == payer && m == model_id);
            if allowance < owed_model.saturating_add(worst) {
                return Err(refuse(
                    StatusCode::PAYMENT_REQUIRED,
                    "insufficient_allowance",
                    format!(
                        "{payer} allows {allowance} wei for model {model_id}, {owed_model} owed by unsettled answers, and this request may cost up to {worst} wei: raise it with AttributionSettlement.setAllowance({model_id}, amount)"
                    ),
                ));
            }
        }
        st.reserved.insert(
            req.request_id.clone(),
            Reservation {
                payer,
                model_id,
                channel,
                worst,
                since: Instant::now(),
            },
        );
        drop(st);
        self.warm_indexes(model_id);
        Ok(Some(Charge {
            payer,
            model_id,
            price_per_1k_tokens: price,
            voucher: v.clone(),
        }))
    }

    /// An adapter that is not in `ModelRegistry`: only the account that trained it may try it,
    /// alone and with a signed session; such answers are free and unrecorded.
    fn authorize_unpublished(
        &self,
        headers: &HeaderMap,
        req: &PendingInference,
    ) -> Result<(), HookError> {
        let not_registered = |what: String| {
            refuse(
                StatusCode::FORBIDDEN,
                "adapter_not_registered",
                format!(
                    "{what} is not registered in ModelRegistry: publish it to serve it; until then only the account that trained it may try it, alone, with a signed session"
                ),
            )
        };
        let Some(hash) = req.model.adapter_hash.filter(|_| req.model.mix.is_empty()) else {
            return Err(not_registered("an adapter of this mix".into()));
        };
        let owner = self
            .adapter_owner
            .read()
            .as_ref()
            .and_then(|lookup| lookup(hash));
        let Some(owner) = owner else {
            return Err(not_registered(format!("adapter {hash}")));
        };
        match self.credential(headers, &req.model.name)?.map(|c| c.who) {
            Some(signer) if signer == owner => Ok(()),
            Some(signer) => Err(refuse(
                StatusCode::FORBIDDEN,
                "adapter_not_registered",
                format!(
                    "adapter {hash} is not published, and {signer} did not train it: only its trainer may try it before it is published"
                ),
            )),
            None => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "missing_signature",
                format!(
                    "adapter {hash} is not published: its trainer tries it with a signed session (x-ol-signer, x-ol-nonce, x-ol-expiry, x-ol-signature)"
                ),
            )),
        }
    }

    /// Computes the record of a finished request (deterministic; stores nothing).
    pub async fn compute(
        &self,
        inf: &CompletedInference,
    ) -> Result<AttributionRecord, ServiceError> {
        let mut indexes = Vec::new();
        let mut influence = None;
        if let Some(id) = inf.model.model_id {
            let (versions, manifest) = self.trained_on(id).await?;
            if self.tokenizer.is_some() {
                for (d, v) in versions {
                    indexes.push(self.index(d, v).await?);
                }
            }
            influence = self.influence(inf, manifest).await?;
        }
        let refs: Vec<&SpanIndex> = indexes.iter().map(|a| a.as_ref()).collect();
        let att = span::attribute(&refs, &inf.completion_tokens, &self.cfg.span);
        let (mut scores, methods) = combine(
            att.scores,
            serde_json::to_value(&self.cfg.span).unwrap_or_default(),
            influence,
            self.cfg.influence.mix_ppm,
        );
        if scores.len() > MAX_CREDITS {
            let mut v: Vec<_> = scores.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(MAX_CREDITS);
            scores = v.into_iter().collect();
        }
        let contributions: Vec<Credit> = record::to_ppm(&scores)
            .into_iter()
            .map(|((datanet, version, contribution), w)| Credit {
                datanet,
                version,
                contribution,
                weight_ppm: w,
            })
            .collect();
        let tokens = (inf.prompt_tokens.len() + inf.completion_tokens.len()) as u64;
        let price = inf
            .charge
            .as_ref()
            .map(|c| c.price_per_1k_tokens)
            .unwrap_or_default();
        let rec = AttributionRecord {
            format: RECORD_VERSION,
            request_id: inf.request_id.clone(),
            chain_id: self.chain_id,
            payer: inf.charge.as_ref().map(|c| c.payer),
            channel: inf.charge.as_ref().map(|c| c.voucher.channel_key()),
            model_id: inf.model.model_id,
            model_name: inf.model.name.clone(),
            base_model_hash: inf.model.base_model_hash,
            adapter_hash: inf.model.adapter_hash,
            prompt_hash: record::tokens_hash(&inf.prompt_tokens),
            answer_hash: record::tokens_hash(&inf.completion_tokens),
            prompt_tokens: inf.prompt_tokens.len() as u64,
            completion_tokens: inf.completion_tokens.len() as u64,
            price_per_1k_tokens: price,
            fee: record::fee(price, tokens),
            methods,
            engine: ENGINE.into(),
            fallback: contributions.is_empty(),
            contributions,
        };
        Ok(rec)
    }

    /// Computes, stores and (when charged) queues the record of a finished request.
    pub async fn record(
        &self,
        inf: &CompletedInference,
    ) -> Result<AttributionRecord, ServiceError> {
        let rec = self.compute(inf).await?;
        // The transcript tokens are stored beside the record so a verifier with access to the
        // store can recompute it; the record itself carries only their hashes.
        for t in [&inf.prompt_tokens, &inf.completion_tokens] {
            self.records
                .put(record::tokens_bytes(t).into())
                .await
                .map_err(storage_err)?;
        }
        let id = self
            .records
            .put(rec.to_bytes().into())
            .await
            .map_err(storage_err)?;
        let mut st = self.state.lock();
        st.reserved.remove(&inf.request_id);
        if let (Some(c), Some(leaf)) = (&inf.charge, rec.leaf()) {
            st.pending.push(PendingRecord {
                id,
                model_id: c.model_id,
                leaf,
                voucher: c.voucher.clone(),
            });
            crate::settle::save_pending(&self.cfg.dir, &st.pending)?;
            if st.pending.len() >= self.cfg.batch_records {
                self.notify.notify_one();
            }
        }
        Ok(rec)
    }
}

/// The combination rule: each method's scores become ppm on their own, then the final score of
/// a contribution is `(PPM − mix)·span_ppm + mix·influence_ppm` (exact integers); a method that
/// credits nobody gets mix 0 and the other the whole. The record lists each method present
/// with the mix it actually got.
pub fn combine(
    span: BTreeMap<span::ContributionKey, u128>,
    span_params: serde_json::Value,
    influence: Option<(BTreeMap<span::ContributionKey, u128>, serde_json::Value)>,
    influence_mix: u32,
) -> (BTreeMap<span::ContributionKey, u128>, Vec<MethodRecord>) {
    let Some((inf, inf_params)) = influence else {
        return (
            span,
            vec![MethodRecord {
                name: "span".into(),
                mix_ppm: PPM,
                params: span_params,
            }],
        );
    };
    let mix = match (span.is_empty(), inf.is_empty()) {
        (_, true) => 0,
        (true, false) => PPM,
        (false, false) => influence_mix.min(PPM),
    };
    let mut out: BTreeMap<span::ContributionKey, u128> = BTreeMap::new();
    for (k, w) in record::to_ppm(&span) {
        *out.entry(k).or_default() += u128::from(w) * u128::from(PPM - mix);
    }
    for (k, w) in record::to_ppm(&inf) {
        *out.entry(k).or_default() += u128::from(w) * u128::from(mix);
    }
    out.retain(|_, w| *w > 0);
    let methods = vec![
        MethodRecord {
            name: "span".into(),
            mix_ppm: PPM - mix,
            params: span_params,
        },
        MethodRecord {
            name: "influence".into(),
            mix_ppm: mix,
            params: inf_params,
        },
    ];
    (out, methods)
}

impl InferenceHooks for AttributionService {
    fn authorize<'a>(
        &'a self,
        headers: &'a HeaderMap,
        request: &'a PendingInference,
    ) -> BoxFuture<'a, Result<Option<Charge>, HookError>> {
        Box::pin(self.authorize_inner(headers, request))
    }

    fn abandoned(&self, request_id: &str) {
        self.state.lock().reserved.remove(request_id);
    }

    fn completed(&self, inference: CompletedInference) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            if inference.model.unregistered {
                // a trainer trying an unpublished adapter: free and unrecorded
                return serde_json::Value::Null;
            }
            match self.record(&inference).await {
                Ok(r) => {
                    let mut summary = r.summary(5);
                    if let Some(receipt) = self.receipt(&r) {
                        summary["receipt"] = receipt;
                    }
                    summary
                }
                Err(e) => {
                    tracing::error!(target: "attribution", request = %inference.request_id, error = %e, "no record");
                    serde_json::json!({"error": e.to_string()})
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_splits_and_falls_back() {
        let span: BTreeMap<_, u128> = [((1, 0, 1), 3u128), ((1, 0, 2), 1)].into();
        let inf: BTreeMap<_, u128> = [((1, 0, 2), 5u128)].into();
        let j = serde_json::Value::Null;
        let (s, m) = combine(
            span.clone(),
            j.clone(),
            Some((inf.clone(), j.clone())),
            300_000,
        );
        // span 750k/250k ×0.7, influence 1M ×0.3
        assert_eq!(s[&(1, 0, 1)], 750_000 * 700_000);
        assert_eq!(s[&(1, 0, 2)], 250_000 * 700_000 + 1_000_000 * 300_000);
        assert_eq!((m[0].mix_ppm, m[1].mix_ppm), (700_000, 300_000));
        let (s, m) = combine(
            BTreeMap::new(),
            j.clone(),
            Some((inf.clone(), j.clone())),
            300_000,
        );
        assert_eq!((s.len(), m[1].mix_ppm), (1, PPM));
        let (s, m) = combine(
            span.clone(),
            j.clone(),
            Some((BTreeMap::new(), j.clone())),
            300_000,
        );
        assert_eq!((s.len(), m[0].mix_ppm, m[1].mix_ppm), (2, PPM, 0));
        let (s, m) = combine(span, j, None, 300_000);
        assert_eq!((s.len(), m.len()), (2, 1));
    }
}
