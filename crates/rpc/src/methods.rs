//! The method table: every JSON-RPC method the node serves, in one place ([`METHODS`]).
//!
//! Each [`Method`] maps a wire name to a small adapter that decodes the positional parameters
//! into the typed arguments of one method of [`crate::api`], calls it and encodes its result:
//!
//! ```text
//! now("eth_getBalance", 2, |c| {
//!     encode(c.api.get_balance(c.arg(0, "address")?, c.arg(1, "block")?)?)
//! }),
//! ```
//!
//! - `2` is the most parameters the method accepts ("too many arguments, want at most 2, got
//!   3"); [`ANY`] means extra parameters are ignored.
//! - `c.arg(i, name)` decodes parameter `i` into the type the typed method takes (see
//!   [`Param`]): an `Option<T>` is optional (absent or `null` is `None`), any other type is
//!   required ("missing value for required argument 0 (address)"), and a value that does not
//!   decode is named with its error ("invalid argument 0 (address): …"). Parameters are decoded
//!   in order, so the first bad one is the one reported.
//! - `now` marks a method answered without waiting; `later` one that waits for an EVM
//!   execution, a signing estimate or a sealed block.
//!
//! A call first needs `params` to be an array or absent (else -32602 "params must be an
//! array", whatever the method), then a known method (else -32601 "the method … does not
//! exist/is not available"); `evm_` methods exist only on a node with dev methods enabled.

use crate::api::FilterChanges;
use crate::error::RpcError;
use crate::eth::RpcState;
use crate::ws::WsSession;
use alloy_dyn_abi::TypedData;
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::state::StateOverride;
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// Positional parameters.
#[derive(Clone, Debug, Default, PartialEq)]
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

    /// The parameters as given.
    pub fn as_slice(&self) -> &[Value] {
        &self.0
    }

    /// Rejects more than `n` parameters.
    pub fn at_most(&self, n: usize) -> Result<(), RpcError> {
        if self.0.len() > n {
            return Err(RpcError::invalid_params(format!(
                "too many arguments, want at most {n}, got {}",
                self.0.len()
            )));
        }
        Ok(())
    }

    /// Parameter `i` (called `name` in errors) decoded as `T`.
    pub fn arg<T: Param>(&self, i: usize, name: &str) -> Result<T, RpcError> {
        T::decode(self, i, name)
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
}

/// A type one positional parameter decodes into. `Option<T>` is an optional parameter (absent
/// or `null` is `None`); the other types are required parameters.
pub trait Param: Sized {
    /// Parameter `i` of `params`, called `name` in errors.
    fn decode(params: &Params, i: usize, name: &str) -> Result<Self, RpcError>;
}

impl<T: Param> Param for Option<T> {
    fn decode(params: &Params, i: usize, name: &str) -> Result<Self, RpcError> {
        match params.0.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => T::decode(params, i, name).map(Some),
        }
    }
}

/// Required parameters decoded with their `serde` form.
macro_rules! required_params {
    ($($t:ty),* $(,)?) => {$(
        impl Param for $t {
            fn decode(params: &Params, i: usize, name: &str) -> Result<Self, RpcError> {
                params.req(i, name)
            }
        }
    )*};
}

required_params!(
    Address,
    B256,
    Bytes,
    U64,
    U256,
    bool,
    String,
    Vec<f64>,
    BlockId,
    BlockNumberOrTag,
    TransactionRequest,
    StateOverride,
    Filter,
);

/// EIP-712 typed data: the JSON object, or (as MetaMask sends it) a string holding it.
impl Param for TypedData {
    fn decode(params: &Params, i: usize, name: &str) -> Result<Self, RpcError> {
        match params.0.get(i) {
            Some(Value::String(s)) => serde_json::from_str(s)
                .map_err(|e| RpcError::invalid_params(format!("invalid typed data: {e}"))),
            _ => params.req(i, name),
        }
    }
}

/// One call as its adapter sees it.
pub(crate) struct Call<'a> {
    /// The method's wire name.
    name: &'static str,
    /// The server state, whose typed methods the adapter calls.
    api: &'a Arc<RpcState>,
    params: Params,
    /// The WebSocket session the call came on, if any.
    ws: Option<&'a Arc<WsSession>>,
    /// When any EVM execution of the call must stop.
    deadline: Instant,
}

