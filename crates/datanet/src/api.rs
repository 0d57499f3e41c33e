//! HTTP API (axum), mounted by the devnet under `/api/datanets`.
//!
//! | method | path | who |
//! | --- | --- | --- |
//! | GET | `/info` | anyone: `{chainId, registry}` |
//! | GET | `/list` | anyone: every Datanet |
//! | GET | `/{id}` | anyone: Datanet, contributions (metadata, `backed`), versions |
//! | POST | `/{id}/uploads?name=F[&columns=a,b]` | signed `upload`; body streamed |
//! | POST | `/{id}/versions/prepare` | anyone: stores the next manifest, returns root + hash |
//! | GET | `/{id}/versions/{v}/manifest` | public Datanet, or signed `read` of the manifest hash; only the Datanet's own manifest |
//! | GET | `/{id}/versions/{v}/proof/{contribution}` | anyone: inclusion proof |
//! | GET | `/{id}/contributions/{c}/content` | backed contributions only; public, or signed `read` of the content hash |
//!
//! Errors: `{"error": {"type": "...", "message": "..."}}` with a stable `type`.

use crate::auth::{self, AuthError, headers};
use crate::formats;
use crate::index::{IndexState, UploadInfo};
use crate::manifest::rows_root;
use crate::service::{DatanetService, ServiceError};
use crate::store::StoreError;
use crate::validate::{self, ValidationError};
use alloy_primitives::{Address, B256, U256};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openledger_protocol::bindings::DatanetRegistry;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// An API error: the protocol's one envelope.
pub use openledger_protocol::ApiError;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let kind = match e {
            AuthError::Missing(_) => "missing_signature",
            AuthError::BadSignature(_) => "bad_signature",
            AuthError::Expired { .. } => "expired_signature",
            AuthError::Replayed { .. } => "replayed_nonce",
        };
        Self::new(StatusCode::UNAUTHORIZED, kind, e)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        use formats::FormatError as F;
        let (status, kind) = match &e {
            ValidationError::TooManyRows { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_rows"),
            ValidationError::Empty => (StatusCode::UNPROCESSABLE_ENTITY, "empty"),
            ValidationError::LowQuality { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "low_quality"),
            ValidationError::Format(F::NotUtf8 { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_utf8")
            }
            ValidationError::Format(F::Jsonl { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "malformed_jsonl")
            }
            ValidationError::Format(F::Csv { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "malformed_csv")
            }
            ValidationError::Format(F::BadName(_)) => (StatusCode::BAD_REQUEST, "bad_name"),
        };
        Self::new(status, kind, e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e),
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "content_not_found", e),
            StoreError::Stream(_) => Self::new(StatusCode::BAD_REQUEST, "upload_interrupted", e),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(s) => s.into(),
            ServiceError::UnknownDatanet(_) => {
                Self::new(StatusCode::NOT_FOUND, "datanet_not_found", e)
            }
            ServiceError::NothingToPublish(_) => {
                Self::new(StatusCode::CONFLICT, "nothing_to_publish", e)
            }
            // Reads of an unbacked contribution answer 403 (see `content`); a version that
            // would include one is a conflict with the Datanet's state.
            ServiceError::Unbacked { .. } => {
                Self::new(StatusCode::CONFLICT, "unbacked_contribution", e)
            }
            ServiceError::ForeignManifest { .. } => {
                Self::new(StatusCode::FORBIDDEN, "foreign_manifest", e)
            }
            ServiceError::UnknownContribution { .. } => {
                Self::new(StatusCode::NOT_FOUND, "contribution_not_found", e)
            }
            ServiceError::Chain(_) => Self::new(StatusCode::BAD_GATEWAY, "chain", e),
            ServiceError::Index(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "index", e),
            ServiceError::Nonces(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "nonce_store", e)
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The Datanet router (paths relative to where it is mounted).
pub fn router(svc: DatanetService) -> Router {
    Router::new()
        .route("/info", get(info))
        .route("/list", get(list))
        .route("/{id}", get(show))
        .route(
            "/{id}/uploads",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/{id}/versions/prepare", post(prepare))
        .route("/{id}/versions/{v}/manifest", get(manifest))
        .route("/{id}/versions/{v}/proof/{c}", get(proof))
        .route("/{id}/contributions/{c}/content", get(content))
        .with_state(svc)
}

impl DatanetService {
    /// This service's HTTP router.
    pub fn router(&self) -> Router {
        router(self.clone())
    }
}

async fn info(State(svc): State<DatanetService>) -> Json<serde_json::Value> {
    Json(json!({"chainId": svc.chain_id(), "registry": svc.registry()}))
}

async fn list(State(svc): State<DatanetService>) -> ApiResult<Json<serde_json::Value>> {
    svc.sync().await?;
    let st = svc.snapshot().await;
    Ok(Json(json!(st.datanets.values().collect::<Vec<_>>())))
}

async fn show(
    State(svc): State<DatanetService>,
    Path(id): Path<u64>,
) -> ApiResult<Json<serde_json::Value>> {
    svc.sync().await?;
    let st = svc.snapshot().await;
    let d = st.datanets.get(&id).ok_or_else(|| not_found_datanet(id))?;
    let contributions: Vec<_> = st
        .contributions
        .values()
        .filter(|c| c.datanet_id == id)
        .map(|c| {
            // `backed`: its contributor uploaded it here; otherwise its hash was only
            // recorded on chain, its content is never served and no version can include it.
            let up = st.backing(c);
            json!({"contribution": c, "backed": up.is_some(), "validation": up})
        })
        .collect();
    Ok(Json(json!({"datanet": d, "contributions": contributions})))
}

fn not_found_datanet(id: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "datanet_not_found",
        format!("no datanet {id}"),
    )
}

fn header_getter(h: &HeaderMap) -> impl Fn(&str) -> Option<String> + '_ {
    |k| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Verifies a signed request and burns its nonce; returns the signer.
async fn authorise(
    svc: &DatanetService,
    h: &HeaderMap,
    action: &str,
    datanet: u64,
    content: B256,
) -> ApiResult<Address> {
    let req = auth::parse(header_getter(h))?;
    let domain = auth::domain(svc.chain_id(), svc.registry());
    let now = auth::now();
    req.verify(&domain, action, datanet, content, now)?;
    // One appended line, remembered until the signature expires (crate::nonces).
    let fresh = svc
        .inner
        .nonces
        .use_nonce(req.signer, req.nonce, req.expiry, now)
        .map_err(ServiceError::from)?;
    if !fresh {
        return Err(AuthError::Replayed {
            signer: req.signer,
            nonce: req.nonce,
        }
        .into());
    }
    Ok(req.signer)
}

/// Query of an upload.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// File name (decides the format).
    pub name: String,
    /// CSV text columns, comma-separated.
    pub columns: Option<String>,
}

