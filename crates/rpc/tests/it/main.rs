//! Integration tests: a real node over real HTTP and WebSocket sockets, driven by alloy's
//! provider (and by raw JSON-RPC where a client library would hide the behaviour).

mod common;

mod attacks;
mod bad_input;
mod contracts;
mod pool;
mod restart;
mod rpc;
mod subscriptions;
