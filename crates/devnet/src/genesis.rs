//! Genesis predeploy: the protocol contracts are created by executing the deployment plan with
//! revm on top of the genesis allocation, and the resulting accounts (runtime code, storage,
//! nonce) are written into the genesis. Executing the real constructors — not copying runtime
//! bytecode — keeps immutables (chain id in EIP-712 domains, wired addresses) exactly right.
//! The plan's bonds follow: the deployer, given exactly their value for the occasion, stakes
//! `minAttributorStake` for each configured attributor (the dev genesis: account 0), so the
//! devnet starts with a bonded attributor.

use alloy_primitives::{B256, TxKind, U256};
use openledger_chain::ChainSpec;
use openledger_chain::genesis::add_predeploy;
use openledger_protocol::{Contracts, DeployConfig, Deployments, GENESIS_DEPLOYER, bonds, plan};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::result::ExecutionResult;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::state::{AccountInfo, Bytecode};
use revm::{Context, ExecuteCommitEvm, MainBuilder, MainContext};

/// Why the predeploy failed.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// A constructor reverted or halted.
    #[error("deploying {name} at genesis failed: {reason}")]
    Deploy {
        /// Contract.
        name: String,
        /// Revert or halt reason.
        reason: String,
    },
    /// An address in the plan is already taken in the genesis allocation.
    #[error("genesis address {0} of {1} is already allocated")]
    Occupied(alloy_primitives::Address, String),
}

