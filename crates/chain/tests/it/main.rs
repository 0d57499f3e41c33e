//! Integration tests of the chain crate: a real node on a real datadir, driven through its Rust
//! API (the JSON-RPC tests live in `crates/rpc/tests`).

mod fees;
