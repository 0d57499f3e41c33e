//! The typed methods: one Rust method on [`RpcState`] per JSON-RPC method, taking decoded
//! arguments and returning a typed result (in the style of reth's `EthApi`).
//!
//! The names follow the wire names: `eth_getBalance` is [`RpcState::get_balance`] (the `eth_`
//! prefix is dropped), `txpool_status` is [`RpcState::txpool_status`] (other prefixes are kept).
//! [`crate::methods::METHODS`] maps each wire name to the method it calls; the methods
//! themselves know nothing of JSON-RPC parameters. A method that runs the EVM or seals a block
//! is `async` and stops its EVM execution at the `deadline` it is given.

use crate::convert::{self, rpc_block, rpc_receipts, rpc_tx};
use crate::error::RpcError;
use crate::eth::{RpcState, collect_logs};
use crate::filters::FilterKind;
use alloy_consensus::Transaction as _;
use alloy_dyn_abi::TypedData;
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::state::StateOverride;
use alloy_rpc_types_eth::{
    Block, FeeHistory, Filter, FilterBlockOption, Log, Transaction, TransactionReceipt,
    TransactionRequest,
};
use alloy_signer::SignerSync;
use openledger_chain::CallOutcome;
use openledger_chain::pool::PooledTx;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What `eth_getFilterChanges` returns: block or transaction hashes, or logs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum FilterChanges {
    /// New block hashes (block filter) or pending transaction hashes (pending filter).
    Hashes(Vec<B256>),
    /// New matching logs (log filter).
    Logs(Vec<Log>),
}

/// What `txpool_status` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TxpoolStatus {
    /// Transactions ready to be included.
    pub pending: U64,
    /// Transactions waiting for a nonce gap to close.
    pub queued: U64,
}

/// What `txpool_content` returns: the pool's transactions by sender, then by nonce.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TxpoolContent {
    /// Transactions ready to be included.
    pub pending: PoolBySender,
    /// Transactions waiting for a nonce gap to close.
    pub queued: PoolBySender,
}

/// Pooled transactions by sender, each sender's in nonce order. Serialized as geth does: an
/// object keyed by the checksummed sender, holding an object keyed by the decimal nonce.
#[derive(Clone, Debug, Default)]
pub struct PoolBySender(pub BTreeMap<Address, Vec<Arc<PooledTx>>>);

impl Serialize for PoolBySender {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct ByNonce<'a>(&'a [Arc<PooledTx>]);
        impl Serialize for ByNonce<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for t in self.0 {
                    map.serialize_entry(&t.nonce().to_string(), &rpc_tx(&t.tx, t.sender, None))?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (sender, txs) in &self.0 {
            map.serialize_entry(&sender.to_checksum(None), &ByNonce(txs))?;
        }
        map.end()
    }
}

/// `web3_` and `net_` methods.
impl RpcState {
    /// `web3_clientVersion`.
    pub fn web3_client_version(&self) -> &'static str {
        openledger_protocol::CLIENT_VERSION
    }

    /// `web3_sha3`: the keccak-256 of `data`.
    pub fn web3_sha3(&self, data: Bytes) -> B256 {
        alloy_primitives::keccak256(&data)
    }

    /// `net_version`: the chain id in decimal.
    pub fn net_version(&self) -> String {
        self.node.chain_id().to_string()
    }

    /// `net_listening`: always true.
    pub fn net_listening(&self) -> bool {
        true
    }

    /// `net_peerCount`: always 0 (a single-sequencer chain).
    pub fn net_peer_count(&self) -> U64 {
        U64::ZERO
    }
}

/// Chain, account and state methods.
impl RpcState {
    /// `eth_chainId`.
    pub fn chain_id(&self) -> U64 {
        U64::from(self.node.chain_id())
    }

    /// `eth_syncing`: always false.
    pub fn syncing(&self) -> bool {
        false
    }

    /// `eth_mining`: always true (the node seals its own blocks).
    pub fn mining(&self) -> bool {
        true
    }

    /// `eth_hashrate`: always 0.
    pub fn hashrate(&self) -> U64 {
        U64::ZERO
    }

