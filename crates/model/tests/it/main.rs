//! Integration tests of openledger-model (one binary, modules per topic).
#![allow(clippy::unwrap_used)]

mod common;
mod init;
mod parity;
