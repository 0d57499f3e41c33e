//! The watchtower (`openledger attribution watch`): follows every settled batch on chain and
//! re-verifies each of its records from public artifacts, so that a wrong payout is seen by
//! someone other than the attributor that made it (`docs/attribution-disputes.md` §9).
//!
//! For each `BatchSettled` it rebuilds the batch's Merkle root from the batch's
//! `InferenceSettled` record ids (in log order) and compares it with the root on chain; then for
//! each record it reads the canonical record from its own record store, or else from the
//! attributor's announced endpoint (`AttributorStaking.stakeOf(attributor).endpoint`, or an
//! override) at `GET {endpoint}/api/attribution/{id}`, checks that its bytes hash to the id, and
//! recomputes it with [`AttributionService::verify_content`]. A record whose transcript or
//! artifacts the watcher cannot get is reported `skipped` with the reason, never `ok`.
//!
//! The cursor (`<dir>/watch/cursor.json`) moves on only after a block range is processed, so a
//! restarted watcher re-checks what it had not finished. Challenging a mismatch on chain comes
//! with the disputes contract (§10 step 5); today a mismatch is logged and counted.

use crate::record::AttributionRecord;
use crate::service::{AttributionService, ServiceError};
use alloy_primitives::{Address, B256, U256};
use openledger_protocol::ChainError;
use openledger_protocol::bindings::{AttributionSettlement, AttributorStaking};
use openledger_protocol::follower::{DEFAULT_MAX_RANGE, EventFollower};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a record was not verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Neither the record store nor the attributor's endpoint gave the record.
    RecordUnavailable,
    /// The prompt or answer tokens are not in the watcher's record store.
    TranscriptUnavailable,
    /// A Datanet version, the tokenizer or a model artifact could not be read.
    ArtifactsUnavailable,
}

impl SkipReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::RecordUnavailable => "record_unavailable",
            SkipReason::TranscriptUnavailable => "transcript_unavailable",
            SkipReason::ArtifactsUnavailable => "artifacts_unavailable",
        }
    }
}

/// What the watcher found in one batch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BatchReport {
    /// Batch id.
    pub batch_id: u64,
    /// Who settled it.
    pub attributor: Address,
    /// Block of the settlement.
    pub block: u64,
    /// Whether the root rebuilt from the batch's record ids is the root on chain.
    pub root_ok: bool,
    /// Record ids, in leaf order.
    pub records: Vec<B256>,
    /// Records that recompute exactly.
    pub ok: Vec<B256>,
    /// Records that do not, with what differs.
    pub mismatched: Vec<(B256, Vec<String>)>,
    /// Records not verified, with why (and the error's text).
    pub skipped: Vec<(B256, SkipReason, String)>,
}

/// Counters for `/metrics` (Prometheus text format).
#[derive(Debug, Default)]
pub struct WatchMetrics {
    batches: AtomicU64,
    bad_roots: AtomicU64,
    ok: AtomicU64,
    mismatch: AtomicU64,
    skipped: [AtomicU64; 3],
    last_block: AtomicU64,
}