impl Call<'_> {
    /// Parameter `i`, called `name` in errors, as the type the typed method takes.
    fn arg<T: Param>(&self, i: usize, name: &str) -> Result<T, RpcError> {
        self.params.arg(i, name)
    }

    /// The WebSocket session, for the methods that need one.
    fn session(&self) -> Result<&Arc<WsSession>, RpcError> {
        self.ws.ok_or_else(|| RpcError {
            code: -32601,
            message: format!(
                "notifications not supported: {} needs a WebSocket connection",
                self.name
            ),
            data: None,
        })
    }
}

/// The answer of an adapter that waits.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'a>>;

/// How a method's adapter runs.
#[derive(Clone, Copy)]
enum Adapter {
    /// Answers without waiting.
    Now(fn(&Call<'_>) -> Result<Value, RpcError>),
    /// Waits (EVM execution, sealing).
    Later(for<'a> fn(&'a Call<'a>) -> Pending<'a>),
}

/// One JSON-RPC method: its wire name, how many parameters it takes, and its adapter.
#[derive(Clone, Copy)]
pub struct Method {
    /// The wire name, e.g. `eth_getBalance`.
    pub name: &'static str,
    /// The most positional parameters accepted ([`ANY`]: extra ones are ignored).
    pub max_params: usize,
    /// Served only when the node enables dev methods (`evm_`).
    pub dev_only: bool,
    adapter: Adapter,
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method")
            .field("name", &self.name)
            .field("max_params", &self.max_params)
            .field("dev_only", &self.dev_only)
            .finish_non_exhaustive()
    }
}

/// [`Method::max_params`] of a method that ignores extra parameters.
pub const ANY: usize = usize::MAX;

/// A method answered without waiting.
const fn now(
    name: &'static str,
    max_params: usize,
    f: fn(&Call<'_>) -> Result<Value, RpcError>,
) -> Method {
    Method {
        name,
        max_params,
        dev_only: false,
        adapter: Adapter::Now(f),
    }
}

/// A method that waits (EVM execution, sealing).
const fn later(
    name: &'static str,
    max_params: usize,
    f: for<'a> fn(&'a Call<'a>) -> Pending<'a>,
) -> Method {
    Method {
        name,
        max_params,
        dev_only: false,
        adapter: Adapter::Later(f),
    }
}

impl Method {
    /// The same method, served only on a node with dev methods enabled.
    const fn dev_only(self) -> Self {
        Self {
            dev_only: true,
            ..self
        }
    }
}

/// A typed result as the JSON `result` member.
fn encode<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::internal(e.to_string()))
}

