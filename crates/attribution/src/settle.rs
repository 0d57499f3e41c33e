//! Batched settlement: every N records or T seconds, the pending records' Merkle root and
//! payments go to `AttributionSettlement.submitBatch`; the batch file keeps every proof and
//! the credits per account (computed by the contract's rule, for `GET /api/earnings`).

use crate::merkle;
use crate::service::{AttributionService, ServiceError, State, chain_err, storage_err};
use alloy_primitives::{Address, B256, U256};
use openledger_contracts::bindings::{
    AttributionSettlement, DatanetRegistry, ModelRegistry, ProtocolParams,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// A charged record waiting for settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRecord {
    /// Record id (Merkle leaf).
    pub id: B256,
    /// Payer.
    pub payer: Address,
    /// Model.
    pub model_id: u64,
    /// Fee in wei.
    pub fee: U256,
    /// (contribution id, weight ppm).
    pub shares: Vec<(u64, u32)>,
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
    /// Records in leaf order with their proofs.
    pub records: Vec<(B256, Vec<B256>)>,
    /// Credits by the contract's rule.
    pub credits: Vec<CreditLine>,
}

pub(crate) fn load_state(dir: &Path, st: &mut State) -> Result<(), ServiceError> {
    if let Ok(b) = std::fs::read(dir.join("pending.json")) {
        st.pending = serde_json::from_slice(&b).map_err(storage_err)?;
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
    std::fs::write(&tmp, bytes).map_err(storage_err)?;
    std::fs::rename(&tmp, path).map_err(storage_err)
}

pub(crate) fn save_pending(dir: &Path, pending: &[PendingRecord]) -> Result<(), ServiceError> {
    write_atomic(
        &dir.join("pending.json"),
        &serde_json::to_vec(pending).map_err(storage_err)?,
    )
}

fn inference(p: &PendingRecord) -> AttributionSettlement::Inference {
    AttributionSettlement::Inference {
        payer: p.payer,
        modelId: U256::from(p.model_id),
        fee: p.fee,
        shares: p
            .shares
            .iter()
            .map(|(c, w)| AttributionSettlement::Share {
                contributionId: U256::from(*c),
                weight: U256::from(*w),
            })
            .collect(),
    }
}

impl AttributionService {
    /// Settles up to `batch_records` pending records now; returns the batch id (`None` when
    /// nothing was pending). Records whose settlement alone reverts (the payer withdrew its
    /// escrow, the model was deactivated) are dropped from the queue with an error log.
    pub async fn flush(&self) -> Result<Option<u64>, ServiceError> {
        let Some(attributor) = self.cfg.attributor.as_ref().map(|s| s.address()) else {
            return Err(ServiceError::Chain(
                "no attributor account configured".into(),
            ));
        };
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
        let settlement = AttributionSettlement::new(self.cfg.settlement, self.provider.clone());
        // Find the records that cannot settle on their own, so one never blocks the others.
        let mut good = Vec::new();
        for p in batch {
            match settlement
                .submitBatch(p.id, vec![inference(&p)])
                .from(attributor)
                .call()
                .await
            {
                Ok(_) => good.push(p),
                Err(e) => {
                    tracing::error!(target: "attribution::settle", record = %p.id, error = %e, "record cannot settle; dropped");
                    let mut st = self.state.lock();
                    st.pending.retain(|x| x.id != p.id);
                    save_pending(&self.cfg.dir, &st.pending)?;
                }
            }
        }
        if good.is_empty() {
            return Ok(None);
        }
        let leaves: Vec<B256> = good.iter().map(|p| p.id).collect();
        let root = merkle::root(&leaves);
        let credits = self.credits(attributor, &good).await?;
        let receipt = settlement
            .submitBatch(root, good.iter().map(inference).collect())
            .send()
            .await
            .map_err(chain_err)?
            .get_receipt()
            .await
            .map_err(chain_err)?;
        let ev = receipt
            .decoded_log::<AttributionSettlement::BatchSettled>()
            .ok_or_else(|| {
                ServiceError::Chain("submitBatch reverted (no BatchSettled event)".into())
            })?;
        let batch_id: u64 = ev.batchId.saturating_to();
        let file = BatchFile {
            batch_id,
            root,
            tx: receipt.transaction_hash,
            records: leaves
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, merkle::proof(&leaves, i)))
                .collect(),
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
        let mut st = self.state.lock();
        for (id, proof) in &file.records {
            st.settled.insert(*id, (batch_id, proof.clone()));
        }
        st.pending.retain(|p| !leaves.contains(&p.id));
        save_pending(&self.cfg.dir, &st.pending)?;
        st.batches.insert(batch_id, file);
        tracing::info!(target: "attribution::settle", batch = batch_id, records = leaves.len(), %root, "batch settled");
        Ok(Some(batch_id))
    }

    /// The credits the contract will make for `batch`, by its rule (see the contract header).
    async fn credits(
        &self,
        attributor: Address,
        batch: &[PendingRecord],
    ) -> Result<Vec<CreditLine>, ServiceError> {
        let p = self.provider.clone();
        let settlement = AttributionSettlement::new(self.cfg.settlement, p.clone());
        let params = ProtocolParams::new(
            settlement.params().call().await.map_err(chain_err)?,
            p.clone(),
        );
        let cfg = params
            .settlementConfig(attributor)
            .call()
            .await
            .map_err(chain_err)?;
        let (t_bps, m_bps) = (U256::from(cfg.treasuryBps), U256::from(cfg.modelOwnerBps));
        let models = ModelRegistry::new(self.cfg.models, p.clone());
        let datanets = DatanetRegistry::new(self.cfg.datanets, p.clone());
        let mut out = Vec::new();
        let bps = U256::from(10_000u64);
        for r in batch {
            let t = r.fee * t_bps / bps;
            let m = r.fee * m_bps / bps;
            let owner = models
                .settlementInfo(U256::from(r.model_id))
                .call()
                .await
                .map_err(chain_err)?
                .owner;
            if !m.is_zero() {
                out.push(CreditLine {
                    account: owner,
                    role: "modelOwner".into(),
                    contribution: None,
                    amount: m,
                });
            }
            let pool = r.fee - t - m;
            let mut rest = pool;
            if !r.shares.is_empty() && !pool.is_zero() {
                let ids: Vec<U256> = r.shares.iter().map(|s| U256::from(s.0)).collect();
                let who = datanets
                    .contributorsOf(ids)
                    .call()
                    .await
                    .map_err(chain_err)?;
                let sum: U256 = r.shares.iter().map(|s| U256::from(s.1)).sum();
                for ((c, w), a) in r.shares.iter().zip(who) {
                    let amount = pool * U256::from(*w) / sum;
                    if !amount.is_zero() {
                        rest -= amount;
                        out.push(CreditLine {
                            account: a,
                            role: "contribution".into(),
                            contribution: Some(*c),
                            amount,
                        });
                    }
                }
            }
            out.push(CreditLine {
                account: cfg.treasury_,
                role: "treasury".into(),
                contribution: None,
                amount: t + rest,
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

    /// Earnings of `account`: what settled batches credited it and what it can claim now.
    pub async fn earnings(&self, account: Address) -> Result<serde_json::Value, ServiceError> {
        let claimable = AttributionSettlement::new(self.cfg.settlement, self.provider.clone())
            .balanceOf(account)
            .call()
            .await
            .map_err(chain_err)?;
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
            "claimable": claimable.to_string(),
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
        let prompt = tokens(transcript("prompt", rec.prompt_hash).await?);
        let answer = tokens(transcript("answer", rec.answer_hash).await?);
        rep.check(
            "prompt hash",
            tokens_hash(&prompt) == rec.prompt_hash,
            "transcript differs".into(),
        );
        let charge =
            rec.payer
                .zip(rec.model_id)
                .map(|(payer, model_id)| openledger_serve::hooks::Charge {
                    payer,
                    model_id,
                    price_per_1k_tokens: rec.price_per_1k_tokens,
                });
        let inf = openledger_serve::hooks::CompletedInference {
            request_id: rec.request_id.clone(),
            model: openledger_serve::hooks::ServedModel {
                name: rec.model_name.clone(),
                model_id: rec.model_id,
                adapter_hash: rec.adapter_hash,
                base_model_hash: rec.base_model_hash,
                mix: vec![],
            },
            prompt_text: String::new(),
            prompt_tokens: prompt,
            completion_text: String::new(),
            completion_tokens: answer,
            charge,
        };
        let again = self.compute(&inf).await?;
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
        let settled = self.state.lock().settled.get(&id).cloned();
        match settled {
            Some((batch, proof)) => {
                let ok = AttributionSettlement::new(self.cfg.settlement, self.provider.clone())
                    .verifyRecord(U256::from(batch), id, proof)
                    .call()
                    .await
                    .map_err(chain_err)?;
                rep.check(
                    "on-chain inclusion",
                    ok,
                    format!("proof does not lead to batch {batch}'s root"),
                );
            }
            None => rep.check(
                "on-chain inclusion",
                false,
                "the record is in no settled batch".into(),
            ),
        }
        Ok(rep)
    }
}
