//! Integration tests of openledger-attribution (one binary).

mod attacks;
mod corpus_attacks;
mod e2e;
mod settle;
