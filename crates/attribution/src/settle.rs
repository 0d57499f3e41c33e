//! Batched settlement: every N records or T seconds, the pending records' Merkle root and
//! payments go to `AttributionSettlement.submitBatch`; the batch file keeps every proof and
//! the credits per account (computed by the contract's rule, for `GET /api/earnings`).

use crate::merkle;
use crate::service::{AttributionService, ServiceError, State, storage_err};
use alloy::providers::Provider;
use alloy_primitives::{Address, B256, U256};
use openledger_protocol::Confirm;
use openledger_protocol::bindings::{
    AttributionSettlement, DatanetRegistry, ModelRegistry, ProtocolParams,
};
use openledger_protocol::voucher::{Leaf, SignedVoucher};
use openledger_protocol::{ChainError, ModelId};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// A charged record waiting for settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRecord {
    /// Record id.
    pub id: B256,
    /// Model.
    pub model_id: ModelId,
    /// What the contract settles (payer, channel, fee, shares, …); its hash is the Merkle leaf.
    pub leaf: Leaf,
    /// The payer's voucher it is charged under.
    pub voucher: SignedVoucher,
}

/// One account's credit from a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditLine {
    /// Credited account.
    pub account: Address,
    /// `contribution`, `modelOwner` or `treasury`.
    pub role: String,
    /// Contribution id for contributor credits.
    pub contribution: Option<u64>,
    /// Amount in wei.
    pub amount: U256,
}

/// A settled batch, as stored in `batches/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchFile {
    /// On-chain batch id.
    pub batch_id: u64,
    /// Records root.
    pub root: B256,
    /// Transaction hash.
    pub tx: B256,
    /// Record ids in leaf order with the proofs of their leaves.
    pub records: Vec<(B256, Vec<B256>)>,
    /// The leaves, in order.
    #[serde(default)]
    pub leaves: Vec<B256>,
    /// End of the batch's challenge window (unix seconds): its credits are final from then on.
    #[serde(default)]
    pub final_at: u64,
    /// Credits by the contract's rule.
    pub credits: Vec<CreditLine>,
}

/// A batch whose transaction may be on its way: written before the transaction is sent, so a
/// restart finds out from the chain whether it landed (`inflight.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inflight {
    /// Root of the leaves (the contract refuses a root it settled already).
    pub root: B256,
    /// Record ids in leaf order.
    pub records: Vec<B256>,
    /// The transaction, once sent.
    pub tx: Option<B256>,
}

/// A point in a flush where a crash test stops the service (see
/// [`crate::AttributionConfig::pause_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPoint {
    /// The intent is on disk; nothing was sent.
    BeforeSend,
    /// The transaction was sent; its receipt is not read yet.
    AfterSend,
    /// The batch is mined; nothing of it is on disk but the intent.
    AfterMined,
}

impl std::str::FromStr for FlushPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "before-send" => Ok(Self::BeforeSend),
            "after-send" => Ok(Self::AfterSend),
            "after-mined" => Ok(Self::AfterMined),
            o => Err(format!(
                "unknown flush point '{o}' (before-send, after-send, after-mined)"
            )),
        }
    }
}

/// Where a record is in settlement, as `GET /api/attribution/{id}` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Settlement {
    /// Not charged (a free model): nothing to settle.
    Free,
    /// Charged, waiting for the next batch.
    Pending,
    /// In a batch whose transaction was sent and is not known to be mined yet.
    Submitting,
    /// In on-chain batch `batch_id`; its credits are pending until `final_at`, then claimable.
    #[serde(rename_all = "camelCase")]
    Settled {
        /// Batch id.
        batch_id: u64,
        /// End of the batch's challenge window (unix seconds).
        final_at: u64,
    },
    /// The contract refused to settle it (the reason is the contract's error); never charged.
    Dropped {
        /// Why.
        reason: String,
    },
}

