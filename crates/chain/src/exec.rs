//! Transaction execution with revm: whole blocks, and read-only calls (`eth_call`,
//! `eth_estimateGas`) on top of a store snapshot.

use crate::store::{AccountChange, Reader, StateChanges};
use alloy_consensus::{
    Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, Transaction, TxEnvelope, TxType,
};
use alloy_primitives::{Address, B256, Bytes, Log, TxKind, U256};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::ContextTr;
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::context_interface::either::Either;
use revm::context_interface::result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction};
use revm::database::CacheDB;
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::{InstructionResult, Interpreter};
use revm::primitives::AddressMap;
use revm::primitives::hardfork::SpecId;
use revm::state::{Account, Bytecode};
use revm::{
    Context, Database, ExecuteCommitEvm, ExecuteEvm, InspectEvm, Inspector, MainBuilder,
    MainContext,
};
use std::time::Instant;

/// The fork rules the node runs: revm's Osaka (solc 0.8.37's default EVM version).
pub const SPEC: SpecId = SpecId::OSAKA;

/// Environment of one block.
#[derive(Clone, Debug)]
pub struct BlockParams {
    /// Block number.
    pub number: u64,
    /// Timestamp (seconds).
    pub timestamp: u64,
    /// Fee recipient.
    pub beneficiary: Address,
    /// Gas limit.
    pub gas_limit: u64,
    /// Base fee per gas.
    pub base_fee: u64,
    /// PREVRANDAO value (the header's mix hash).
    pub prevrandao: B256,
}

impl BlockParams {
    fn env(&self) -> BlockEnv {
        BlockEnv {
            number: U256::from(self.number),
            beneficiary: self.beneficiary,
            timestamp: U256::from(self.timestamp),
            gas_limit: self.gas_limit,
            basefee: self.base_fee,
            difficulty: U256::ZERO,
            prevrandao: Some(self.prevrandao),
            blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new(0, 1)),
            ..Default::default()
        }
    }
}

/// Revm configuration for this chain.
pub fn cfg(chain_id: u64) -> CfgEnv {
    let mut cfg = CfgEnv::new_with_spec(SPEC);
    cfg.chain_id = chain_id;
    cfg
}

/// Builds revm's transaction environment from a signed, recovered transaction.
pub fn tx_env(tx: &TxEnvelope, sender: Address) -> TxEnv {
    let (gas_price, priority) = match tx.tx_type() {
        TxType::Legacy | TxType::Eip2930 => (tx.gas_price().unwrap_or_default(), None),
        _ => (tx.max_fee_per_gas(), tx.max_priority_fee_per_gas()),
    };
    let authorization_list = tx
        .authorization_list()
        .map(|l| l.iter().cloned().map(Either::Left).collect())
        .unwrap_or_default();
    TxEnv {
        tx_type: tx.tx_type() as u8,
        caller: sender,
        gas_limit: tx.gas_limit(),
        gas_price,
        kind: tx.kind(),
        value: tx.value(),
        data: tx.input().clone(),
        nonce: tx.nonce(),
        chain_id: tx.chain_id(),
        access_list: tx.access_list().cloned().unwrap_or_default(),
        gas_priority_fee: priority,
        blob_hashes: Vec::new(),
        max_fee_per_blob_gas: 0,
        authorization_list,
    }
}

/// One executed transaction.
#[derive(Clone, Debug)]
pub struct ExecutedTx {
    /// The transaction.
    pub tx: TxEnvelope,
    /// Its sender.
    pub sender: Address,
    /// Its receipt (cumulative gas within the block).
    pub receipt: ReceiptEnvelope,
    /// Gas charged to it.
    pub gas_used: u64,
}

/// A transaction the block builder could not include, and why.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// Transaction hash.
    pub hash: B256,
    /// Sender.
    pub sender: Address,
    /// Reason, in revm's words.
    pub reason: String,
}

/// Result of executing a block's transactions.
#[derive(Debug, Default)]
pub struct ExecutedBlock {
    /// Included transactions in order.
    pub txs: Vec<ExecutedTx>,
    /// Transactions that were invalid at execution time.
    pub rejected: Vec<Rejected>,
    /// Transactions left out because the block was full (still valid).
    pub deferred: Vec<B256>,
    /// State changes.
    pub changes: StateChanges,
    /// Total gas used.
    pub gas_used: u64,
}

