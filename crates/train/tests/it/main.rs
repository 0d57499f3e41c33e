//! Integration tests of training on the in-process devnet (real node, real Datanet service
//! over HTTP, real processes killed for the crash test).

mod attacks;
mod common;
mod empty;
mod flow;
mod jobs;
mod pipeline;
mod restart;
mod resume;
