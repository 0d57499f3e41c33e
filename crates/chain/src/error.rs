//! Errors of the chain crate.

use alloy_primitives::U256;

/// A storage failure or an inconsistency found on disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error.
    #[error("database: {0}")]
    Db(String),
    /// Stored data failed to decode or is inconsistent.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl revm::database_interface::DBErrorMarker for StoreError {}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why the pool refused a transaction. Messages follow geth's, which wallets match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The bytes are not a valid signed transaction.
    #[error("failed to decode signed transaction: {0}")]
    Decode(String),
    /// The transaction is larger than the pool accepts.
    #[error("oversized data: transaction of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Encoded size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// The signature does not recover to an address.
    #[error("invalid sender: invalid signature")]
    InvalidSignature,
    /// Signed for another chain.
    #[error("invalid chain id for signer: have {have} want {want}")]
    WrongChainId {
        /// Chain id in the transaction.
        have: u64,
        /// This chain's id.
        want: u64,
    },
    /// A legacy transaction without EIP-155 replay protection.
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    Unprotected,
    /// Transaction type not supported (e.g. blob transactions on this L2).
    #[error("transaction type not supported: {0}")]
    UnsupportedType(String),
    /// Nonce below the account's.
    #[error("nonce too low: next nonce {state}, tx nonce {tx}")]
    NonceTooLow {
        /// Account nonce.
        state: u64,
        /// Transaction nonce.
        tx: u64,
    },
    /// Nonce too far in the future.
    #[error("nonce too high: next nonce {state}, tx nonce {tx} is more than {max_gap} ahead")]
    NonceTooHigh {
        /// Account nonce.
        state: u64,
        /// Transaction nonce.
        tx: u64,
        /// Allowed gap.
        max_gap: u64,
    },
    /// The sender cannot pay gas * price + value for this transaction on top of the ones it
    /// already has in the pool.
    #[error(
        "insufficient funds for gas * price + value: balance {balance}, queued cost {pooled}, tx cost {cost}"
    )]
    InsufficientFunds {
        /// Sender balance.
        balance: U256,
        /// Maximum cost of the transaction.
        cost: U256,
        /// Maximum cost of the sender's other pooled transactions.
        pooled: U256,
    },
    /// Gas limit below the intrinsic gas.
    #[error("intrinsic gas too low: have {have}, want {want}")]
    IntrinsicGasTooLow {
        /// Gas limit.
        have: u64,
        /// Intrinsic gas.
        want: u64,
    },
    /// Gas limit above the block gas limit.
    #[error("exceeds block gas limit: tx gas {have}, block gas limit {limit}")]
    ExceedsBlockGasLimit {
        /// Gas limit.
        have: u64,
        /// Block limit.
        limit: u64,
    },
    /// Priority fee above fee cap.
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap,
    /// Fee cap below the pool's minimum.
    #[error("transaction underpriced: gas price {have} below minimum {min}")]
    Underpriced {
        /// Offered price.
        have: u128,
        /// Minimum.
        min: u128,
    },
    /// A replacement must bump both fees by the configured percentage.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The same transaction is already in the pool.
    #[error("already known")]
    AlreadyKnown,
    /// The pool is full and nothing in it may make way for the transaction.
    #[error("txpool is full")]
    PoolFull,
    /// The pool is full and the transaction pays no more than the cheapest one it could evict.
    #[error(
        "transaction underpriced: the pool is full; its cheapest evictable transaction pays a fee cap of {cheapest} wei"
    )]
    PoolUnderpriced {
        /// Fee cap of the cheapest evictable transaction.
        cheapest: u128,
    },
    /// The sender already has the most future-nonce transactions one sender may queue.
    #[error(
        "account limit exceeded: at most {limit} queued (future-nonce) transactions per sender"
    )]
    AccountLimit {
        /// The per-sender limit.
        limit: usize,
    },
    /// Reading state failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Errors of the node as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The genesis is invalid or does not match the datadir.
    #[error("genesis: {0}")]
    Genesis(String),
    /// Execution failed in a way that is not the transaction's fault.
    #[error("execution: {0}")]
    Execution(String),
    /// The requested block or state is not available.
    #[error("{0}")]
    NotFound(String),
    /// A call or estimate reached its deadline and was stopped.
    #[error("execution aborted: deadline reached")]
    Timeout,
    /// A caller-supplied value is out of range (e.g. a timestamp past year 9999).
    #[error("{0}")]
    InvalidArgument(String),
}
