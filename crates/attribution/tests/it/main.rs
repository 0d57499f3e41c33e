//! Integration tests of openledger-attribution (one binary).

mod attacks;
mod e2e;
mod settle;
