//! The devnet's one HTTP origin: the web UI and every service API on one port, each service
//! in a slot filled when it is ready (until then its paths answer 503 with the reason).
//!
//! ```text
//! /rpc                 JSON-RPC (POST; WebSocket upgrade on GET)
//! /api/datanets/...    Datanet service            (slot `datanets`)
//! /api/jobs...         ModelFactory training jobs (slot `jobs`)
//! /v1/..., /metrics    OpenLoRA                   (slot `serve`)
//! /api/attribution..., /api/earnings..., /api/keys..., /api/vouchers...
//!                      attribution + settlement (slot `attribution`)
//! everything else      the web UI                 (slot `ui`)
//! ```

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

/// One service's router, set once it is ready, with a reason shown while it is not.
#[derive(Clone, Default)]
pub struct Slot {
    router: Arc<OnceLock<Router>>,
    waiting: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Slot {
    /// Serves `router` from now on (a second call is ignored).
    pub fn set(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// Whether the service is up.
    pub fn is_ready(&self) -> bool {
        self.router.get().is_some()
    }

    /// What the 503 says until the service is up (e.g. "preparing the base model: 40%").
    pub fn set_waiting(&self, why: impl Into<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = why.into();
        }
    }

    /// This slot as a tower service (503 until set).
    pub fn into_service(
        self,
        name: &'static str,
    ) -> impl tower::Service<
        Request<Body>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let slot = self;
        tower::service_fn(move |req: Request<Body>| {
            let slot = slot.clone();
            async move {
                match slot.router.get() {
                    Some(r) => r.clone().oneshot(req).await,
                    None => {
                        let why = slot.waiting.lock().map(|w| w.clone()).unwrap_or_default();
                        let message = if why.is_empty() {
                            format!("the {name} service is starting")
                        } else {
                            format!("the {name} service is not ready: {why}")
                        };
                        Ok(openledger_protocol::ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            message,
                        )
                        .with_code("unavailable")
                        .into_response())
                    }
                }
            }
        })
    }
}

/// The service slots of a devnet.
#[derive(Clone, Debug, Default)]
pub struct Slots {
    /// `/api/datanets` (nested: the router sees paths without the prefix).
    pub datanets: Slot,
    /// `/api/jobs…` (full paths).
    pub jobs: Slot,
    /// `/v1/…` and `/metrics` (full paths).
    pub serve: Slot,
    /// `/api/attribution…`, `/api/earnings…`, `/api/keys…`, `/api/vouchers…` (full paths).
    pub attribution: Slot,
    /// Everything else: the web UI (full paths).
    pub ui: Slot,
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The composed origin: `rpc` at `/rpc`, the slots at their paths. Full-path slots are
/// dispatched by prefix from the fallback, so their routers see the request untouched (a
/// wildcard route here would leak its path parameter into theirs).
pub fn origin(rpc: Router, slots: &Slots) -> Router {
    let s = slots.clone();
    let jobs = s.jobs.into_service("training");
    let serve = s.serve.into_service("inference");
    let attribution = s.attribution.into_service("attribution");
    let ui = s.ui.into_service("web UI");
    let dispatch = tower::service_fn(move |req: Request<Body>| {
        let path = req.uri().path().to_string();
        let (jobs, serve, attribution, ui) =
            (jobs.clone(), serve.clone(), attribution.clone(), ui.clone());
        async move {
            if under(&path, "/api/jobs") {
                jobs.oneshot(req).await
            } else if under(&path, "/v1") || path == "/metrics" {
                serve.oneshot(req).await
            } else if [
                "/api/attribution",
                "/api/earnings",
                "/api/keys",
                "/api/vouchers",
            ]
            .iter()
            .any(|p| under(&path, p))
            {
                attribution.oneshot(req).await
            } else {
                ui.oneshot(req).await
            }
        }
    });
    Router::new()
        .nest_service("/rpc", rpc)
        .nest_service(
            "/api/datanets",
            slots.datanets.clone().into_service("datanets"),
        )
        .fallback_service(dispatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn get_status(app: &Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn paths_reach_their_slot_and_wait_with_a_reason() {
        let slots = Slots::default();
        let app = origin(Router::new().route("/", get(|| async { "rpc" })), &slots);
        slots.jobs.set_waiting("preparing the base model");
        let (s, body) = get_status(&app, "/api/jobs/7").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("preparing the base model"), "{body}");
        slots.jobs.set(Router::new().route(
            "/api/jobs/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    format!("job {id}")
                },
            ),
        ));
        slots
            .serve
            .set(Router::new().route("/v1/models", get(|| async { "models" })));
        slots
            .datanets
            .set(Router::new().route("/list", get(|| async { "list" })));
        slots
            .ui
            .set(Router::new().route("/", get(|| async { "home" })));
        assert_eq!(get_status(&app, "/api/jobs/7").await.1, "job 7");
        assert_eq!(
            get_status(&app, "/api/jobsX").await.1,
            "",
            "not under /api/jobs"
        );
        assert_eq!(get_status(&app, "/v1/models").await.1, "models");
        assert_eq!(get_status(&app, "/api/datanets/list").await.1, "list");
        assert_eq!(get_status(&app, "/rpc").await.1, "rpc");
        assert_eq!(get_status(&app, "/").await.1, "home");
        for path in ["/api/earnings/0xabc", "/api/vouchers/typed-data"] {
            let (s, _) = get_status(&app, path).await;
            assert_eq!(
                s,
                StatusCode::SERVICE_UNAVAILABLE,
                "{path} is the attribution slot's"
            );
        }
    }
}
