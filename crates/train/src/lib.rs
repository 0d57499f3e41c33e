//! ModelFactory training: LoRA fine-tuning of an `openledger-model` base model on a licensed
//! Datanet version, with what Proof of Attribution needs recorded at the end of training.
//!
//! - [`sketch`]: per-example projected LoRA gradients (format v1) and [`sketch::query_sketch`].
//!
//! ```
//! use openledger_train::sketch::{SketchConfig, SketchSet};
//! let set = SketchSet::from_bytes(b"not a sketch");
//! assert!(set.is_err());
//! assert_eq!(SketchConfig::default().dim, 128);
//! ```

pub mod config;
pub mod data;
mod error;
pub mod loss;
pub mod optim;
pub mod sketch;

pub use error::{Result, TrainError};
