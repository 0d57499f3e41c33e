//! Waiting for a transaction's receipt without alloy's block heartbeat.
//!
//! `PendingTransactionBuilder::get_receipt` registers the transaction with a heartbeat task
//! that follows new blocks; under load on a chain that seals on demand (no new block after the
//! transaction's own) that registration has been seen to wait forever (alloy issues #3881,
//! #4181). A settler or deployer stuck there stops paying people. [`Confirm::confirm`] polls
//! `eth_getTransactionReceipt` instead, with a deadline.

use alloy_network::Network;
use alloy_primitives::TxHash;
use alloy_provider::{PendingTransactionBuilder, Provider};
use std::time::{Duration, Instant};

/// How long [`Confirm::confirm`] waits for a receipt.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why no receipt came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Asking the node failed.
    #[error("asking for the receipt of {0}: {1}")]
    Rpc(TxHash, String),
    /// The transaction was not mined in time (it may still be).
    #[error("transaction {0} was not mined within {1:?}")]
    Timeout(TxHash, Duration),
}

/// Polls for `hash`'s receipt (every 20 ms at first, backing off to 500 ms) until `timeout`.
pub async fn wait_for_receipt<N: Network, P: Provider<N>>(
    provider: &P,
    hash: TxHash,
    timeout: Duration,
) -> Result<N::ReceiptResponse, ReceiptError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match provider.get_transaction_receipt(hash).await {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(ReceiptError::Rpc(hash, e.to_string())),
        }
        if start.elapsed() >= timeout {
            return Err(ReceiptError::Timeout(hash, timeout));
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The receipt of a sent transaction, by polling (see the module docs).
pub trait Confirm<N: Network> {
    /// Waits up to [`RECEIPT_TIMEOUT`] for the receipt.
    fn confirm(self) -> impl Future<Output = Result<N::ReceiptResponse, ReceiptError>> + Send;
}

impl<N: Network> Confirm<N> for PendingTransactionBuilder<N> {
    async fn confirm(self) -> Result<N::ReceiptResponse, ReceiptError> {
        let hash = *self.tx_hash();
        wait_for_receipt(self.provider(), hash, RECEIPT_TIMEOUT).await
    }
}