pub(crate) fn load_state(dir: &Path, st: &mut State) -> Result<(), ServiceError> {
    if let Ok(b) = std::fs::read(dir.join("pending.json")) {
        st.pending = serde_json::from_slice(&b).map_err(storage_err)?;
    }
    if let Ok(b) = std::fs::read(dir.join("inflight.json")) {
        st.inflight = Some(serde_json::from_slice(&b).map_err(storage_err)?);
    }
    if let Ok(b) = std::fs::read(dir.join("dropped.json")) {
        st.dropped = serde_json::from_slice(&b).map_err(storage_err)?;
    }
    for e in std::fs::read_dir(dir.join("batches")).map_err(storage_err)? {
        let p = e.map_err(storage_err)?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let b: BatchFile = serde_json::from_slice(&std::fs::read(&p).map_err(storage_err)?)
                .map_err(storage_err)?;
            for (id, proof) in &b.records {
                st.settled.insert(*id, (b.batch_id, proof.clone()));
            }
            st.batches.insert(b.batch_id, b);
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ServiceError> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(storage_err)?;
        f.write_all(bytes).map_err(storage_err)?;
        f.sync_all().map_err(storage_err)?;
    }
    std::fs::rename(&tmp, path).map_err(storage_err)
}

pub(crate) fn save_pending(dir: &Path, pending: &[PendingRecord]) -> Result<(), ServiceError> {
    write_atomic(
        &dir.join("pending.json"),
        &serde_json::to_vec(pending).map_err(storage_err)?,
    )
}

fn save_inflight(dir: &Path, inflight: Option<&Inflight>) -> Result<(), ServiceError> {
    let path = dir.join("inflight.json");
    match inflight {
        Some(i) => write_atomic(&path, &serde_json::to_vec(i).map_err(storage_err)?),
        None => match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_err(e)),
        },
    }
}

/// `submitBatch` arguments for `batch`: the leaves' root, one voucher per channel (the highest
/// `cumulative` the batch holds for it) and the inferences naming them.
fn batch_args(
    batch: &[PendingRecord],
) -> (
    B256,
    Vec<AttributionSettlement::Voucher>,
    Vec<AttributionSettlement::Inference>,
) {
    let mut best: Vec<&SignedVoucher> = Vec::new();
    let mut index: std::collections::HashMap<B256, usize> = std::collections::HashMap::new();
    for p in batch {
        let key = p.voucher.channel_key();
        match index.get(&key) {
            Some(&i) if best[i].cumulative >= p.voucher.cumulative => {}
            Some(&i) => best[i] = &p.voucher,
            None => {
                index.insert(key, best.len());
                best.push(&p.voucher);
            }
        }
    }
    let infs = batch
        .iter()
        .map(|p| p.leaf.to_inference(index[&p.voucher.channel_key()]))
        .collect();
    let leaves: Vec<B256> = batch.iter().map(|p| p.leaf.hash()).collect();
    (
        merkle::root(&leaves),
        best.into_iter().map(SignedVoucher::to_binding).collect(),
        infs,
    )
}

/// What a dry run of one record's settlement said.
enum DryRun {
    /// It would settle.
    Ok,
    /// The chain settled it already, in this batch.
    Settled(u64),
    /// The contract refuses it for good (its error).
    Refused(String),
}

/// Most blocks one `eth_getLogs` asks for (under the node's 100,000-block limit).
const LOG_WINDOW: u64 = 50_000;