impl WatchMetrics {
    fn add(&self, r: &BatchReport) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        if !r.root_ok {
            self.bad_roots.fetch_add(1, Ordering::Relaxed);
        }
        self.ok.fetch_add(r.ok.len() as u64, Ordering::Relaxed);
        self.mismatch
            .fetch_add(r.mismatched.len() as u64, Ordering::Relaxed);
        for (_, why, _) in &r.skipped {
            self.skipped[*why as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        s += "# HELP openledger_watch_batches_total Settled batches checked.\n";
        s += "# TYPE openledger_watch_batches_total counter\n";
        s += &format!("openledger_watch_batches_total {}\n", g(&self.batches));
        s += "# HELP openledger_watch_bad_roots_total Batches whose root is not the root of their record ids.\n";
        s += "# TYPE openledger_watch_bad_roots_total counter\n";
        s += &format!("openledger_watch_bad_roots_total {}\n", g(&self.bad_roots));
        s += "# HELP openledger_watch_records_total Records checked, by result.\n";
        s += "# TYPE openledger_watch_records_total counter\n";
        s += &format!(
            "openledger_watch_records_total{{result=\"ok\"}} {}\n",
            g(&self.ok)
        );
        s += &format!(
            "openledger_watch_records_total{{result=\"mismatch\"}} {}\n",
            g(&self.mismatch)
        );
        let skipped: u64 = self.skipped.iter().map(g).sum();
        s += &format!("openledger_watch_records_total{{result=\"skipped\"}} {skipped}\n");
        s += "# HELP openledger_watch_skipped_total Records not verified, by reason.\n";
        s += "# TYPE openledger_watch_skipped_total counter\n";
        for why in [
            SkipReason::RecordUnavailable,
            SkipReason::TranscriptUnavailable,
            SkipReason::ArtifactsUnavailable,
        ] {
            s += &format!(
                "openledger_watch_skipped_total{{reason=\"{}\"}} {}\n",
                why.as_str(),
                g(&self.skipped[why as usize])
            );
        }
        s += "# HELP openledger_watch_last_block The last block processed.\n";
        s += "# TYPE openledger_watch_last_block gauge\n";
        s += &format!("openledger_watch_last_block {}\n", g(&self.last_block));
        s
    }
}

/// How a watcher runs.
#[derive(Clone, Debug, Default)]
pub struct WatchConfig {
    /// Where the cursor is kept (`<dir>/cursor.json`).
    pub dir: PathBuf,
    /// Read records from this origin instead of each attributor's announced endpoint.
    pub endpoint: Option<String>,
    /// First block to look at when there is no cursor yet.
    pub from_block: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    next_block: u64,
}

/// Follows settled batches and re-verifies their records.
pub struct Watcher {
    svc: Arc<AttributionService>,
    cfg: WatchConfig,
    events: EventFollower<AttributionSettlement::AttributionSettlementEvents>,
    settlement: AttributionSettlement::AttributionSettlementInstance<alloy::providers::DynProvider>,
    staking: AttributorStaking::AttributorStakingInstance<alloy::providers::DynProvider>,
    next_block: u64,
    endpoints: BTreeMap<Address, String>,
    /// Endpoints that failed during the current batch, with why.
    down: BTreeMap<String, String>,
    http: reqwest::Client,
    metrics: Arc<WatchMetrics>,
}

impl Watcher {
    /// A watcher verifying with `svc` (its record store, Datanet access, models store, base).
    pub async fn open(
        svc: Arc<AttributionService>,
        cfg: WatchConfig,
    ) -> Result<Self, ServiceError> {
        let provider = svc.provider.clone();
        let settlement = AttributionSettlement::new(svc.cfg.settlement, provider.clone());
        let staking_addr = settlement
            .staking()
            .call()
            .await
            .map_err(ChainError::from)?;
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| ServiceError::Storage(format!("{}: {e}", cfg.dir.display())))?;
        let next_block = match std::fs::read(cfg.dir.join("cursor.json")) {
            Ok(b) => {
                serde_json::from_slice::<Cursor>(&b)
                    .map_err(|e| {
                        ServiceError::Storage(format!(
                            "{}: not a watch cursor ({e})",
                            cfg.dir.join("cursor.json").display()
                        ))
                    })?
                    .next_block
            }
            Err(_) => cfg.from_block,
        };
        Ok(Watcher {
            events: EventFollower::new(provider.clone(), svc.cfg.settlement, DEFAULT_MAX_RANGE),
            staking: AttributorStaking::new(staking_addr, provider),
            settlement,
            svc,
            cfg,
            next_block,
            endpoints: BTreeMap::new(),
            down: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            metrics: Arc::new(WatchMetrics::default()),
        })
    }

    /// The counters (shared with a `/metrics` server).
    pub fn metrics(&self) -> Arc<WatchMetrics> {
        self.metrics.clone()
    }

