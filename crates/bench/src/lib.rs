//! Benchmark harnesses: what `openledger bench serve|train|attribution`, `openledger model
//! bench` and `openledger datanet bench` run. Each measures a baseline in the same run (a ratio
//! survives a noisy machine, an absolute number does not) and returns a report the binary
//! prints as a table and writes as JSON. The libraries they measure keep no harness code in
//! their public API.
//!
//! - [`model`]: prefill and decode throughput by batch size and adapter mix, and the dense
//!   kernel's rate.
//! - [`serve`]: an S-LoRA-style workload against the serving engine and the adapter cache,
//!   with one-adapter and naive (merge per request) baselines.
//! - [`train`]: trainer tokens/s, batched against unbatched and against PyTorch + PEFT on
//!   the exact same batches.
//! - [`recipe`]: the training-recipe sweep (learning rate × rank on the demo fine-tune)
//!   that `TrainConfig::default()` is chosen by (`cargo run -p openledger-bench --example
//!   recipe`).
//! - [`attribution`]: planted-facts quality per attribution method, and index, span and
//!   influence speed.
//! - [`datanet`]: ingest + validate throughput against keccak-256, and near-duplicate cost as
//!   a Datanet grows.
//!
//! ```no_run
//! let r = openledger_bench::datanet::run(1, &[100], 10);
//! assert!(r.rows > 0 && r.ratio_to_keccak > 0.0);
//! assert!(r.table().contains("index rows"));
//! ```
//!
//! Features: one per harness (`model`, `serve`, `train`, `attribution`, `datanet`), all on
//! by default.

#[cfg(feature = "attribution")]
pub mod attribution;
#[cfg(feature = "datanet")]
pub mod datanet;
#[cfg(feature = "model")]
pub mod model;
#[cfg(feature = "train")]
pub mod recipe;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "train")]
pub mod train;
