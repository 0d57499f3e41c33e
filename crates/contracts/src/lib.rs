//! How Rust calls OpenLedger's protocol contracts: `sol!` bindings generated from the committed
//! artifacts in `contracts/out`, the deployment configuration and plan (which the devnet's
//! genesis predeploy executes), and deployment to any EVM chain over JSON-RPC.
//!
//! ```
//! use openledger_contracts::{DeployConfig, plan};
//! let cfg = DeployConfig::dev();
//! let steps = plan(&cfg, openledger_contracts::GENESIS_DEPLOYER, 0);
//! assert_eq!(steps.len(), 7);
//! assert_eq!(steps[0].name, "GOPEN");
//! ```

pub mod bindings;
mod config;
pub mod confirm;
mod deploy;
pub mod eip712;
pub mod fees;
pub mod hooks;

pub use config::{
    Contract, Contracts, DeployConfig, Deployments, FeeSplit, GENESIS_DEPLOYER, Step, plan,
};
pub use confirm::{Confirm, ReceiptError};
pub use deploy::{DeployError, deploy};
