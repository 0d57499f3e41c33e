//! OpenLedger's execution layer: genesis, transaction pool, block building with revm and
//! durable storage in redb.
//!
//! ```no_run
//! use openledger_chain::{DevPreset, Node, NodeConfig, SealMode, PoolConfig};
//! let (spec, accounts) = DevPreset::default().build().unwrap();
//! let node = Node::open(NodeConfig {
//!     datadir: "/tmp/ol".into(),
//!     spec,
//!     seal: SealMode::OnDemand,
//!     fee_recipient: Default::default(),
//!     pool: PoolConfig::default(),
//!     dev_accounts: accounts,
//!     dev_methods: true,
//! }).unwrap();
//! let block = node.seal().unwrap();
//! assert_eq!(block.header.number, 1);
//! ```

pub mod error;
pub mod exec;
pub mod genesis;
pub mod node;
pub mod pool;
pub mod store;

pub use error::{ChainError, PoolError, StoreError};
pub use exec::{CallError, CallOutcome, CallRequest};
pub use genesis::{ChainSpec, DevAccount, DevPreset, dev_accounts};
pub use node::{Head, NewBlock, Node, NodeConfig, SealMode, replay_and_verify};
pub use pool::PoolConfig;
pub use store::{Reader, Store};