    /// `eth_protocolVersion`: 0x44.
    pub fn protocol_version(&self) -> U64 {
        U64::from(0x44)
    }

    /// `eth_coinbase`: the fee recipient.
    pub fn coinbase(&self) -> Address {
        self.node.config().fee_recipient
    }

    /// `eth_blockNumber`: the head's number.
    pub fn block_number(&self) -> U64 {
        U64::from(self.node.head().header.number)
    }

    /// `eth_accounts`: the dev accounts whose keys the node holds.
    pub fn accounts(&self) -> Vec<Address> {
        self.node.dev_accounts().iter().map(|a| a.address).collect()
    }

    /// `eth_getBalance`.
    pub fn get_balance(&self, address: Address, block: Option<BlockId>) -> Result<U256, RpcError> {
        let r = self.state_reader(block)?;
        Ok(r.account(&address)?.map(|x| x.balance).unwrap_or_default())
    }

    /// `eth_getTransactionCount`; at `pending`, counts the pool's transactions too.
    pub fn get_transaction_count(
        &self,
        address: Address,
        block: Option<BlockId>,
    ) -> Result<U64, RpcError> {
        if matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending))) {
            return Ok(U64::from(self.node.pending_nonce(&address)?));
        }
        let r = self.state_reader(block)?;
        Ok(U64::from(
            r.account(&address)?.map(|x| x.nonce).unwrap_or_default(),
        ))
    }

    /// `eth_getCode`.
    pub fn get_code(&self, address: Address, block: Option<BlockId>) -> Result<Bytes, RpcError> {
        let r = self.state_reader(block)?;
        Ok(match r.account(&address)? {
            Some(acct) => r.code(&acct.code_hash)?.unwrap_or_default(),
            None => Bytes::new(),
        })
    }

    /// `eth_getStorageAt`.
    pub fn get_storage_at(
        &self,
        address: Address,
        slot: U256,
        block: Option<BlockId>,
    ) -> Result<B256, RpcError> {
        let r = self.state_reader(block)?;
        Ok(B256::from(r.storage(&address, slot)?))
    }
}

