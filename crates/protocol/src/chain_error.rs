//! One error type for everything a service asks the chain: [`ChainError`].
//!
//! Services wrap it in their own error enums (`#[from]`), so a failed call keeps its kind —
//! the node did not answer, a contract refused, a receipt never came — instead of being
//! flattened to a string at each crate's border. A revert is decoded against every protocol
//! contract's custom errors, so the message names the rule that refused (`reverted:
//! NotLicensed(..)`), not an opaque `0x…` blob.

use alloy_sol_types::SolInterface;

use crate::bindings::{
    AttributionSettlement, AttributorStaking, DatanetRegistry, GOPEN, ModelRegistry,
    OpenLedgerGovernor, OpenLedgerTimelock, ProtocolParams,
};
use crate::confirm::ReceiptError;

/// Why a call to the chain failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The RPC URL does not parse.
    #[error("bad rpc url {url}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The node could not be reached or answered with an error that is not a revert.
    #[error("{0}")]
    Rpc(String),
    /// A contract refused the call or transaction; the message names the decoded error.
    #[error("{0}")]
    Reverted(String),
    /// No receipt came for a sent transaction.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The chain answered, but not as the protocol says it must (a missing event, an
    /// unexpected value); the message says what was expected.
    #[error("{0}")]
    Unexpected(String),
}

impl ChainError {
    /// A [`ChainError::BadUrl`] for `url`.
    pub fn bad_url(url: &str, reason: impl std::fmt::Display) -> Self {
        Self::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A [`ChainError::Unexpected`] answer.
    pub fn unexpected(what: impl Into<String>) -> Self {
        Self::Unexpected(what.into())
    }

    /// Whether a contract refused (a retry with the same input fails the same way), as
    /// opposed to the chain being unreachable or slow.
    pub fn is_revert(&self) -> bool {
        matches!(self, Self::Reverted(_))
    }
}

/// The decoded form of revert `data`: a protocol contract's custom error, or an
/// `Error(string)` / `Panic(uint256)` reason; `None` when nothing decodes it.
pub fn decode_revert(data: &[u8]) -> Option<String> {
    if let Ok(ProtocolParams::ProtocolParamsErrors::DisputeParamOutOfBounds(e)) =
        ProtocolParams::ProtocolParamsErrors::abi_decode(data)
    {
        let name =
            crate::config::dispute_param_name(e.param).unwrap_or_else(|| format!("#{}", e.param));
        return Some(format!(
            "DisputeParamOutOfBounds: dispute.{name} = {} is outside [{}, {}]",
            e.value, e.min, e.max
        ));
    }
    fn try_decode<E: SolInterface + std::fmt::Debug>(data: &[u8]) -> Option<String> {
        E::abi_decode(data).ok().map(|e| format!("{e:?}"))
    }
    try_decode::<DatanetRegistry::DatanetRegistryErrors>(data)
        .or_else(|| try_decode::<ModelRegistry::ModelRegistryErrors>(data))
        .or_else(|| try_decode::<AttributionSettlement::AttributionSettlementErrors>(data))
        .or_else(|| try_decode::<ProtocolParams::ProtocolParamsErrors>(data))
        .or_else(|| try_decode::<AttributorStaking::AttributorStakingErrors>(data))
        .or_else(|| try_decode::<GOPEN::GOPENErrors>(data))
        .or_else(|| try_decode::<OpenLedgerGovernor::OpenLedgerGovernorErrors>(data))
        .or_else(|| try_decode::<OpenLedgerTimelock::OpenLedgerTimelockErrors>(data))
        .or_else(|| {
            use alloy_sol_types::{Panic, Revert, SolError};
            Revert::abi_decode(data)
                .map(|r| r.reason)
                .or_else(|_| Panic::abi_decode(data).map(|p| p.to_string()))
                .ok()
        })
}

impl From<alloy_contract::Error> for ChainError {
    fn from(e: alloy_contract::Error) -> Self {
        match e.as_revert_data().and_then(|d| decode_revert(&d)) {
            Some(reason) => Self::Reverted(format!("reverted: {reason}")),
            None => Self::Rpc(e.to_string()),
        }
    }
}

impl From<alloy_transport::TransportError> for ChainError {
    fn from(e: alloy_transport::TransportError) -> Self {
        match e
            .as_error_resp()
            .and_then(|r| r.as_revert_data())
            .and_then(|d| decode_revert(&d))
        {
            Some(reason) => Self::Reverted(format!("reverted: {reason}")),
            None => Self::Rpc(e.to_string()),
        }
    }
}

impl From<alloy_provider::PendingTransactionError> for ChainError {
    fn from(e: alloy_provider::PendingTransactionError) -> Self {
        Self::Rpc(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::U256;
    use alloy_sol_types::SolError;

    #[test]
    fn reverts_decode_to_the_contract_error_name() {
        let data = DatanetRegistry::DatanetNotFound {
            datanetId: U256::from(7),
        }
        .abi_encode();
        let reason = decode_revert(&data);
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("DatanetNotFound")),
            "{reason:?}"
        );
        assert_eq!(decode_revert(&[1, 2, 3, 4, 5]), None);
        let plain = alloy_sol_types::Revert::from("not allowed").abi_encode();
        assert_eq!(decode_revert(&plain).as_deref(), Some("not allowed"));
    }
}
