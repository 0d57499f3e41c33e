//! Page handlers: read what the page shows (chain, Datanet API), render a template.
//! The acting account comes from the `ol_account` cookie the script sets (dev account 0 when
//! absent), so server-rendered pages show that account's balances and rights.

use crate::chain::Chain;
use crate::config::FactoryConfig;
use crate::error::UiError;
use crate::ui_api::client_config;
use crate::view::open;
use alloy_primitives::{Address, B256};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value, context};
use openledger_datanet::Status;
use serde::Deserialize;
use std::sync::Arc;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("account.html", include_str!("../templates/account.html")),
    ("datanets.html", include_str!("../templates/datanets.html")),
    ("datanet.html", include_str!("../templates/datanet.html")),
    ("factory.html", include_str!("../templates/factory.html")),
    ("models.html", include_str!("../templates/models.html")),
    ("earnings.html", include_str!("../templates/earnings.html")),
    (
        "governance.html",
        include_str!("../templates/governance.html"),
    ),
    ("explorer.html", include_str!("../templates/explorer.html")),
    ("tx.html", include_str!("../templates/tx.html")),
    ("error.html", include_str!("../templates/error.html")),
];

/// Shared state of the router.
#[derive(Clone)]
pub(crate) struct AppState {
    pub cfg: Arc<FactoryConfig>,
    pub chain: Chain,
    env: Arc<Environment<'static>>,
}

impl AppState {
    pub fn new(cfg: FactoryConfig) -> Self {
        let cfg = Arc::new(cfg);
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(target: "factory", template = name, error = %e, "template does not parse");
            }
        }
        Self {
            chain: Chain::new(cfg.clone()),
            cfg,
            env: Arc::new(env),
        }
    }

    fn render(
        &self,
        name: &str,
        page: &str,
        account: Address,
        ctx: Value,
    ) -> Result<Html<String>, UiError> {
        let t = self.env.get_template(name)?;
        let accounts: Vec<String> = self
            .cfg
            .dev_accounts
            .iter()
            .map(|a| a.to_checksum(None))
            .collect();
        let full = context! {
            page => page,
            account => account.to_checksum(None),
            dev_accounts => accounts,
            config => Value::from_serialize(client_config(self)),
            dev_methods => self.cfg.dev_methods,
            ..ctx
        };
        Ok(Html(t.render(full)?))
    }
}

/// A page or a readable error page.
pub(crate) struct Page(Result<Html<String>, (UiError, Option<Html<String>>)>);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(h) => h.into_response(),
            Err((e, Some(h))) => (e.status(), h).into_response(),
            Err((e, None)) => (e.status(), e.to_string()).into_response(),
        }
    }
}

fn page(st: &AppState, account: Address, r: Result<Html<String>, UiError>) -> Page {
    Page(r.map_err(|e| {
        let html = st
            .render(
                "error.html",
                "",
                account,
                context! { message => e.to_string(), status => e.status().as_u16() },
            )
            .ok();
        (e, html)
    }))
}

/// The acting account: the `ol_account` cookie, else the first dev account.
fn current_account(st: &AppState, h: &HeaderMap) -> Address {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "ol_account")
        .and_then(|(_, v)| v.parse().ok())
        .or_else(|| st.cfg.dev_accounts.first().copied())
        .unwrap_or(Address::ZERO)
}

pub(crate) async fn home(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let head = st.chain.latest_blocks(1).await?;
        let datanets = st.chain.datanets().await.map(|d| d.len()).unwrap_or(0);
        let models = st.chain.models().await?.len();
        st.render(
            "home.html",
            "home",
            a,
            context! { head => head.first().map(|b| b.number), datanets, models },
        )
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn account(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let mut rows = Vec::new();
        for d in &st.cfg.dev_accounts {
            let b = st.chain.balances(*d).await?;
            rows.push(
                context! { address => d.to_checksum(None), open => b.open, gopen => b.gopen },
            );
        }
        let balances = st.chain.balances(a).await?;
        st.render("account.html", "account", a, context! { balances, rows })
    }
    .await;
    page(&st, a, r)
}

#[derive(Deserialize)]
pub(crate) struct Search {
    #[serde(default)]
    q: String,
}

pub(crate) async fn datanets(
    State(st): State<AppState>,
    h: HeaderMap,
    Query(s): Query<Search>,
) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let q = s.q.trim().to_lowercase();
        let list: Vec<Value> = st
            .chain
            .datanets()
            .await?
            .into_iter()
            .rev()
            .filter(|d| {
                q.is_empty()
                    || d.name.to_lowercase().contains(&q)
                    || d.metadata_uri.to_lowercase().contains(&q)
            })
            .map(|d| {
                context! {
                    id => d.id, name => d.name, description => d.metadata_uri,
                    owner => d.owner.to_checksum(None), permissioned => d.permissioned,
                    licence_fee => open(d.licence_fee), accepted => d.accepted.len(),
                    versions => d.versions.len(), mine => d.owner == a,
                }
            })
            .collect();
        st.render(
            "datanets.html",
            "datanets",
            a,
            context! { datanets => list, q => s.q },
        )
    }
    .await;
    page(&st, a, r)
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "Pending",
        Status::Accepted => "Accepted",
        Status::Rejected => "Rejected",
        Status::Withdrawn => "Withdrawn",
    }
}

