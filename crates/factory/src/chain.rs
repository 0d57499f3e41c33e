//! Server-side reads: the chain over JSON-RPC (alloy bindings) and the Datanet API over HTTP.
//! Everything here returns plain view structs the templates render.

use crate::config::FactoryConfig;
use crate::error::UiError;
use crate::explain;
use crate::view::{self, open};
use alloy::consensus::Transaction as _;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionResponse as _;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolEvent;
use openledger_datanet::{ContributionInfo, DatanetInfo, UploadInfo};
use openledger_protocol::bindings::{
    AttributionSettlement, DatanetRegistry, GOPEN, ModelRegistry, OpenLedgerGovernor,
    ProtocolParams,
};
use openledger_protocol::{ChainError, Contract};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Read access to the chain and the Datanet service.
#[derive(Clone)]
pub(crate) struct Chain {
    pub provider: DynProvider,
    pub cfg: Arc<FactoryConfig>,
    http: reqwest::Client,
}

/// One Datanet as the Datanet API's `GET /{id}` returns it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct DatanetDetail {
    pub datanet: DatanetInfo,
    pub contributions: Vec<ContributionWithValidation>,
}

/// A contribution and the service's validation report of its upload.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ContributionWithValidation {
    pub contribution: ContributionInfo,
    pub validation: Option<UploadInfo>,
}

/// Balances of one account.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Balances {
    pub open: String,
    pub gopen: String,
    pub votes: String,
    pub delegate: Option<String>,
    pub datanet_claimable: String,
    pub settlement_claimable: String,
    /// Inference credits still inside their batches' challenge window.
    pub settlement_pending: String,
    /// When the last of them becomes claimable (unix seconds; 0 when none).
    pub settlement_pending_until: u64,
    pub escrow: String,
    pub datanet_claimable_wei: String,
    pub settlement_claimable_wei: String,
}

/// A governance proposal.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProposalView {
    pub id: String,
    pub short_id: String,
    pub proposer: String,
    pub description: String,
    pub state: &'static str,
    pub for_votes: String,
    pub against_votes: String,
    pub abstain_votes: String,
    pub vote_start: u64,
    pub vote_end: u64,
    pub actions: Vec<String>,
}

/// The Governor's settings and the current fee split.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct GovernanceInfo {
    pub voting_delay: u64,
    pub voting_period: u64,
    pub timelock_delay: u64,
    pub quorum_percent: String,
    pub fee_split: [u16; 3],
    pub licence_owner_bps: u16,
    pub now: u64,
}

/// A registered model.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ModelView {
    pub id: u64,
    pub owner: String,
    pub active: bool,
    pub price: String,
    pub base_model_id: String,
    pub base_model_hash: String,
    pub adapter_hash: String,
    pub manifest_hash: String,
    pub metadata_uri: String,
    pub trained_on: Vec<String>,
}

/// OpenLedgerGovernor's ProposalState, in plain words.
pub(crate) fn proposal_state(s: u8) -> &'static str {
    match s {
        0 => "Pending",
        1 => "Active",
        2 => "Canceled",
        3 => "Defeated",
        4 => "Succeeded",
        5 => "Queued",
        6 => "Expired",
        7 => "Executed",
        _ => "Unknown",
    }
}

impl Chain {
    /// A reader of `cfg.rpc_url`; a malformed URL is logged and every read then fails with
    /// a clear "did not answer" error instead of the router failing to build.
    pub fn new(cfg: Arc<FactoryConfig>) -> Self {
        let url = cfg.rpc_url.parse().unwrap_or_else(|e| {
            tracing::error!(target: "factory", url = %cfg.rpc_url, error = %e, "bad rpc url");
            #[allow(clippy::expect_used)]
            "http://127.0.0.1:9/".parse().expect("constant URL parses")
        });
        let provider = ProviderBuilder::new().connect_http(url).erased();
        Self {
            provider,
            cfg,
            http: reqwest::Client::new(),
        }
    }