fn record_changes(changes: &mut StateChanges, state: &AddressMap<Account>) {
    for (address, account) in state {
        if !account.is_touched() {
            continue;
        }
        let entry = changes.accounts.entry(*address).or_default();
        if account.is_selfdestructed() {
            *entry = AccountChange {
                info: None,
                wiped: true,
                storage: Default::default(),
            };
            continue;
        }
        if account.is_created() {
            entry.wiped = true;
            entry.storage.clear();
        }
        if account.info.is_empty() {
            // EIP-161: touched empty accounts are removed.
            *entry = AccountChange {
                info: None,
                wiped: true,
                storage: Default::default(),
            };
            continue;
        }
        if let Some(code) = &account.info.code
            && !code.is_empty()
        {
            changes
                .code
                .insert(account.info.code_hash, code.original_bytes());
        }
        entry.info = Some((
            account.info.nonce,
            account.info.balance,
            account.info.code_hash,
        ));
        for (slot, value) in &account.storage {
            if value.is_changed() {
                entry.storage.insert(*slot, value.present_value);
            }
        }
    }
}

/// Executes `candidates` in order on top of `reader`, skipping any transaction that is invalid
/// (and the later ones of its sender), stopping when the block is full.
pub fn execute_block(
    reader: &Reader,
    chain_id: u64,
    params: &BlockParams,
    base_fee_recipient: Option<Address>,
    candidates: Vec<(TxEnvelope, Address)>,
) -> Result<ExecutedBlock, String> {
    let db = CacheDB::new(reader);
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(params.env())
        .with_cfg(cfg(chain_id))
        .build_mainnet();
    let mut out = ExecutedBlock::default();
    let mut skip_sender: Vec<Address> = Vec::new();
    for (tx, sender) in candidates {
        let hash = *tx.tx_hash();
        if skip_sender.contains(&sender) {
            out.deferred.push(hash);
            continue;
        }
        if out.gas_used + tx.gas_limit() > params.gas_limit {
            out.deferred.push(hash);
            skip_sender.push(sender);
            continue;
        }
        let result = match evm.transact(tx_env(&tx, sender)) {
            Ok(r) => r,
            Err(EVMError::Transaction(e)) => {
                out.rejected.push(Rejected {
                    hash,
                    sender,
                    reason: e.to_string(),
                });
                skip_sender.push(sender);
                continue;
            }
            Err(e) => return Err(format!("executing {hash}: {e}")),
        };
        let gas_used = result.result.tx_gas_used();
        let mut state = result.state;
        let fee = U256::from(params.base_fee) * U256::from(gas_used);
        if let Some(treasury) = base_fee_recipient
            && !fee.is_zero()
        {
            match state.get_mut(&treasury) {
                Some(acc) => {
                    acc.info.balance = acc.info.balance.saturating_add(fee);
                    acc.mark_touch();
                }
                None => {
                    let info = evm
                        .ctx
                        .db_mut()
                        .basic(treasury)
                        .map_err(|e| format!("loading treasury: {e}"))?
                        .unwrap_or_default();
                    let mut acc = Account::from(info);
                    acc.info.balance = acc.info.balance.saturating_add(fee);
                    acc.mark_touch();
                    state.insert(treasury, acc);
                }
            }
        }
        record_changes(&mut out.changes, &state);
        evm.commit(state);
        out.gas_used += gas_used;
        let success = result.result.is_success();
        let logs: Vec<Log> = result.result.into_logs();
        let receipt = Receipt {
            status: Eip658Value::Eip658(success),
            cumulative_gas_used: out.gas_used,
            logs,
        };
        let with_bloom = ReceiptWithBloom::from(receipt);
        let receipt = match tx.tx_type() {
            TxType::Legacy => ReceiptEnvelope::Legacy(with_bloom),
            TxType::Eip2930 => ReceiptEnvelope::Eip2930(with_bloom),
            TxType::Eip1559 => ReceiptEnvelope::Eip1559(with_bloom),
            TxType::Eip4844 => ReceiptEnvelope::Eip4844(with_bloom),
            TxType::Eip7702 => ReceiptEnvelope::Eip7702(with_bloom),
        };
        out.txs.push(ExecutedTx {
            tx,
            sender,
            receipt,
            gas_used,
        });
    }
    Ok(out)
}