impl AttributionService {
    /// Settles up to `batch_records` pending records now; returns the batch id (`None` when
    /// nothing was settled).
    ///
    /// Nothing is charged twice and nothing is lost across a crash at any point: the batch's
    /// intent (root and records) is written before its transaction is sent, the contract refuses
    /// a root or record id it settled already, and a restart learns from the chain whether the
    /// batch landed ([`AttributionService::reconcile`]). A record that the contract refuses on
    /// its own (its model was deactivated, the payer's allowance was lowered) is dropped with the
    /// contract's reason, which `GET /api/attribution/{id}` shows; a transport error drops
    /// nothing (the batch is retried).
    pub async fn flush(&self) -> Result<Option<u64>, ServiceError> {
        let Some(attributor) = self.cfg.attributor.as_ref().map(|s| s.address()) else {
            return Err(ServiceError::Chain(ChainError::unexpected(
                "no attributor account configured",
            )));
        };
        self.reconcile().await?;
        let batch: Vec<PendingRecord> = {
            let st = self.state.lock();
            st.pending
                .iter()
                .take(self.cfg.batch_records.max(1))
                .cloned()
                .collect()
        };
        if batch.is_empty() {
            return Ok(None);
        }
        // Find the records that cannot settle on their own, so one never blocks the others.
        let mut good = Vec::new();
        for p in batch {
            match self.dry_run(attributor, &p).await? {
                DryRun::Ok => good.push(p),
                DryRun::Settled(b) => self.adopt(b, None).await?,
                DryRun::Refused(reason) => {
                    tracing::error!(target: "attribution::settle", record = %p.id, %reason, "the contract refuses this record; dropped");
                    let mut st = self.state.lock();
                    st.pending.retain(|x| x.id != p.id);
                    st.dropped.insert(p.id, reason);
                    write_atomic(
                        &self.cfg.dir.join("dropped.json"),
                        &serde_json::to_vec(&st.dropped).map_err(storage_err)?,
                    )?;
                    save_pending(&self.cfg.dir, &st.pending)?;
                }
            }
        }
        if good.is_empty() {
            return Ok(None);
        }
        let (root, vouchers, infs) = batch_args(&good);
        let mut intent = Inflight {
            root,
            records: good.iter().map(|p| p.id).collect(),
            tx: None,
        };
        {
            let mut st = self.state.lock();
            save_inflight(&self.cfg.dir, Some(&intent))?;
            st.inflight = Some(intent.clone());
        }
        self.pause(FlushPoint::BeforeSend).await;
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let call = settlement
            .submitBatch(root, vouchers, infs)
            .from(attributor);
        // The estimate holds for the block it ran on; a later block can cost a little more (the
        // stake lock moves forward, a new exposure period starts): a margin, never a revert.
        let gas = call.estimate_gas().await.map_err(ChainError::from)?;
        let sent = call
            .gas(gas.saturating_mul(6) / 5)
            .send()
            .await
            .map_err(ChainError::from)?;
        intent.tx = Some(*sent.tx_hash());
        {
            let mut st = self.state.lock();
            save_inflight(&self.cfg.dir, Some(&intent))?;
            st.inflight = Some(intent.clone());
        }
        self.pause(FlushPoint::AfterSend).await;
        let receipt = sent.confirm().await.map_err(ChainError::from)?;
        self.pause(FlushPoint::AfterMined).await;
        let Some(ev) = receipt.decoded_log::<AttributionSettlement::BatchSettled>() else {
            // Reverted (e.g. a resubmission that lost the race to the first one): the chain
            // knows what happened; the next flush reconciles.
            return Err(ServiceError::Chain(ChainError::unexpected(format!(
                "submitBatch {} reverted; reconciling with the chain on the next flush",
                receipt.transaction_hash
            ))));
        };
        let batch_id: u64 = ev.batchId.saturating_to();
        self.adopt(batch_id, Some(receipt.transaction_hash)).await?;
        Ok(Some(batch_id))
    }

