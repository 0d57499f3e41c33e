//! The sequencer node: owns the store and the pool, seals blocks, publishes events.

use crate::error::{ChainError, PoolError, StoreError};
use crate::exec::{self, BlockParams, CallOutcome, CallRequest};
use crate::genesis::{ChainSpec, DevAccount};
use crate::pool::{Inserted, Pool, PoolConfig, PooledTx, validate_raw, validate_tx};
use crate::store::{AccountChange, BlockData, Reader, StateChanges, Store};
use alloy_consensus::proofs::{calculate_receipt_root, calculate_transaction_root};
use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header, TxEnvelope, TxReceipt};
use alloy_eips::eip1559::BaseFeeParams;
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{Address, B256, Bloom, Bytes, U256, keccak256};
use alloy_trie::{EMPTY_ROOT_HASH, KECCAK_EMPTY};
use parking_lot::{Mutex, RwLock};
use revm::database::CacheDB;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, broadcast};
use tracing::{error, info, warn};

/// Most transactions considered for one block.
const MAX_BLOCK_CANDIDATES: usize = 20_000;

/// Fault injection for tests, off unless set: the next N seals panic (a fault point to check
/// that a sealer panic never leaves a node serving a dead chain).
pub const FAULT_SEAL_PANICS_ENV: &str = "OPENLEDGER_FAULT_SEAL_PANICS";

/// Consecutive failed (or panicked) seals after which the sealer gives up and the node halts.
pub const MAX_SEAL_FAILURES: u32 = 5;

/// The latest block timestamp the dev clock methods may reach: 9999-12-31T23:59:59Z. Far
/// beyond any real use, and far enough below `u64::MAX` that block timestamps never overflow.
pub const MAX_TIMESTAMP: u64 = 253_402_300_799;

/// How the node seals blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealMode {
    /// As soon as executable transactions are waiting.
    OnDemand,
    /// Every interval, even when empty (like an OP Stack sequencer).
    Interval(Duration),
}

/// Node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the store lives.
    pub datadir: PathBuf,
    /// The chain spec used when the datadir is empty (must match otherwise).
    pub spec: ChainSpec,
    /// Sealing mode.
    pub seal: SealMode,
    /// Fee recipient (header beneficiary) for priority fees.
    pub fee_recipient: Address,
    /// Pool policy.
    pub pool: PoolConfig,
    /// Accounts whose keys the node holds (`eth_sendTransaction`, `eth_sign`).
    pub dev_accounts: Vec<DevAccount>,
    /// Enables the development methods (`evm_mine`, `evm_increaseTime`,
    /// `evm_setNextBlockTimestamp`): on for `devnet`, off for `node`.
    pub dev_methods: bool,
}

/// A sealed block as announced to subscribers.
#[derive(Clone, Debug)]
pub struct NewBlock {
    /// Header.
    pub header: Header,
    /// Hash.
    pub hash: B256,
    /// Transaction hashes.
    pub tx_hashes: Vec<B256>,
    /// Every log with its position.
    pub logs: Vec<alloy_rpc_types_eth::Log>,
}

/// The head of the chain.
#[derive(Clone, Debug)]
pub struct Head {
    /// Header.
    pub header: Header,
    /// Hash.
    pub hash: B256,
}

/// The node.
pub struct Node {
    store: Store,
    spec: ChainSpec,
    cfg: NodeConfig,
    pool: Mutex<Pool>,
    head: RwLock<Head>,
    seal_lock: Mutex<()>,
    notify: Notify,
    blocks: broadcast::Sender<Arc<NewBlock>>,
    pending: broadcast::Sender<B256>,
    time_offset: AtomicU64,
    next_timestamp: AtomicU64,
    /// Seals left to fail on purpose (see [`FAULT_SEAL_PANICS_ENV`]).
    fault_seal_panics: AtomicU32,
    /// Why the node stopped producing blocks, once the sealer has given up.
    halted: RwLock<Option<String>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("head", &self.head.read().header.number)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn call_error(e: exec::CallError) -> ChainError {
    match e {
        exec::CallError::Aborted => ChainError::Timeout,
        exec::CallError::Invalid(m) => ChainError::Execution(m),
    }
}

/// The message of a panic payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(no message)".into()),
    }
}

