//! Deployment configuration and the deterministic deployment plan: eight creation
//! transactions from one deployer at consecutive nonces, then one bond per attributor (see
//! `contracts/README.md`).

use crate::OPEN;
use crate::bindings::{
    AttributionSettlement, AttributorStaking, DatanetRegistry, GOPEN, ModelRegistry,
    OpenLedgerGovernor, OpenLedgerTimelock, ProtocolParams,
};
use alloy_primitives::{Address, B256, Bytes, U256, address, keccak256};
use alloy_sol_types::SolConstructor;
use serde::{Deserialize, Serialize};

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
    /// Votes needed to propose (wei of GOPEN), a decimal string of whole wei.
    #[serde(with = "wei")]
    pub proposal_threshold: U256,
    /// Quorum as a percentage of supply.
    pub quorum_percent: u64,
    /// Initial fee split.
    pub fee_split: FeeSplit,
    /// Datanet owner's share of licence fees (bps).
    pub licence_owner_bps: u16,
    /// Datanet creation fee, a decimal string of whole wei.
    #[serde(with = "wei")]
    pub datanet_creation_fee: U256,
    /// Accounts bonded with `dispute.minAttributorStake` at deployment, the deployer paying
    /// (`openledger contracts deploy`: the deployer itself when empty or absent). Any account
    /// may bond later with `openledger attribution bond`.
    #[serde(default)]
    pub attributors: Vec<Address>,
    /// Treasury; `None` means the Timelock itself.
    pub treasury: Option<Address>,
    /// Seconds from `AttributionSettlement.requestWithdrawal` to `withdrawEscrow` (must exceed
    /// the attributors' settlement interval); one day when absent.
    #[serde(default = "default_escrow_withdrawal_delay")]
    pub escrow_withdrawal_delay: u64,
    /// Parameters of attribution disputes; [`DisputeConfig::production`] when absent.
    #[serde(default = "DisputeConfig::production")]
    pub dispute: DisputeConfig,
    /// Attribution engine versions whose records may settle (engine strings such as
    /// [`crate::ENGINE`]; the contract keeps their keccak-256); this build's engine when absent.
    #[serde(default = "default_engines")]
    pub engines: Vec<String>,
}

fn default_engines() -> Vec<String> {
    vec![crate::ENGINE.to_string()]
}

/// The governed parameters of attribution disputes (`ProtocolParams.DisputeConfig`; meaning and
/// bounds in `docs/attribution-disputes.md` §3). Durations in seconds; amounts in wei, written
/// in JSON as decimal strings of whole wei.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented on the contract's struct
pub struct DisputeConfig {
    #[serde(with = "wei128")]
    pub min_attributor_stake: u128,
    #[serde(with = "wei128")]
    pub challenge_bond: u128,
    #[serde(with = "wei128")]
    pub escalation_bond: u128,
    #[serde(with = "wei128")]
    pub data_request_bond: u128,
    #[serde(with = "wei128")]
    pub slash_base: u128,
    pub unbonding_delay: u64,
    pub challenge_window: u64,
    pub epoch_length: u64,
    pub voucher_grace: u64,
    pub price_grace_period: u64,
    pub challenge_commit_period: u64,
    pub candidate_reveal_period: u64,
    pub jury_commit_period: u64,
    pub jury_reveal_period: u64,
    pub escalation_period: u64,
    pub governance_timeout: u64,
    pub data_response_period: u64,
    pub exposure_bps: u32,
    pub weight_tolerance_ppm: u32,
    pub jury_quorum_bps: u16,
    pub juror_penalty_bps: u16,
    pub slash_multiple: u16,
}

const DAY: u64 = 86_400;

impl DisputeConfig {
    /// The production column of `docs/attribution-disputes.md` §3.
    pub fn production() -> Self {
        DisputeConfig {
            min_attributor_stake: 10_000 * OPEN,
            challenge_bond: 10 * OPEN,
            escalation_bond: 1_000 * OPEN,
            data_request_bond: OPEN,
            slash_base: 500 * OPEN,
            unbonding_delay: 14 * DAY,
            challenge_window: DAY,
            epoch_length: 3_600,
            voucher_grace: DAY,
            price_grace_period: DAY,
            challenge_commit_period: 7_200,
            candidate_reveal_period: 7_200,
            jury_commit_period: 12 * 3_600,
            jury_reveal_period: 12 * 3_600,
            escalation_period: DAY,
            governance_timeout: 21 * DAY,
            data_response_period: 6 * 3_600,
            exposure_bps: 10_000,
            weight_tolerance_ppm: 1_000,
            jury_quorum_bps: 3_334,
            juror_penalty_bps: 100,
            slash_multiple: 10,
        }
    }

