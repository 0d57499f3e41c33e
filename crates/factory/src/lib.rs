//! ModelFactory: OpenLedger's no-code web UI.
//!
//! Server-rendered pages (minijinja templates embedded in the binary) plus one small hand-written
//! script, no build step and no CDN. The pages read the chain and the Datanet service on the
//! server; every action is a transaction or signature the browser asks an EIP-1193 provider for:
//! an injected wallet (MetaMask signs itself) or the built-in "dev account" provider, which
//! forwards `eth_sendTransaction` / `eth_signTypedData_v4` / `personal_sign` to the node's
//! `/rpc`, where the devnet's unlocked dev accounts sign. The script stays small because the
//! server ABI-encodes every protocol call (`POST /api/ui/tx/{action}` → `{to, data, value}`)
//! and turns revert data into plain words (`POST /api/ui/explain`).
//!
//! The router serves `/` and the pages, `/static/…` and `/api/ui/…`. The other paths the pages
//! use (`/rpc`, `/api/datanets/…`, `/api/jobs/…`, `/v1/…`, `/api/attribution/…`,
//! `/api/earnings/…`) are mounted beside it on the same origin by whoever composes the
//! deployment (the devnet).
//!
//! ```
//! use openledger_factory::{FactoryConfig, router};
//! let cfg = FactoryConfig::new("http://127.0.0.1:8545", "http://127.0.0.1:8545/api/datanets", 1337);
//! let app: axum::Router = router(cfg);
//! # let _ = app;
//! ```

mod chain;
mod config;
mod error;
mod explain;
mod pages;
mod tx;
mod ui_api;
mod view;

pub use config::FactoryConfig;
pub use error::UiError;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// The UI router: pages, static assets and the `/api/ui/…` helpers.
pub fn router(cfg: FactoryConfig) -> Router {
    let hash_limit = usize::try_from(cfg.max_upload_bytes.saturating_add(1)).unwrap_or(usize::MAX);
    let state = pages::AppState::new(cfg);
    Router::new()
        .route("/", get(pages::home))
        .route("/account", get(pages::account))
        .route("/datanets", get(pages::datanets))
        .route("/datanets/{id}", get(pages::datanet))
        .route("/factory", get(pages::factory))
        .route("/models", get(pages::models))
        // the address `devnet --demo` prints: the Playground is on the Models page
        .route(
            "/playground",
            get(|| async { axum::response::Redirect::to("/models") }),
        )
        .route("/earnings", get(pages::earnings))
        .route("/governance", get(pages::governance))
        .route("/explorer", get(pages::explorer))
        .route("/explorer/tx/{hash}", get(pages::explorer_tx))
        .route("/explorer/block/{number}", get(pages::explorer_block))
        .route("/static/app.js", get(pages::app_js))
        .route("/static/app.css", get(pages::app_css))
        .route("/api/ui/config", get(ui_api::config))
        .route("/api/ui/tx/{action}", post(ui_api::tx))
        .route(
            "/api/ui/hash",
            post(ui_api::hash).layer(DefaultBodyLimit::max(hash_limit)),
        )
        .route("/api/ui/typed/upload", post(ui_api::typed_upload))
        .route("/api/ui/typed/request", post(ui_api::typed_upload))
        .route("/api/ui/typed/session", post(ui_api::typed_session))
        .route("/api/ui/credits", post(ui_api::credits))
        .route("/api/ui/verify", post(ui_api::verify))
        .route("/api/ui/explain", post(ui_api::explain))
        .fallback(pages::not_found)
        .with_state(state)
}