    /// Settles the in-flight batch left by a crash: if the chain has its root, the batch is
    /// recorded as settled; if its transaction failed or never arrived, its records stay pending
    /// (resending is safe: the contract refuses a record twice).
    pub async fn reconcile(&self) -> Result<(), ServiceError> {
        let Some(intent) = self.state.lock().inflight.clone() else {
            return Ok(());
        };
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let b: u64 = settlement
            .batchOfRoot(intent.root)
            .call()
            .await
            .map_err(ChainError::from)?
            .saturating_to();
        if b != 0 {
            tracing::info!(target: "attribution::settle", batch = b, root = %intent.root, "in-flight batch found on chain");
            return self.adopt(b, intent.tx).await;
        }
        if let Some(tx) = intent.tx
            && self
                .provider
                .get_transaction_by_hash(tx)
                .await
                .map_err(ChainError::from)?
                .is_some()
            && self
                .provider
                .get_transaction_receipt(tx)
                .await
                .map_err(ChainError::from)?
                .is_none()
        {
            // Still in the node's pool: wait for it rather than send a second one.
            return Err(ServiceError::Chain(ChainError::unexpected(format!(
                "batch transaction {tx} is not mined yet; waiting"
            ))));
        }
        let mut st = self.state.lock();
        save_inflight(&self.cfg.dir, None)?;
        st.inflight = None;
        Ok(())
    }

    /// Asks the chain whether `p` would settle alone.
    async fn dry_run(
        &self,
        attributor: Address,
        p: &PendingRecord,
    ) -> Result<DryRun, ServiceError> {
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let (root, vouchers, infs) = batch_args(std::slice::from_ref(p));
        let e = match settlement
            .submitBatch(root, vouchers, infs)
            .from(attributor)
            .call()
            .await
        {
            Ok(_) => return Ok(DryRun::Ok),
            Err(e) => e,
        };
        use AttributionSettlement::AttributionSettlementErrors as E;
        match e.as_decoded_interface_error::<E>() {
            Some(E::RequestAlreadySettled(x)) => Ok(DryRun::Settled(x.batchId.saturating_to())),
            Some(E::RootAlreadySettled(x)) => Ok(DryRun::Settled(x.batchId.saturating_to())),
            // The attributor itself may not settle now: nothing about the record is wrong.
            Some(E::NotBonded(x)) => Err(ServiceError::Chain(ChainError::unexpected(format!(
                "{attributor} is not bonded (active stake {} wei, {} needed; `openledger attribution bond`); records stay pending",
                x.active, x.required
            )))),
            Some(E::ExposureExceeded(x)) => {
                Err(ServiceError::Chain(ChainError::unexpected(format!(
                    "{attributor} settled {} wei within two challenge windows, more than its stake allows ({} wei); records stay pending until the window moves or it bonds more",
                    x.exposure, x.cap
                ))))
            }
            Some(other) => Ok(DryRun::Refused(format!("{other:?}"))),
            None if e.as_revert_data().is_some() => Ok(DryRun::Refused(e.to_string())),
            None => Err(ChainError::from(e).into()),
        }
    }

