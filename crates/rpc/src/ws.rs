//! WebSocket sessions and `eth_subscribe` subscriptions (`newHeads`, `logs`,
//! `newPendingTransactions`).

use crate::error::RpcError;
use crate::eth::RpcState;
use alloy_primitives::B256;
use alloy_rpc_types_eth::Filter;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// One WebSocket connection: an outbound queue and its subscriptions.
#[derive(Debug)]
pub struct WsSession {
    out: mpsc::Sender<String>,
    subs: Mutex<HashMap<String, AbortHandle>>,
}

/// Most subscriptions per connection.
const MAX_SUBSCRIPTIONS: usize = 1024;

impl WsSession {
    /// A session writing to `out`.
    pub fn new(out: mpsc::Sender<String>) -> Arc<Self> {
        Arc::new(Self {
            out,
            subs: Mutex::new(HashMap::new()),
        })
    }

    /// `eth_subscribe`.
    pub fn subscribe(
        self: &Arc<Self>,
        state: &Arc<RpcState>,
        params: &[Value],
    ) -> Result<Value, RpcError> {
        let kind = params
            .first()
            .and_then(|v| v.as_str())
            .ok_or_else(|| RpcError::invalid_params("missing subscription kind"))?;
        if self.subs.lock().len() >= MAX_SUBSCRIPTIONS {
            return Err(RpcError::limit(format!(
                "too many subscriptions (max {MAX_SUBSCRIPTIONS})"
            )));
        }
        let id = format!("{:#x}", B256::random());
        let out = self.out.clone();
        let sid = id.clone();
        let notify = move |result: Value| {
            let msg = json!({"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": sid, "result": result}});
            msg.to_string()
        };
        let handle = match kind {
            "newHeads" => {
                let mut rx = state.node.subscribe_blocks();
                tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(b) => {
                                let mut h = alloy_rpc_types_eth::Header::new(b.header.clone());
                                h.hash = b.hash;
                                let v = serde_json::to_value(h).unwrap_or(Value::Null);
                                if out.send(notify(v)).await.is_err() {
                                    return;
                                }
                            }
                            Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
            }
            "logs" => {
                let filter: Filter = match params.get(1) {
                    None | Some(Value::Null) => Filter::default(),
                    Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                        RpcError::invalid_params(format!("invalid logs filter: {e}"))
                    })?,
                };
                let mut rx = state.node.subscribe_blocks();
                tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(b) => {
                                for log in &b.logs {
                                    if filter.matches_address(log.address())
                                        && filter.matches_topics(log.topics())
                                    {
                                        let v = serde_json::to_value(log).unwrap_or(Value::Null);
                                        if out.send(notify(v)).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
            }
            "newPendingTransactions" => {
                let mut rx = state.node.subscribe_pending();
                tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(h) => {
                                if out.send(notify(json!(h))).await.is_err() {
                                    return;
                                }
                            }
                            Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
            }
            other => {
                return Err(RpcError::invalid_params(format!(
                    "unsupported subscription kind {other:?} (newHeads, logs, newPendingTransactions)"
                )));
            }
        };
        self.subs.lock().insert(id.clone(), handle.abort_handle());
        Ok(Value::String(id))
    }

    /// `eth_unsubscribe`; whether the subscription existed.
    pub fn unsubscribe(&self, id: &str) -> bool {
        match self.subs.lock().remove(id) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        for (_, h) in self.subs.lock().drain() {
            h.abort();
        }
    }
}