/// What an upload returns: the values to put on chain with `contribute`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReceipt {
    /// keccak-256 of the bytes.
    pub content_hash: B256,
    /// Bytes.
    pub byte_size: u64,
    /// Rows.
    pub row_count: u64,
    /// Score 0..=100.
    pub score: u32,
    /// Reasons for deductions.
    pub reasons: Vec<String>,
    /// Merkle root over the rows.
    pub rows_root: B256,
}

async fn upload(
    State(svc): State<DatanetService>,
    Path(id): Path<u64>,
    Query(q): Query<UploadQuery>,
    h: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadReceipt>> {
    let declared: B256 = header_getter(&h)(headers::CONTENT_HASH)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_content_hash",
                "x-ol-content-hash header required",
            )
        })?;
    let columns: Vec<String> = q
        .columns
        .as_deref()
        .map(|c| {
            c.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let format = formats::format_for(&q.name, &columns).map_err(ValidationError::from)?;
    svc.sync().await?;
    let st = svc.snapshot().await;
    let d = st
        .datanets
        .get(&id)
        .ok_or_else(|| not_found_datanet(id))?
        .clone();
    let signer = authorise(&svc, &h, "upload", id, declared).await?;
    if d.permissioned && signer != d.owner && !d.allowed_contributors.contains(&signer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "contributor_not_allowed",
            format!("{signer} may not contribute to datanet {id}"),
        ));
    }
    // Refused before the body is read; checked again in the Datanet's upload turn below.
    earlier_upload(&st, id, &declared, signer, &q.name)?;
    drop(st);
    let cfg = &svc.inner.cfg.validation;
    let store = svc.store();
    let staged = store.stage(body.into_data_stream(), cfg.max_bytes).await?;
    if staged.hash != declared {
        let got = staged.hash;
        store.discard(staged).await?;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "hash_mismatch",
            format!("body hashes to {got}, signed {declared}"),
        ));
    }
    let bytes = store.read_staged(&staged).await?;
    // One upload of a Datanet at a time from here to recording it: each is scored against
    // every earlier upload, including one that was being scored at the same moment.
    let turn = svc.inner.upload_turn(id);
    let _turn = turn.lock().await;
    let (earlier, replaced) = {
        let st = svc.inner.state.lock().await;
        let stale = svc
            .inner
            .rows_stale
            .load(std::sync::atomic::Ordering::SeqCst);
        let ready = if stale {
            svc.reconcile_rows(&st).await.map_err(ApiError::from)
        } else {
            Ok(())
        };
        match ready.and_then(|()| earlier_upload(&st, id, &declared, signer, &q.name)) {
            Ok(prior) => {
                let mut rows = svc.inner.rows.lock().get(&id).cloned().unwrap_or_default();
                match prior {
                    Prior::None => (rows, None),
                    // The uploader's own earlier upload of these bytes, never contributed
                    // and uploaded again under another name: it is replaced.
                    Prior::Replace(seq) => {
                        rows.remove(seq);
                        (rows, Some(seq))
                    }
                    // The same upload again (a retry): the recorded receipt.
                    Prior::Same(info) => {
                        drop(st);
                        store.discard(staged).await?;
                        return Ok(Json(receipt(&info)));
                    }
                }
            }
            Err(e) => {
                drop(st);
                store.discard(staged).await?;
                return Err(e);
            }
        }
    };
    let report = match validate::validate(&bytes, &format, &earlier, cfg) {
        Ok(r) => r,
        Err(e) => {
            store.discard(staged).await?;
            return Err(e.into());
        }
    };
    drop(earlier);
    let size = staged.size;
    store.commit(staged).await?;
    let mut info = UploadInfo {
        content_hash: declared,
        datanet_id: id,
        uploader: signer,
        file_name: q.name.clone(),
        format,
        byte_size: size,
        row_count: report.rows.len() as u64,
        score: report.score,
        reasons: report.reasons.clone(),
        rows_root: rows_root(&report.row_hashes),
        seq: 0,
    };
    {
        let mut st = svc.inner.state.lock().await;
        let mut next = st.clone();
        next.upload_seq += 1;
        info.seq = next.upload_seq;
        next.uploads
            .entry(id)
            .or_default()
            .insert(declared, info.clone());
        next.save(&svc.inner.cfg.datadir)
            .map_err(ServiceError::from)?;
        *st = next;
        // Its rows count for every later upload (changed under the state lock, see `Inner`).
        let mut rows = svc.inner.rows.lock();
        let idx = rows.entry(id).or_default();
        if let Some(seq) = replaced {
            idx.remove(seq);
        }
        idx.add(info.seq, &report.rows);
    }
    tracing::info!(target: "datanet::api", datanet = id, hash = %declared, rows = info.row_count, score = info.score, "upload accepted");
    Ok(Json(receipt(&info)))
}