/// Outcome of a read-only call.
#[derive(Clone, Debug)]
pub enum CallOutcome {
    /// Returned normally.
    Success {
        /// Return data (or deployed code for a create).
        output: Bytes,
        /// Gas used.
        gas_used: u64,
    },
    /// Reverted with data.
    Revert {
        /// Revert data.
        output: Bytes,
        /// Gas used.
        gas_used: u64,
    },
    /// Halted (out of gas, invalid opcode, …).
    Halt {
        /// Why.
        reason: String,
        /// Gas used.
        gas_used: u64,
    },
}

/// A read-only call request, already validated.
#[derive(Clone, Debug, Default)]
pub struct CallRequest {
    /// Caller (zero address if absent).
    pub from: Address,
    /// Target; `None` creates.
    pub to: Option<Address>,
    /// Gas limit.
    pub gas: u64,
    /// Gas price (0 means no fee is charged).
    pub gas_price: u128,
    /// Priority fee for EIP-1559-style calls.
    pub priority_fee: Option<u128>,
    /// Value.
    pub value: U256,
    /// Input.
    pub data: Bytes,
    /// Nonce, if given.
    pub nonce: Option<u64>,
    /// Access list.
    pub access_list: alloy_eips::eip2930::AccessList,
    /// When to stop executing: the call then fails with [`CallError::Aborted`].
    pub deadline: Option<Instant>,
}

/// Why a read-only call produced no outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Execution reached the request's deadline and was stopped.
    #[error("execution aborted: deadline reached")]
    Aborted,
    /// The call cannot run (e.g. the sender cannot pay), in geth's words.
    #[error("{0}")]
    Invalid(String),
}

/// Instructions between two looks at the clock.
const DEADLINE_CHECK_EVERY: u32 = 1024;

/// Halts execution once a deadline has passed: every frame, at its next instruction, so a
/// call tree unwinds within a few instructions per frame.
#[derive(Debug)]
struct Deadline {
    at: Option<Instant>,
    steps: u32,
    reached: bool,
}

impl<CTX> Inspector<CTX, EthInterpreter> for Deadline {
    fn step(&mut self, interp: &mut Interpreter<EthInterpreter>, _context: &mut CTX) {
        if !self.reached {
            let Some(at) = self.at else { return };
            self.steps = self.steps.wrapping_add(1);
            if !self.steps.is_multiple_of(DEADLINE_CHECK_EVERY) || Instant::now() < at {
                return;
            }
            self.reached = true;
        }
        interp.halt(InstructionResult::OutOfGas);
    }
}

/// Executes a call against `db` without committing anything, stopping at `req.deadline`.
pub fn call<DB>(
    db: DB,
    chain_id: u64,
    params: &BlockParams,
    req: &CallRequest,
) -> Result<CallOutcome, CallError>
where
    DB: revm::Database,
    DB::Error: std::fmt::Display,
{
    if req.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(CallError::Aborted);
    }
    let mut cfg = cfg(chain_id);
    cfg.disable_nonce_check = req.nonce.is_none();
    cfg.disable_base_fee = true;
    cfg.tx_gas_limit_cap = Some(u64::MAX);
    let mut block = params.env();
    block.gas_limit = block.gas_limit.max(req.gas);
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(block)
        .with_cfg(cfg)
        .build_mainnet_with_inspector(Deadline {
            at: req.deadline,
            steps: 0,
            reached: false,
        });
    let tx = TxEnv {
        tx_type: if req.priority_fee.is_some() {
            2
        } else if req.access_list.is_empty() {
            0
        } else {
            1
        },
        caller: req.from,
        gas_limit: req.gas,
        gas_price: req.gas_price,
        kind: req.to.map(TxKind::Call).unwrap_or(TxKind::Create),
        value: req.value,
        data: req.data.clone(),
        nonce: req.nonce.unwrap_or_default(),
        chain_id: Some(chain_id),
        access_list: req.access_list.clone(),
        gas_priority_fee: req.priority_fee,
        ..Default::default()
    };
    let result = evm.inspect_tx(tx);
    if evm.inspector.reached {
        return Err(CallError::Aborted);
    }
    match result {
        Ok(r) => Ok(match r.result {
            ExecutionResult::Success { output, gas, .. } => CallOutcome::Success {
                output: output.into_data(),
                gas_used: gas.tx_gas_used(),
            },
            ExecutionResult::Revert { output, gas, .. } => CallOutcome::Revert {
                output,
                gas_used: gas.tx_gas_used(),
            },
            ExecutionResult::Halt { reason, gas, .. } => CallOutcome::Halt {
                reason: halt_reason(&reason),
                gas_used: gas.tx_gas_used(),
            },
        }),
        Err(EVMError::Transaction(e)) => Err(CallError::Invalid(invalid_tx_message(&e))),
        Err(e) => Err(CallError::Invalid(e.to_string())),
    }
}