    /// As the contract encodes it.
    pub fn to_sol(&self) -> ProtocolParams::DisputeConfig {
        ProtocolParams::DisputeConfig {
            minAttributorStake: self.min_attributor_stake,
            challengeBond: self.challenge_bond,
            escalationBond: self.escalation_bond,
            dataRequestBond: self.data_request_bond,
            slashBase: self.slash_base,
            unbondingDelay: self.unbonding_delay,
            challengeWindow: self.challenge_window,
            epochLength: self.epoch_length,
            voucherGrace: self.voucher_grace,
            priceGracePeriod: self.price_grace_period,
            challengeCommitPeriod: self.challenge_commit_period,
            candidateRevealPeriod: self.candidate_reveal_period,
            juryCommitPeriod: self.jury_commit_period,
            juryRevealPeriod: self.jury_reveal_period,
            escalationPeriod: self.escalation_period,
            governanceTimeout: self.governance_timeout,
            dataResponsePeriod: self.data_response_period,
            exposureBps: self.exposure_bps,
            weightTolerancePpm: self.weight_tolerance_ppm,
            juryQuorumBps: self.jury_quorum_bps,
            jurorPenaltyBps: self.juror_penalty_bps,
            slashMultiple: self.slash_multiple,
        }
    }
}

/// The name of `ProtocolParams.DisputeParam` number `param`: the enum follows the fields of
/// `DisputeConfig` in order (the contract tests check it), so the names come from the struct's
/// ABI definition.
pub fn dispute_param_name(param: u8) -> Option<String> {
    use alloy_sol_types::SolStruct;
    let def = ProtocolParams::DisputeConfig::eip712_root_type();
    let fields = def.split_once('(')?.1.strip_suffix(')')?;
    fields
        .split(',')
        .nth(param as usize)
        .and_then(|f| f.rsplit(' ').next())
        .map(str::to_string)
}

impl DeployConfig {
    /// What the contracts cannot see: an escalated dispute must outlast a whole governance
    /// round (voting delay + voting period + timelock delay), or governance could never
    /// overturn its default outcome. The per-field bounds are the contract's (its constructor
    /// refuses a value out of them, naming the parameter).
    pub fn check(&self) -> Result<(), String> {
        let round = self.voting_delay + self.voting_period + self.timelock_min_delay;
        if self.dispute.governance_timeout <= round {
            return Err(format!(
                "dispute.governanceTimeout {} s must exceed votingDelay + votingPeriod + timelockMinDelay = {round} s",
                self.dispute.governance_timeout
            ));
        }
        if self.engines.iter().any(|e| e.trim().is_empty()) {
            return Err("engines: an engine name is empty".into());
        }
        Ok(())
    }

    /// `engines` as the contract keeps them (keccak-256 of each name).
    pub fn engine_ids(&self) -> Vec<B256> {
        self.engines
            .iter()
            .map(|e| keccak256(e.as_bytes()))
            .collect()
    }
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
            proposal_threshold: U256::ZERO,
            quorum_percent: 4,
            fee_split: FeeSplit {
                treasury_bps: 1000,
                model_owner_bps: 4000,
                contributors_bps: 5000,
            },
            licence_owner_bps: 2000,
            datanet_creation_fee: U256::from(10_000_000_000_000_000u64),
            attributors: vec![address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")],
            treasury: None,
            escrow_withdrawal_delay: 30,
            dispute: DisputeConfig::production(),
            engines: default_engines(),
        })
    }
}

/// Amounts in a deploy config: a decimal string of whole wei ("10000000000000000"). Anything
/// else ("1e16", "0.01", hex, a number) is an error naming the value: a typo must never deploy
/// a fee or threshold of 0.
mod wei {
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom(format!(
                "{s:?} is not an amount: write whole wei as decimal digits, e.g. \"10000000000000000\" for 0.01 OPEN"
            )));
        }
        U256::from_str_radix(&s, 10)
            .map_err(|e| D::Error::custom(format!("{s:?} is not an amount: {e}")))
    }
}

