//! Proof of Attribution: which contributions produced an answer, how much each is paid, and
//! how anyone can re-check it.
//!
//! - [`index`]: the span index of a Datanet version (token stream + suffix array + row →
//!   contribution map, memory-mapped, format documented there).
//! - [`span`]: span attribution (maximal verbatim spans weighted by rarity, OLMoTrace style).
//! - [`record`]: [`AttributionRecord`], its canonical bytes, id and ppm weights.
//! - [`merkle`]: batch roots and proofs in the OpenZeppelin `MerkleProof` convention.
//! - [`influence`]: gradient-sketch influence (cosine or DataInf) per contribution;
//!   [`trained`]: the training manifest, sketches and adapter of a model trained here, and the
//!   answer's gradient sketch.
//! - [`corpus`]: a Datanet version's rows, tokenized, and its index.
//! - [`auth`]: payer identification (EIP-712 session headers, API keys).
//! - [`service`] + [`settle`] + [`api`]: [`AttributionService`], the `InferenceHooks` of the
//!   OpenLoRA server, batched settlement, `/api/attribution`, `/api/earnings`, `/api/keys`.
//!
//! ```
//! use openledger_attribution::{index::{self, Document, IndexMeta, SpanIndex}, span};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("v0.olspan");
//! let meta = IndexMeta { datanet: 1, version: 0, vocab: 100, tokenizer_hash: Default::default() };
//! let docs = vec![
//!     Document { contribution: 7, tokens: vec![5, 6, 7, 8, 9] },
//!     Document { contribution: 8, tokens: vec![1, 2, 3, 4, 1, 2] },
//! ];
//! index::build(&path, &meta, &docs, |_, _| {}).unwrap();
//! let ix = SpanIndex::open(&path).unwrap();
//! let att = span::attribute(&[&ix], &[0, 6, 7, 8, 9, 0], &span::SpanParams::default());
//! assert_eq!(att.scores.keys().map(|k| k.2).collect::<Vec<_>>(), vec![7]);
//! ```

pub mod api;
pub mod auth;
pub mod corpus;
pub mod index;
pub mod influence;
pub mod merkle;
pub mod record;
pub mod service;
pub mod settle;
pub mod span;
pub mod trained;
pub mod watch;

pub use record::{AttributionRecord, Credit, MethodRecord};
pub use service::{AttributionConfig, AttributionService, ServiceError};
