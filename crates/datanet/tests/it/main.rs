//! Integration tests of the Datanet service on the in-process devnet (real node, real HTTP,
//! real S3-compatible server for the S3 runs).

mod attacks;
mod bad_input;
mod common;
mod flow;
mod restart;
