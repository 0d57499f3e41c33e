//! The `eth_`, `net_`, `web3_` and `txpool_` methods.

use crate::convert::{self, rpc_block, rpc_receipts, rpc_tx};
use crate::error::RpcError;
use crate::filters::{FilterKind, Filters};
use crate::ws::WsSession;
use alloy_consensus::{SignableTransaction, Transaction as _, TxEnvelope, TypedTransaction};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::state::StateOverride;
use alloy_rpc_types_eth::{FeeHistory, Filter, FilterBlockOption, Log, TransactionRequest};
use alloy_signer::SignerSync;
use openledger_chain::ChainError;
use openledger_chain::{CallOutcome, CallRequest, Node, Reader};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Limits and defaults of the RPC server; every one is configurable.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Most bytes of answers one batch may produce (geth's `batch-response-max-size`): the
    /// answer that passes it and all after it are "response too large" errors (-32003).
    pub max_batch_response_bytes: usize,
    /// Gas cap of `eth_call` and `eth_estimateGas`.
    pub gas_cap: u64,
    /// Time limit of one `eth_call` / `eth_estimateGas`: execution is stopped when it is
    /// reached. The calls of one batch (or one WebSocket message) share one such deadline.
    pub call_timeout: Duration,
    /// Most EVM executions (`eth_call`, `eth_estimateGas`) running at once; further calls wait
    /// for a free slot until their deadline.
    pub max_concurrent_calls: usize,
    /// Widest block range of `eth_getLogs`.
    pub max_log_range: u64,
    /// Most logs `eth_getLogs` returns.
    pub max_logs: usize,
    /// Priority fee suggested by `eth_maxPriorityFeePerGas`.
    pub suggested_tip: u128,
    /// Most concurrent WebSocket connections.
    pub max_ws_connections: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 5 * 1024 * 1024,
            max_batch: 1000,
            max_batch_response_bytes: 25_000_000,
            gas_cap: 50_000_000,
            call_timeout: Duration::from_secs(5),
            max_concurrent_calls: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            max_log_range: 100_000,
            max_logs: 20_000,
            suggested_tip: 1_000_000_000,
            max_ws_connections: 500,
        }
    }
}

/// Shared state of the RPC server.
pub struct RpcState {
    /// The node.
    pub node: Arc<Node>,
    /// Limits.
    pub cfg: RpcConfig,
    /// Installed filters.
    pub filters: Mutex<Filters>,
    /// EVM executions (calls, estimates) running now.
    in_flight: Arc<AtomicUsize>,
    /// Permits to run an EVM execution (`max_concurrent_calls`).
    exec_slots: Arc<Semaphore>,
}

/// Counts an execution in [`RpcState::calls_in_flight`] while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(gauge: &Arc<AtomicUsize>) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for RpcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcState").field("cfg", &self.cfg).finish()
    }
}

/// Positional parameters.
pub struct Params(Vec<Value>);

impl Params {
    /// From the request's `params` member.
    pub fn new(v: Value) -> Result<Self, RpcError> {
        match v {
            Value::Null => Ok(Self(vec![])),
            Value::Array(a) => Ok(Self(a)),
            _ => Err(RpcError::invalid_params("params must be an array")),
        }
    }

    fn at_most(&self, n: usize) -> Result<(), RpcError> {
        if self.0.len() > n {
            return Err(RpcError::invalid_params(format!(
                "too many arguments, want at most {n}, got {}",
                self.0.len()
            )));
        }
        Ok(())
    }

    fn req<T: DeserializeOwned>(&self, i: usize, name: &str) -> Result<T, RpcError> {
        match self.0.get(i) {
            None | Some(Value::Null) => Err(RpcError::invalid_params(format!(
                "missing value for required argument {i} ({name})"
            ))),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                RpcError::invalid_params(format!("invalid argument {i} ({name}): {e}"))
            }),
        }
    }

    fn opt<T: DeserializeOwned>(&self, i: usize, name: &str) -> Result<Option<T>, RpcError> {
        match self.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.req(i, name).map(Some),
        }
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::internal(e.to_string()))
}