/// State changes that create the genesis allocation.
pub fn genesis_changes(spec: &ChainSpec) -> StateChanges {
    let mut changes = StateChanges::default();
    for (address, acct) in &spec.genesis.alloc {
        let code = acct.code.clone().unwrap_or_default();
        let code_hash = if code.is_empty() {
            KECCAK_EMPTY
        } else {
            keccak256(&code)
        };
        if !code.is_empty() {
            changes.code.insert(code_hash, code);
        }
        let storage = acct
            .storage
            .iter()
            .flatten()
            .map(|(k, v)| (U256::from_be_bytes(k.0), U256::from_be_bytes(v.0)))
            .collect();
        changes.accounts.insert(
            *address,
            AccountChange {
                info: Some((acct.nonce.unwrap_or_default(), acct.balance, code_hash)),
                wiped: true,
                storage,
            },
        );
    }
    changes
}

fn genesis_header(spec: &ChainSpec, state_root: B256) -> Header {
    let g = &spec.genesis;
    Header {
        parent_hash: B256::ZERO,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: g.coinbase,
        state_root,
        transactions_root: EMPTY_ROOT_HASH,
        receipts_root: EMPTY_ROOT_HASH,
        logs_bloom: Bloom::ZERO,
        difficulty: g.difficulty,
        number: 0,
        gas_limit: g.gas_limit,
        gas_used: 0,
        timestamp: g.timestamp,
        extra_data: g.extra_data.clone(),
        mix_hash: g.mix_hash,
        nonce: Default::default(),
        base_fee_per_gas: Some(spec.initial_base_fee()),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        ..Default::default()
    }
}

/// Writes block 0 (the genesis allocation) and the genesis JSON into an empty store.
fn commit_genesis(store: &Store, spec: &ChainSpec) -> Result<BlockData, StoreError> {
    store.commit_block(&genesis_changes(spec), Some(&spec.to_json()), |root| {
        let header = genesis_header(spec, root);
        let hash = header.hash_slow();
        Ok(BlockData {
            header,
            hash,
            txs: vec![],
            senders: vec![],
            receipts: vec![],
        })
    })
}

/// Executes `candidates` on top of `store`'s head and commits the block: the one code path
/// used both to seal new blocks and to replay stored ones.
///
/// With `head`, the commit and the move of `head` to the new block happen under `head`'s
/// write lock. Whoever reads the block from the store (a receipt, a log) and then asks for
/// the head therefore never gets an older block number than the one they just read.
fn build_and_commit(
    store: &Store,
    spec: &ChainSpec,
    parent: &Head,
    params: &BlockParams,
    candidates: Vec<(TxEnvelope, Address)>,
    head: Option<&RwLock<Head>>,
) -> Result<(BlockData, exec::ExecutedBlock), ChainError> {
    let reader = store.reader()?;
    let mut executed = exec::execute_block(
        &reader,
        spec.chain_id(),
        params,
        spec.params.base_fee_recipient,
        candidates,
    )
    .map_err(ChainError::Execution)?;
    drop(reader);
    let txs: Vec<TxEnvelope> = executed.txs.iter().map(|t| t.tx.clone()).collect();
    let receipts: Vec<_> = executed.txs.iter().map(|t| t.receipt.clone()).collect();
    let senders = executed.txs.iter().map(|t| t.sender).collect();
    let mut bloom = Bloom::ZERO;
    for r in &receipts {
        bloom.accrue_bloom(&r.bloom());
    }
    let header = Header {
        parent_hash: parent.hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: params.beneficiary,
        state_root: B256::ZERO,
        transactions_root: calculate_transaction_root(&txs),
        receipts_root: calculate_receipt_root(&receipts),
        logs_bloom: bloom,
        difficulty: U256::ZERO,
        number: params.number,
        gas_limit: params.gas_limit,
        gas_used: executed.gas_used,
        timestamp: params.timestamp,
        extra_data: Bytes::new(),
        mix_hash: params.prevrandao,
        nonce: Default::default(),
        base_fee_per_gas: Some(params.base_fee),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        ..Default::default()
    };
    let changes = std::mem::take(&mut executed.changes);
    let mut head_guard = head.map(|h| h.write());
    let block = store.commit_block(&changes, None, move |state_root| {
        let mut header = header;
        header.state_root = state_root;
        let hash = header.hash_slow();
        Ok(BlockData {
            header,
            hash,
            txs,
            senders,
            receipts,
        })
    })?;
    if let Some(g) = head_guard.as_mut() {
        **g = Head {
            header: block.header.clone(),
            hash: block.hash,
        };
    }
    drop(head_guard);
    Ok((block, executed))
}

