//! Shared ids, hashes and constants of OpenLedger.
//!
//! ```
//! use openledger_primitives::{OPEN, DEV_MNEMONIC};
//! assert_eq!(OPEN, 10u128.pow(18));
//! assert!(DEV_MNEMONIC.ends_with("junk"));
//! ```

pub use alloy_primitives::{Address, B256, Bytes, U256, keccak256};

/// One OPEN (the gas token) in its smallest unit; OPEN has 18 decimals like ether.
pub const OPEN: u128 = 1_000_000_000_000_000_000;

/// The well-known development mnemonic used by anvil and hardhat.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Chain id of the `dev` genesis preset (what MetaMask's "Localhost 8545" network expects).
pub const DEV_CHAIN_ID: u64 = 1337;

/// Name and version reported by `web3_clientVersion`.
pub const CLIENT_VERSION: &str = concat!("openledger/v", env!("CARGO_PKG_VERSION"));
