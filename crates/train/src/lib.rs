//! ModelFactory training: LoRA fine-tuning of an `openledger-model` base model on a licensed
//! Datanet version, with what Proof of Attribution needs recorded at the end of training.
//!
//! - [`pipeline`]: the one training sequence of `openledger train` and the jobs service
//!   (licence → base → config → rows → base fit → train → reproduction → store), with
//!   [`pipeline::RunEvent`]s, typed [`pipeline::Stage`]s of failure and cancel.
//! - [`source`]: the licence check on chain (before any read), then a Datanet version's rows.
//! - [`data`]: rows → token ids with loss masks (chat template), split, shuffles, packing.
//! - [`trainer`]: the loop (AdamW from [`optim`], schedule, accumulation, clipping, validation,
//!   early stopping, [`checkpoint`]s with bit-identical resume, cancel) and its [`trainer::Event`]s.
//! - [`sketch`]: per-example projected LoRA gradients (format v1) and [`sketch::query_sketch`].
//! - [`output`]: adapter blob, sketch blob and the training manifest in the models store.
//! - [`publish`]: `ModelRegistry.registerModel`, from a local key or relayed from a wallet.
//! - [`eval`]: greedy reproduction of training answers.
//! - [`jobs`]: the jobs service (`/api/jobs`: submit, list, SSE events, cancel, publish).
//!
//! ```
//! use openledger_train::sketch::{SketchConfig, SketchSet};
//! let set = SketchSet::from_bytes(b"not a sketch");
//! assert!(set.is_err());
//! assert_eq!(SketchConfig::default().dim, 128);
//! ```

pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod eval;
pub mod jobs;
pub mod loss;
pub mod optim;
pub mod output;
pub mod pipeline;
pub mod publish;
pub mod sketch;
pub mod source;
pub mod trainer;

pub use error::{Result, TrainError};