    /// Records on-chain batch `batch_id` as settled: its records (from its `InferenceSettled`
    /// events), their proofs, its credits; removes them from the pending queue.
    async fn adopt(&self, batch_id: u64, tx: Option<B256>) -> Result<(), ServiceError> {
        if self.state.lock().batches.contains_key(&batch_id) {
            return self.clear_settled(batch_id);
        }
        let (settled, tx, block) = self.batch_records(batch_id, tx).await?;
        let ids: Vec<B256> = settled.iter().map(|x| x.0).collect();
        let leaves: Vec<B256> = settled.iter().map(|x| x.1).collect();
        let pending: Vec<PendingRecord> = {
            let st = self.state.lock();
            ids.iter()
                .filter_map(|id| st.pending.iter().find(|p| p.id == *id).cloned())
                .collect()
        };
        let attributor = self.cfg.attributor.as_ref().map(|s| s.address());
        let credits = match attributor {
            Some(_) if pending.len() == leaves.len() => self.credits(&pending, block).await?,
            // Not all of the batch's records are ours (another attributor's batch, or a
            // record already adopted): no credit lines we could vouch for.
            _ => Vec::new(),
        };
        let file = BatchFile {
            batch_id,
            root: merkle::root(&leaves),
            tx,
            records: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, merkle::proof(&leaves, i)))
                .collect(),
            leaves: leaves.clone(),
            final_at: AttributionSettlement::new(self.cfg.settlement, self.provider.clone())
                .getBatch(U256::from(batch_id))
                .call()
                .await
                .map_err(ChainError::from)?
                .finalAt,
            credits,
        };
        write_atomic(
            &self
                .cfg
                .dir
                .join("batches")
                .join(format!("{batch_id}.json")),
            &serde_json::to_vec_pretty(&file).map_err(storage_err)?,
        )?;
        {
            let mut st = self.state.lock();
            for (id, proof) in &file.records {
                st.settled.insert(*id, (batch_id, proof.clone()));
            }
            st.batches.insert(batch_id, file);
        }
        tracing::info!(target: "attribution::settle", batch = batch_id, records = leaves.len(), "batch settled");
        self.clear_settled(batch_id)
    }

    /// Drops batch `batch_id`'s records from the queue and clears a matching intent.
    fn clear_settled(&self, batch_id: u64) -> Result<(), ServiceError> {
        let mut st = self.state.lock();
        let Some(file) = st.batches.get(&batch_id) else {
            return Ok(());
        };
        let ids: std::collections::HashSet<B256> = file.records.iter().map(|r| r.0).collect();
        let root = file.root;
        st.pending.retain(|p| !ids.contains(&p.id));
        save_pending(&self.cfg.dir, &st.pending)?;
        if st.inflight.as_ref().is_some_and(|i| i.root == root) {
            save_inflight(&self.cfg.dir, None)?;
            st.inflight = None;
        }
        Ok(())
    }

    /// The (record id, leaf) pairs of on-chain batch `batch_id` in leaf order, its transaction
    /// and block, read from its `InferenceSettled` events (searched backwards from the head).
    async fn batch_records(
        &self,
        batch_id: u64,
        tx: Option<B256>,
    ) -> Result<(Vec<(B256, B256)>, B256, u64), ServiceError> {
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(ChainError::from)?;
        if let Some(tx) = tx
            && let Some(r) = self
                .provider
                .get_transaction_receipt(tx)
                .await
                .map_err(ChainError::from)?
            && let Some(block) = r.block_number
        {
            let logs = settlement
                .InferenceSettled_filter()
                .topic1(U256::from(batch_id))
                .from_block(block)
                .to_block(block)
                .query()
                .await
                .map_err(ChainError::from)?;
            if !logs.is_empty() {
                return Ok((
                    logs.iter().map(|(e, _)| (e.recordId, e.leaf)).collect(),
                    tx,
                    block,
                ));
            }
        }
        let mut to = head;
        loop {
            let from = to.saturating_sub(LOG_WINDOW - 1);
            let logs = settlement
                .InferenceSettled_filter()
                .topic1(U256::from(batch_id))
                .from_block(from)
                .to_block(to)
                .query()
                .await
                .map_err(ChainError::from)?;
            if let Some((_, first)) = logs.first() {
                let tx = first.transaction_hash.unwrap_or_default();
                let block = first.block_number.unwrap_or(to);
                return Ok((
                    logs.iter().map(|(e, _)| (e.recordId, e.leaf)).collect(),
                    tx,
                    block,
                ));
            }
            if from == 0 {
                return Err(ServiceError::Chain(ChainError::unexpected(format!(
                    "batch {batch_id} has no InferenceSettled events on this chain"
                ))));
            }
            to = from - 1;
        }
    }

    /// Waits forever at `point` when the crash test configured it (the test kills the process).
    async fn pause(&self, point: FlushPoint) {
        if self.cfg.pause_at == Some(point) {
            eprintln!("attribution: paused at {point:?}");
            std::future::pending::<()>().await;
        }
    }

    /// Where record `id` is in settlement (`None` when it is not a record of this service).
    pub fn settlement_state(&self, id: &B256, charged: bool) -> Settlement {
        let st = self.state.lock();
        if let Some((b, _)) = st.settled.get(id) {
            return Settlement::Settled {
                batch_id: *b,
                final_at: st.batches.get(b).map_or(0, |f| f.final_at),
            };
        }
        if let Some(r) = st.dropped.get(id) {
            return Settlement::Dropped { reason: r.clone() };
        }
        if st
            .inflight
            .as_ref()
            .is_some_and(|i| i.tx.is_some() && i.records.contains(id))
        {
            return Settlement::Submitting;
        }
        if st.pending.iter().any(|p| p.id == *id) || charged {
            return Settlement::Pending;
        }
        Settlement::Free
    }

    /// The credits the contract will make for `batch`, by its rule (see the contract header).
    async fn credits(
        &self,
        batch: &[PendingRecord],
        block: u64,
    ) -> Result<Vec<CreditLine>, ServiceError> {
        let at = alloy::eips::BlockId::number(block);
        let p = self.provider.clone();
        let settlement = AttributionSettlement::new(self.cfg.settlement, p.clone());
        let params = ProtocolParams::new(
            settlement
                .params()
                .block(at)
                .call()
                .await
                .map_err(ChainError::from)?,
            p.clone(),
        );
        let cfg = params
            .settlementConfig()
            .block(at)
            .call()
            .await
            .map_err(ChainError::from)?;
        let bps = openledger_protocol::fees::FeeSplitBps {
            treasury: cfg.treasuryBps,
            model_owner: cfg.modelOwnerBps,
        };
        let models = ModelRegistry::new(self.cfg.models, p.clone());
        let datanets = DatanetRegistry::new(self.cfg.datanets, p.clone());
        let mut out = Vec::new();
        for r in batch {
            let shares = &r.leaf.shares;
            let weights: Vec<U256> = shares.iter().map(|s| U256::from(s.1)).collect();
            let pay = openledger_protocol::fees::split(r.leaf.fee, bps, &weights);
            let owner = models
                .settlementInfo(U256::from(r.model_id))
                .block(at)
                .call()
                .await
                .map_err(ChainError::from)?
                .owner;
            if !pay.model_owner.is_zero() {
                out.push(CreditLine {
                    account: owner,
                    role: "modelOwner".into(),
                    contribution: None,
                    amount: pay.model_owner,
                });
            }
            if !shares.is_empty() && !pay.pool.is_zero() {
                let ids: Vec<U256> = shares.iter().map(|s| U256::from(s.0)).collect();
                let who = datanets
                    .contributorsOf(ids)
                    .block(at)
                    .call()
                    .await
                    .map_err(ChainError::from)?;
                for (((c, _), a), amount) in shares.iter().zip(who).zip(&pay.contributions) {
                    if !amount.is_zero() {
                        out.push(CreditLine {
                            account: a,
                            role: "contribution".into(),
                            contribution: Some(*c),
                            amount: *amount,
                        });
                    }
                }
            }
            out.push(CreditLine {
                account: cfg.treasury_,
                role: "treasury".into(),
                contribution: None,
                amount: pay.treasury,
            });
        }
        Ok(out)
    }

    /// Spawns the batcher: flushes when `batch_records` are pending or every `batch_interval`,
    /// until `stop` turns true (then one last flush).
    pub fn spawn_batcher(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(svc.cfg.batch_interval) => false,
                    _ = svc.notify.notified() => false,
                    r = stop.changed() => r.is_err() || *stop.borrow(),
                };
                loop {
                    match svc.flush().await {
                        Ok(Some(_)) if svc.state.lock().pending.len() >= svc.cfg.batch_records => {
                            continue;
                        }
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!(target: "attribution::settle", error = %e, "batch not settled; will retry");
                            break;
                        }
                    }
                }
                if stopping {
                    return;
                }
            }
        })
    }

    /// Earnings of `account`: what settled batches credited it, what it can claim now and what
    /// is still inside its batches' challenge window.
    pub async fn earnings(&self, account: Address) -> Result<serde_json::Value, ServiceError> {
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        let claimable = settlement
            .claimable(account)
            .call()
            .await
            .map_err(ChainError::from)?;
        let pending = settlement
            .pendingOf(account)
            .call()
            .await
            .map_err(ChainError::from)?;
        let credits = openledger_protocol::fees::Credits::at(
            claimable,
            pending.amount,
            pending.finalAt,
            openledger_datanet::auth::now(),
        );
        let (mut total, mut by_contribution, mut as_owner, mut as_treasury) = (
            U256::ZERO,
            std::collections::BTreeMap::<u64, U256>::new(),
            U256::ZERO,
            U256::ZERO,
        );
        for b in self.state.lock().batches.values() {
            for c in b.credits.iter().filter(|c| c.account == account) {
                total += c.amount;
                match (c.role.as_str(), c.contribution) {
                    ("contribution", Some(id)) => {
                        *by_contribution.entry(id).or_default() += c.amount
                    }
                    ("modelOwner", _) => as_owner += c.amount,
                    _ => as_treasury += c.amount,
                }
            }
        }
        Ok(serde_json::json!({
            "address": account,
            "earned": total.to_string(),
            "claimable": credits.claimable.to_string(),
            "pending": credits.pending.to_string(),
            "pendingUntil": credits.pending_until,
            "contributions": by_contribution.iter().map(|(id, a)| serde_json::json!({"contributionId": id, "earned": a.to_string()})).collect::<Vec<_>>(),
            "asModelOwner": as_owner.to_string(),
            "asTreasury": as_treasury.to_string(),
        }))
    }
}

