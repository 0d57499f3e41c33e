//! Shared test harness: a tiny base model made once per process, servers on port-0 sockets.

use eyre::Result;
use openledger_model::{Config, LoraAdapter, Proj};
use openledger_serve::hooks::{
    BoxFuture, Charge, CompletedInference, HookError, InferenceHooks, PendingInference,
};
use openledger_serve::{NoHooks, ServeConfig, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static BASE: OnceLock<PathBuf> = OnceLock::new();
static MAKING: Mutex<()> = Mutex::new(());

/// The `tiny` base model (made once per machine into the temp dir, reused afterwards).
pub fn base_dir() -> Result<PathBuf> {
    if let Some(p) = BASE.get() {
        return Ok(p.clone());
    }
    let _g = MAKING.lock().map_err(|_| eyre::eyre!("lock poisoned"))?;
    if let Some(p) = BASE.get() {
        return Ok(p.clone());
    }
    let dir = std::env::temp_dir().join("openlora-it-base-tiny-v1");
    let model = dir.join("model");
    if !dir.join("DONE").exists() {
        let tmp = std::env::temp_dir().join(format!("openlora-it-base-{:x}", rand_id()));
        let opts =
            openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Tiny, 42);
        openledger_model::init::init(&tmp.join("model"), &opts, |_| {})?;
        std::fs::write(tmp.join("DONE"), b"")?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)?;
    }
    let _ = BASE.set(model.clone());
    Ok(model)
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
        ^ u64::from(std::process::id())
}

pub fn base_config() -> Result<Config> {
    Ok(Config::from_file(&base_dir()?.join("config.json"))?)
}

/// A random adapter (B non-zero) written as a PEFT directory.
pub fn adapter_dir(
    root: &Path,
    name: &str,
    cfg: &Config,
    rank: usize,
    seed: u64,
) -> Result<(PathBuf, LoraAdapter)> {
    let a = LoraAdapter::random(cfg, rank, &Proj::ALL, seed, 0.3)?;
    let dir = root.join(name);
    a.save(&dir)?;
    Ok((dir, a))
}

pub struct TestServer {
    pub server: Server,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const ADMIN: &str = "test-admin-token";

pub async fn start(tweak: impl FnOnce(&mut ServeConfig)) -> Result<TestServer> {
    start_with(tweak, Arc::new(NoHooks)).await
}

/// Hooks that serve for free and count what the server told them.
#[derive(Debug, Default)]
pub struct CountingHooks {
    /// `authorize` calls (where a paid model would reserve escrow).
    pub authorized: AtomicUsize,
    /// `completed` calls.
    pub completed: AtomicUsize,
    /// `abandoned` calls.
    pub abandoned: AtomicUsize,
}

impl CountingHooks {
    /// (authorized, completed, abandoned).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.authorized.load(Ordering::SeqCst),
            self.completed.load(Ordering::SeqCst),
            self.abandoned.load(Ordering::SeqCst),
        )
    }
}

impl InferenceHooks for CountingHooks {
    fn authorize<'a>(
        &'a self,
        _headers: &'a axum::http::HeaderMap,
        _request: &'a PendingInference,
    ) -> BoxFuture<'a, Result<Option<Charge>, HookError>> {
        self.authorized.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(None) })
    }

    fn completed(&self, _inference: CompletedInference) -> BoxFuture<'_, Value> {
        self.completed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Value::Null })
    }

    fn abandoned(&self, _request_id: &str) {
        self.abandoned.fetch_add(1, Ordering::SeqCst);
    }
}

/// A server with these hooks.
pub async fn start_with(
    tweak: impl FnOnce(&mut ServeConfig),
    hooks: Arc<dyn InferenceHooks>,
) -> Result<TestServer> {
    let base = base_dir()?;
    let dir = tempfile::tempdir()?;
    let mut cfg = ServeConfig::new(&base, dir.path().join("cache"));
    cfg.base_name = Some("tiny".into());
    cfg.admin_token = Some(ADMIN.into());
    cfg.max_tokens_limit = 64;
    cfg.poll_interval = std::time::Duration::from_millis(150);
    tweak(&mut cfg);
    let server = Server::start(cfg, hooks).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = server.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(TestServer {
        server,
        url,
        dir,
        http: reqwest::Client::new(),
        task,
    })
}

impl TestServer {
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    pub async fn admin(&self, path: &str, body: &Value) -> Result<(u16, String)> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    pub async fn get(&self, path: &str) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Greedy completion text and completion token count.
    pub async fn complete(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: usize,
    ) -> Result<(String, u64)> {
        let (s, v) = self
            .post(
                "/v1/completions",
                &serde_json::json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}),
            )
            .await?;
        eyre::ensure!(s == 200, "{s} {v}");
        let text = v["choices"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let n = v["usage"]["completion_tokens"].as_u64().unwrap_or_default();
        Ok((text, n))
    }
}

/// A metric's value from the text format (first line starting with `name`).
pub fn metric(text: &str, name: &str) -> Result<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| eyre::eyre!("metric {name} not found"))
}