/// Every method the node serves.
pub static METHODS: &[Method] = &[
    // web3_ and net_
    now("web3_clientVersion", ANY, |c| {
        encode(c.api.web3_client_version())
    }),
    now("web3_sha3", ANY, |c| {
        encode(c.api.web3_sha3(c.arg(0, "data")?))
    }),
    now("net_version", ANY, |c| encode(c.api.net_version())),
    now("net_listening", ANY, |c| encode(c.api.net_listening())),
    now("net_peerCount", ANY, |c| encode(c.api.net_peer_count())),
    // Chain and node
    now("eth_chainId", ANY, |c| encode(c.api.chain_id())),
    now("eth_syncing", ANY, |c| encode(c.api.syncing())),
    now("eth_mining", ANY, |c| encode(c.api.mining())),
    now("eth_hashrate", ANY, |c| encode(c.api.hashrate())),
    now("eth_protocolVersion", ANY, |c| {
        encode(c.api.protocol_version())
    }),
    now("eth_coinbase", ANY, |c| encode(c.api.coinbase())),
    now("eth_blockNumber", ANY, |c| encode(c.api.block_number())),
    now("eth_accounts", ANY, |c| encode(c.api.accounts())),
    // State
    now("eth_getBalance", 2, |c| {
        encode(
            c.api
                .get_balance(c.arg(0, "address")?, c.arg(1, "block")?)?,
        )
    }),
    now("eth_getTransactionCount", 2, |c| {
        encode(
            c.api
                .get_transaction_count(c.arg(0, "address")?, c.arg(1, "block")?)?,
        )
    }),
    now("eth_getCode", 2, |c| {
        encode(c.api.get_code(c.arg(0, "address")?, c.arg(1, "block")?)?)
    }),
    now("eth_getStorageAt", 3, |c| {
        encode(
            c.api
                .get_storage_at(c.arg(0, "address")?, c.arg(1, "slot")?, c.arg(2, "block")?)?,
        )
    }),
    // Execution and fees
    later("eth_call", 4, |c| {
        Box::pin(async move {
            let out = c.api.call(
                c.arg(0, "transaction")?,
                c.arg(1, "block")?,
                c.arg(2, "state overrides")?,
                c.deadline,
            );
            encode(out.await?)
        })
    }),
    later("eth_estimateGas", 3, |c| {
        Box::pin(async move {
            let gas = c.api.estimate_gas(
                c.arg(0, "transaction")?,
                c.arg(1, "block")?,
                c.arg(2, "state overrides")?,
                c.deadline,
            );
            encode(gas.await?)
        })
    }),
    now("eth_gasPrice", ANY, |c| encode(c.api.gas_price())),
    now("eth_maxPriorityFeePerGas", ANY, |c| {
        encode(c.api.max_priority_fee_per_gas())
    }),
    now("eth_blobBaseFee", ANY, |c| encode(c.api.blob_base_fee())),
    now("eth_feeHistory", ANY, |c| {
        encode(c.api.fee_history(
            c.arg(0, "block count")?,
            c.arg(1, "newest block")?,
            c.arg(2, "reward percentiles")?,
        )?)
    }),
    // Sending and signing
    now("eth_sendRawTransaction", 1, |c| {
        encode(c.api.send_raw_transaction(c.arg(0, "raw transaction")?)?)
    }),
    later("eth_sendTransaction", 1, |c| {
        Box::pin(async move {
            let hash = c.api.send_transaction(c.arg(0, "transaction")?, c.deadline);
            encode(hash.await?)
        })
    }),
    later("eth_signTransaction", ANY, |c| {
        Box::pin(async move {
            let raw = c.api.sign_transaction(c.arg(0, "transaction")?, c.deadline);
            encode(raw.await?)
        })
    }),
    now("eth_sign", ANY, |c| {
        encode(c.api.sign(c.arg(0, "address")?, c.arg(1, "data")?)?)
    }),
    now("personal_sign", ANY, |c| {
        let data = c.arg(0, "data")?;
        encode(c.api.sign(c.arg(1, "address")?, data)?)
    }),
    now("eth_signTypedData_v4", ANY, sign_typed_data),
    now("eth_signTypedData", ANY, sign_typed_data),
    // Blocks and transactions
    now("eth_getTransactionByHash", 1, |c| {
        encode(c.api.get_transaction_by_hash(c.arg(0, "hash")?)?)
    }),
    now("eth_getTransactionReceipt", 1, |c| {
        encode(c.api.get_transaction_receipt(c.arg(0, "hash")?)?)
    }),
    now("eth_getBlockByNumber", 2, |c| {
        encode(
            c.api
                .get_block_by_number(c.arg(0, "block")?, c.arg(1, "full")?)?,
        )
    }),
    now("eth_getBlockByHash", 2, |c| {
        encode(
            c.api
                .get_block_by_hash(c.arg(0, "hash")?, c.arg(1, "full")?)?,
        )
    }),
    now("eth_getBlockReceipts", ANY, |c| {
        encode(c.api.get_block_receipts(c.arg(0, "block")?)?)
    }),
    now("eth_getBlockTransactionCountByNumber", ANY, |c| {
        encode(
            c.api
                .get_block_transaction_count_by_number(c.arg(0, "block")?)?,
        )
    }),
    now("eth_getBlockTransactionCountByHash", ANY, |c| {
        encode(
            c.api
                .get_block_transaction_count_by_hash(c.arg(0, "hash")?)?,
        )
    }),
    now("eth_getUncleCountByBlockNumber", ANY, |c| {
        encode(c.api.get_uncle_count())
    }),
    now("eth_getUncleCountByBlockHash", ANY, |c| {
        encode(c.api.get_uncle_count())
    }),
    now("eth_getTransactionByBlockNumberAndIndex", ANY, |c| {
        encode(
            c.api.get_transaction_by_block_number_and_index(
                c.arg(0, "block")?,
                c.arg(1, "index")?,
            )?,
        )
    }),
    now("eth_getTransactionByBlockHashAndIndex", ANY, |c| {
        encode(
            c.api
                .get_transaction_by_block_hash_and_index(c.arg(0, "hash")?, c.arg(1, "index")?)?,
        )
    }),
    // Logs and filters
    now("eth_getLogs", 1, |c| {
        encode(c.api.get_logs(c.arg(0, "filter")?)?)
    }),
    now("eth_newFilter", ANY, |c| {
        encode(c.api.new_filter(c.arg(0, "filter")?))
    }),
    now("eth_newBlockFilter", ANY, |c| {
        encode(c.api.new_block_filter())
    }),
    now("eth_newPendingTransactionFilter", ANY, |c| {
        encode(c.api.new_pending_transaction_filter())
    }),
    now("eth_uninstallFilter", ANY, |c| {
        encode(c.api.uninstall_filter(c.arg(0, "filter id")?))
    }),
    now("eth_getFilterChanges", ANY, |c| {
        let changes: FilterChanges = c.api.get_filter_changes(c.arg(0, "filter id")?)?;
        encode(changes)
    }),
    now("eth_getFilterLogs", ANY, |c| {
        encode(c.api.get_filter_logs(c.arg(0, "filter id")?)?)
    }),
    // Subscriptions (WebSocket only; `WsSession::subscribe` reads the parameters)
    now("eth_subscribe", ANY, |c| {
        c.session()?.subscribe(c.api, c.params.as_slice())
    }),
    now("eth_unsubscribe", ANY, |c| {
        let session = c.session()?;
        let id: String = c.arg(0, "subscription id")?;
        encode(session.unsubscribe(&id))
    }),
    // Transaction pool
    now("txpool_status", ANY, |c| encode(c.api.txpool_status())),
    now("txpool_content", ANY, |c| encode(c.api.txpool_content())),
    // Dev methods
    now("evm_increaseTime", ANY, |c| {
        encode(c.api.evm_increase_time(c.arg(0, "seconds")?)?)
    })
    .dev_only(),
    now("evm_setNextBlockTimestamp", ANY, |c| {
        encode(c.api.evm_set_next_block_timestamp(c.arg(0, "timestamp")?)?)
    })
    .dev_only(),
    later("evm_mine", ANY, |c| {
        Box::pin(async move { encode(c.api.evm_mine().await?) })
    })
    .dev_only(),
];