/// What `verify` found, field by field.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Checks that matched.
    pub matched: Vec<String>,
    /// Checks that did not, with the difference.
    pub mismatched: Vec<String>,
}

impl VerifyReport {
    fn check(&mut self, what: &str, ok: bool, detail: String) {
        if ok {
            self.matched.push(what.to_string());
        } else {
            self.mismatched.push(format!("{what}: {detail}"));
        }
    }

    /// Whether everything matched.
    pub fn ok(&self) -> bool {
        self.mismatched.is_empty()
    }
}

impl AttributionService {
    /// Recomputes a stored record from its transcript and the Datanet versions the model was
    /// trained on (span method), and checks its inclusion in its on-chain batch root.
    pub async fn verify(&self, id: B256) -> Result<VerifyReport, ServiceError> {
        let mut rep = self.verify_content(id).await?;
        let settled = self.state.lock().settled.get(&id).cloned();
        let rec = crate::record::AttributionRecord::from_bytes(
            &self.records.get(&id).await.map_err(storage_err)?,
        )
        .map_err(storage_err)?;
        match (settled, rec.leaf()) {
            (Some((batch, proof)), Some(leaf)) => {
                let ok = AttributionSettlement::new(self.cfg.settlement, self.provider.clone())
                    .verifyRecord(U256::from(batch), leaf.hash(), proof)
                    .call()
                    .await
                    .map_err(ChainError::from)?;
                rep.check(
                    "on-chain inclusion",
                    ok,
                    format!("proof does not lead to batch {batch}'s root"),
                );
            }
            _ => rep.check(
                "on-chain inclusion",
                false,
                "the record is in no settled batch".into(),
            ),
        }
        Ok(rep)
    }

