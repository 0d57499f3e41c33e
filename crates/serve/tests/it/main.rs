//! Integration tests of OpenLoRA: a real server on a real socket, real HTTP clients, a real
//! devnet for the chain-following test.

mod batching;
mod chain;
mod common;
mod errors;
mod mixed;
mod servable;
