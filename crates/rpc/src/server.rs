//! HTTP and WebSocket JSON-RPC on one port: `POST /` for HTTP, `GET /` with an upgrade for WS.

use crate::error::RpcError;
use crate::eth::RpcState;
use crate::ws::WsSession;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_http::cors::CorsLayer;
use tracing::debug;

/// Requests of one batch handled at the same time.
const BATCH_CONCURRENCY: usize = 16;

/// Messages of one WebSocket connection handled at the same time; the connection is not read
/// further until one of them is answered.
const WS_IN_FLIGHT: usize = 16;

fn error_response(id: Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()})
}

/// Processes one JSON-RPC message (single or batch). `None` when nothing is to be sent back
/// (notifications only).
pub async fn process(
    state: &Arc<RpcState>,
    body: &[u8],
    ws: Option<&Arc<WsSession>>,
) -> Option<Value> {
    if let Some(e) = halted(state) {
        return Some(error_response(Value::Null, &e));
    }
    // Every EVM execution of this message, a whole batch included, stops at one deadline.
    let deadline = Instant::now() + state.cfg.call_timeout;
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(error_response(
                Value::Null,
                &RpcError::parse(format!("parse error: {e}")),
            ));
        }
    };
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Some(error_response(
                    Value::Null,
                    &RpcError::invalid_request("empty batch"),
                ));
            }
            if items.len() > state.cfg.max_batch {
                return Some(error_response(
                    Value::Null,
                    &RpcError::invalid_request(format!(
                        "batch of {} requests exceeds the limit of {}",
                        items.len(),
                        state.cfg.max_batch
                    )),
                ));
            }
            // Items run a few at a time; their answers are counted in order, and once they pass
            // the size limit the rest are not run but answered "response too large".
            let limit = state.cfg.max_batch_response_bytes;
            let over = AtomicBool::new(false);
            let over = &over;
            let mut answers = futures::stream::iter(items.into_iter().map(|item| async move {
                if over.load(Ordering::SeqCst) {
                    return too_large(&item);
                }
                process_single(state, item, ws, deadline).await
            }))
            .buffered(BATCH_CONCURRENCY);
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while let Some(answer) = answers.next().await {
                let Some(mut answer) = answer else { continue };
                if !over.load(Ordering::SeqCst) {
                    bytes =
                        bytes.saturating_add(serde_json::to_string(&answer).map_or(0, |s| s.len()));
                    over.store(bytes > limit, Ordering::SeqCst);
                }
                if over.load(Ordering::SeqCst) {
                    let id = answer.get("id").cloned().unwrap_or(Value::Null);
                    answer = error_response(id, &RpcError::response_too_large());
                }
                out.push(answer);
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Array(out))
            }
        }
        other => process_single(state, other, ws, deadline).await,
    }
}

/// The "response too large" answer to a batch item that is not run; `None` for a
/// notification.
fn too_large(item: &Value) -> Option<Value> {
    let id = item.as_object()?.get("id")?;
    Some(error_response(id.clone(), &RpcError::response_too_large()))
}

async fn process_single(
    state: &Arc<RpcState>,
    item: Value,
    ws: Option<&Arc<WsSession>>,
    deadline: Instant,
) -> Option<Value> {
    let Value::Object(mut obj) = item else {
        return Some(error_response(
            Value::Null,
            &RpcError::invalid_request("invalid request: not an object"),
        ));
    };
    let id = obj.remove("id");
    let id_value = id.clone().unwrap_or(Value::Null);
    if !matches!(id_value, Value::Null | Value::Number(_) | Value::String(_)) {
        return Some(error_response(
            Value::Null,
            &RpcError::invalid_request("invalid request: bad id"),
        ));
    }
    if obj.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return Some(error_response(
            id_value,
            &RpcError::invalid_request("invalid request: jsonrpc must be \"2.0\""),
        ));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Some(error_response(
            id_value,
            &RpcError::invalid_request("invalid request: missing method"),
        ));
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    let result = state.handle_until(&method, params, ws, deadline).await;
    if let Err(e) = &result {
        debug!(target: "rpc", %method, code = e.code, message = %e.message, "request failed");
    }
    // A request without an id is a notification: no response.
    id.as_ref()?;
    Some(match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id_value, "result": r}),
        Err(e) => error_response(id_value, &e),
    })
}

/// The error every request gets once the node has stopped producing blocks: a node must not
/// answer as if its stale head were current.
fn halted(state: &RpcState) -> Option<RpcError> {
    let reason = state.node.halted()?;
    Some(RpcError::internal(format!(
        "node halted: {reason}; restart it"
    )))
}

struct App {
    rpc: Arc<RpcState>,
    ws_connections: AtomicUsize,
}

async fn http(State(app): State<Arc<App>>, body: Body) -> Response {
    if let Some(e) = halted(&app.rpc) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(error_response(Value::Null, &e)),
        )
            .into_response();
    }
    let limit = app.rpc.cfg.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            let e = RpcError::invalid_request(format!(
                "request body too large: the limit is {limit} bytes"
            ));
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(error_response(Value::Null, &e)),
            )
                .into_response();
        }
    };
    match process(&app.rpc, &bytes, None).await {
        Some(v) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&v).unwrap_or_default(),
        )
            .into_response(),
        None => StatusCode::OK.into_response(),
    }
}

async fn get_root(
    State(app): State<Arc<App>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => {
            let n = app.ws_connections.fetch_add(1, Ordering::SeqCst);
            if n >= app.rpc.cfg.max_ws_connections {
                app.ws_connections.fetch_sub(1, Ordering::SeqCst);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many WebSocket connections",
                )
                    .into_response();
            }
            let limit = app.rpc.cfg.max_body_bytes;
            ws.max_message_size(limit)
                .on_upgrade(move |socket| async move {
                    ws_loop(app.rpc.clone(), socket).await;
                    app.ws_connections.fetch_sub(1, Ordering::SeqCst);
                })
        }
        Err(_) => (
            StatusCode::OK,
            axum::Json(json!({
                "name": openledger_protocol::CLIENT_VERSION,
                "usage": "JSON-RPC 2.0: POST a request to this URL, or open a WebSocket on it"
            })),
        )
            .into_response(),
    }
}

async fn ws_loop(state: Arc<RpcState>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(4096);
    let session = WsSession::new(tx.clone());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(WS_IN_FLIGHT));
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.send(Message::Text(msg.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let state = state.clone();
        let session = session.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(v) = process(&state, &data, Some(&session)).await {
                let _ = tx.send(v.to_string()).await;
            }
            drop(permit);
        });
    }
    drop(session);
    writer.abort();
}

/// Builds the router (HTTP + WS on `/`, permissive CORS for browser wallets and dApps).
pub fn router(rpc: Arc<RpcState>) -> Router {
    let app = Arc::new(App {
        rpc,
        ws_connections: AtomicUsize::new(0),
    });
    Router::new()
        .route("/", get(get_root).post(http))
        .layer(CorsLayer::permissive())
        .with_state(app)
}

/// Serves JSON-RPC on `listener` until `shutdown` resolves.
pub async fn serve(
    rpc: Arc<RpcState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(rpc).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