pub(crate) async fn datanet(State(st): State<AppState>, h: HeaderMap, Path(id): Path<u64>) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let d = st.chain.datanet(id).await.map_err(|e| match e {
            UiError::NotFound(_) => UiError::NotFound(format!("There is no Datanet {id}.")),
            e => e,
        })?;
        let info = &d.datanet;
        let curator = info.owner == a || info.curators.contains(&a);
        let contributions: Vec<Value> = d
            .contributions
            .iter()
            .map(|c| {
                let x = &c.contribution;
                context! {
                    id => x.id, contributor => x.contributor.to_checksum(None),
                    status => status_word(x.status), pending => x.status == Status::Pending,
                    reason => x.reason, rows => x.row_count, bytes => x.byte_size,
                    score => x.quality_score, file => c.validation.as_ref().map(|v| v.file_name.clone()),
                    reasons => c.validation.as_ref().map(|v| v.reasons.clone()).unwrap_or_default(),
                    content_hash => x.content_hash.to_string(), mine => x.contributor == a,
                }
            })
            .collect();
        let versions: Vec<Value> = info
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                context! { number => i, count => v.count, merkle_root => v.merkle_root.to_string(), manifest_hash => v.manifest_hash.to_string() }
            })
            .collect();
        let licensed = info.licensees.contains(&a) || info.owner == a;
        st.render(
            "datanet.html",
            "datanets",
            a,
            context! {
                d => context! {
                    id => info.id, name => info.name, description => info.metadata_uri,
                    owner => info.owner.to_checksum(None), permissioned => info.permissioned,
                    licence_fee => open(info.licence_fee), accepted => info.accepted.len(),
                    unpublished => info.accepted.len() as u64 > info.versions.last().map(|v| v.count).unwrap_or(0),
                },
                contributions, versions, curator, is_owner => info.owner == a, licensed,
                max_upload_mb => st.cfg.max_upload_bytes.div_ceil(1 << 20),
            },
        )
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn factory(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let versions: Vec<Value> = st
            .chain
            .datanets()
            .await?
            .into_iter()
            .flat_map(|d| {
                let licensed = d.owner == a || d.licensees.contains(&a);
                (0..d.versions.len()).map(move |v| {
                    context! { datanet => d.id, version => v, name => d.name.clone(), licensed }
                })
            })
            .collect();
        st.render("factory.html", "factory", a, context! { versions })
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn models(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let models = st.chain.models().await?;
        let balances = st.chain.balances(a).await?;
        st.render("models.html", "models", a, context! { models, balances })
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn earnings(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let mut rows = Vec::new();
        let mut collectable = Vec::new();
        for d in st.chain.datanets().await? {
            let detail = st.chain.datanet(d.id).await?;
            for c in detail
                .contributions
                .iter()
                .filter(|c| c.contribution.contributor == a)
            {
                let x = &c.contribution;
                let pending = if x.status == Status::Accepted {
                    st.chain.pending_reward(x.id).await?
                } else {
                    Default::default()
                };
                if !pending.is_zero() {
                    collectable.push(x.id);
                }
                rows.push(context! {
                    id => x.id, datanet => d.id, datanet_name => d.name.clone(),
                    status => status_word(x.status), reason => x.reason, rows => x.row_count,
                    score => x.quality_score, pending => open(pending),
                });
            }
        }
        let balances = st.chain.balances(a).await?;
        st.render(
            "earnings.html",
            "earnings",
            a,
            context! { rows, collectable, balances },
        )
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn governance(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let gov = st.chain.governance().await?;
        let proposals = st.chain.proposals().await?;
        let balances = st.chain.balances(a).await?;
        st.render(
            "governance.html",
            "governance",
            a,
            context! { gov, proposals, balances },
        )
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn explorer(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let blocks = st.chain.latest_blocks(15).await?;
        st.render("explorer.html", "explorer", a, context! { blocks })
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn explorer_block(
    State(st): State<AppState>,
    h: HeaderMap,
    Path(n): Path<String>,
) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let n: u64 = n
            .parse()
            .map_err(|_| UiError::NotFound(format!("'{n}' is not a block number")))?;
        let blocks = vec![st.chain.block(n).await?];
        st.render(
            "explorer.html",
            "explorer",
            a,
            context! { blocks, single => true },
        )
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn explorer_tx(
    State(st): State<AppState>,
    h: HeaderMap,
    Path(hash): Path<String>,
) -> Page {
    let a = current_account(&st, &h);
    let r = async {
        let hash: B256 = hash
            .parse()
            .map_err(|_| UiError::NotFound(format!("'{hash}' is not a transaction hash")))?;
        let tx = st.chain.tx(hash).await?;
        st.render("tx.html", "explorer", a, context! { tx })
    }
    .await;
    page(&st, a, r)
}

pub(crate) async fn not_found(State(st): State<AppState>, h: HeaderMap) -> Page {
    let a = current_account(&st, &h);
    page(
        &st,
        a,
        Err(UiError::NotFound("There is no such page.".into())),
    )
}

pub(crate) async fn app_js() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/app.js"),
    )
}

pub(crate) async fn app_css() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/app.css"),
    )
}