/// Execution and fee methods.
impl RpcState {
    /// `eth_call`: the output, or code 3 with the revert data.
    pub async fn call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        overrides: Option<StateOverride>,
        deadline: Instant,
    ) -> Result<Bytes, RpcError> {
        drop(self.state_reader(block)?);
        let pending = matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending)));
        let mut req = self.call_request(request)?;
        req.deadline = Some(deadline);
        let node = self.node.clone();
        let out = self
            .execute(deadline, move || {
                node.call(&req, pending, overrides.as_ref())
            })
            .await?;
        match out {
            CallOutcome::Success { output, .. } => Ok(output),
            CallOutcome::Revert { output, .. } => Err(RpcError::reverted(&output)),
            CallOutcome::Halt { reason, .. } => Err(RpcError::server(reason)),
        }
    }

    /// `eth_estimateGas`: the least gas the call succeeds with, capped by the gas cap and by
    /// what the sender's balance pays for.
    pub async fn estimate_gas(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        overrides: Option<StateOverride>,
        deadline: Instant,
    ) -> Result<U64, RpcError> {
        let reader = self.state_reader(block)?;
        let mut req = self.call_request(request)?;
        let mut cap = self.cfg.gas_cap;
        if req.gas_price > 0 {
            let bal = reader
                .account(&req.from)?
                .map(|a| a.balance)
                .unwrap_or_default();
            if bal < req.value {
                return Err(RpcError::server("insufficient funds for transfer"));
            }
            let allowance = (bal - req.value) / U256::from(req.gas_price);
            cap = cap.min(allowance.saturating_to::<u64>());
        }
        drop(reader);
        if req.gas > cap {
            req.gas = cap;
        }
        req.deadline = Some(deadline);
        let node = self.node.clone();
        let out = self
            .execute(deadline, move || {
                node.estimate_gas(&req, cap, overrides.as_ref())
            })
            .await?;
        match out {
            Ok(gas) => Ok(U64::from(gas)),
            Err(CallOutcome::Revert { output, .. }) => Err(RpcError::reverted(&output)),
            Err(CallOutcome::Halt { reason, .. }) if reason == "out of gas" => Err(
                RpcError::server(format!("gas required exceeds allowance ({cap})")),
            ),
            Err(CallOutcome::Halt { reason, .. }) => Err(RpcError::server(reason)),
            Err(CallOutcome::Success { .. }) => Err(RpcError::internal("estimate failed")),
        }
    }

    /// `eth_gasPrice`: next block's base fee plus the suggested tip.
    pub fn gas_price(&self) -> U256 {
        U256::from(self.node.next_base_fee() as u128 + self.cfg.suggested_tip)
    }

    /// `eth_maxPriorityFeePerGas`: the suggested tip.
    pub fn max_priority_fee_per_gas(&self) -> U256 {
        U256::from(self.cfg.suggested_tip)
    }

    /// `eth_blobBaseFee`: always 1 (blob transactions are not accepted).
    pub fn blob_base_fee(&self) -> U256 {
        U256::from(1)
    }

    /// `eth_feeHistory`: base fees, gas used ratios and, for the given percentiles, the
    /// effective tips of up to 1024 blocks ending at `newest`.
    pub fn fee_history(
        &self,
        block_count: U64,
        newest: BlockNumberOrTag,
        percentiles: Option<Vec<f64>>,
    ) -> Result<FeeHistory, RpcError> {
        if let Some(ps) = &percentiles
            && (ps.iter().any(|x| !(0.0..=100.0).contains(x)) || ps.windows(2).any(|w| w[0] > w[1]))
        {
            return Err(RpcError::invalid_params(
                "reward percentiles must be ascending values in [0, 100]",
            ));
        }
        let r = self.reader()?;
        let Some(newest) = self.resolve(&r, BlockId::Number(newest))? else {
            return Err(RpcError::server("header not found"));
        };
        let count = block_count.to::<u64>().clamp(1, 1024).min(newest + 1);
        let oldest = newest + 1 - count;
        let mut base = vec![];
        let mut ratio = vec![];
        let mut rewards = vec![];
        let mut last = None;
        for n in oldest..=newest {
            let h = r
                .header(n)?
                .ok_or_else(|| RpcError::internal("missing header"))?;
            let bf = h.base_fee_per_gas.unwrap_or_default();
            base.push(bf as u128);
            ratio.push(h.gas_used as f64 / h.gas_limit.max(1) as f64);
            if let Some(ps) = &percentiles {
                let body = r.body(n)?.unwrap_or_default();
                let receipts = r.receipts(n)?.unwrap_or_default();
                let mut tips: Vec<(u128, u64)> = vec![];
                let mut prev = 0;
                for ((tx, _), rc) in body.iter().zip(&receipts) {
                    let used = rc.cumulative_gas_used() - prev;
                    prev = rc.cumulative_gas_used();
                    tips.push((tx.effective_tip_per_gas(bf).unwrap_or_default(), used));
                }
                tips.sort();
                let total: u64 = tips.iter().map(|t| t.1).sum();
                let row: Vec<u128> = ps
                    .iter()
                    .map(|pct| {
                        let threshold = (total as f64 * pct / 100.0) as u64;
                        let mut acc = 0;
                        for (tip, used) in &tips {
                            acc += used;
                            if acc >= threshold {
                                return *tip;
                            }
                        }
                        tips.last().map(|t| t.0).unwrap_or_default()
                    })
                    .collect();
                rewards.push(row);
            }
            last = Some(h);
        }
        if let Some(h) = last {
            base.push(
                h.next_block_base_fee(alloy_eips::eip1559::BaseFeeParams::ethereum())
                    .unwrap_or_default() as u128,
            );
        }
        Ok(FeeHistory {
            base_fee_per_gas: base,
            gas_used_ratio: ratio,
            base_fee_per_blob_gas: vec![],
            blob_gas_used_ratio: vec![],
            oldest_block: oldest,
            reward: percentiles.map(|_| rewards),
        })
    }
}