fn block_logs(block: &BlockData) -> Vec<alloy_rpc_types_eth::Log> {
    let mut out = Vec::new();
    let mut log_index = 0u64;
    for (i, (tx, r)) in block.txs.iter().zip(&block.receipts).enumerate() {
        for l in r.logs() {
            out.push(alloy_rpc_types_eth::Log {
                inner: l.clone(),
                block_hash: Some(block.hash),
                block_number: Some(block.header.number),
                block_timestamp: Some(block.header.timestamp),
                transaction_hash: Some(*tx.tx_hash()),
                transaction_index: Some(i as u64),
                log_index: Some(log_index),
                removed: false,
            });
            log_index += 1;
        }
    }
    out
}

impl Node {
    /// Opens the datadir, writing genesis if it is empty.
    pub fn open(cfg: NodeConfig) -> Result<Arc<Self>, ChainError> {
        std::fs::create_dir_all(&cfg.datadir).map_err(|e| {
            ChainError::Genesis(format!("cannot create {}: {e}", cfg.datadir.display()))
        })?;
        let store = Store::open(&cfg.datadir.join("chain.redb"))?;
        let spec = match store.genesis_json()? {
            Some(json) => {
                let stored = ChainSpec::from_json(&json)?;
                if stored.chain_id() != cfg.spec.chain_id() {
                    return Err(ChainError::Genesis(format!(
                        "datadir {} holds chain id {}, but {} was requested",
                        cfg.datadir.display(),
                        stored.chain_id(),
                        cfg.spec.chain_id()
                    )));
                }
                stored
            }
            None => {
                let spec = cfg.spec.clone();
                commit_genesis(&store, &spec)?;
                info!(target: "chain", chain_id = spec.chain_id(), "initialised genesis");
                spec
            }
        };
        let reader = store.reader()?;
        let number = reader
            .head()?
            .ok_or_else(|| ChainError::Genesis("store has no head".into()))?;
        let header = reader
            .header(number)?
            .ok_or_else(|| StoreError::Corrupt(format!("head header {number} missing")))?;
        let hash = header.hash_slow();
        drop(reader);
        let (blocks, _) = broadcast::channel(1024);
        let (pending, _) = broadcast::channel(16_384);
        Ok(Arc::new(Self {
            store,
            spec,
            pool: Mutex::new(Pool::new(cfg.pool.clone())),
            cfg,
            head: RwLock::new(Head { header, hash }),
            seal_lock: Mutex::new(()),
            notify: Notify::new(),
            blocks,
            pending,
            time_offset: AtomicU64::new(0),
            next_timestamp: AtomicU64::new(0),
            fault_seal_panics: AtomicU32::new(
                std::env::var(FAULT_SEAL_PANICS_ENV)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            ),
            halted: RwLock::new(None),
        }))
    }

    /// The chain spec in force.
    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// Chain id.
    pub fn chain_id(&self) -> u64 {
        self.spec.chain_id()
    }

    /// The node configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The current head.
    pub fn head(&self) -> Head {
        self.head.read().clone()
    }

