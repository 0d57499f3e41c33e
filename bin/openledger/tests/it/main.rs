//! Integration tests that need the `openledger` binary itself: they spawn it, kill it, deploy
//! with it, or check how it exits. The chain's and the JSON-RPC server's own tests live in
//! `crates/chain/tests` and `crates/rpc/tests`.

mod common;

mod attacks;
mod crash;
mod datanet_kill;
mod deploy_anvil;
mod devnet_sigterm;
mod journey;