/// Amounts that the contract keeps in 128 bits, in the same decimal-string form as [`wei`].
mod wei128 {
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let v = super::wei::deserialize(d)?;
        u128::try_from(v).map_err(|_| D::Error::custom(format!("{v} wei is more than 2^128")))
    }
}

/// One of the eight protocol contracts, in deployment order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contract {
    /// The governance token.
    Gopen,
    /// The Timelock that owns every parameter.
    Timelock,
    /// The Governor that proposes to the Timelock.
    Governor,
    /// Fee split, fees, escrow delay, dispute parameters, engines.
    ProtocolParams,
    /// Datanets, contributions, versions, licences.
    DatanetRegistry,
    /// Models and their prices.
    ModelRegistry,
    /// Escrow, settlement batches, claims.
    AttributionSettlement,
    /// Attributors' bonded stakes.
    AttributorStaking,
}

impl Contract {
    /// All eight, in deployment order (the deployer's nonces 0..8 of a plan).
    pub const ALL: [Contract; 8] = [
        Contract::Gopen,
        Contract::Timelock,
        Contract::Governor,
        Contract::ProtocolParams,
        Contract::DatanetRegistry,
        Contract::ModelRegistry,
        Contract::AttributionSettlement,
        Contract::AttributorStaking,
    ];

    /// The Solidity contract's name (the key in deployment files).
    pub const fn name(self) -> &'static str {
        match self {
            Contract::Gopen => "GOPEN",
            Contract::Timelock => "OpenLedgerTimelock",
            Contract::Governor => "OpenLedgerGovernor",
            Contract::ProtocolParams => "ProtocolParams",
            Contract::DatanetRegistry => "DatanetRegistry",
            Contract::ModelRegistry => "ModelRegistry",
            Contract::AttributionSettlement => "AttributionSettlement",
            Contract::AttributorStaking => "AttributorStaking",
        }
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Where each protocol contract is. In JSON, an object keyed by contract name; all eight are
/// required and an unknown name is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contracts {
    /// `GOPEN`.
    #[serde(rename = "GOPEN")]
    pub gopen: Address,
    /// `OpenLedgerTimelock`.
    #[serde(rename = "OpenLedgerTimelock")]
    pub timelock: Address,
    /// `OpenLedgerGovernor`.
    #[serde(rename = "OpenLedgerGovernor")]
    pub governor: Address,
    /// `ProtocolParams`.
    #[serde(rename = "ProtocolParams")]
    pub params: Address,
    /// `DatanetRegistry`.
    #[serde(rename = "DatanetRegistry")]
    pub datanet_registry: Address,
    /// `ModelRegistry`.
    #[serde(rename = "ModelRegistry")]
    pub model_registry: Address,
    /// `AttributionSettlement`.
    #[serde(rename = "AttributionSettlement")]
    pub settlement: Address,
    /// `AttributorStaking`.
    #[serde(rename = "AttributorStaking")]
    pub staking: Address,
}

impl Contracts {
    /// The addresses a plan from `deployer` at `first_nonce` creates.
    pub fn planned(deployer: Address, first_nonce: u64) -> Self {
        let at = |i: u64| deployer.create(first_nonce + i);
        Self {
            gopen: at(0),
            timelock: at(1),
            governor: at(2),
            params: at(3),
            datanet_registry: at(4),
            model_registry: at(5),
            settlement: at(6),
            staking: at(7),
        }
    }

    /// The address of `c`.
    pub fn address(&self, c: Contract) -> Address {
        match c {
            Contract::Gopen => self.gopen,
            Contract::Timelock => self.timelock,
            Contract::Governor => self.governor,
            Contract::ProtocolParams => self.params,
            Contract::DatanetRegistry => self.datanet_registry,
            Contract::ModelRegistry => self.model_registry,
            Contract::AttributionSettlement => self.settlement,
            Contract::AttributorStaking => self.staking,
        }
    }

    /// Each contract with its address, in deployment order.
    pub fn iter(&self) -> impl Iterator<Item = (Contract, Address)> + '_ {
        Contract::ALL.into_iter().map(|c| (c, self.address(c)))
    }

    /// The contract at `address`, if any.
    pub fn find(&self, address: Address) -> Option<Contract> {
        self.iter().find(|(_, a)| *a == address).map(|(c, _)| c)
    }
}