/// Sending and signing methods (signing only with the dev accounts' keys).
impl RpcState {
    /// `eth_sendRawTransaction`: the transaction's hash once the pool has taken it.
    pub fn send_raw_transaction(&self, raw: Bytes) -> Result<B256, RpcError> {
        Ok(self.node.submit_raw(&raw)?.hash)
    }

    /// `eth_sendTransaction`: fills in, signs with a dev key and pools the transaction.
    pub async fn send_transaction(
        &self,
        request: TransactionRequest,
        deadline: Instant,
    ) -> Result<B256, RpcError> {
        let tx = self.sign_request(request, deadline).await?;
        Ok(self.node.submit_tx(tx)?.hash)
    }

    /// `eth_signTransaction`: fills in and signs with a dev key; the EIP-2718 bytes.
    pub async fn sign_transaction(
        &self,
        request: TransactionRequest,
        deadline: Instant,
    ) -> Result<Bytes, RpcError> {
        let tx = self.sign_request(request, deadline).await?;
        Ok(Bytes::from(tx.encoded_2718()))
    }

    /// `eth_sign` (and `personal_sign`, its arguments swapped): an EIP-191 signature.
    pub fn sign(&self, address: Address, data: Bytes) -> Result<Bytes, RpcError> {
        let signer = self.dev_signer(&address)?;
        let sig = signer
            .sign_message_sync(&data)
            .map_err(|e| RpcError::internal(e.to_string()))?;
        Ok(Bytes::from(sig.as_bytes().to_vec()))
    }

    /// `eth_signTypedData_v4` (alias `eth_signTypedData`): an EIP-712 signature.
    pub fn sign_typed_data(&self, address: Address, data: TypedData) -> Result<Bytes, RpcError> {
        let hash = data
            .eip712_signing_hash()
            .map_err(|e| RpcError::invalid_params(format!("invalid typed data: {e}")))?;
        let signer = self.dev_signer(&address)?;
        let sig = signer
            .sign_hash_sync(&hash)
            .map_err(|e| RpcError::internal(e.to_string()))?;
        Ok(Bytes::from(sig.as_bytes().to_vec()))
    }
}

/// Block and transaction lookups.
impl RpcState {
    /// `eth_getTransactionByHash`: from a block, else from the pool.
    pub fn get_transaction_by_hash(&self, hash: B256) -> Result<Option<Transaction>, RpcError> {
        let r = self.reader()?;
        if let Some((n, i)) = r.tx_location(&hash)? {
            let header = r
                .header(n)?
                .ok_or_else(|| RpcError::internal("missing header"))?;
            let body = r.body(n)?.unwrap_or_default();
            if let Some((tx, from)) = body.get(i as usize) {
                let loc = convert::location(&header, header.hash_slow(), i as usize);
                return Ok(Some(rpc_tx(tx, *from, Some(loc))));
            }
        }
        let pooled = {
            let mut pool = self.node.pool().lock();
            pool.maybe_expire(Instant::now());
            pool.get(&hash)
        };
        Ok(pooled.map(|t| rpc_tx(&t.tx, t.sender, None)))
    }

    /// `eth_getTransactionReceipt`.
    pub fn get_transaction_receipt(
        &self,
        hash: B256,
    ) -> Result<Option<TransactionReceipt>, RpcError> {
        let r = self.reader()?;
        let Some((n, i)) = r.tx_location(&hash)? else {
            return Ok(None);
        };
        let mut receipts = rpc_receipts(&r, n)?.unwrap_or_default();
        let i = i as usize;
        Ok((i < receipts.len()).then(|| receipts.swap_remove(i)))
    }

    /// `eth_getBlockByNumber`.
    pub fn get_block_by_number(
        &self,
        number: BlockNumberOrTag,
        full: Option<bool>,
    ) -> Result<Option<Block>, RpcError> {
        self.block(BlockId::Number(number), full.unwrap_or(false))
    }

