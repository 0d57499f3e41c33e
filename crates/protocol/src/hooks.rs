//! The seam between serving (`openledger-serve`) and payment (`openledger-attribution`): the
//! server calls these hooks, attribution implements them, and neither crate depends on the other.
//!
//! The server knows nothing about escrow or attribution; it calls an [`InferenceHooks`]
//! implementation twice per request:
//!
//! 1. [`InferenceHooks::authorize`] after the request is validated and before any compute: it
//!    identifies the payer from the request headers and checks that the payer can afford the
//!    request at the model's price. An error becomes the HTTP response (e.g. 402 with a message).
//! 2. [`InferenceHooks::completed`] exactly once per request that produced tokens: when the
//!    answer is complete (for a stream: after the last token, before the final chunk), or with
//!    the tokens produced so far when the client went away first (a closed stream or
//!    connection is charged for what was computed). It returns the JSON that goes into the
//!    response's `attribution` field (record id, top contributions — or a pending marker).
//! 3. [`InferenceHooks::abandoned`] instead, when a request ends without producing a token
//!    (the engine failed, or the client left before the first token): nothing is owed.
//!
//! [`NoHooks`] serves everything for free with `attribution: null`.

use crate::ids::ModelId;
use alloy_primitives::{Address, B256, U256};
use http::{HeaderMap, StatusCode};
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so hooks are object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What is being served for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedModel {
    /// The name the client used in `model`.
    pub name: String,
    /// On-chain `ModelRegistry` id, when the adapter is a registered model.
    pub model_id: Option<ModelId>,
    /// keccak-256 of the adapter blob (`None` for the base model alone).
    pub adapter_hash: Option<B256>,
    /// Content hash of the base model directory (`openledger_model::content_hash`, 32 bytes).
    pub base_model_hash: B256,
    /// For a per-request merge: every adapter in the mix.
    pub mix: Vec<MixPart>,
    /// The adapter is a raw content hash that is neither registered on chain nor loaded by the
    /// operator (e.g. a fine-tune not yet published): the hooks decide who may use it.
    pub unregistered: bool,
}

/// One adapter of a per-request mix.
#[derive(Clone, Debug, PartialEq)]
pub struct MixPart {
    /// keccak-256 of the adapter blob.
    pub adapter_hash: B256,
    /// Its weight in the linear merge.
    pub weight: f32,
    /// On-chain `ModelRegistry` id, when it is a registered model.
    pub model_id: Option<ModelId>,
    /// Neither registered on chain nor loaded by the operator.
    pub unregistered: bool,
}

/// A request about to be computed.
#[derive(Clone, Debug)]
pub struct PendingInference {
    /// Server-assigned id (also the response's `id`).
    pub request_id: String,
    /// What is served.
    pub model: ServedModel,
    /// Prompt tokens (after the chat template).
    pub prompt_tokens: usize,
    /// The most completion tokens the request may produce (`max_tokens` after defaults).
    pub max_completion_tokens: usize,
}

/// Who pays, decided by [`InferenceHooks::authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The paying account.
    pub payer: Address,
    /// The model charged for.
    pub model_id: ModelId,
    /// Price in wei of OPEN per 1,000 input + output tokens.
    pub price_per_1k_tokens: U256,
    /// The payer's voucher the answer is charged under.
    pub voucher: crate::voucher::SignedVoucher,
}

/// A finished request.
#[derive(Clone, Debug)]
pub struct CompletedInference {
    /// Server-assigned id.
    pub request_id: String,
    /// What was served.
    pub model: ServedModel,
    /// The prompt as text (after the chat template) and as tokens.
    pub prompt_text: String,
    /// Prompt tokens.
    pub prompt_tokens: Vec<u32>,
    /// The answer as text and as tokens.
    pub completion_text: String,
    /// Completion tokens.
    pub completion_tokens: Vec<u32>,
    /// The charge agreed in `authorize` (`None` when free).
    pub charge: Option<Charge>,
}

/// A refusal from a hook, returned to the client as an OpenAI-shaped error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct HookError {
    /// HTTP status (402 payment required, 401 bad signature, 403, 503 …).
    pub status: StatusCode,
    /// Stable machine-readable `type` (e.g. `insufficient_escrow`).
    pub kind: String,
    /// What the user should read.
    pub message: String,
}

/// Payment and attribution, plugged into the server.
pub trait InferenceHooks: Send + Sync + 'static {
    /// Identifies and checks the payer before any compute. `Ok(None)` serves for free.
    fn authorize<'a>(
        &'a self,
        headers: &'a HeaderMap,
        request: &'a PendingInference,
    ) -> BoxFuture<'a, Result<Option<Charge>, HookError>>;

    /// Called once per request that produced tokens (finished, or cut short by the client);
    /// returns the response's `attribution` value.
    fn completed(&self, inference: CompletedInference) -> BoxFuture<'_, serde_json::Value>;

    /// Called instead of [`InferenceHooks::completed`] when an authorised request ends without
    /// producing a token: whatever `authorize` reserved for it is released.
    fn abandoned(&self, _request_id: &str) {}
}

/// No payment, no attribution.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl InferenceHooks for NoHooks {
    fn authorize<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        _request: &'a PendingInference,
    ) -> BoxFuture<'a, Result<Option<Charge>, HookError>> {
        Box::pin(async { Ok(None) })
    }

    fn completed(&self, _inference: CompletedInference) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async { serde_json::Value::Null })
    }
}