fn receipt(info: &UploadInfo) -> UploadReceipt {
    UploadReceipt {
        content_hash: info.content_hash,
        byte_size: info.byte_size,
        row_count: info.row_count,
        score: info.score,
        reasons: info.reasons.clone(),
        rows_root: info.rows_root,
    }
}

/// What an upload of `hash` to Datanet `id` by `signer` finds already recorded.
enum Prior {
    /// Nothing that counts: score it against the earlier uploads.
    None,
    /// The signer's own upload of the same bytes, never contributed, under another name.
    Replace(u64),
    /// The signer's own upload of the same bytes under the same name.
    Same(UploadInfo),
}

/// Refuses bytes that are already a live contribution or another account's upload that still
/// counts (the earlier upload is the original); see [`Prior`] for the rest.
fn earlier_upload(
    st: &IndexState,
    id: u64,
    hash: &B256,
    signer: Address,
    name: &str,
) -> ApiResult<Prior> {
    if let Some(c) = st.live_contribution_by_hash(id, hash) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_content",
            format!(
                "content {hash} is already contribution {} of datanet {id}",
                c.id
            ),
        ));
    }
    let Some(u) = st.uploads.get(&id).and_then(|m| m.get(hash)) else {
        return Ok(Prior::None);
    };
    if !st.upload_is_live(u) {
        // Its contributions were all rejected or withdrawn: it no longer counts.
        return Ok(Prior::None);
    }
    if u.uploader != signer {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_content",
            format!(
                "content {hash} was already uploaded to datanet {id} by {} (upload {})",
                u.uploader, u.seq
            ),
        ));
    }
    Ok(if u.file_name == name {
        Prior::Same(u.clone())
    } else {
        Prior::Replace(u.seq)
    })
}

