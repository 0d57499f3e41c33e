//! Integration tests of openledger-model (one binary, modules per topic).
#![allow(clippy::unwrap_used)]

mod bad_input;
mod common;
mod generate;
mod init;
mod lora;
mod parity;
mod pull;
mod shapes;
mod vocab_adapters;