/// `eth_signTypedData_v4` and its alias `eth_signTypedData`.
fn sign_typed_data(c: &Call<'_>) -> Result<Value, RpcError> {
    encode(
        c.api
            .sign_typed_data(c.arg(0, "address")?, c.arg(1, "typed data")?)?,
    )
}

/// The method called `name`, if the node serves one.
pub fn method(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

impl RpcState {
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

    /// Handles one method call through [`METHODS`]; any EVM execution it needs stops at
    /// `deadline`.
    pub async fn handle_until(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        ws: Option<&Arc<WsSession>>,
        deadline: Instant,
    ) -> Result<Value, RpcError> {
        let params = Params::new(params)?;
        let dev_methods = self.node.config().dev_methods;
        let Some(m) = self::method(method).filter(|m| dev_methods || !m.dev_only) else {
            return Err(RpcError::method_not_found(method));
        };
        params.at_most(m.max_params)?;
        let call = Call {
            name: m.name,
            api: self,
            params,
            ws,
            deadline,
        };
        match m.adapter {
            Adapter::Now(f) => f(&call),
            Adapter::Later(f) => f(&call).await,
        }
    }
}

#[allow(dead_code)]
fn _assert_send(s: Arc<RpcState>) -> impl Send {
    async move { s.handle("eth_blockNumber", Value::Null, None).await }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_wire_name_is_in_the_table_once() {
        let mut seen = BTreeSet::new();
        for m in METHODS {
            assert!(seen.insert(m.name), "{} is in the table twice", m.name);
        }
        assert_eq!(
            method("eth_getBalance").map(|m| m.max_params),
            Some(2),
            "lookup by wire name"
        );
        assert!(method("eth_doesNotExist").is_none());
    }

    #[test]
    fn readme_lists_exactly_the_methods_of_the_table() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Methods\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Methods section");
        let listed: BTreeSet<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let table: BTreeSet<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(listed, table);
    }

    #[test]
    fn only_evm_methods_are_dev_only() {
        for m in METHODS {
            assert_eq!(m.dev_only, m.name.starts_with("evm_"), "{}", m.name);
        }
    }

    #[test]
    fn optional_and_required_params_name_the_parameter() {
        let p = Params::new(serde_json::json!(["0x12", null])).expect("array");
        let e = p.arg::<Address>(0, "address").expect_err("short address");
        assert_eq!(e.code, -32602);
        assert!(
            e.message.starts_with("invalid argument 0 (address): "),
            "{}",
            e.message
        );
        assert_eq!(p.arg::<Option<BlockId>>(1, "block"), Ok(None));
        assert_eq!(p.arg::<Option<BlockId>>(5, "block"), Ok(None));
        let e = p.arg::<B256>(1, "hash").expect_err("null required");
        assert_eq!(e.message, "missing value for required argument 1 (hash)");
        assert_eq!(
            p.at_most(1).map_err(|e| e.message),
            Err("too many arguments, want at most 1, got 2".to_string())
        );
        assert_eq!(
            Params::new(serde_json::json!({})).map_err(|e| e.message),
            Err("params must be an array".to_string())
        );
    }
}