/// Human-readable halt reason in geth's words where they exist.
pub fn halt_reason(reason: &HaltReason) -> String {
    match reason {
        HaltReason::OutOfGas(_) => "out of gas".into(),
        HaltReason::OpcodeNotFound | HaltReason::InvalidFEOpcode => "invalid opcode".into(),
        HaltReason::StackUnderflow => "stack underflow".into(),
        HaltReason::StackOverflow => "stack overflow".into(),
        HaltReason::InvalidJump => "invalid jump destination".into(),
        HaltReason::OutOfFunds => "insufficient balance for transfer".into(),
        HaltReason::CreateContractSizeLimit => "max code size exceeded".into(),
        other => other.to_string(),
    }
}

/// geth-style message for a transaction revm refuses to execute.
pub fn invalid_tx_message(e: &InvalidTransaction) -> String {
    match e {
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => {
            format!("insufficient funds for gas * price + value: have {balance} want {fee}")
        }
        InvalidTransaction::NonceTooLow { tx, state } => {
            format!("nonce too low: next nonce {state}, tx nonce {tx}")
        }
        InvalidTransaction::NonceTooHigh { tx, state } => {
            format!("nonce too high: next nonce {state}, tx nonce {tx}")
        }
        InvalidTransaction::CallGasCostMoreThanGasLimit { .. }
        | InvalidTransaction::GasFloorMoreThanGasLimit { .. } => "intrinsic gas too low".into(),
        other => other.to_string(),
    }
}

/// Wraps bytecode for genesis.
pub fn bytecode(code: Bytes) -> Bytecode {
    Bytecode::new_raw(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::database::{CacheDB, EmptyDB};
    use std::time::Duration;

    fn params() -> BlockParams {
        BlockParams {
            number: 1,
            timestamp: 1,
            beneficiary: Address::ZERO,
            gas_limit: 30_000_000,
            base_fee: 0,
            prevrandao: B256::ZERO,
        }
    }

    /// `JUMPDEST PUSH1 0 JUMP` as init code: runs until out of gas.
    fn endless(gas: u64, deadline: Option<Instant>) -> CallRequest {
        CallRequest {
            gas,
            data: Bytes::from_static(&[0x5b, 0x60, 0x00, 0x56]),
            deadline,
            ..Default::default()
        }
    }

    #[test]
    fn a_call_is_stopped_at_its_deadline() {
        let db = || CacheDB::new(EmptyDB::default());
        // Without a deadline the loop ends out of gas.
        let out = call(db(), 1, &params(), &endless(100_000, None));
        assert!(
            matches!(&out, Ok(CallOutcome::Halt { reason, .. }) if reason == "out of gas"),
            "{out:?}"
        );
        // With one, a loop that could run for ages is aborted.
        let soon = Instant::now() + Duration::from_millis(50);
        let out = call(db(), 1, &params(), &endless(u64::MAX / 2, Some(soon)));
        assert_eq!(out.map(|_| ()), Err(CallError::Aborted));
        assert!(Instant::now() >= soon);
        // A deadline already passed runs nothing.
        let out = call(db(), 1, &params(), &endless(100_000, Some(Instant::now())));
        assert_eq!(out.map(|_| ()), Err(CallError::Aborted));
    }
}
