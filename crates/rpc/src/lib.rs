//! Ethereum JSON-RPC for the OpenLedger node: HTTP and WebSocket on one port, batches,
//! filters and subscriptions, with geth's error codes and messages.
//!
//! ```no_run
//! # async fn run(node: std::sync::Arc<openledger_chain::Node>) -> std::io::Result<()> {
//! use openledger_rpc::{RpcConfig, RpcState, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8545").await?;
//! serve(RpcState::new(node, RpcConfig::default()), listener, std::future::pending()).await
//! # }
//! ```

pub mod convert;
pub mod error;
pub mod eth;
pub mod filters;
pub mod server;
pub mod ws;

pub use error::RpcError;
pub use eth::{RpcConfig, RpcState};
pub use server::{process, router, serve};
