//! The typed seam between OpenLedger's services and its chain, and the constants they share.
//!
//! - ids and constants: [`DatanetId`], [`ModelId`], [`ContributionId`], [`Version`], [`OPEN`],
//!   [`DEV_MNEMONIC`], [`DEV_CHAIN_ID`], [`CLIENT_VERSION`];
//! - the contracts: `sol!` bindings generated from the committed artifacts in `contracts/out`
//!   ([`bindings`]), the deployment configuration and plan (which the devnet's genesis
//!   predeploy executes), typed [`Deployments`], and deployment to any EVM chain over JSON-RPC;
//! - the rules services and contracts share: the fee split ([`fees`]), every EIP-712 message
//!   and domain ([`eip712`]), the payment hooks between serving and attribution ([`hooks`]);
//! - talking to the chain: receipts by polling ([`Confirm`]) and one error type
//!   ([`ChainError`]); answering HTTP: one error envelope ([`api_error`]).
//!
//! ```
//! use openledger_protocol::{DeployConfig, OPEN, DEV_MNEMONIC, plan};
//! assert_eq!(OPEN, 10u128.pow(18));
//! assert!(DEV_MNEMONIC.ends_with("junk"));
//! let cfg = DeployConfig::dev();
//! let steps = plan(&cfg, openledger_protocol::GENESIS_DEPLOYER, 0);
//! assert_eq!(steps.len(), 7);
//! assert_eq!(steps[0].name, "GOPEN");
//! ```

pub mod api_error;
pub mod bindings;
pub mod chain_error;
mod config;
pub mod confirm;
mod deploy;
pub mod eip712;
pub mod fees;
pub mod follower;
pub mod hooks;
mod ids;
pub mod merkle;

pub use api_error::ApiError;
pub use chain_error::ChainError;
pub use config::{
    Contract, Contracts, DeployConfig, Deployments, FeeSplit, GENESIS_DEPLOYER, Step, plan,
};
pub use confirm::{Confirm, ReceiptError};
pub use deploy::{DeployError, deploy};
pub use ids::{ContributionId, DatanetId, IdError, ModelId, Version};

pub use alloy_primitives::{Address, B256, Bytes, U256, keccak256};

/// One OPEN (the gas token) in its smallest unit; OPEN has 18 decimals like ether.
pub const OPEN: u128 = 1_000_000_000_000_000_000;

/// The well-known development mnemonic used by anvil and hardhat.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Chain id of the `dev` genesis preset (what MetaMask's "Localhost 8545" network expects).
pub const DEV_CHAIN_ID: u64 = 1337;

/// Name and version reported by `web3_clientVersion`.
pub const CLIENT_VERSION: &str = concat!("openledger/v", env!("CARGO_PKG_VERSION"));