    /// A read snapshot of committed data.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        self.store.reader()
    }

    /// The pool (lock briefly).
    pub fn pool(&self) -> &Mutex<Pool> {
        &self.pool
    }

    /// Dev accounts the node can sign for.
    pub fn dev_accounts(&self) -> &[DevAccount] {
        &self.cfg.dev_accounts
    }

    /// New-block events.
    pub fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<NewBlock>> {
        self.blocks.subscribe()
    }

    /// New pending transaction hashes.
    pub fn subscribe_pending(&self) -> broadcast::Receiver<B256> {
        self.pending.subscribe()
    }

    /// Base fee of the next block.
    pub fn next_base_fee(&self) -> u64 {
        self.head
            .read()
            .header
            .next_block_base_fee(BaseFeeParams::ethereum())
            .unwrap_or_default()
    }

    /// Block gas limit.
    pub fn gas_limit(&self) -> u64 {
        self.head.read().header.gas_limit
    }

    /// Decodes, checks and pools a raw signed transaction.
    pub fn submit_raw(&self, raw: &[u8]) -> Result<Inserted, PoolError> {
        let tx = validate_raw(
            raw,
            self.chain_id(),
            self.gas_limit(),
            self.pool.lock().config(),
        )?;
        self.submit_validated(tx)
    }

    /// Checks and pools a signed transaction.
    pub fn submit_tx(&self, tx: TxEnvelope) -> Result<Inserted, PoolError> {
        let cfg = self.pool.lock().config().clone();
        let tx = validate_tx(tx, self.chain_id(), self.gas_limit(), &cfg)?;
        self.submit_validated(tx)
    }

    fn submit_validated(&self, tx: PooledTx) -> Result<Inserted, PoolError> {
        let reader = self
            .store
            .reader()
            .map_err(|e| PoolError::Internal(e.to_string()))?;
        let acct = reader
            .account(&tx.sender)
            .map_err(|e| PoolError::Internal(e.to_string()))?;
        drop(reader);
        let (nonce, balance) = acct.map(|a| (a.nonce, a.balance)).unwrap_or_default();
        let inserted = {
            let mut pool = self.pool.lock();
            pool.maybe_expire(std::time::Instant::now());
            pool.insert(tx, nonce, balance)?
        };
        let _ = self.pending.send(inserted.hash);
        if inserted.pending {
            self.notify.notify_one();
        }
        Ok(inserted)
    }

    /// Account nonce counting pooled transactions (the "pending" block tag).
    pub fn pending_nonce(&self, address: &Address) -> Result<u64, StoreError> {
        let state = self
            .store
            .reader()?
            .account(address)?
            .map(|a| a.nonce)
            .unwrap_or_default();
        Ok(self.pool.lock().next_nonce(address, state))
    }

    /// Seals one block from the pool (possibly empty). Returns it.
    pub fn seal(&self) -> Result<Arc<NewBlock>, ChainError> {
        let _guard = self.seal_lock.lock();
        if self
            .fault_seal_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("injected sealing fault ({FAULT_SEAL_PANICS_ENV})");
        }
        let parent = self.head();
        let base_fee = self.next_base_fee();
        let number = parent.header.number + 1;
        let timestamp = self.next_block_timestamp(parent.header.timestamp);
        let candidates = self.pool.lock().best(base_fee, MAX_BLOCK_CANDIDATES);
        let mut seed = parent.hash.to_vec();
        seed.extend_from_slice(&number.to_be_bytes());
        let params = BlockParams {
            number,
            timestamp,
            beneficiary: self.cfg.fee_recipient,
            gas_limit: parent.header.gas_limit,
            base_fee,
            prevrandao: keccak256(&seed),
        };
        let (block, executed) = build_and_commit(
            &self.store,
            &self.spec,
            &parent,
            &params,
            candidates,
            Some(&self.head),
        )?;
        // Update the pool: included and rejected transactions leave, nonces move on.
        {
            let reader = self.store.reader()?;
            let mut pool = self.pool.lock();
            for r in &executed.rejected {
                warn!(target: "chain::seal", hash = %r.hash, reason = %r.reason, "dropping invalid transaction");
                pool.remove(&r.hash);
            }
            let mut senders: Vec<Address> = block.senders.clone();
            senders.extend(executed.rejected.iter().map(|r| r.sender));
            senders.sort();
            senders.dedup();
            for s in senders {
                let n = reader.account(&s)?.map(|a| a.nonce).unwrap_or_default();
                pool.set_state_nonce(&s, n);
            }
            pool.maybe_expire(std::time::Instant::now());
        }
        let event = Arc::new(NewBlock {
            header: block.header.clone(),
            hash: block.hash,
            tx_hashes: block.txs.iter().map(|t| *t.tx_hash()).collect(),
            logs: block_logs(&block),
        });
        info!(target: "chain::seal", number, txs = block.txs.len(), gas = block.header.gas_used, hash = %block.hash, "sealed block");
        let _ = self.blocks.send(event.clone());
        Ok(event)
    }

    /// Runs the sealing loop until `shutdown` resolves.
    ///
    /// A seal that fails or panics is retried after a back-off (0.1 s, doubling, at most 2 s):
    /// the state is consistent after a panic, since a block is committed in one redb
    /// transaction and the head moves under the same lock. After [`MAX_SEAL_FAILURES`] failures
    /// in a row the node halts instead: [`Node::halted`] says why, the RPC refuses every request,
    /// and this function returns, so that the process can exit rather than serve a chain that
    /// no longer moves.
    pub async fn run_sealer(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            match self.cfg.seal {
                SealMode::OnDemand => {
                    let base_fee = self.next_base_fee();
                    if !self.pool.lock().has_executable(base_fee) {
                        tokio::select! {
                            _ = &mut shutdown => return,
                            _ = self.notify.notified() => {}
                        }
                    }
                }
                SealMode::Interval(d) => {
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
            let node = self.clone();
            let error = match tokio::task::spawn_blocking(move || node.seal()).await {
                Ok(Ok(_)) => {
                    failures = 0;
                    continue;
                }
                Ok(Err(e)) => format!("sealing failed: {e}"),
                Err(e) if e.is_panic() => {
                    format!("sealing panicked: {}", panic_message(e.into_panic()))
                }
                Err(e) => format!("sealing task failed: {e}"),
            };
            failures += 1;
            if failures >= MAX_SEAL_FAILURES {
                let reason = format!("the block sealer failed {failures} times in a row ({error})");
                error!(target: "chain::seal", %reason, "halting: this node no longer produces blocks");
                *self.halted.write() = Some(reason);
                return;
            }
            let backoff = Duration::from_millis(100 << (failures - 1)).min(Duration::from_secs(2));
            error!(target: "chain::seal", %error, failures, retry_in = ?backoff, "restarting the block sealer");
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Why the node stopped producing blocks, if its sealer gave up (see [`Node::run_sealer`]).
    pub fn halted(&self) -> Option<String> {
        self.halted.read().clone()
    }

    /// Fault injection for tests: the next `n` seals panic (as [`FAULT_SEAL_PANICS_ENV`] does
    /// for a whole process).
    #[doc(hidden)]
    pub fn inject_seal_panics(&self, n: u32) {
        self.fault_seal_panics.store(n, Ordering::SeqCst);
    }

    /// Block parameters a call sees: the latest block's header (geth's "latest"), or with
    /// `pending` the block that would be sealed next (number + 1, the next timestamp and base fee),
    /// which is what a gas estimate for a transaction about to be sent must simulate.
    pub fn call_params(&self, pending: bool) -> BlockParams {
        let head = self.head();
        if pending {
            return BlockParams {
                number: head.header.number + 1,
                timestamp: self.clock(head.header.timestamp),
                beneficiary: self.cfg.fee_recipient,
                gas_limit: head.header.gas_limit,
                base_fee: self.next_base_fee(),
                prevrandao: head.header.mix_hash,
            };
        }
        BlockParams {
            number: head.header.number,
            timestamp: head.header.timestamp,
            beneficiary: head.header.beneficiary,
            gas_limit: head.header.gas_limit,
            base_fee: head.header.base_fee_per_gas.unwrap_or_default(),
            prevrandao: head.header.mix_hash,
        }
    }

    /// Dev only: moves the clock of future blocks forward by `secs`; returns the total offset.
    /// The next block's timestamp is also at least the head's plus `secs`, since blocks sealed
    /// on demand may run ahead of the wall clock. Refused if the clock would pass
    /// [`MAX_TIMESTAMP`].
    pub fn increase_time(&self, secs: u64) -> Result<u64, ChainError> {
        let too_far = || {
            ChainError::InvalidArgument(format!(
                "cannot move the clock {secs} s forward: block timestamps would pass {MAX_TIMESTAMP} (year 9999)"
            ))
        };
        let head = self.head.read().header.timestamp;
        let floor = head.checked_add(secs).ok_or_else(too_far)?;
        let offset = self
            .time_offset
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                let total = o.checked_add(secs)?;
                let clock = now_secs().checked_add(total)?;
                (clock.max(floor) <= MAX_TIMESTAMP).then_some(total)
            })
            .map_err(|_| too_far())?;
        self.next_timestamp.fetch_max(floor, Ordering::SeqCst);
        Ok(offset + secs)
    }

    /// Dev only: the next block gets at least this timestamp (must exceed the head's and be at
    /// most [`MAX_TIMESTAMP`]).
    pub fn set_next_timestamp(&self, ts: u64) -> Result<(), ChainError> {
        let head = self.head.read().header.timestamp;
        if ts <= head {
            return Err(ChainError::Execution(format!(
                "timestamp {ts} is not after the head block's timestamp {head}"
            )));
        }
        if ts > MAX_TIMESTAMP {
            return Err(ChainError::InvalidArgument(format!(
                "timestamp {ts} is past {MAX_TIMESTAMP} (year 9999)"
            )));
        }
        self.next_timestamp.store(ts, Ordering::SeqCst);
        Ok(())
    }

    /// The wall clock plus the dev offset, never behind the parent; saturating, so a clock
    /// moved to its limit can never make sealing overflow.
    fn clock(&self, parent: u64) -> u64 {
        now_secs()
            .saturating_add(self.time_offset.load(Ordering::SeqCst))
            .max(parent.saturating_add(1))
    }

    fn next_block_timestamp(&self, parent: u64) -> u64 {
        let forced = self.next_timestamp.swap(0, Ordering::SeqCst);
        self.clock(parent).max(forced)
    }

    /// `eth_call` on the latest state with optional state overrides.
    pub fn call(
        &self,
        req: &CallRequest,
        pending: bool,
        overrides: Option<&alloy_rpc_types_eth::state::StateOverride>,
    ) -> Result<CallOutcome, ChainError> {
        let reader = self.store.reader()?;
        let mut db = CacheDB::new(&reader);
        if let Some(o) = overrides {
            apply_overrides(&mut db, o)?;
        }
        exec::call(&mut db, self.chain_id(), &self.call_params(pending), req).map_err(call_error)
    }

    /// `eth_estimateGas`: the smallest gas limit with which the call succeeds in the next block,
    /// by binary search.
    /// Returns the failing outcome if the call fails even at `cap`.
    pub fn estimate_gas(
        &self,
        req: &CallRequest,
        cap: u64,
        overrides: Option<&alloy_rpc_types_eth::state::StateOverride>,
    ) -> Result<Result<u64, CallOutcome>, ChainError> {
        let reader = self.store.reader()?;
        let mut base = CacheDB::new(&reader);
        if let Some(o) = overrides {
            apply_overrides(&mut base, o)?;
        }
        let params = self.call_params(true);
        let run = |gas: u64| -> Result<CallOutcome, ChainError> {
            let mut db = base.clone();
            let mut r = req.clone();
            r.gas = gas;
            exec::call(&mut db, self.chain_id(), &params, &r).map_err(call_error)
        };
        let mut hi = if req.gas > 0 { req.gas.min(cap) } else { cap };
        let used = match run(hi)? {
            CallOutcome::Success { gas_used, .. } => gas_used,
            other => return Ok(Err(other)),
        };
        let mut lo = used.saturating_sub(1).max(20_999);
        // Most calls succeed at a little above the used gas (63/64 rule): try that first.
        let guess = used.saturating_add(2_300).saturating_mul(64) / 63;
        if guess < hi && matches!(run(guess)?, CallOutcome::Success { .. }) {
            hi = guess;
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            match run(mid)? {
                CallOutcome::Success { .. } => hi = mid,
                _ => lo = mid,
            }
        }
        Ok(Ok(hi))
    }

    /// Opens the store read-only in spirit: re-executes every block from genesis in a scratch
    /// store under `scratch` and checks every state root, receipts root and block hash.
    pub fn verify_chain(&self, scratch: &Path) -> Result<u64, ChainError> {
        replay_and_verify(&self.store, &self.spec, scratch)
    }
}

