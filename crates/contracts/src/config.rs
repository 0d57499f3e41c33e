//! Deployment configuration and the deterministic deployment plan: seven creation
//! transactions from one deployer at consecutive nonces (see `contracts/README.md`).

use crate::bindings::{
    AttributionSettlement, DatanetRegistry, GOPEN, ModelRegistry, OpenLedgerGovernor,
    OpenLedgerTimelock, ProtocolParams,
};
use alloy_primitives::{Address, Bytes, U256, address};
use alloy_sol_types::SolConstructor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Deployer of the dev genesis predeploy: "OpenLedger" in ASCII; nobody holds its key.
pub const GENESIS_DEPLOYER: Address = address!("0x4f70656e4c656467657200000000000000000000");

/// Inference-fee split in basis points (sums to 10,000).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeSplit {
    /// Protocol treasury share.
    pub treasury_bps: u16,
    /// Model owner share.
    pub model_owner_bps: u16,
    /// Data contributors' share.
    pub contributors_bps: u16,
}

/// The knobs of a deployment (the format of `contracts/deployments/dev-config.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployConfig {
    /// Timelock delay in seconds.
    pub timelock_min_delay: u64,
    /// Seconds from proposal to vote start.
    pub voting_delay: u64,
    /// Seconds a vote stays open.
    pub voting_period: u64,
    /// Votes needed to propose (wei of GOPEN), decimal string.
    pub proposal_threshold: String,
    /// Quorum as a percentage of supply.
    pub quorum_percent: u64,
    /// Initial fee split.
    pub fee_split: FeeSplit,
    /// Datanet owner's share of licence fees (bps).
    pub licence_owner_bps: u16,
    /// Datanet creation fee in wei, decimal string.
    pub datanet_creation_fee: String,
    /// Accounts allowed to submit settlement batches (`openledger contracts deploy`: the
    /// deployer when empty or absent).
    #[serde(default)]
    pub attributors: Vec<Address>,
    /// Treasury; `None` means the Timelock itself.
    pub treasury: Option<Address>,
    /// Seconds from `AttributionSettlement.requestWithdrawal` to `withdrawEscrow` (must exceed
    /// the attributors' settlement interval); one day when absent.
    #[serde(default = "default_escrow_withdrawal_delay")]
    pub escrow_withdrawal_delay: u64,
}

fn default_escrow_withdrawal_delay() -> u64 {
    86_400
}

impl DeployConfig {
    /// The settings of the dev chain (short governance periods for demos).
    pub fn dev() -> Self {
        serde_json::from_str(include_str!(
            "../../../contracts/deployments/dev-config.json"
        ))
        .unwrap_or_else(|_| Self {
            timelock_min_delay: 5,
            voting_delay: 1,
            voting_period: 60,
            proposal_threshold: "0".into(),
            quorum_percent: 4,
            fee_split: FeeSplit {
                treasury_bps: 1000,
                model_owner_bps: 4000,
                contributors_bps: 5000,
            },
            licence_owner_bps: 2000,
            datanet_creation_fee: "10000000000000000".into(),
            attributors: vec![address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")],
            treasury: None,
            escrow_withdrawal_delay: 30,
        })
    }

    fn u256(s: &str) -> U256 {
        s.parse().unwrap_or_default()
    }
}

/// One creation transaction of the plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// Contract name.
    pub name: &'static str,
    /// Deployer nonce.
    pub nonce: u64,
    /// The address `CREATE(deployer, nonce)`.
    pub address: Address,
    /// Creation code followed by the ABI-encoded constructor arguments.
    pub initcode: Bytes,
}

/// Where a deployment put each contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployments {
    /// Chain id.
    pub chain_id: u64,
    /// Deploying account.
    pub deployer: Address,
    /// Block of the deployment (0 for genesis).
    pub block: u64,
    /// Contract name → address.
    pub contracts: BTreeMap<String, Address>,
}

impl Deployments {
    /// Address of a contract by name.
    pub fn get(&self, name: &str) -> Option<Address> {
        self.contracts.get(name).copied()
    }
}

fn with_args(code: &[u8], args: Vec<u8>) -> Bytes {
    let mut v = code.to_vec();
    v.extend_from_slice(&args);
    v.into()
}