    /// `eth_getBlockByHash`.
    pub fn get_block_by_hash(
        &self,
        hash: B256,
        full: Option<bool>,
    ) -> Result<Option<Block>, RpcError> {
        self.block(BlockId::from(hash), full.unwrap_or(false))
    }

    fn block(&self, id: BlockId, full: bool) -> Result<Option<Block>, RpcError> {
        let r = self.reader()?;
        let Some(n) = self.resolve(&r, id)? else {
            return Ok(None);
        };
        rpc_block(&r, n, full)
    }

    /// `eth_getBlockReceipts`.
    pub fn get_block_receipts(
        &self,
        block: BlockId,
    ) -> Result<Option<Vec<TransactionReceipt>>, RpcError> {
        let r = self.reader()?;
        let Some(n) = self.resolve(&r, block)? else {
            return Ok(None);
        };
        rpc_receipts(&r, n)
    }

    /// `eth_getBlockTransactionCountByNumber`.
    pub fn get_block_transaction_count_by_number(
        &self,
        number: BlockNumberOrTag,
    ) -> Result<Option<U64>, RpcError> {
        self.block_transaction_count(BlockId::Number(number))
    }

    /// `eth_getBlockTransactionCountByHash`.
    pub fn get_block_transaction_count_by_hash(&self, hash: B256) -> Result<Option<U64>, RpcError> {
        self.block_transaction_count(BlockId::from(hash))
    }

    fn block_transaction_count(&self, id: BlockId) -> Result<Option<U64>, RpcError> {
        let r = self.reader()?;
        let Some(n) = self.resolve(&r, id)? else {
            return Ok(None);
        };
        Ok(Some(U64::from(
            r.body(n)?.map(|b| b.len()).unwrap_or_default(),
        )))
    }

    /// `eth_getUncleCountByBlockNumber` and `eth_getUncleCountByBlockHash`: always 0, for any
    /// block (their parameters are not read).
    pub fn get_uncle_count(&self) -> U64 {
        U64::ZERO
    }

    /// `eth_getTransactionByBlockNumberAndIndex`.
    pub fn get_transaction_by_block_number_and_index(
        &self,
        number: BlockNumberOrTag,
        index: U64,
    ) -> Result<Option<Transaction>, RpcError> {
        self.transaction_by_block_and_index(BlockId::Number(number), index)
    }

    /// `eth_getTransactionByBlockHashAndIndex`.
    pub fn get_transaction_by_block_hash_and_index(
        &self,
        hash: B256,
        index: U64,
    ) -> Result<Option<Transaction>, RpcError> {
        self.transaction_by_block_and_index(BlockId::from(hash), index)
    }

    fn transaction_by_block_and_index(
        &self,
        id: BlockId,
        index: U64,
    ) -> Result<Option<Transaction>, RpcError> {
        let r = self.reader()?;
        let Some(n) = self.resolve(&r, id)? else {
            return Ok(None);
        };
        let Some(header) = r.header(n)? else {
            return Ok(None);
        };
        let body = r.body(n)?.unwrap_or_default();
        let i = index.saturating_to::<usize>();
        Ok(body.get(i).map(|(tx, from)| {
            let loc = convert::location(&header, header.hash_slow(), i);
            rpc_tx(tx, *from, Some(loc))
        }))
    }
}

/// Logs and polling filters.
impl RpcState {
    /// `eth_getLogs`.
    pub fn get_logs(&self, filter: Filter) -> Result<Vec<Log>, RpcError> {
        let r = self.reader()?;
        self.logs(&r, &filter)
    }

    /// `eth_newFilter`: a log filter reporting from its `fromBlock` (else the next block).
    pub fn new_filter(&self, filter: Filter) -> String {
        let head = self.node.head().header.number;
        let next = match filter.block_option {
            FilterBlockOption::Range {
                from_block: Some(BlockNumberOrTag::Number(n)),
                ..
            } => n,
            FilterBlockOption::Range {
                from_block: Some(BlockNumberOrTag::Earliest),
                ..
            } => 0,
            _ => head + 1,
        };
        self.filters.lock().install(FilterKind::Logs {
            filter: Box::new(filter),
            next,
        })
    }

