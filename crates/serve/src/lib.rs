//! OpenLoRA: one base model in memory, many LoRA adapters served from it, requests for
//! different adapters batched into one forward pass, behind an OpenAI-compatible API.
//!
//! - [`cache`]: adapters named by content hash, loaded through object store → disk → RAM,
//!   verified, LRU-evicted within byte budgets, pinned (`Arc`) while a request uses them.
//! - [`registry`]: names (base, on-chain id, alias, hash) and the `ModelRegistry` follower.
//! - [`check`]: load checks — `servable` means the server can load the adapter, checked when
//!   a model is registered, cached per hash, looked at again when a missing blob is asked for.
//! - [`scheduler`]: continuous batching state — chunked prefill mixed with decode under a
//!   token budget, admission limits, round-robin fairness over adapters.
//! - [`engine`]: the dedicated compute thread that owns the scheduler and the model.
//! - [`api`] (via [`Server::router`]): `/v1/models`, `/v1/completions`,
//!   `/v1/chat/completions` (SSE streaming), vLLM-style adapter load/unload, `/metrics`.
//! - [`hooks`]: what payment and attribution plug into.
//!
//! The scheduler is plain data and can be driven by hand:
//!
//! ```
//! use openledger_serve::scheduler::{Scheduler, SchedulerConfig, Work};
//! use alloy_primitives::B256;
//! let mut s = Scheduler::new(SchedulerConfig { prefill_chunk: 4, ..Default::default() });
//! s.push(1, B256::repeat_byte(1), 6).unwrap(); // a 6-token prompt for adapter 0x0101…
//! let batch = s.next_batch(64);
//! assert_eq!(batch[0].work, Work::Prefill { start: 0, len: 4, last: false });
//! ```
//!
//! Serving: `Server::start(ServeConfig::new(base_dir, cache_dir), Arc::new(NoHooks))`, then
//! mount `server.router()` in any axum app.

pub mod api;
pub mod cache;
pub mod check;
pub mod engine;
pub mod error;
pub use openledger_protocol::hooks;
pub mod metrics;
pub mod mix;
pub mod registry;
pub mod scheduler;
mod server;

pub use error::ServeError;
pub use hooks::{InferenceHooks, NoHooks};
pub use server::{ServeConfig, Server, base_model_hash};