    /// Recomputes a stored record from its transcript and the artifacts, without looking for
    /// it on chain (the watchtower proves inclusion from the batch's events instead).
    pub async fn verify_content(&self, id: B256) -> Result<VerifyReport, ServiceError> {
        use crate::record::{AttributionRecord, tokens_hash};
        let mut rep = VerifyReport::default();
        let bytes = self.records.get(&id).await.map_err(storage_err)?;
        let rec = AttributionRecord::from_bytes(&bytes).map_err(storage_err)?;
        rep.check(
            "record id",
            rec.id() == id,
            format!("bytes hash to {}", rec.id()),
        );
        let tokens = |b: bytes::Bytes| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let transcript = |what: &'static str, h: B256| async move {
            self.records.get(&h).await.map_err(|e| {
                ServiceError::Storage(format!(
                    "the {what} tokens ({h}) are not in the record store ({e}); supply the transcript"
                ))
            })
        };
        // Only records of an engine that governance accepts may settle; this build recomputes
        // with its own engine, so a record of another one cannot match anyway.
        let params = AttributionSettlement::new(self.cfg.settlement, self.provider.clone())
            .params()
            .call()
            .await
            .map_err(ChainError::from)?;
        let allowed =
            openledger_protocol::bindings::ProtocolParams::new(params, self.provider.clone())
                .allowedEngine(alloy_primitives::keccak256(rec.engine.as_bytes()))
                .call()
                .await
                .map_err(ChainError::from)?;
        rep.check(
            "engine",
            allowed && rec.engine == crate::record::ENGINE,
            if allowed {
                format!(
                    "{} is not this verifier's engine ({})",
                    rec.engine,
                    crate::record::ENGINE
                )
            } else {
                format!(
                    "{} is not an engine ProtocolParams.allowedEngine accepts",
                    rec.engine
                )
            },
        );
        let prompt = tokens(transcript("prompt", rec.prompt_hash).await?);
        let answer = tokens(transcript("answer", rec.answer_hash).await?);
        rep.check(
            "prompt hash",
            tokens_hash(&prompt) == rec.prompt_hash,
            "transcript differs".into(),
        );
        // The record names the channel, not the voucher: the recomputation is given a voucher
        // of the same payer and takes the channel from the record below.
        let charge = rec.payer.zip(rec.model_id).map(|(payer, model_id)| {
            openledger_protocol::hooks::Charge {
                payer,
                model_id,
                price_per_1k_tokens: rec.price_per_1k_tokens,
                voucher: openledger_protocol::voucher::SignedVoucher {
                    payer,
                    attributor: Address::ZERO,
                    model_id: U256::ZERO,
                    max_price_per_1k: U256::ZERO,
                    channel: U256::ZERO,
                    cumulative: U256::ZERO,
                    expiry: U256::ZERO,
                    signature: Default::default(),
                },
            }
        });
        let inf = openledger_protocol::hooks::CompletedInference {
            request_id: rec.request_id.clone(),
            model: openledger_protocol::hooks::ServedModel {
                name: rec.model_name.clone(),
                model_id: rec.model_id,
                adapter_hash: rec.adapter_hash,
                base_model_hash: rec.base_model_hash,
                mix: vec![],
                unregistered: false,
            },
            prompt_text: String::new(),
            prompt_tokens: prompt,
            completion_text: String::new(),
            completion_tokens: answer,
            charge,
        };
        let mut again = self.compute(&inf).await?;
        again.channel = rec.channel;
        rep.check(
            "fee",
            again.fee == rec.fee,
            format!("recomputed {} vs {}", again.fee, rec.fee),
        );
        rep.check(
            "methods",
            again.methods == rec.methods,
            format!("recomputed {:?}", again.methods),
        );
        let diff: Vec<String> = again
            .contributions
            .iter()
            .filter(|c| !rec.contributions.contains(c))
            .map(|c| format!("recomputed {c:?}"))
            .chain(
                rec.contributions
                    .iter()
                    .filter(|c| !again.contributions.contains(c))
                    .map(|c| format!("recorded {c:?}")),
            )
            .collect();
        rep.check(
            "contributions and weights",
            diff.is_empty(),
            diff.join("; "),
        );
        rep.check(
            "whole record",
            again.id() == id,
            format!("recomputed id {}", again.id()),
        );
        Ok(rep)
    }
}
