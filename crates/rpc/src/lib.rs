//! Ethereum JSON-RPC for the OpenLedger node: HTTP and WebSocket on one port, batches,
//! filters and subscriptions, with geth's error codes and messages.
//!
//! A request goes [`server`] (HTTP/WS, batches, limits) → [`methods::METHODS`] (the table of
//! every method: wire name → adapter decoding the positional parameters) → one typed method
//! of [`api`] on [`RpcState`] (e.g. [`RpcState::get_balance`]) → the node.
//!
//! ```no_run
//! # async fn run(node: std::sync::Arc<openledger_chain::Node>) -> std::io::Result<()> {
//! use openledger_rpc::{RpcConfig, RpcState, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8545").await?;
//! serve(RpcState::new(node, RpcConfig::default()), listener, std::future::pending()).await
//! # }
//! ```

pub mod api;
pub mod convert;
pub mod error;
pub mod eth;
pub mod filters;
pub mod methods;
pub mod server;
pub mod ws;

pub use error::RpcError;
pub use eth::{RpcConfig, RpcState};
pub use methods::{METHODS, Method};
pub use server::{process, router, serve};