fn quantity(n: impl Into<U256>) -> Value {
    Value::String(format!("{:#x}", n.into()))
}

impl RpcState {
    /// Builds the state.
    pub fn new(node: Arc<Node>, cfg: RpcConfig) -> Arc<Self> {
        Arc::new(Self {
            node,
            filters: Mutex::new(Filters::default()),
            in_flight: Default::default(),
            exec_slots: Arc::new(Semaphore::new(cfg.max_concurrent_calls.max(1))),
            cfg,
        })
    }

    /// EVM executions (`eth_call`, `eth_estimateGas`) running now, including any whose caller
    /// has already been answered.
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn reader(&self) -> Result<Reader, RpcError> {
        Ok(self.node.reader()?)
    }

    /// Resolves a block id to a number, `None` if the block does not exist.
    pub fn resolve(&self, reader: &Reader, id: BlockId) -> Result<Option<u64>, RpcError> {
        let head = reader.head()?.unwrap_or_default();
        Ok(match id {
            BlockId::Number(tag) => match tag {
                BlockNumberOrTag::Earliest => Some(0),
                BlockNumberOrTag::Number(n) => (n <= head).then_some(n),
                _ => Some(head),
            },
            BlockId::Hash(h) => reader.block_number(&h.block_hash)?,
        })
    }

    /// A reader for state at `id`; only the latest state is kept.
    fn state_reader(&self, id: Option<BlockId>) -> Result<Reader, RpcError> {
        let reader = self.reader()?;
        let head = reader.head()?.unwrap_or_default();
        let id = id.unwrap_or(BlockId::latest());
        match self.resolve(&reader, id)? {
            None => Err(RpcError::server("header not found")),
            Some(n) if n == head => Ok(reader),
            Some(n) => Err(RpcError::server(format!(
                "historical state not available: this node keeps the latest state only (requested block {n}, head {head})"
            ))),
        }
    }

    fn call_request(&self, req: TransactionRequest) -> Result<CallRequest, RpcError> {
        if let (Some(a), Some(b)) = (&req.input.input, &req.input.data)
            && a != b
        {
            return Err(RpcError::invalid_params(
                "both \"data\" and \"input\" are set and not equal; please use \"input\" to pass transaction call data",
            ));
        }
        let gas = req.gas.unwrap_or(self.cfg.gas_cap).min(self.cfg.gas_cap);
        let gas_price = req.gas_price.or(req.max_fee_per_gas).unwrap_or_default();
        Ok(CallRequest {
            from: req.from.unwrap_or_default(),
            to: req.to.and_then(|k| k.to().copied()),
            gas,
            gas_price,
            priority_fee: if req.gas_price.is_some() {
                None
            } else {
                req.max_priority_fee_per_gas
            },
            value: req.value.unwrap_or_default(),
            data: req.input.input().cloned().unwrap_or_default(),
            nonce: req.nonce,
            access_list: req.access_list.unwrap_or_default(),
            deadline: None,
        })
    }

