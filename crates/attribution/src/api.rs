//! HTTP API: `GET /api/attribution/{id}`, `GET /api/attribution/terms`,
//! `GET /api/vouchers/typed-data`, `GET /api/earnings/{address}`, `POST /api/keys`,
//! `POST /api/keys/voucher`.
//!
//! Errors are `{"error": {"type", "message"}}`: 400 `bad_id` / `bad_address` / `bad_request`,
//! 401 `missing_signature` / `bad_signature` / `replayed_nonce` / `bad_voucher` /
//! `invalid_api_key`, 404 `record_not_found`, 500 `internal`, 503 `chain_unavailable`.

use crate::auth;
use crate::record::AttributionRecord;
use crate::service::AttributionService;
use alloy_primitives::{Address, B256};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

/// An API error: the protocol's one envelope.
pub use openledger_protocol::ApiError;

type Svc = State<Arc<AttributionService>>;

impl AttributionService {
    /// The router, with full paths (`/api/attribution/{id}`, `/api/earnings/{address}`,
    /// `/api/keys`); merge it into the server's app.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/attribution/terms", get(get_terms))
            .route("/api/attribution/{id}", get(get_record))
            .route("/api/vouchers/typed-data", get(get_typed_voucher))
            .route("/api/earnings/{address}", get(get_earnings))
            .route("/api/keys", post(post_key))
            .route("/api/keys/voucher", post(post_key_voucher))
            .with_state(self.clone())
    }

    /// A record and, once settled, its batch and proof.
    pub async fn record_view(&self, id: B256) -> Result<Option<serde_json::Value>, ApiError> {
        let bytes = match self.records().get(&id).await {
            Ok(b) => b,
            Err(openledger_datanet::StoreError::NotFound(_)) => return Ok(None),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    e.to_string(),
                ));
            }
        };
        // The store also holds transcripts; only records are served.
        let Ok(record) = AttributionRecord::from_bytes(&bytes) else {
            return Ok(None);
        };
        let settlement =
            self.settlement_state(&id, record.payer.is_some() && !record.fee.is_zero());
        let st = self.state.lock();
        let leaf = record.leaf().map(|l| l.hash());
        let batch = st.settled.get(&id).map(|(b, proof)| {
            serde_json::json!({"batchId": b, "leaf": leaf, "proof": proof, "root": st.batches.get(b).map(|f| f.root)})
        });
        let pending = st.pending.iter().any(|p| p.id == id);
        Ok(Some(serde_json::json!({
            "recordId": id,
            "leaf": leaf,
            "record": record,
            "batch": batch,
            "pending": pending,
            "settlement": settlement,
        })))
    }
}

async fn get_record(
    State(svc): Svc,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: B256 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "a record id is 0x + 64 hex digits",
        )
    })?;
    svc.record_view(id).await?.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "record_not_found",
            format!("no record {id}"),
        )
    })
}

async fn get_earnings(
    State(svc): Svc,
    Path(a): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a: Address = a.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_address",
            "an address is 0x + 40 hex digits",
        )
    })?;
    svc.earnings(a).await.map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "chain_unavailable",
            e.to_string(),
        )
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    label: String,
    #[serde(default)]
    voucher: Option<auth::SignedVoucher>,
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
}

/// Checks a voucher presented for an API key: signed by `owner`, for this server's attributor.
fn check_key_voucher(
    svc: &AttributionService,
    owner: Address,
    v: &auth::SignedVoucher,
) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "bad_voucher", m);
    v.verify(svc.domain()).map_err(|e| bad(e.to_string()))?;
    if v.payer != owner {
        return Err(bad(format!(
            "the voucher is signed by {}, the key is requested by {owner}",
            v.payer
        )));
    }
    if v.attributor != svc.attributor() {
        return Err(bad(format!(
            "the voucher is for attributor {}, this server's is {}",
            v.attributor,
            svc.attributor()
        )));
    }
    Ok(())
}

async fn post_key(
    State(svc): Svc,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: KeyBody = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "body must be {{\"label\": string, \"voucher\"?: {{payer, attributor, modelId, maxPricePer1k, channel, cumulative, expiry, signature}}}}: {e}"
        ))
    })?;
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let req = openledger_datanet::auth::parse(get)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "missing_signature", e.to_string()))?;
    let owner = auth::verify_key_request(
        &req,
        svc.domain(),
        &b.label,
        openledger_datanet::auth::now(),
    )
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    if let Some(v) = &b.voucher {
        check_key_voucher(&svc, owner, v)?;
    }
    let key = svc
        .keys
        .issue(owner, req.nonce, &b.label, b.voucher)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "replayed_nonce",
                "this key request was already used",
            )
        })?;
    Ok(Json(
        serde_json::json!({"key": key, "address": owner, "label": b.label}),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyVoucherBody {
    voucher: auth::SignedVoucher,
}

/// Replaces the voucher an API key is charged under (a top-up: same channel, higher cap).
async fn post_key_voucher(
    State(svc): Svc,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let unauthorized =
        |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", m.to_string());
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .filter(|k| k.starts_with("olk_"))
        .ok_or_else(|| unauthorized("send the key as Authorization: Bearer olk_…"))?;
    let b: KeyVoucherBody = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("body must be {{\"voucher\": {{…}}}}: {e}")))?;
    let (owner, _) = svc
        .keys
        .lookup(key)
        .ok_or_else(|| unauthorized("unknown API key"))?;
    check_key_voucher(&svc, owner, &b.voucher)?;
    let cumulative = b.voucher.cumulative;
    svc.keys
        .set_voucher(key, b.voucher)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_voucher", m))?;
    Ok(Json(
        serde_json::json!({"address": owner, "cumulative": cumulative.to_string()}),
    ))
}

/// What a client needs to sign vouchers for this server.
async fn get_terms(State(svc): Svc) -> Result<Json<serde_json::Value>, ApiError> {
    svc.terms().await.map(Json)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedVoucherQuery {
    payer: Address,
    /// `model-N`, `N`, or absent for any model.
    #[serde(default)]
    model: Option<String>,
    /// Wei; default 1 OPEN.
    #[serde(default)]
    cumulative: Option<alloy_primitives::U256>,
    /// Default: a random u64.
    #[serde(default)]
    channel: Option<alloy_primitives::U256>,
    /// Seconds; default a day.
    #[serde(default)]
    validity: Option<u64>,
    /// Wei per 1,000 tokens; default the model's current price (required without a model).
    #[serde(default)]
    max_price: Option<alloy_primitives::U256>,
}

/// The typed data of a voucher for `eth_signTypedData_v4`, and the headers to send it in.
async fn get_typed_voucher(
    State(svc): Svc,
    q: Result<axum::extract::Query<TypedVoucherQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(q) = q.map_err(|e| {
        bad_request(format!(
            "query must be payer=0x…&model=model-N[&cumulative=wei&channel=N&validity=secs&max_price=wei]: {}",
            e.body_text()
        ))
    })?;
    let model_id = match q.model.as_deref().map(str::trim) {
        None | Some("") | Some("0") | Some("*") => 0,
        Some(m) => m
            .strip_prefix("model-")
            .unwrap_or(m)
            .parse::<u64>()
            .map_err(|_| bad_request(format!("model must be model-N or N, got {m:?}")))?,
    };
    svc.typed_voucher(
        q.payer,
        model_id,
        q.cumulative,
        q.channel,
        q.validity,
        q.max_price,
    )
    .await
    .map(Json)
}