    pub fn addr(&self, c: Contract) -> Result<Address, UiError> {
        self.cfg
            .contract(c)
            .ok_or(UiError::MissingContract(c.name()))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, UiError> {
        let url = format!("{}{path}", self.cfg.datanets_url.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| UiError::upstream("the Datanet service did not answer", e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(UiError::NotFound(format!("nothing at {path}")));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(UiError::Upstream(format!(
                "the Datanet service answered {status}: {text}"
            )));
        }
        resp.json()
            .await
            .map_err(|e| UiError::upstream("the Datanet service sent unreadable data", e))
    }

    /// POSTs to the Datanet API and returns its JSON (used to prepare a version).
    pub async fn post_json(&self, path: &str) -> Result<serde_json::Value, UiError> {
        let url = format!("{}{path}", self.cfg.datanets_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .send()
            .await
            .map_err(|e| UiError::upstream("the Datanet service did not answer", e))?;
        let status = resp.status();
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| UiError::upstream("the Datanet service sent unreadable data", e))?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("unknown error");
            return Err(match v["error"]["type"].as_str() {
                Some("nothing_to_publish") => UiError::Invalid(
                    "There is nothing new to publish: approve at least one contribution first."
                        .into(),
                ),
                Some("datanet_not_found") => UiError::NotFound(msg.to_string()),
                _ => UiError::Upstream(format!("the Datanet service refused: {msg}")),
            });
        }
        Ok(v)
    }

    pub async fn datanets(&self) -> Result<Vec<DatanetInfo>, UiError> {
        self.get_json("/list").await
    }

    pub async fn datanet(&self, id: u64) -> Result<DatanetDetail, UiError> {
        self.get_json(&format!("/{id}")).await
    }

    pub async fn now(&self) -> Result<u64, UiError> {
        let b = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(ChainError::from)?
            .ok_or_else(|| UiError::Upstream("the chain has no latest block".into()))?;
        Ok(b.header.timestamp)
    }

    pub async fn balances(&self, a: Address) -> Result<Balances, UiError> {
        let p = &self.provider;
        let open_bal = p.get_balance(a).await.map_err(ChainError::from)?;
        let mut b = Balances {
            open: open(open_bal),
            ..Default::default()
        };
        if let Some(g) = self.cfg.contract(Contract::Gopen) {
            let g = GOPEN::new(g, p.clone());
            b.gopen = open(g.balanceOf(a).call().await.map_err(ChainError::from)?);
            b.votes = open(g.getVotes(a).call().await.map_err(ChainError::from)?);
            let d = g.delegates(a).call().await.map_err(ChainError::from)?;
            b.delegate = (d != Address::ZERO).then(|| d.to_checksum(None));
        }
        if let Some(r) = self.cfg.contract(Contract::DatanetRegistry) {
            let r = DatanetRegistry::new(r, p.clone());
            let v = r.balanceOf(a).call().await.map_err(ChainError::from)?;
            b.datanet_claimable = open(v);
            b.datanet_claimable_wei = v.to_string();
        }
        if let Some(s) = self.cfg.contract(Contract::AttributionSettlement) {
            let s = AttributionSettlement::new(s, p.clone());
            let v = s.claimable(a).call().await.map_err(ChainError::from)?;
            let p = s.pendingOf(a).call().await.map_err(ChainError::from)?;
            let c = openledger_protocol::fees::Credits::at(
                v,
                p.amount,
                p.finalAt,
                openledger_datanet::auth::now(),
            );
            b.settlement_claimable = open(c.claimable);
            b.settlement_claimable_wei = c.claimable.to_string();
            b.settlement_pending = open(c.pending);
            b.settlement_pending_until = c.pending_until;
            b.escrow = open(s.escrowOf(a).call().await.map_err(ChainError::from)?);
        }
        Ok(b)
    }

    /// Licence earnings a contribution can collect now.
    pub async fn pending_reward(&self, contribution: u64) -> Result<U256, UiError> {
        let r = DatanetRegistry::new(self.addr(Contract::DatanetRegistry)?, self.provider.clone());
        Ok(r.pendingReward(U256::from(contribution))
            .call()
            .await
            .map_err(ChainError::from)?)
    }

    pub async fn governance(&self) -> Result<GovernanceInfo, UiError> {
        let gov = OpenLedgerGovernor::new(self.addr(Contract::Governor)?, self.provider.clone());
        let params =
            ProtocolParams::new(self.addr(Contract::ProtocolParams)?, self.provider.clone());
        let tl = openledger_protocol::bindings::OpenLedgerTimelock::new(
            self.addr(Contract::Timelock)?,
            self.provider.clone(),
        );
        let split = params.feeSplit().call().await.map_err(ChainError::from)?;
        Ok(GovernanceInfo {
            voting_delay: gov
                .votingDelay()
                .call()
                .await
                .map_err(ChainError::from)?
                .to(),
            voting_period: gov
                .votingPeriod()
                .call()
                .await
                .map_err(ChainError::from)?
                .to(),
            timelock_delay: tl
                .getMinDelay()
                .call()
                .await
                .map_err(ChainError::from)?
                .to(),
            quorum_percent: gov
                .quorumNumerator_1()
                .call()
                .await
                .map_err(ChainError::from)?
                .to_string(),
            fee_split: [
                split.treasuryBps,
                split.modelOwnerBps,
                split.contributorsBps,
            ],
            licence_owner_bps: params
                .licenceOwnerBps()
                .call()
                .await
                .map_err(ChainError::from)?,
            now: self.now().await?,
        })
    }

    pub async fn proposals(&self) -> Result<Vec<ProposalView>, UiError> {
        let addr = self.addr(Contract::Governor)?;
        let gov = OpenLedgerGovernor::new(addr, self.provider.clone());
        let filter = Filter::new()
            .address(addr)
            .event_signature(OpenLedgerGovernor::ProposalCreated::SIGNATURE_HASH)
            .from_block(0);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(ChainError::from)?;
        let mut out = Vec::new();
        for log in logs.iter().rev() {
            let Ok(ev) = log.log_decode::<OpenLedgerGovernor::ProposalCreated>() else {
                continue;
            };
            let ev = ev.inner.data;
            let id = ev.proposalId;
            let state: u8 = gov.state(id).call().await.map_err(ChainError::from)?;
            let votes = gov
                .proposalVotes(id)
                .call()
                .await
                .map_err(ChainError::from)?;
            let actions = ev
                .targets
                .iter()
                .zip(ev.calldatas.iter())
                .map(|(t, d)| explain::describe_call(&self.cfg, *t, d))
                .collect();
            let id_s = id.to_string();
            out.push(ProposalView {
                short_id: format!(
                    "{}…{}",
                    &id_s[..6.min(id_s.len())],
                    &id_s[id_s.len().saturating_sub(4)..]
                ),
                id: id_s,
                proposer: ev.proposer.to_checksum(None),
                description: ev.description,
                state: proposal_state(state),
                for_votes: open(votes.forVotes),
                against_votes: open(votes.againstVotes),
                abstain_votes: open(votes.abstainVotes),
                vote_start: ev.voteStart.to(),
                vote_end: ev.voteEnd.to(),
                actions,
            });
        }
        Ok(out)
    }

    pub async fn models(&self) -> Result<Vec<ModelView>, UiError> {
        let Some(addr) = self.cfg.contract(Contract::ModelRegistry) else {
            return Ok(Vec::new());
        };
        let reg = ModelRegistry::new(addr, self.provider.clone());
        let n: u64 = reg
            .modelCount()
            .call()
            .await
            .map_err(ChainError::from)?
            .to();
        let mut out = Vec::new();
        for id in (1..=n).rev() {
            let m = reg
                .getModel(U256::from(id))
                .call()
                .await
                .map_err(ChainError::from)?;
            out.push(ModelView {
                id,
                owner: m.owner.to_checksum(None),
                active: m.active,
                price: open(m.pricePer1kTokens),
                base_model_id: m.baseModelId,
                base_model_hash: m.baseModelHash.to_string(),
                adapter_hash: m.adapterHash.to_string(),
                manifest_hash: m.trainingManifestHash.to_string(),
                metadata_uri: m.metadataURI,
                trained_on: m
                    .trainedOn
                    .iter()
                    .map(|d| format!("Datanet {} v{}", d.datanetId, d.version))
                    .collect(),
            });
        }
        Ok(out)
    }

    pub async fn latest_blocks(&self, n: u64) -> Result<Vec<view::BlockView>, UiError> {
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(ChainError::from)?;
        let mut out = Vec::new();
        for num in (head.saturating_sub(n - 1)..=head).rev() {
            out.push(self.block(num).await?);
        }
        Ok(out)
    }

    pub async fn block(&self, num: u64) -> Result<view::BlockView, UiError> {
        let b = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(num))
            .full()
            .await
            .map_err(ChainError::from)?
            .ok_or_else(|| UiError::NotFound(format!("there is no block {num} yet")))?;
        let txs = b
            .transactions
            .txns()
            .map(|t| view::TxSummary {
                hash: t.tx_hash().to_string(),
                from: t.from().to_checksum(None),
                to: t
                    .to()
                    .map(|a| self.name_of(a))
                    .unwrap_or_else(|| "(contract creation)".into()),
                value: open(t.value()),
                method: explain::method_name(t.input()),
            })
            .collect();
        Ok(view::BlockView {
            number: b.header.number,
            hash: b.header.hash.to_string(),
            timestamp: b.header.timestamp,
            gas_used: b.header.gas_used,
            txs,
        })
    }