/// Re-executes the chain stored in `source` from genesis in a fresh store at `scratch` and
/// compares every block hash (which covers state, transactions and receipts roots).
/// Returns the number of blocks checked.
pub fn replay_and_verify(
    source: &Store,
    spec: &ChainSpec,
    scratch: &Path,
) -> Result<u64, ChainError> {
    let target = Store::open(&scratch.join("replay.redb"))?;
    let src = source.reader()?;
    let head = src.head()?.unwrap_or_default();
    let g = commit_genesis(&target, spec)?;
    let want = src.block_hash(0)?.unwrap_or_default();
    if g.hash != want {
        return Err(ChainError::Execution(format!(
            "genesis hash {} != stored {}",
            g.hash, want
        )));
    }
    let mut parent = Head {
        header: g.header,
        hash: g.hash,
    };
    for n in 1..=head {
        let stored = src
            .header(n)?
            .ok_or_else(|| StoreError::Corrupt(format!("header {n} missing")))?;
        let body = src
            .body(n)?
            .ok_or_else(|| StoreError::Corrupt(format!("body {n} missing")))?;
        let count = body.len();
        let params = BlockParams {
            number: n,
            timestamp: stored.timestamp,
            beneficiary: stored.beneficiary,
            gas_limit: stored.gas_limit,
            base_fee: stored.base_fee_per_gas.unwrap_or_default(),
            prevrandao: stored.mix_hash,
        };
        let (block, executed) = build_and_commit(&target, spec, &parent, &params, body, None)?;
        if block.txs.len() != count || !executed.rejected.is_empty() {
            return Err(ChainError::Execution(format!(
                "block {n}: {} of {count} transactions re-executed",
                block.txs.len()
            )));
        }
        if block.header.state_root != stored.state_root {
            return Err(ChainError::Execution(format!(
                "block {n}: state root {} != stored {}",
                block.header.state_root, stored.state_root
            )));
        }
        if block.hash != stored.hash_slow() {
            return Err(ChainError::Execution(format!(
                "block {n}: hash differs from the stored block"
            )));
        }
        parent = Head {
            header: block.header,
            hash: block.hash,
        };
    }
    Ok(head)
}

