//! The RPC server's state ([`RpcState`]) and limits ([`RpcConfig`]), with what the typed
//! methods ([`crate::api`]) share: state readers at a block, call requests, deadline-bounded
//! EVM executions, log queries and dev-key signing.

use crate::convert::rpc_receipts;
use crate::error::RpcError;
use crate::filters::Filters;
use alloy_consensus::{SignableTransaction, TxEnvelope, TypedTransaction};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256};
use alloy_rpc_types_eth::{Filter, FilterBlockOption, Log, TransactionRequest};
use alloy_signer::SignerSync;
use openledger_chain::ChainError;
use openledger_chain::{CallOutcome, CallRequest, Node, Reader};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub use crate::methods::Params;

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

    pub(crate) fn reader(&self) -> Result<Reader, RpcError> {
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
    pub(crate) fn state_reader(&self, id: Option<BlockId>) -> Result<Reader, RpcError> {
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

    pub(crate) fn call_request(&self, req: TransactionRequest) -> Result<CallRequest, RpcError> {
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
    pub(crate) async fn blocking<T: Send + 'static>(
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
    pub(crate) fn timeout_error(&self) -> RpcError {
        RpcError::server(format!(
            "execution aborted (timeout = {:?})",
            self.cfg.call_timeout
        ))
    }

    /// Runs an EVM execution on a blocking thread once one of the `max_concurrent_calls` slots
    /// is free. `f` must stop at `deadline` itself (the EVM checks it as it steps); the slot is
    /// held until it has, so executions never outnumber the slots.
    pub(crate) async fn execute<T: Send + 'static>(
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

    pub(crate) fn logs(&self, reader: &Reader, filter: &Filter) -> Result<Vec<Log>, RpcError> {
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

    pub(crate) fn dev_signer(
        &self,
        a: &Address,
    ) -> Result<alloy_signer_local::PrivateKeySigner, RpcError> {
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

    pub(crate) async fn sign_request(
        &self,
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
