//! Datanets: community datasets that are contributed, validated, curated, versioned and
//! licensed. Content lives off chain in a content-addressed store; hashes, contributors,
//! scores, decisions and version roots live on chain in `DatanetRegistry`.
//!
//! ```
//! use openledger_datanet::{formats::{self, Format}, validate::{self, RowIndex, ValidationConfig}};
//! let rows = formats::parse(b"{\"text\":\"hello world\"}\n", &Format::Jsonl, 4096).unwrap();
//! assert_eq!(rows.len(), 1);
//! let report = validate::validate(b"a fresh paragraph\n\nanother one", &Format::Text,
//!     &RowIndex::default(), &ValidationConfig::default()).unwrap();
//! assert_eq!(report.score, 100);
//! ```
//!
//! Modules: [`store`] (keccak-256 content store over `object_store`: local disk or S3),
//! [`formats`] (files → rows), [`validate`] (limits + quality score), [`manifest`] (version
//! manifests and Merkle proofs), [`onchain`] (a manifest checked against the version it claims
//! on chain), [`auth`] (EIP-712 signed requests), [`nonces`] (used nonces until they expire),
//! [`index`] (registry events → index), [`service`] + [`api`] (the axum router), [`client`] (CLI/UI side), [`demo`]
//! (generated demo Datanets).
//!
//! # Validation and quality score (re-runnable by anyone)
//!
//! 1. Size: more than `max_bytes` → 413 `too_large`. Not UTF-8 → 422 `invalid_utf8`.
//! 2. Parse to rows ([`formats`]); a malformed JSONL line → 422 `malformed_jsonl` with its
//!    1-based line number; more than `max_rows` → 413; no rows → 422 `empty`.
//! 3. Each row gets one verdict, checked in this order: *empty* (blank after trimming);
//!    *garbage* (printable ratio < `min_printable_ratio`, where printable = not a control
//!    character other than `\n \t \r`, and not U+FFFD); *exact duplicate* (keccak-256 of the
//!    row text equals an *earlier row*, see below, or an earlier row of this contribution);
//!    *near-duplicate* (MinHash similarity ≥ `near_dup_threshold` with an LSH candidate among
//!    the earlier rows or this contribution's earlier rows); otherwise *ok*.
//! 4. MinHash: lower-case, split on whitespace, word 3-gram shingles (one shingle if fewer
//!    than three words); shingle hash FNV-1a-64 chained over the words; 64 functions
//!    `splitmix64(h ^ splitmix64(i))`; LSH with 16 bands of 4.
//! 5. Score = ⌊100 × Σ weight / rows⌋, weight 1 for ok, 0.25 for near-duplicate, 0 otherwise;
//!    below `min_score` → 422 `low_quality`. Reasons list each deduction with row numbers.
//!
//! **Earlier rows** (the service's rule): every row of every upload to the same Datanet that
//! the service recorded *before* this one — in its own durable upload order
//! ([`index::UploadInfo::seq`], given out when an upload is recorded, one upload of a Datanet
//! scored at a time) — and that still counts: accepted, pending, or uploaded and not yet
//! contributed. An upload stops counting when every contribution recorded on chain from it is
//! rejected or withdrawn, and counts again if its bytes are contributed anew. The earlier
//! upload is the original: the order in which curators approve plays no part, and a copy
//! uploaded while the original is still pending is scored as a copy. The same bytes as an
//! upload of another account that still counts are refused (409 `duplicate_content`); the
//! same upload again by its uploader returns its recorded receipt.
//!
//! A score is computed once, at upload, and never recomputed: it is what the contributor
//! records on chain with `contribute`, where it cannot change. If the earlier upload is later
//! rejected or withdrawn, a copy scored against it keeps its deduction; the rule favours the
//! first uploader and a curator still decides both.
//!
//! The score (0–100) is the `qualityScore` recorded on chain by `contribute`.

pub mod api;
pub mod auth;
pub mod client;
pub mod demo;
pub mod formats;
pub mod index;
pub mod manifest;
pub mod nonces;
pub mod onchain;
pub mod service;
pub mod store;
pub mod validate;

pub use api::{ApiError, UploadReceipt, router};
pub use client::{ClientError, DatanetClient, VerifyReport};
pub use index::{ContributionInfo, DatanetInfo, IndexState, Status, UploadInfo, VersionInfo};
pub use manifest::{Manifest, ManifestEntry, Proof};
pub use onchain::{ChainVersion, ChainView, ManifestCheckError};
pub use service::{DatanetService, ServiceConfig, ServiceError};
pub use store::{ContentStore, StoreError};