fn apply_overrides(
    db: &mut CacheDB<&Reader>,
    o: &alloy_rpc_types_eth::state::StateOverride,
) -> Result<(), ChainError> {
    use revm::Database;
    for (address, ov) in o.iter() {
        let mut info = db
            .basic(*address)
            .map_err(|e| ChainError::Execution(e.to_string()))?
            .unwrap_or_default();
        if let Some(b) = ov.balance {
            info.balance = b;
        }
        if let Some(n) = ov.nonce {
            info.nonce = n;
        }
        if let Some(code) = &ov.code {
            let bytecode = exec::bytecode(code.clone());
            info.code_hash = bytecode.hash_slow();
            info.code = Some(bytecode);
        }
        db.insert_account_info(*address, info);
        if ov.state.is_some() && ov.state_diff.is_some() {
            return Err(ChainError::Execution(format!(
                "state override for {address}: both state and stateDiff given"
            )));
        }
        if let Some(state) = &ov.state {
            let slots = state
                .iter()
                .map(|(k, v)| (U256::from_be_bytes(k.0), U256::from_be_bytes(v.0)));
            db.replace_account_storage(*address, slots.collect())
                .map_err(|e| ChainError::Execution(e.to_string()))?;
        }
        if let Some(diff) = &ov.state_diff {
            for (k, v) in diff {
                db.insert_account_storage(
                    *address,
                    U256::from_be_bytes(k.0),
                    U256::from_be_bytes(v.0),
                )
                .map_err(|e| ChainError::Execution(e.to_string()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::DevPreset;
    use std::sync::atomic::AtomicBool;

    /// A receipt or log is read from the store; a client that reads one and then asks for the
    /// block number must get at least that block (the datanet indexer relies on it).
    #[test]
    fn the_head_is_never_behind_what_the_store_shows() -> Result<(), ChainError> {
        let dir = tempfile::tempdir().map_err(|e| ChainError::Execution(e.to_string()))?;
        let (spec, accounts) = DevPreset::default().build()?;
        let node = Node::open(NodeConfig {
            datadir: dir.path().into(),
            spec,
            seal: SealMode::OnDemand,
            fee_recipient: Address::ZERO,
            pool: PoolConfig::default(),
            dev_accounts: accounts,
            dev_methods: true,
        })?;
        let done = Arc::new(AtomicBool::new(false));
        let sealer = {
            let (node, done) = (node.clone(), done.clone());
            std::thread::spawn(move || -> Result<(), ChainError> {
                let r = (0..300).try_for_each(|_| node.seal().map(drop));
                done.store(true, Ordering::SeqCst);
                r
            })
        };
        let mut checks = 0u64;
        while !done.load(Ordering::SeqCst) {
            let stored = node.reader()?.head()?.unwrap_or_default();
            let head = node.head().header.number;
            assert!(head >= stored, "head {head} behind stored block {stored}");
            checks += 1;
        }
        sealer
            .join()
            .map_err(|_| ChainError::Execution("the sealer panicked".into()))??;
        assert_eq!(node.head().header.number, 300);
        assert!(checks > 0);
        Ok(())
    }
}
