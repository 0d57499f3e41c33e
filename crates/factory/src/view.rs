//! View structs for the templates and the formatting of amounts.

use serde::Serialize;

/// `wei` as OPEN with trailing zeros trimmed ("1.5", "0", "0.000001").
pub(crate) use openledger_protocol::format_open as open;

/// A block in the explorer.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct BlockView {
    pub number: u64,
    pub hash: String,
    pub timestamp: u64,
    pub gas_used: u64,
    pub txs: Vec<TxSummary>,
}

/// A transaction line in a block.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TxSummary {
    pub hash: String,
    pub from: String,
    pub to: String,
    pub value: String,
    pub method: String,
}

/// A transaction with its receipt and decoded protocol events.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TxDetail {
    pub hash: String,
    pub from: String,
    pub to: String,
    pub value: String,
    pub call: String,
    pub status: &'static str,
    pub gas_used: Option<u64>,
    pub block: Option<u64>,
    pub events: Vec<EventView>,
}

/// One decoded log.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EventView {
    pub contract: String,
    pub decoded: String,
}
