//! View structs for the templates and the formatting of amounts.

use alloy_primitives::U256;
use alloy_primitives::utils::format_ether;
use serde::Serialize;

/// `wei` as OPEN with trailing zeros trimmed ("1.5", "0", "0.000001").
pub(crate) fn open(wei: U256) -> String {
    let s = format_ether(wei);
    match s.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => s,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_trims_zeros() {
        assert_eq!(open(U256::ZERO), "0");
        assert_eq!(open(U256::from(1_500_000_000_000_000_000u128)), "1.5");
        assert_eq!(open(U256::from(1_000_000_000_000u64)), "0.000001");
        assert_eq!(
            open(U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18))),
            "10000"
        );
    }
}
