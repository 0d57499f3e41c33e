//! HTTP API: `GET /api/attribution/{id}`, `GET /api/earnings/{address}`, `POST /api/keys`.
//!
//! Errors are `{"error": {"type", "message"}}`: 400 `bad_id` / `bad_address` / `bad_request`,
//! 401 `missing_signature` / `bad_signature` / `replayed_nonce`, 404 `record_not_found`,
//! 500 `internal`, 503 `chain_unavailable`.

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
            .route("/api/attribution/{id}", get(get_record))
            .route("/api/earnings/{address}", get(get_earnings))
            .route("/api/keys", post(post_key))
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
        let batch = st.settled.get(&id).map(|(b, proof)| {
            serde_json::json!({"batchId": b, "proof": proof, "root": st.batches.get(b).map(|f| f.root)})
        });
        let pending = st.pending.iter().any(|p| p.id == id);
        Ok(Some(serde_json::json!({
            "recordId": id,
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
struct KeyBody {
    label: String,
}

async fn post_key(
    State(svc): Svc,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: KeyBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("body must be {{\"label\": string}}: {e}"),
        )
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
    let key = svc
        .keys
        .issue(owner, req.nonce, &b.label)
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
