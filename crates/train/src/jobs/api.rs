//! HTTP API of the jobs service (mount with `Router::new().nest("/api/jobs", svc.router())`).
//!
//! | method | path | body / answer |
//! | --- | --- | --- |
//! | POST | `/` | signed `create_job`; `{baseModel, datanetId, version, config}` → 201 Job (+ `warning`) |
//! | GET | `/` | `{"jobs": [Job…]}` (oldest first; `?owner=0x…` filters) |
//! | GET | `/base-models` | `{"baseModels": [{id, hash, toyWorld, label}]}` |
//! | GET | `/defaults` | `{"config": TrainConfig}`: what a job gets for every field its `config` leaves out (`TrainConfig::default()`, the recommended recipe); ModelFactory fills its knobs from it |
//! | GET | `/{id}` | Job |
//! | GET | `/{id}/events` | SSE: `status`, `progress`, `epoch`, `log`, `checkpoint`, then `done`/`failed`/`cancelled` |
//! | POST | `/{id}/cancel` | signed `cancel_job` → Job |
//! | POST | `/{id}/publish` | signed `publish_job`; `{pricePer1kTokens, metadataURI, baseModelId?, signedTransaction?}` |
//!
//! Signed requests use the headers and `DatanetRequest` message of `openledger_datanet::auth`
//! under the domain [`super::domain`]: `action` as above, `datanetId` = the job's Datanet,
//! `contentHash` = keccak-256 of the raw request body (of the job id for cancel).
//!
//! A job is scored against its base before it is queued (`baseFit` of the Job): when the base
//! cannot model the data (`verdict: "cannot_model"`) or fits it poorly, the 201 answer also
//! carries `warning`, one plain sentence naming the problem and a better kind of base. The
//! job is still created: the verdict is a measurement, and an adapter on `embed_tokens` /
//! `lm_head` may be exactly what the trainer means to try.

use std::convert::Infallible;

use alloy_primitives::{Address, Bytes, U256, keccak256};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;

use super::{JobService, Status};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::eval::FitVerdict;
use crate::publish::{self, PublishSpec};

/// An API error: `{"error": {"type", "message", "field"?}}` with the status of
/// [`TrainError::status`].
pub struct ApiError(pub TrainError);

impl From<TrainError> for ApiError {
    fn from(e: TrainError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut e = openledger_protocol::ApiError::new(status, self.0.kind(), &self.0);
        if let Some(field) = self.0.field_name() {
            e = e.with_field(field);
        }
        if let Some(secs) = self.0.retry_after() {
            e = e.with_retry_after(secs);
        }
        e.into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

impl JobService {
    /// The router (relative paths; nest it under `/api/jobs`).
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/", post(create).get(list))
            .route("/base-models", get(base_models))
            .route("/defaults", get(defaults))
            .route("/{id}", get(show))
            .route("/{id}/events", get(events))
            .route("/{id}/cancel", post(cancel))
            .route("/{id}/publish", post(publish_job))
            .with_state(self.clone())
    }

    fn authorise(
        &self,
        h: &HeaderMap,
        action: &str,
        datanet: u64,
        body: &[u8],
    ) -> ApiResult<Address> {
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let req = openledger_datanet::auth::parse(get)
            .map_err(|e| TrainError::Unauthorised(e.to_string()))?;
        req.verify(
            &self.inner.domain,
            action,
            datanet,
            keccak256(body),
            super::now(),
        )
        .map_err(|e| TrainError::Unauthorised(e.to_string()))?;
        let fresh = self
            .inner
            .nonces
            .use_nonce(req.signer, req.nonce, req.expiry, super::now())
            .map_err(TrainError::from)?;
        if !fresh {
            return Err(TrainError::ReplayedNonce(format!(
                "nonce {} of {} was already used",
                req.nonce, req.signer
            ))
            .into());
        }
        Ok(req.signer)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJob {
    base_model: String,
    datanet_id: u64,
    version: u64,
    #[serde(default)]
    config: TrainConfig,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, TrainError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        // serde names the offending field in its message (`unknown field`, `invalid type ... rank`).
        let field = msg
            .split('`')
            .nth(1)
            .filter(|f| f.chars().all(|c| c.is_ascii_alphanumeric()))
            .unwrap_or("body")
            .to_string();
        TrainError::field(&field, msg)
    })
}

async fn create(
    State(svc): State<JobService>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let req: CreateJob = parse(&body)?;
    let owner = svc.authorise(&h, "create_job", req.datanet_id, &body)?;
    let job = svc
        .submit(
            owner,
            &req.base_model,
            req.datanet_id,
            req.version,
            req.config,
        )
        .await?;
    let mut v = serde_json::to_value(&job).unwrap_or_default();
    if let Some(fit) = job
        .base_fit
        .as_ref()
        .filter(|f| f.verdict != FitVerdict::Fits)
    {
        v["warning"] = serde_json::json!(fit.message);
    }
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Deserialize)]
struct ListQuery {
    owner: Option<Address>,
}

async fn list(
    State(svc): State<JobService>,
    Query(q): Query<ListQuery>,
) -> Json<serde_json::Value> {
    let jobs: Vec<_> = svc
        .jobs()
        .into_iter()
        .filter(|j| q.owner.is_none_or(|o| o == j.owner))
        .map(|j| public_view(&j))
        .collect();
    Json(serde_json::json!({ "jobs": jobs }))
}

