//! Integration tests of openledger-attribution (one binary).

mod settle;