/// One creation transaction of the plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// The contract.
    pub contract: Contract,
    /// Contract name.
    pub name: &'static str,
    /// Deployer nonce.
    pub nonce: u64,
    /// The address `CREATE(deployer, nonce)`.
    pub address: Address,
    /// Creation code followed by the ABI-encoded constructor arguments.
    pub initcode: Bytes,
}

/// A call that bonds one attributor after the creations: `AttributorStaking.bondFor(account)`
/// from the deployer with `value` = `dispute.minAttributorStake`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bond {
    /// The bonded attributor.
    pub account: Address,
    /// `AttributorStaking`.
    pub to: Address,
    /// Wei sent (and staked).
    pub value: U256,
    /// Calldata.
    pub data: Bytes,
}

/// The bonds of `cfg.attributors` (the deployer's own when the list is empty) for a plan from
/// `deployer` at `first_nonce`.
pub fn bonds(cfg: &DeployConfig, deployer: Address, first_nonce: u64) -> Vec<Bond> {
    use alloy_sol_types::SolCall;
    let to = Contracts::planned(deployer, first_nonce).staking;
    let accounts = if cfg.attributors.is_empty() {
        vec![deployer]
    } else {
        cfg.attributors.clone()
    };
    accounts
        .into_iter()
        .map(|account| Bond {
            account,
            to,
            value: U256::from(cfg.dispute.min_attributor_stake),
            data: AttributorStaking::bondForCall { account }
                .abi_encode()
                .into(),
        })
        .collect()
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
    /// Where each contract is.
    pub contracts: Contracts,
}

fn with_args(code: &[u8], args: Vec<u8>) -> Bytes {
    let mut v = code.to_vec();
    v.extend_from_slice(&args);
    v.into()
}