/// The seven creation transactions for `cfg` from `deployer` starting at `first_nonce`.
pub fn plan(cfg: &DeployConfig, deployer: Address, first_nonce: u64) -> Vec<Step> {
    let at = |i: u64| deployer.create(first_nonce + i);
    let (gopen, timelock, governor, params, datanets, models, settlement) =
        (at(0), at(1), at(2), at(3), at(4), at(5), at(6));
    let treasury = cfg.treasury.unwrap_or(timelock);
    let steps: Vec<(&'static str, Bytes)> = vec![
        ("GOPEN", GOPEN::BYTECODE.clone()),
        (
            "OpenLedgerTimelock",
            with_args(
                &OpenLedgerTimelock::BYTECODE,
                OpenLedgerTimelock::constructorCall {
                    minDelay: U256::from(cfg.timelock_min_delay),
                    proposers: vec![governor],
                    executors: vec![Address::ZERO],
                    admin: Address::ZERO,
                }
                .abi_encode(),
            ),
        ),
        (
            "OpenLedgerGovernor",
            with_args(
                &OpenLedgerGovernor::BYTECODE,
                OpenLedgerGovernor::constructorCall {
                    token: gopen,
                    timelock,
                    votingDelay_: alloy_primitives::Uint::from(cfg.voting_delay),
                    votingPeriod_: cfg.voting_period as u32,
                    proposalThreshold_: DeployConfig::u256(&cfg.proposal_threshold),
                    quorumPercent: U256::from(cfg.quorum_percent),
                }
                .abi_encode(),
            ),
        ),
        (
            "ProtocolParams",
            with_args(
                &ProtocolParams::BYTECODE,
                ProtocolParams::constructorCall {
                    owner_: timelock,
                    treasury_: treasury,
                    split: ProtocolParams::FeeSplit {
                        treasuryBps: cfg.fee_split.treasury_bps,
                        modelOwnerBps: cfg.fee_split.model_owner_bps,
                        contributorsBps: cfg.fee_split.contributors_bps,
                    },
                    licenceOwnerBps_: cfg.licence_owner_bps,
                    datanetCreationFee_: DeployConfig::u256(&cfg.datanet_creation_fee),
                    attributors: cfg.attributors.clone(),
                    escrowWithdrawalDelay_: cfg.escrow_withdrawal_delay,
                }
                .abi_encode(),
            ),
        ),
        (
            "DatanetRegistry",
            with_args(
                &DatanetRegistry::BYTECODE,
                DatanetRegistry::constructorCall { params_: params }.abi_encode(),
            ),
        ),
        (
            "ModelRegistry",
            with_args(
                &ModelRegistry::BYTECODE,
                ModelRegistry::constructorCall {
                    datanets_: datanets,
                }
                .abi_encode(),
            ),
        ),
        (
            "AttributionSettlement",
            with_args(
                &AttributionSettlement::BYTECODE,
                AttributionSettlement::constructorCall {
                    params_: params,
                    models_: models,
                    datanets_: datanets,
                }
                .abi_encode(),
            ),
        ),
    ];
    let _ = settlement;
    steps
        .into_iter()
        .enumerate()
        .map(|(i, (name, initcode))| Step {
            name,
            nonce: first_nonce + i as u64,
            address: at(i as u64),
            initcode,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust plan and the JavaScript plan (`deploy.mjs --plan`) agree byte for byte.
    #[test]
    fn plan_matches_the_committed_javascript_plan() {
        let js: serde_json::Value = serde_json::from_str(include_str!(
            "../../../contracts/deployments/dev-genesis.json"
        ))
        .expect("json");
        let steps = plan(&DeployConfig::dev(), GENESIS_DEPLOYER, 0);
        let entries = js["contracts"].as_array().expect("contracts");
        assert_eq!(entries.len(), steps.len());
        for (s, e) in steps.iter().zip(entries) {
            assert_eq!(e["name"], s.name);
            let addr: Address = e["address"]
                .as_str()
                .expect("address")
                .parse()
                .expect("addr");
            assert_eq!(addr, s.address, "{}", s.name);
            let code: Bytes = e["initcode"]
                .as_str()
                .expect("initcode")
                .parse()
                .expect("hex");
            assert_eq!(code, s.initcode, "initcode of {}", s.name);
        }
    }
}