async fn base_models(State(svc): State<JobService>) -> Json<serde_json::Value> {
    let list: Vec<_> = svc
        .inner
        .bases
        .iter()
        .map(|b| {
            let label = if b.toy_world {
                format!("{} ({})", b.name, openledger_model::init::TOY_WORLD_NOTE)
            } else {
                b.name.clone()
            };
            serde_json::json!({"id": b.name, "hash": b.hash, "toyWorld": b.toy_world, "label": label})
        })
        .collect();
    Json(serde_json::json!({ "baseModels": list }))
}

/// The hyper-parameters a job gets for every field its `config` leaves out.
async fn defaults() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "config": TrainConfig::default() }))
}

/// A job as anyone may see it: an unpublished adapter's hash is its trainer's until it is
/// registered on chain (with it, a stranger could register the adapter as their own model).
fn public_view(job: &super::Job) -> serde_json::Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    redact(&mut v);
    v
}

/// Removes `result.adapterHash` from a job's JSON unless the job is published.
fn redact(job: &mut serde_json::Value) {
    if job.get("published").is_none_or(serde_json::Value::is_null)
        && let Some(r) = job.get_mut("result").and_then(|r| r.as_object_mut())
    {
        r.remove("adapterHash");
    }
}

/// `GET /{id}`: the public view, or the whole job (with the adapter hash) for a request signed
/// by its owner (action `show_job`, content hash = keccak-256 of the job id).
async fn show(
    State(svc): State<JobService>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let job = svc
        .job(&id)
        .ok_or_else(|| TrainError::JobNotFound(id.clone()))?;
    if !h.contains_key(openledger_datanet::auth::headers::SIGNATURE) {
        return Ok(Json(public_view(&job)));
    }
    let caller = svc.authorise(&h, "show_job", job.datanet_id, id.as_bytes())?;
    if caller != job.owner {
        return Err(TrainError::Forbidden(format!("{caller} does not own {id}")).into());
    }
    Ok(Json(serde_json::to_value(&job).unwrap_or_default()))
}

async fn events(
    State(svc): State<JobService>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let rx = svc.inner.events.subscribe();
    let job = svc
        .job(&id)
        .ok_or_else(|| TrainError::JobNotFound(id.clone()))?;
    let first = match job.status {
        Status::Succeeded => "done",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
        _ => "status",
    };
    let done = job.status.is_terminal();
    let first = serde_json::json!({"type": first, "job": public_view(&job)});
    let to_sse = |v: &serde_json::Value| {
        let kind = v["type"].as_str().unwrap_or("message").to_string();
        SseEvent::default().event(kind).data(v.to_string())
    };
    let head = futures::stream::iter([Ok(to_sse(&first))]);
    let tail = futures::stream::unfold((rx, id, done), move |(mut rx, id, done)| async move {
        if done {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok((jid, mut v)) if jid == id => {
                    if let Some(j) = v.get_mut("job") {
                        redact(j);
                    }
                    let end = matches!(v["type"].as_str(), Some("done" | "failed" | "cancelled"));
                    return Some((Ok(to_sse(&v)), (rx, id, end)));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    use futures::StreamExt;
    Ok(Sse::new(head.chain(tail)).keep_alive(KeepAlive::default()))
}

async fn cancel(
    State(svc): State<JobService>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> ApiResult<Json<super::Job>> {
    let job = svc
        .job(&id)
        .ok_or_else(|| TrainError::JobNotFound(id.clone()))?;
    let caller = svc.authorise(&h, "cancel_job", job.datanet_id, id.as_bytes())?;
    Ok(Json(svc.cancel(&id, caller)?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublishReq {
    price_per_1k_tokens: U256,
    #[serde(rename = "metadataURI", default)]
    metadata_uri: String,
    #[serde(default)]
    base_model_id: Option<String>,
    #[serde(default)]
    signed_transaction: Option<Bytes>,
}

async fn publish_job(
    State(svc): State<JobService>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let job = svc
        .job(&id)
        .ok_or_else(|| TrainError::JobNotFound(id.clone()))?;
    let req: PublishReq = parse(&body)?;
    let caller = svc.authorise(&h, "publish_job", job.datanet_id, &body)?;
    if caller != job.owner {
        return Err(TrainError::Forbidden(format!("{caller} does not own {id}")).into());
    }
    let (Status::Succeeded, Some(stored)) = (job.status, job.result.clone()) else {
        return Err(TrainError::Conflict(format!(
            "{id} is {:?}: only succeeded jobs can be published",
            job.status
        ))
        .into());
    };
    if let Some(p) = &job.published {
        return Err(TrainError::Conflict(format!("{id} is already model {}", p.model_id)).into());
    }
    let spec = PublishSpec {
        base_model_id: req
            .base_model_id
            .unwrap_or_else(|| job.base_model.id.clone()),
        base_model_hash: publish::base_hash_bytes(&job.base_model.hash)?,
        adapter_hash: stored.adapter_hash,
        training_manifest_hash: stored.manifest_hash,
        trained_on: vec![(job.datanet_id, job.version)],
        price_per_1k_tokens: req.price_per_1k_tokens,
        metadata_uri: req.metadata_uri,
    };
    let registry = svc.inner.cfg.model_registry;
    let Some(raw) = req.signed_transaction else {
        // No transaction yet: answer the exact call for the owner's wallet to sign and send.
        return Ok(Json(serde_json::json!({
            "spec": spec,
            "transaction": {"to": registry, "data": spec.calldata()},
        })));
    };
    let p = publish::relay(
        svc.inner.pipeline.provider(),
        &raw,
        job.owner,
        registry,
        &spec,
    )
    .await?;
    svc.update(&id, |j| j.published = Some(p.clone()))?;
    Ok(Json(
        serde_json::json!({"modelId": p.model_id, "txHash": p.tx_hash, "spec": spec}),
    ))
}