    /// Processes every block up to the chain head; returns the batches found, in order.
    pub async fn step(&mut self) -> Result<Vec<BatchReport>, ServiceError> {
        use AttributionSettlement::AttributionSettlementEvents as E;
        let head = self.events.head().await?;
        let mut out = Vec::new();
        while let Some(range) = self.events.range(self.next_block, head).await? {
            let mut leaves: BTreeMap<u64, Vec<(B256, B256)>> = BTreeMap::new();
            for (ev, block) in &range.events {
                match ev {
                    E::InferenceSettled(x) => leaves
                        .entry(x.batchId.saturating_to())
                        .or_default()
                        .push((x.recordId, x.leaf)),
                    E::BatchSettled(x) => {
                        let id: u64 = x.batchId.saturating_to();
                        let records = leaves.remove(&id).unwrap_or_default();
                        let r = self
                            .check_batch(id, x.attributor, *block, x.recordsRoot, records)
                            .await?;
                        self.metrics.add(&r);
                        tracing::info!(
                            target: "attribution::watch",
                            batch = r.batch_id,
                            attributor = %r.attributor,
                            records = r.records.len(),
                            ok = r.ok.len(),
                            mismatched = r.mismatched.len(),
                            skipped = r.skipped.len(),
                            root_ok = r.root_ok,
                            "batch verified"
                        );
                        for (rec, diff) in &r.mismatched {
                            tracing::warn!(target: "attribution::watch", batch = r.batch_id, record = %rec, "MISMATCH: {}", diff.join("; "));
                        }
                        out.push(r);
                    }
                    _ => {}
                }
            }
            self.next_block = range.to + 1;
            self.metrics.last_block.store(range.to, Ordering::Relaxed);
            let cursor = serde_json::to_vec(&Cursor {
                next_block: self.next_block,
            })
            .unwrap_or_default();
            let path = self.cfg.dir.join("cursor.json");
            let tmp = self.cfg.dir.join("cursor.json.tmp");
            std::fs::write(&tmp, cursor)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| ServiceError::Storage(format!("{}: {e}", path.display())))?;
        }
        Ok(out)
    }

    async fn check_batch(
        &mut self,
        batch_id: u64,
        attributor: Address,
        block: u64,
        root: B256,
        settled: Vec<(B256, B256)>,
    ) -> Result<BatchReport, ServiceError> {
        // The root on chain was computed by the contract from these leaves; rebuilding it here
        // proves that the events name exactly the batch's leaves.
        let records: Vec<B256> = settled.iter().map(|x| x.0).collect();
        let leaves: Vec<B256> = settled.iter().map(|x| x.1).collect();
        let on_chain = self
            .settlement
            .getBatch(U256::from(batch_id))
            .call()
            .await
            .map_err(ChainError::from)?
            .recordsRoot;
        let root_ok =
            !leaves.is_empty() && crate::merkle::root(&leaves) == root && root == on_chain;
        self.down.clear();
        let mut r = BatchReport {
            batch_id,
            attributor,
            block,
            root_ok,
            records: records.clone(),
            ok: Vec::new(),
            mismatched: Vec::new(),
            skipped: Vec::new(),
        };
        for (id, leaf) in settled {
            let rec = match self.record(attributor, id).await {
                Ok(rec) => rec,
                Err(why) => {
                    r.skipped.push((id, SkipReason::RecordUnavailable, why));
                    continue;
                }
            };
            // What was charged must be what the record says (payer, channel, fee, tokens,
            // price, engine, transcript hashes, shares).
            let ours = rec.leaf().map(|l| l.hash());
            if ours != Some(leaf) {
                r.mismatched.push((
                    id,
                    vec![format!(
                        "settled leaf: the chain settled {leaf}, the record's leaf is {}",
                        ours.map_or("none (a free record)".to_string(), |l| l.to_string())
                    )],
                ));
                continue;
            }
            let store = self.svc.records();
            if store.get(&rec.prompt_hash).await.is_err()
                || store.get(&rec.answer_hash).await.is_err()
            {
                r.skipped.push((
                    id,
                    SkipReason::TranscriptUnavailable,
                    "the prompt or answer tokens are not in this watcher's record store".into(),
                ));
                continue;
            }
            match self.svc.verify_content(id).await {
                Ok(rep) if rep.ok() => r.ok.push(id),
                Ok(rep) => r.mismatched.push((id, rep.mismatched)),
                Err(ServiceError::Chain(e)) => return Err(ServiceError::Chain(e)),
                Err(e) => r
                    .skipped
                    .push((id, SkipReason::ArtifactsUnavailable, e.to_string())),
            }
        }
        Ok(r)
    }

    /// The canonical record `id`: from the record store, or fetched from the attributor's
    /// endpoint and stored once its bytes hash to `id`.
    async fn record(&mut self, attributor: Address, id: B256) -> Result<AttributionRecord, String> {
        let store = self.svc.records();
        if let Ok(b) = store.get(&id).await {
            return AttributionRecord::from_bytes(&b).map_err(|e| format!("stored record: {e}"));
        }
        let endpoint = match &self.cfg.endpoint {
            Some(e) => e.clone(),
            None => match self.endpoints.get(&attributor) {
                Some(e) => e.clone(),
                None => {
                    let e = self
                        .staking
                        .stakeOf(attributor)
                        .call()
                        .await
                        .map_err(|e| format!("reading the attributor's endpoint: {e}"))?
                        .endpoint;
                    self.endpoints.insert(attributor, e.clone());
                    e
                }
            },
        };
        if endpoint.is_empty() {
            return Err(format!(
                "not in the record store, and attributor {attributor} announces no endpoint"
            ));
        }
        if let Some(why) = self.down.get(&endpoint) {
            return Err(format!("{endpoint} failed earlier in this batch: {why}"));
        }
        let url = format!("{}/api/attribution/{id}", endpoint.trim_end_matches('/'));
        let v = match fetch_json(&self.http, &url).await {
            Ok(v) => v,
            Err(e) => {
                // A record the endpoint does not have is that record's problem; an endpoint
                // that does not answer is not asked again for the rest of the batch.
                if !e.contains("404") {
                    self.down.insert(endpoint, e.clone());
                }
                return Err(e);
            }
        };
        let rec: AttributionRecord = serde_json::from_value(v["record"].clone())
            .map_err(|e| format!("GET {url}: not a record ({e})"))?;
        if rec.id() != id {
            return Err(format!(
                "GET {url} answered a record whose bytes hash to {}, not {id}",
                rec.id()
            ));
        }
        store
            .put(rec.to_bytes().into())
            .await
            .map_err(|e| format!("storing the record: {e}"))?;
        Ok(rec)
    }
}

/// The largest record answer read from an endpoint: a record is a few KiB; an endpoint cannot
/// make the watcher hold more than this.
const MAX_RECORD_BYTES: usize = 4 << 20;

/// GETs `url` and parses its JSON body, reading at most [`MAX_RECORD_BYTES`].
async fn fetch_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "GET {url}: the answer is larger than {MAX_RECORD_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON ({e})"))
}