/// Executes the plan for `cfg` at genesis and adds the contracts to `spec`'s allocation.
pub fn predeploy(spec: &mut ChainSpec, cfg: &DeployConfig) -> Result<Deployments, GenesisError> {
    let mut db = CacheDB::new(EmptyDB::default());
    for (addr, acct) in &spec.genesis.alloc {
        let code = acct.code.clone().unwrap_or_default();
        let mut info = AccountInfo::from_balance(acct.balance);
        info.nonce = acct.nonce.unwrap_or_default();
        if !code.is_empty() {
            let bc = Bytecode::new_raw(code);
            info.code_hash = bc.hash_slow();
            info.code = Some(bc);
        }
        db.insert_account_info(*addr, info);
        for (k, v) in acct.storage.iter().flatten() {
            let _ = db.insert_account_storage(
                *addr,
                U256::from_be_bytes(k.0),
                U256::from_be_bytes(v.0),
            );
        }
    }
    cfg.check().map_err(|reason| GenesisError::Deploy {
        name: "the protocol".into(),
        reason,
    })?;
    let steps = plan(cfg, GENESIS_DEPLOYER, 0);
    let bonds = bonds(cfg, GENESIS_DEPLOYER, 0);
    let staked: U256 = bonds.iter().map(|b| b.value).sum();
    db.insert_account_info(GENESIS_DEPLOYER, AccountInfo::from_balance(staked));
    for s in &steps {
        if spec.genesis.alloc.contains_key(&s.address) {
            return Err(GenesisError::Occupied(s.address, s.name.to_string()));
        }
    }
    let mut cfg_env = CfgEnv::new_with_spec(SpecId::OSAKA);
    cfg_env.chain_id = spec.chain_id();
    cfg_env.tx_gas_limit_cap = Some(u64::MAX);
    cfg_env.disable_base_fee = true;
    let block = BlockEnv {
        number: U256::ZERO,
        timestamp: U256::from(spec.genesis.timestamp),
        gas_limit: u64::MAX,
        basefee: 0,
        prevrandao: Some(B256::ZERO),
        ..Default::default()
    };
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(block)
        .with_cfg(cfg_env)
        .build_mainnet();
    for s in &steps {
        let tx = TxEnv {
            caller: GENESIS_DEPLOYER,
            gas_limit: 100_000_000,
            gas_price: 0,
            kind: TxKind::Create,
            data: s.initcode.clone(),
            nonce: s.nonce,
            chain_id: Some(spec.chain_id()),
            ..Default::default()
        };
        let result = evm.transact_commit(tx).map_err(|e| GenesisError::Deploy {
            name: s.name.into(),
            reason: e.to_string(),
        })?;
        match result {
            ExecutionResult::Success { .. } => {}
            ExecutionResult::Revert { output, .. } => {
                return Err(GenesisError::Deploy {
                    name: s.name.into(),
                    reason: openledger_protocol::chain_error::decode_revert(&output)
                        .unwrap_or_else(|| format!("reverted with {output}")),
                });
            }
            other => {
                return Err(GenesisError::Deploy {
                    name: s.name.into(),
                    reason: format!("{other:?}"),
                });
            }
        }
    }
    for (i, b) in bonds.iter().enumerate() {
        let tx = TxEnv {
            caller: GENESIS_DEPLOYER,
            gas_limit: 10_000_000,
            gas_price: 0,
            kind: TxKind::Call(b.to),
            value: b.value,
            data: b.data.clone(),
            nonce: (steps.len() + i) as u64,
            chain_id: Some(spec.chain_id()),
            ..Default::default()
        };
        let bond_err = |reason: String| GenesisError::Deploy {
            name: format!("the bond of attributor {}", b.account),
            reason,
        };
        match evm
            .transact_commit(tx)
            .map_err(|e| bond_err(e.to_string()))?
        {
            ExecutionResult::Success { .. } => {}
            ExecutionResult::Revert { output, .. } => {
                return Err(bond_err(
                    openledger_protocol::chain_error::decode_revert(&output)
                        .unwrap_or_else(|| format!("reverted with {output}")),
                ));
            }
            other => return Err(bond_err(format!("{other:?}"))),
        }
    }
    let db = &evm.ctx.journaled_state.database;
    for s in &steps {
        let Some(acct) = db.cache.accounts.get(&s.address) else {
            return Err(GenesisError::Deploy {
                name: s.name.into(),
                reason: "no account created".into(),
            });
        };
        let code = db
            .cache
            .contracts
            .get(&acct.info.code_hash)
            .map(|c| c.original_bytes())
            .unwrap_or_default();
        let storage = acct
            .storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (B256::from(*k), B256::from(*v)));
        add_predeploy(spec, s.address, code, storage, acct.info.balance);
    }
    // The deployer's nonce moves past the plan, as on any chain the plan ran on.
    spec.genesis.alloc.insert(
        GENESIS_DEPLOYER,
        alloy_genesis::GenesisAccount::default()
            .with_nonce(Some((steps.len() + bonds.len()) as u64)),
    );
    Ok(Deployments {
        chain_id: spec.chain_id(),
        deployer: GENESIS_DEPLOYER,
        block: 0,
        contracts: Contracts::planned(GENESIS_DEPLOYER, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openledger_chain::DevPreset;

    /// `deployments/dev.json` lists exactly what the dev genesis predeploys.
    #[test]
    fn committed_dev_deployments_match_the_genesis() {
        let (mut spec, _) = DevPreset::default().build().expect("dev");
        let d = predeploy(&mut spec, &DeployConfig::dev()).expect("predeploy");
        let committed: Deployments =
            serde_json::from_str(include_str!("../../../deployments/dev.json"))
                .expect("deployments/dev.json");
        assert_eq!(
            d, committed,
            "regenerate with `openledger contracts dev-genesis > deployments/dev.json`"
        );
        for (name, a) in d.contracts.iter() {
            let acct = &spec.genesis.alloc[&a];
            assert!(
                acct.code.as_ref().is_some_and(|c| !c.is_empty()),
                "{name} has code"
            );
            assert_eq!(acct.nonce, Some(1));
        }
        // A second predeploy on the same spec refuses to overwrite.
        assert!(matches!(
            predeploy(&mut spec, &DeployConfig::dev()),
            Err(GenesisError::Occupied(..))
        ));
    }

    /// A dispute parameter out of its bounds stops the genesis with one line naming it (the
    /// constructor's own check, decoded).
    #[test]
    fn a_dispute_parameter_out_of_bounds_is_named() {
        let (mut spec, _) = DevPreset::default().build().expect("dev");
        let mut cfg = DeployConfig::dev();
        cfg.dispute.challenge_window = 5;
        let e = predeploy(&mut spec, &cfg)
            .expect_err("out of bounds")
            .to_string();
        assert!(
            e.contains("ProtocolParams") && e.contains("dispute.challengeWindow = 5"),
            "{e}"
        );
    }
}
