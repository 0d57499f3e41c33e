//! Integration tests of openledger-attribution (one binary).

mod e2e;
mod settle;