async fn prepare(
    State(svc): State<DatanetService>,
    Path(id): Path<u64>,
) -> ApiResult<Json<serde_json::Value>> {
    let m = svc.prepare_version(id).await?;
    Ok(Json(
        json!({"manifestHash": m.hash(), "merkleRoot": m.merkle_root(), "count": m.contributions.len()}),
    ))
}

/// Allows a read of `content` in Datanet `id` by the owner, the item's contributor (if any),
/// or a licence holder (checked on chain); public Datanets need no signature.
async fn check_read(
    svc: &DatanetService,
    h: &HeaderMap,
    id: u64,
    content: B256,
    contributor: Option<Address>,
) -> ApiResult<()> {
    let st = svc.snapshot().await;
    let d = st.datanets.get(&id).ok_or_else(|| not_found_datanet(id))?;
    if !d.permissioned {
        return Ok(());
    }
    let reader = authorise(svc, h, "read", id, content).await?;
    if reader == d.owner || Some(reader) == contributor {
        return Ok(());
    }
    let registry = DatanetRegistry::new(svc.registry(), svc.provider().clone());
    let licensed = registry
        .hasLicence(U256::from(id), reader)
        .call()
        .await
        .map_err(|e| ApiError::from(ServiceError::Chain(e.into())))?;
    if licensed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_licensed",
            format!("{reader} holds no licence for datanet {id}"),
        ))
    }
}

fn version_of(
    st: &crate::index::IndexState,
    id: u64,
    v: usize,
) -> ApiResult<crate::index::VersionInfo> {
    let d = st.datanets.get(&id).ok_or_else(|| not_found_datanet(id))?;
    d.versions.get(v).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "version_not_found",
            format!("datanet {id} has no version {v}"),
        )
    })
}

async fn manifest(
    State(svc): State<DatanetService>,
    Path((id, v)): Path<(u64, usize)>,
    h: HeaderMap,
) -> ApiResult<Response> {
    svc.sync().await?;
    let ver = version_of(&svc.snapshot().await, id, v)?;
    check_read(&svc, &h, id, ver.manifest_hash, None).await?;
    // Only this Datanet's own manifest: the owner chooses the hash on chain and every
    // Datanet shares one store.
    let m = svc.own_manifest(id, &ver.manifest_hash).await?;
    Ok(([("content-type", "application/json")], m.to_bytes()).into_response())
}

async fn proof(
    State(svc): State<DatanetService>,
    Path((id, v, c)): Path<(u64, usize, u64)>,
) -> ApiResult<Json<serde_json::Value>> {
    svc.sync().await?;
    let ver = version_of(&svc.snapshot().await, id, v)?;
    let m = svc.own_manifest(id, &ver.manifest_hash).await?;
    let p = m.proof(c).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "contribution_not_in_version",
            format!("contribution {c} is not in version {v}"),
        )
    })?;
    Ok(Json(json!({"merkleRoot": ver.merkle_root, "proof": p})))
}

async fn content(
    State(svc): State<DatanetService>,
    Path((id, c)): Path<(u64, u64)>,
    h: HeaderMap,
) -> ApiResult<Response> {
    svc.sync().await?;
    // Served only if its contributor uploaded it to this Datanet: a hash copied from another
    // Datanet's page and recorded on chain here opens nothing.
    let info = svc.backed_contribution(id, c).await.map_err(|e| match e {
        ServiceError::Unbacked { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "unbacked_contribution", e)
        }
        e => e.into(),
    })?;
    check_read(&svc, &h, id, info.content_hash, Some(info.contributor)).await?;
    let bytes = svc.store().get(&info.content_hash).await?;
    Ok(([("content-type", "application/octet-stream")], bytes).into_response())
}