/// The eight creation transactions for `cfg` from `deployer` starting at `first_nonce`.
pub fn plan(cfg: &DeployConfig, deployer: Address, first_nonce: u64) -> Vec<Step> {
    let c = Contracts::planned(deployer, first_nonce);
    let (gopen, timelock, governor, params, datanets, models) = (
        c.gopen,
        c.timelock,
        c.governor,
        c.params,
        c.datanet_registry,
        c.model_registry,
    );
    let treasury = cfg.treasury.unwrap_or(timelock);
    let code: [Bytes; 8] = [
        GOPEN::BYTECODE.clone(),
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
        with_args(
            &OpenLedgerGovernor::BYTECODE,
            OpenLedgerGovernor::constructorCall {
                token: gopen,
                timelock,
                votingDelay_: alloy_primitives::Uint::from(cfg.voting_delay),
                votingPeriod_: cfg.voting_period as u32,
                proposalThreshold_: cfg.proposal_threshold,
                quorumPercent: U256::from(cfg.quorum_percent),
            }
            .abi_encode(),
        ),
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
                datanetCreationFee_: cfg.datanet_creation_fee,
                escrowWithdrawalDelay_: cfg.escrow_withdrawal_delay,
                dispute: cfg.dispute.to_sol(),
                engines: cfg.engine_ids(),
            }
            .abi_encode(),
        ),
        with_args(
            &DatanetRegistry::BYTECODE,
            DatanetRegistry::constructorCall { params_: params }.abi_encode(),
        ),
        with_args(
            &ModelRegistry::BYTECODE,
            ModelRegistry::constructorCall {
                datanets_: datanets,
            }
            .abi_encode(),
        ),
        with_args(
            &AttributionSettlement::BYTECODE,
            AttributionSettlement::constructorCall {
                params_: params,
                models_: models,
                datanets_: datanets,
                staking_: c.staking,
            }
            .abi_encode(),
        ),
        with_args(
            &AttributorStaking::BYTECODE,
            AttributorStaking::constructorCall {
                params_: params,
                settlement_: c.settlement,
            }
            .abi_encode(),
        ),
    ];
    Contract::ALL
        .into_iter()
        .zip(code)
        .enumerate()
        .map(|(i, (contract, initcode))| Step {
            contract,
            name: contract.name(),
            nonce: first_nonce + i as u64,
            address: c.address(contract),
            initcode,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An amount that is not whole wei in decimal digits is refused, naming the value; a
    /// round trip keeps the decimal string.
    #[test]
    fn deploy_config_amounts_are_whole_wei_or_an_error() {
        let mut v = serde_json::to_value(DeployConfig::dev()).expect("config as JSON");
        assert_eq!(v["datanetCreationFee"], "10000000000000000");
        for bad in ["1e16", "0.01", "0x2386f26fc10000", "", "-1", " 1"] {
            v["datanetCreationFee"] = bad.into();
            let e = serde_json::from_value::<DeployConfig>(v.clone())
                .expect_err(bad)
                .to_string();
            assert!(e.contains("is not an amount"), "{bad}: {e}");
        }
        v["datanetCreationFee"] = 10.into();
        assert!(serde_json::from_value::<DeployConfig>(v.clone()).is_err());
        v["proposalThreshold"] = "1".repeat(80).into();
        v["datanetCreationFee"] = "7".into();
        let e = serde_json::from_value::<DeployConfig>(v.clone()).expect_err("overflow");
        assert!(e.to_string().contains("is not an amount"), "{e}");
        v["proposalThreshold"] = "5".into();
        let c: DeployConfig = serde_json::from_value(v).expect("valid");
        assert_eq!(c.datanet_creation_fee, U256::from(7));
        assert_eq!(c.proposal_threshold, U256::from(5));
    }

    /// Dispute parameters are named by their enum number, in the order of the JSON fields.
    #[test]
    fn dispute_params_are_named_in_field_order() {
        let v = serde_json::to_value(DisputeConfig::production()).expect("json");
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), 22);
        assert_eq!(dispute_param_name(0).as_deref(), Some("minAttributorStake"));
        assert_eq!(dispute_param_name(6).as_deref(), Some("challengeWindow"));
        assert_eq!(dispute_param_name(21).as_deref(), Some("slashMultiple"));
        assert_eq!(dispute_param_name(22), None);
        for i in 0..22u8 {
            let n = dispute_param_name(i).expect("name");
            assert!(v.get(&n).is_some(), "{n} is not a config field");
        }
    }

    /// The dev config allows this build's engine and keeps every governance bound the
    /// contracts cannot see; a too-short governance timeout is refused by name.
    #[test]
    fn the_dev_config_checks_and_allows_this_engine() {
        let mut c = DeployConfig::dev();
        c.check().expect("dev config");
        assert!(
            c.engines.iter().any(|e| e == crate::ENGINE),
            "{:?}",
            c.engines
        );
        assert_eq!(c.engine_ids()[0], keccak256(crate::ENGINE.as_bytes()));
        c.dispute.governance_timeout = c.voting_delay + c.voting_period + c.timelock_min_delay;
        let e = c.check().expect_err("short timeout");
        assert!(e.contains("governanceTimeout"), "{e}");
        let mut v = serde_json::to_value(DeployConfig::dev()).expect("json");
        v["dispute"]["challengeBond"] = "340282366920938463463374607431768211456".into();
        let e = serde_json::from_value::<DeployConfig>(v.clone()).expect_err("2^128");
        assert!(e.to_string().contains("more than 2^128"), "{e}");
        v["dispute"]["challengeBond"] = "1".into();
        v["dispute"]["challengeWindoww"] = 5.into();
        assert!(
            serde_json::from_value::<DeployConfig>(v).is_err(),
            "a typo is refused"
        );
    }

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
        let js_bonds = js["bonds"].as_array().expect("bonds");
        let bonds = bonds(&DeployConfig::dev(), GENESIS_DEPLOYER, 0);
        assert_eq!(js_bonds.len(), bonds.len());
        for (b, e) in bonds.iter().zip(js_bonds) {
            assert_eq!(
                e["account"].as_str().map(|a| a.parse::<Address>().ok()),
                Some(Some(b.account))
            );
            assert_eq!(
                e["to"].as_str().map(|a| a.parse::<Address>().ok()),
                Some(Some(b.to))
            );
            assert_eq!(e["value"].as_str(), Some(b.value.to_string().as_str()));
            assert_eq!(
                e["data"].as_str().map(|d| d.parse::<Bytes>().ok()),
                Some(Some(b.data.clone()))
            );
        }
    }
}