    pub async fn tx(&self, hash: B256) -> Result<view::TxDetail, UiError> {
        let t = self
            .provider
            .get_transaction_by_hash(hash)
            .await
            .map_err(ChainError::from)?
            .ok_or_else(|| UiError::NotFound(format!("no transaction {hash}")))?;
        let r = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(ChainError::from)?;
        let to = t.to();
        let call = to
            .map(|a| explain::describe_call(&self.cfg, a, t.input()))
            .unwrap_or_else(|| "contract creation".into());
        let (status, gas_used, block, events) = match &r {
            Some(r) => (
                if r.status() { "success" } else { "reverted" },
                Some(r.gas_used),
                r.block_number,
                r.inner
                    .logs()
                    .iter()
                    .map(|l| view::EventView {
                        contract: self.name_of(l.address()),
                        decoded: explain::describe_log(
                            &self.cfg,
                            l.address(),
                            l.topics(),
                            &l.data().data,
                        ),
                    })
                    .collect(),
            ),
            None => ("pending", None, None, Vec::new()),
        };
        Ok(view::TxDetail {
            hash: hash.to_string(),
            from: t.from().to_checksum(None),
            to: to.map(|a| self.name_of(a)).unwrap_or_default(),
            value: open(t.value()),
            call,
            status,
            gas_used,
            block,
            events,
        })
    }

    /// "DatanetRegistry (0x…)" for protocol contracts, the checksummed address otherwise.
    pub fn name_of(&self, a: Address) -> String {
        match self.cfg.contracts.and_then(|c| c.find(a)) {
            Some(c) => c.name().to_string(),
            None => a.to_checksum(None),
        }
    }
}