    /// `eth_newBlockFilter`.
    pub fn new_block_filter(&self) -> String {
        let next = self.node.head().header.number + 1;
        self.filters.lock().install(FilterKind::Blocks { next })
    }

    /// `eth_newPendingTransactionFilter`.
    pub fn new_pending_transaction_filter(&self) -> String {
        let rx = self.node.subscribe_pending();
        self.filters.lock().install(FilterKind::Pending { rx })
    }

    /// `eth_uninstallFilter`: whether the filter existed.
    pub fn uninstall_filter(&self, id: U256) -> bool {
        self.filters.lock().remove(id)
    }

    /// `eth_getFilterChanges`: what the filter matched since it was last polled.
    pub fn get_filter_changes(&self, id: U256) -> Result<FilterChanges, RpcError> {
        let head = self.node.head().header.number;
        let r = self.reader()?;
        let mut filters = self.filters.lock();
        let kind = filters
            .get_mut(id)
            .ok_or_else(|| RpcError::server("filter not found"))?;
        Ok(match kind {
            FilterKind::Blocks { next } => {
                let mut out = vec![];
                while *next <= head {
                    if let Some(h) = r.block_hash(*next)? {
                        out.push(h);
                    }
                    *next += 1;
                }
                FilterChanges::Hashes(out)
            }
            FilterKind::Logs { filter, next } => {
                if *next > head {
                    return Ok(FilterChanges::Logs(vec![]));
                }
                let from =
                    (*next).max(head.saturating_sub(self.cfg.max_log_range.saturating_sub(1)));
                let logs = collect_logs(&r, filter, from, head, self.cfg.max_logs)?;
                *next = head + 1;
                FilterChanges::Logs(logs)
            }
            FilterKind::Pending { rx } => {
                let mut out = vec![];
                loop {
                    match rx.try_recv() {
                        Ok(h) => out.push(h),
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
                FilterChanges::Hashes(out)
            }
        })
    }

    /// `eth_getFilterLogs`: every log a log filter matches.
    pub fn get_filter_logs(&self, id: U256) -> Result<Vec<Log>, RpcError> {
        let f = self
            .filters
            .lock()
            .log_filter(id)
            .ok_or_else(|| RpcError::server("filter not found"))?;
        let r = self.reader()?;
        self.logs(&r, &f)
    }
}

/// `txpool_` methods.
impl RpcState {
    /// `txpool_status`: how many transactions are pending and queued.
    pub fn txpool_status(&self) -> TxpoolStatus {
        let (pending, queued) = {
            let mut pool = self.node.pool().lock();
            pool.maybe_expire(Instant::now());
            pool.status()
        };
        TxpoolStatus {
            pending: U64::from(pending),
            queued: U64::from(queued),
        }
    }

    /// `txpool_content`: every pooled transaction.
    pub fn txpool_content(&self) -> TxpoolContent {
        let (pending, queued) = {
            let mut pool = self.node.pool().lock();
            pool.maybe_expire(Instant::now());
            pool.content()
        };
        TxpoolContent {
            pending: PoolBySender(pending),
            queued: PoolBySender(queued),
        }
    }
}

/// `evm_` dev methods (served only when the node enables dev methods).
impl RpcState {
    /// `evm_increaseTime`: moves the clock of the next blocks forward; the total offset.
    pub fn evm_increase_time(&self, seconds: U64) -> Result<U64, RpcError> {
        Ok(U64::from(self.node.increase_time(seconds.to::<u64>())?))
    }

    /// `evm_setNextBlockTimestamp`.
    pub fn evm_set_next_block_timestamp(&self, timestamp: U64) -> Result<(), RpcError> {
        self.node.set_next_timestamp(timestamp.to::<u64>())?;
        Ok(())
    }

    /// `evm_mine`: seals a block now; its number.
    pub async fn evm_mine(&self) -> Result<U64, RpcError> {
        let node = self.node.clone();
        let b = self.blocking(move || Ok(node.seal()?)).await?;
        Ok(U64::from(b.header.number))
    }
}