    /// Runs blocking work that is bounded on its own (sealing a block), waiting at most the
    /// call timeout for it.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
    ) -> Result<T, RpcError> {
        let task = tokio::task::spawn_blocking(f);
        match tokio::time::timeout(self.cfg.call_timeout, task).await {
            Err(_) => Err(self.timeout_error()),
            Ok(Err(e)) => Err(RpcError::internal(format!("task failed: {e}"))),
            Ok(Ok(r)) => r,
        }
    }

    /// geth's error for a call stopped at its deadline.
    fn timeout_error(&self) -> RpcError {
        RpcError::server(format!(
            "execution aborted (timeout = {:?})",
            self.cfg.call_timeout
        ))
    }

    /// Runs an EVM execution on a blocking thread once one of the `max_concurrent_calls` slots
    /// is free. `f` must stop at `deadline` itself (the EVM checks it as it steps); the slot is
    /// held until it has, so executions never outnumber the slots.
    async fn execute<T: Send + 'static>(
        &self,
        deadline: Instant,
        f: impl FnOnce() -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, RpcError> {
        let slot = self.exec_slots.clone().acquire_owned();
        let permit = match tokio::time::timeout_at(deadline.into(), slot).await {
            Err(_) => return Err(self.timeout_error()),
            Ok(Err(_)) => return Err(RpcError::internal("execution slots closed")),
            Ok(Ok(p)) => p,
        };
        let gauge = InFlight::enter(&self.in_flight);
        let task = tokio::task::spawn_blocking(move || {
            let _held = (permit, gauge);
            f()
        });
        // The execution stops at the deadline; the margin only covers a stalled disk read.
        match tokio::time::timeout_at((deadline + Duration::from_secs(1)).into(), task).await {
            Err(_) | Ok(Ok(Err(ChainError::Timeout))) => Err(self.timeout_error()),
            Ok(Err(e)) => Err(RpcError::internal(format!("task failed: {e}"))),
            Ok(Ok(r)) => r.map_err(RpcError::from),
        }
    }

    fn logs(&self, reader: &Reader, filter: &Filter) -> Result<Vec<Log>, RpcError> {
        let head = reader.head()?.unwrap_or_default();
        let (from, to) = match filter.block_option {
            FilterBlockOption::AtBlockHash(h) => {
                let n = reader
                    .block_number(&h)?
                    .ok_or_else(|| RpcError::server("unknown block"))?;
                (n, n)
            }
            FilterBlockOption::Range {
                from_block,
                to_block,
            } => {
                let num = |t: Option<BlockNumberOrTag>| match t {
                    None
                    | Some(
                        BlockNumberOrTag::Latest
                        | BlockNumberOrTag::Pending
                        | BlockNumberOrTag::Safe
                        | BlockNumberOrTag::Finalized,
                    ) => head,
                    Some(BlockNumberOrTag::Earliest) => 0,
                    Some(BlockNumberOrTag::Number(n)) => n,
                };
                (num(from_block), num(to_block).min(head))
            }
        };
        if from > to {
            return Ok(vec![]);
        }
        if to - from >= self.cfg.max_log_range {
            return Err(RpcError::limit(format!(
                "query exceeds max block range {}",
                self.cfg.max_log_range
            )));
        }
        collect_logs(reader, filter, from, to, self.cfg.max_logs)
    }

    /// Handles one method call, with its own deadline for any EVM execution.
    pub async fn handle(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        ws: Option<&Arc<WsSession>>,
    ) -> Result<Value, RpcError> {
        let deadline = Instant::now() + self.cfg.call_timeout;
        self.handle_until(method, params, ws, deadline).await
    }

    /// Handles one method call; any EVM execution it needs stops at `deadline`.
    pub async fn handle_until(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        ws: Option<&Arc<WsSession>>,
        deadline: Instant,
    ) -> Result<Value, RpcError> {
        let p = Params::new(params)?;
        let node = &self.node;
        match method {
            "web3_clientVersion" => Ok(json!(openledger_protocol::CLIENT_VERSION)),
            "web3_sha3" => {
                let data: Bytes = p.req(0, "data")?;
                Ok(json!(alloy_primitives::keccak256(&data)))
            }
            "net_version" => Ok(json!(node.chain_id().to_string())),
            "net_listening" => Ok(json!(true)),
            "net_peerCount" => Ok(json!("0x0")),
            "eth_chainId" => Ok(quantity(U256::from(node.chain_id()))),
            "eth_syncing" => Ok(json!(false)),
            "eth_mining" => Ok(json!(true)),
            "eth_hashrate" => Ok(json!("0x0")),
            "eth_protocolVersion" => Ok(json!("0x44")),
            "eth_coinbase" => Ok(json!(node.config().fee_recipient)),
            "eth_blockNumber" => Ok(quantity(U256::from(node.head().header.number))),
            "eth_accounts" => Ok(json!(
                node.dev_accounts()
                    .iter()
                    .map(|a| a.address)
                    .collect::<Vec<_>>()
            )),
            "eth_getBalance" => {
                p.at_most(2)?;
                let a: Address = p.req(0, "address")?;
                let r = self.state_reader(p.opt(1, "block")?)?;
                Ok(quantity(
                    r.account(&a)?.map(|x| x.balance).unwrap_or_default(),
                ))
            }
            "eth_getTransactionCount" => {
                p.at_most(2)?;
                let a: Address = p.req(0, "address")?;
                let id: Option<BlockId> = p.opt(1, "block")?;
                if matches!(id, Some(BlockId::Number(BlockNumberOrTag::Pending))) {
                    return Ok(quantity(U256::from(node.pending_nonce(&a)?)));
                }
                let r = self.state_reader(id)?;
                Ok(quantity(U256::from(
                    r.account(&a)?.map(|x| x.nonce).unwrap_or_default(),
                )))
            }
            "eth_getCode" => {
                p.at_most(2)?;
                let a: Address = p.req(0, "address")?;
                let r = self.state_reader(p.opt(1, "block")?)?;
                let code = match r.account(&a)? {
                    Some(acct) => r.code(&acct.code_hash)?.unwrap_or_default(),
                    None => Bytes::new(),
                };
                Ok(json!(code))
            }
            "eth_getStorageAt" => {
                p.at_most(3)?;
                let a: Address = p.req(0, "address")?;
                let slot: U256 = p.req(1, "slot")?;
                let r = self.state_reader(p.opt(2, "block")?)?;
                Ok(json!(B256::from(r.storage(&a, slot)?)))
            }
            "eth_call" => {
                p.at_most(4)?;
                let req: TransactionRequest = p.req(0, "transaction")?;
                let id: Option<BlockId> = p.opt(1, "block")?;
                let overrides: Option<StateOverride> = p.opt(2, "state overrides")?;
                drop(self.state_reader(id)?);
                let pending = matches!(id, Some(BlockId::Number(BlockNumberOrTag::Pending)));
                let mut req = self.call_request(req)?;
                req.deadline = Some(deadline);
                let node = node.clone();
                let out = self
                    .execute(deadline, move || {
                        node.call(&req, pending, overrides.as_ref())
                    })
                    .await?;
                match out {
                    CallOutcome::Success { output, .. } => Ok(json!(output)),
                    CallOutcome::Revert { output, .. } => Err(RpcError::reverted(&output)),
                    CallOutcome::Halt { reason, .. } => Err(RpcError::server(reason)),
                }
            }
            "eth_estimateGas" => {
                p.at_most(3)?;
                let req: TransactionRequest = p.req(0, "transaction")?;
                let id: Option<BlockId> = p.opt(1, "block")?;
                let overrides: Option<StateOverride> = p.opt(2, "state overrides")?;
                let reader = self.state_reader(id)?;
                let mut req = self.call_request(req)?;
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
                let node = node.clone();
                let out = self
                    .execute(deadline, move || {
                        node.estimate_gas(&req, cap, overrides.as_ref())
                    })
                    .await?;
                match out {
                    Ok(gas) => Ok(quantity(U256::from(gas))),
                    Err(CallOutcome::Revert { output, .. }) => Err(RpcError::reverted(&output)),
                    Err(CallOutcome::Halt { reason, .. }) if reason == "out of gas" => Err(
                        RpcError::server(format!("gas required exceeds allowance ({cap})")),
                    ),
                    Err(CallOutcome::Halt { reason, .. }) => Err(RpcError::server(reason)),
                    Err(CallOutcome::Success { .. }) => Err(RpcError::internal("estimate failed")),
                }
            }
            "eth_gasPrice" => Ok(quantity(U256::from(
                node.next_base_fee() as u128 + self.cfg.suggested_tip,
            ))),
            "eth_maxPriorityFeePerGas" => Ok(quantity(U256::from(self.cfg.suggested_tip))),
            "eth_blobBaseFee" => Ok(json!("0x1")),
            "eth_feeHistory" => self.fee_history(&p),
            "eth_sendRawTransaction" => {
                p.at_most(1)?;
                let raw: Bytes = p.req(0, "raw transaction")?;
                let ins = node.submit_raw(&raw)?;
                Ok(json!(ins.hash))
            }
            "eth_sendTransaction" => {
                p.at_most(1)?;
                let req: TransactionRequest = p.req(0, "transaction")?;
                let tx = self.sign_request(req, deadline).await?;
                let ins = node.submit_tx(tx)?;
                Ok(json!(ins.hash))
            }
            "eth_signTransaction" => {
                let req: TransactionRequest = p.req(0, "transaction")?;
                let tx = self.sign_request(req, deadline).await?;
                Ok(json!(Bytes::from(tx.encoded_2718())))
            }
            "eth_sign" => {
                let a: Address = p.req(0, "address")?;
                let data: Bytes = p.req(1, "data")?;
                self.sign_message(a, &data)
            }
            "personal_sign" => {
                let data: Bytes = p.req(0, "data")?;
                let a: Address = p.req(1, "address")?;
                self.sign_message(a, &data)
            }
            "eth_signTypedData_v4" | "eth_signTypedData" => {
                let a: Address = p.req(0, "address")?;
                let typed: alloy_dyn_abi::TypedData = match p.0.get(1) {
                    Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                        RpcError::invalid_params(format!("invalid typed data: {e}"))
                    })?,
                    _ => p.req(1, "typed data")?,
                };
                let hash = typed
                    .eip712_signing_hash()
                    .map_err(|e| RpcError::invalid_params(format!("invalid typed data: {e}")))?;
                let signer = self.dev_signer(&a)?;
                let sig = signer
                    .sign_hash_sync(&hash)
                    .map_err(|e| RpcError::internal(e.to_string()))?;
                Ok(json!(Bytes::from(sig.as_bytes().to_vec())))
            }
            "eth_getTransactionByHash" => {
                p.at_most(1)?;
                let h: B256 = p.req(0, "hash")?;
                self.tx_by_hash(h)
            }
            "eth_getTransactionReceipt" => {
                p.at_most(1)?;
                let h: B256 = p.req(0, "hash")?;
                let r = self.reader()?;
                let Some((n, i)) = r.tx_location(&h)? else {
                    return Ok(Value::Null);
                };
                let receipts = rpc_receipts(&r, n)?.unwrap_or_default();
                Ok(receipts
                    .get(i as usize)
                    .map(to_json)
                    .transpose()?
                    .unwrap_or(Value::Null))
            }
            "eth_getBlockByNumber" | "eth_getBlockByHash" => {
                p.at_most(2)?;
                let r = self.reader()?;
                let id = if method == "eth_getBlockByHash" {
                    BlockId::from(p.req::<B256>(0, "hash")?)
                } else {
                    BlockId::Number(p.req(0, "block")?)
                };
                let full: bool = p.opt(1, "full")?.unwrap_or(false);
                let Some(n) = self.resolve(&r, id)? else {
                    return Ok(Value::Null);
                };
                Ok(rpc_block(&r, n, full)?
                    .map(to_json)
                    .transpose()?
                    .unwrap_or(Value::Null))
            }
            "eth_getBlockReceipts" => {
                let r = self.reader()?;
                let id: BlockId = p.req(0, "block")?;
                let Some(n) = self.resolve(&r, id)? else {
                    return Ok(Value::Null);
                };
                to_json(rpc_receipts(&r, n)?)
            }
            "eth_getBlockTransactionCountByNumber" | "eth_getBlockTransactionCountByHash" => {
                let r = self.reader()?;
                let id = if method.ends_with("ByHash") {
                    BlockId::from(p.req::<B256>(0, "hash")?)
                } else {
                    BlockId::Number(p.req(0, "block")?)
                };
                let Some(n) = self.resolve(&r, id)? else {
                    return Ok(Value::Null);
                };
                Ok(quantity(U256::from(
                    r.body(n)?.map(|b| b.len()).unwrap_or_default(),
                )))
            }
            "eth_getUncleCountByBlockNumber" | "eth_getUncleCountByBlockHash" => Ok(json!("0x0")),
            "eth_getTransactionByBlockNumberAndIndex" | "eth_getTransactionByBlockHashAndIndex" => {
                let r = self.reader()?;
                let id = if method.contains("ByBlockHash") {
                    BlockId::from(p.req::<B256>(0, "hash")?)
                } else {
                    BlockId::Number(p.req(0, "block")?)
                };
                let idx: U64 = p.req(1, "index")?;
                let Some(n) = self.resolve(&r, id)? else {
                    return Ok(Value::Null);
                };
                let Some(header) = r.header(n)? else {
                    return Ok(Value::Null);
                };
                let body = r.body(n)?.unwrap_or_default();
                let i = idx.saturating_to::<usize>();
                match body.get(i) {
                    None => Ok(Value::Null),
                    Some((tx, from)) => {
                        let loc = convert::location(&header, header.hash_slow(), i);
                        to_json(rpc_tx(tx, *from, Some(loc)))
                    }
                }
            }
            "eth_getLogs" => {
                p.at_most(1)?;
                let f: Filter = p.req(0, "filter")?;
                let r = self.reader()?;
                to_json(self.logs(&r, &f)?)
            }
            "eth_newFilter" => {
                let f: Filter = p.req(0, "filter")?;
                let head = node.head().header.number;
                let next = match f.block_option {
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
                Ok(json!(self.filters.lock().install(FilterKind::Logs {
                    filter: Box::new(f),
                    next
                })))
            }
            "eth_newBlockFilter" => {
                let next = node.head().header.number + 1;
                Ok(json!(
                    self.filters.lock().install(FilterKind::Blocks { next })
                ))
            }
            "eth_newPendingTransactionFilter" => {
                let rx = node.subscribe_pending();
                Ok(json!(
                    self.filters.lock().install(FilterKind::Pending { rx })
                ))
            }
            "eth_uninstallFilter" => {
                let id: U256 = p.req(0, "filter id")?;
                Ok(json!(self.filters.lock().remove(id)))
            }
            "eth_getFilterChanges" => {
                let id: U256 = p.req(0, "filter id")?;
                self.filter_changes(id)
            }
            "eth_getFilterLogs" => {
                let id: U256 = p.req(0, "filter id")?;
                let f = self
                    .filters
                    .lock()
                    .log_filter(id)
                    .ok_or_else(|| RpcError::server("filter not found"))?;
                let r = self.reader()?;
                to_json(self.logs(&r, &f)?)
            }
            "eth_subscribe" => match ws {
                Some(session) => session.subscribe(self, &p.0),
                None => Err(RpcError {
                    code: -32601,
                    message:
                        "notifications not supported: eth_subscribe needs a WebSocket connection"
                            .into(),
                    data: None,
                }),
            },
            "eth_unsubscribe" => match ws {
                Some(session) => {
                    let id: String = p.req(0, "subscription id")?;
                    Ok(json!(session.unsubscribe(&id)))
                }
                None => Err(RpcError {
                    code: -32601,
                    message:
                        "notifications not supported: eth_unsubscribe needs a WebSocket connection"
                            .into(),
                    data: None,
                }),
            },
            "txpool_status" => {
                let (pending, queued) = {
                    let mut pool = node.pool().lock();
                    pool.maybe_expire(Instant::now());
                    pool.status()
                };
                Ok(
                    json!({"pending": quantity(U256::from(pending)), "queued": quantity(U256::from(queued))}),
                )
            }
            "txpool_content" => {
                let (pending, queued) = {
                    let mut pool = node.pool().lock();
                    pool.maybe_expire(Instant::now());
                    pool.content()
                };
                let render = |m: std::collections::BTreeMap<
                    Address,
                    Vec<Arc<openledger_chain::pool::PooledTx>>,
                >| {
                    let mut out = serde_json::Map::new();
                    for (a, txs) in m {
                        let mut per = serde_json::Map::new();
                        for t in txs {
                            let v = serde_json::to_value(rpc_tx(&t.tx, t.sender, None))
                                .unwrap_or(Value::Null);
                            per.insert(t.nonce().to_string(), v);
                        }
                        out.insert(a.to_checksum(None), Value::Object(per));
                    }
                    Value::Object(out)
                };
                Ok(json!({"pending": render(pending), "queued": render(queued)}))
            }
            "evm_mine" | "evm_increaseTime" | "evm_setNextBlockTimestamp"
                if !node.config().dev_methods =>
            {
                Err(RpcError::method_not_found(method))
            }
            "evm_increaseTime" => {
                let secs: U64 = p.req(0, "seconds")?;
                Ok(quantity(U256::from(node.increase_time(secs.to::<u64>())?)))
            }
            "evm_setNextBlockTimestamp" => {
                let ts: U64 = p.req(0, "timestamp")?;
                node.set_next_timestamp(ts.to::<u64>())?;
                Ok(Value::Null)
            }
            "evm_mine" => {
                let node = node.clone();
                let b = self.blocking(move || Ok(node.seal()?)).await?;
                Ok(quantity(U256::from(b.header.number)))
            }
            _ => Err(RpcError::method_not_found(method)),
        }
    }

    fn tx_by_hash(&self, h: B256) -> Result<Value, RpcError> {
        let r = self.reader()?;
        if let Some((n, i)) = r.tx_location(&h)? {
            let header = r
                .header(n)?
                .ok_or_else(|| RpcError::internal("missing header"))?;
            let body = r.body(n)?.unwrap_or_default();
            if let Some((tx, from)) = body.get(i as usize) {
                let loc = convert::location(&header, header.hash_slow(), i as usize);
                return to_json(rpc_tx(tx, *from, Some(loc)));
            }
        }
        let pooled = {
            let mut pool = self.node.pool().lock();
            pool.maybe_expire(Instant::now());
            pool.get(&h)
        };
        match pooled {
            Some(t) => to_json(rpc_tx(&t.tx, t.sender, None)),
            None => Ok(Value::Null),
        }
    }

    fn filter_changes(&self, id: U256) -> Result<Value, RpcError> {
        let head = self.node.head().header.number;
        let r = self.reader()?;
        let mut filters = self.filters.lock();
        let kind = filters
            .get_mut(id)
            .ok_or_else(|| RpcError::server("filter not found"))?;
        match kind {
            FilterKind::Blocks { next } => {
                let mut out = vec![];
                while *next <= head {
                    if let Some(h) = r.block_hash(*next)? {
                        out.push(h);
                    }
                    *next += 1;
                }
                to_json(out)
            }
            FilterKind::Logs { filter, next } => {
                if *next > head {
                    return Ok(json!([]));
                }
                let from =
                    (*next).max(head.saturating_sub(self.cfg.max_log_range.saturating_sub(1)));
                let logs = collect_logs(&r, filter, from, head, self.cfg.max_logs)?;
                *next = head + 1;
                to_json(logs)
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
                to_json(out)
            }
        }
    }

    fn fee_history(&self, p: &Params) -> Result<Value, RpcError> {
        let count: U64 = p.req(0, "block count")?;
        let newest: BlockNumberOrTag = p.req(1, "newest block")?;
        let percentiles: Option<Vec<f64>> = p.opt(2, "reward percentiles")?;
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
        let count = count.to::<u64>().clamp(1, 1024).min(newest + 1);
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
        let fh = FeeHistory {
            base_fee_per_gas: base,
            gas_used_ratio: ratio,
            base_fee_per_blob_gas: vec![],
            blob_gas_used_ratio: vec![],
            oldest_block: oldest,
            reward: percentiles.map(|_| rewards),
        };
        to_json(fh)
    }

    fn dev_signer(&self, a: &Address) -> Result<alloy_signer_local::PrivateKeySigner, RpcError> {
        self.node
            .dev_accounts()
            .iter()
            .find(|d| d.address == *a)
            .map(|d| d.signer.clone())
            .ok_or_else(|| {
                RpcError::server(format!(
                    "unknown account {a}: this node holds only the dev accounts' keys"
                ))
            })
    }

    fn sign_message(&self, a: Address, data: &[u8]) -> Result<Value, RpcError> {
        let signer = self.dev_signer(&a)?;
        let sig = signer
            .sign_message_sync(data)
            .map_err(|e| RpcError::internal(e.to_string()))?;
        Ok(json!(Bytes::from(sig.as_bytes().to_vec())))
    }

    async fn sign_request(
        self: &Arc<Self>,
        mut req: TransactionRequest,
        deadline: Instant,
    ) -> Result<TxEnvelope, RpcError> {
        let from = req
            .from
            .ok_or_else(|| RpcError::invalid_params("missing \"from\""))?;
        let signer = self.dev_signer(&from)?;
        let node = &self.node;
        if req.nonce.is_none() {
            req.nonce = Some(node.pending_nonce(&from)?);
        }
        req.chain_id = Some(node.chain_id());
        if req.gas_price.is_none() {
            let tip = req
                .max_priority_fee_per_gas
                .unwrap_or(self.cfg.suggested_tip);
            req.max_priority_fee_per_gas = Some(tip);
            if req.max_fee_per_gas.is_none() {
                req.max_fee_per_gas = Some(2 * node.next_base_fee() as u128 + tip);
            }
        }
        if req.gas.is_none() {
            let mut call = self.call_request(req.clone())?;
            call.nonce = None;
            call.deadline = Some(deadline);
            let node2 = node.clone();
            let cap = self.cfg.gas_cap.min(node.gas_limit());
            let est = self
                .execute(deadline, move || node2.estimate_gas(&call, cap, None))
                .await?;
            match est {
                Ok(g) => req.gas = Some(g),
                Err(CallOutcome::Revert { output, .. }) => return Err(RpcError::reverted(&output)),
                Err(CallOutcome::Halt { reason, .. }) => return Err(RpcError::server(reason)),
                Err(_) => return Err(RpcError::internal("gas estimation failed")),
            }
        }
        if req.to.is_none() {
            req.to = Some(alloy_primitives::TxKind::Create);
        }
        let typed = req.build_typed_tx().map_err(|_| {
            RpcError::invalid_params("incomplete transaction: cannot determine its type")
        })?;
        let sign = |hash: B256| {
            signer
                .sign_hash_sync(&hash)
                .map_err(|e| RpcError::internal(e.to_string()))
        };
        Ok(match typed {
            TypedTransaction::Legacy(t) => {
                let s = sign(t.signature_hash())?;
                t.into_signed(s).into()
            }
            TypedTransaction::Eip2930(t) => {
                let s = sign(t.signature_hash())?;
                t.into_signed(s).into()
            }
            TypedTransaction::Eip1559(t) => {
                let s = sign(t.signature_hash())?;
                t.into_signed(s).into()
            }
            TypedTransaction::Eip7702(t) => {
                let s = sign(t.signature_hash())?;
                t.into_signed(s).into()
            }
            TypedTransaction::Eip4844(_) => {
                return Err(RpcError::invalid_params(
                    "blob transactions are not supported",
                ));
            }
        })
    }
}

/// Logs matching `filter` in blocks `from..=to`, at most `max`.
pub fn collect_logs(
    reader: &Reader,
    filter: &Filter,
    from: u64,
    to: u64,
    max: usize,
) -> Result<Vec<Log>, RpcError> {
    let mut out = vec![];
    for n in from..=to {
        let Some(h) = reader.header(n)? else { break };
        if !filter.matches_bloom(h.logs_bloom) {
            continue;
        }
        for receipt in rpc_receipts(reader, n)?.unwrap_or_default() {
            for log in receipt.inner.logs() {
                if filter.matches_address(log.address()) && filter.matches_topics(log.topics()) {
                    if out.len() >= max {
                        return Err(RpcError::limit(format!(
                            "query returned more than {max} results; narrow the block range"
                        )));
                    }
                    out.push(log.clone());
                }
            }
        }
    }
    Ok(out)
}

#[allow(dead_code)]
fn _assert_send(s: Arc<RpcState>) -> impl Send {
    async move { s.handle("eth_blockNumber", Value::Null, None).await }
}
