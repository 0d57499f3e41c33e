//! `servable` in `/v1/models` is a real load check: a registered model is servable only when
//! this server can load its adapter (blob in the store, hash verified, parses as an adapter that
//! fits the base). A model whose blob is missing or bad is refused before `authorize`, so
//! nothing is reserved or charged for it, and one whose blob arrives later becomes servable
//! without a restart.

use crate::chain::{Chain, hex_of, listed, wait_listed};
use crate::common::{CountingHooks, TestServer, adapter_dir, base_config};
use alloy_primitives::keccak256;
use eyre::{Result, ensure};
use openledger_datanet::ContentStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn chat(t: &TestServer, model: &str) -> Result<(u16, Value)> {
    t.post(
        "/v1/chat/completions",
        &json!({"model": model, "max_tokens": 3, "temperature": 0,
            "messages": [{"role": "user", "content": "the hive queen"}]}),
    )
    .await
}

fn reason(m: &Value) -> &str {
    m["reason"].as_str().unwrap_or_default()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_its_blob_is_not_servable_until_the_blob_arrives() -> Result<()> {
    let chain = Chain::start().await?;
    let store_dir = tempfile::tempdir()?;
    let store_loc = store_dir.path().display().to_string();
    let hooks = Arc::new(CountingHooks::default());
    // a missing blob is looked for again at every request (no waiting in the test)
    let t = chain
        .serve_with(&store_loc, hooks.clone(), |c| {
            c.recheck_interval = Duration::ZERO
        })
        .await?;
    let (_, base_hash) = t.server.base();
    let cfg = base_config()?;
    let (_, first) = adapter_dir(t.dir.path(), "first", &cfg, 8, 91)?;
    let (_, second) = adapter_dir(t.dir.path(), "second", &cfg, 8, 92)?;
    let (first, second) = (first.to_blob()?, second.to_blob()?);
    let (h1, h2) = (keccak256(&first), keccak256(&second));
    // registered before their blobs are in the store (publish first, upload later)
    chain.register(h1, base_hash).await?;
    chain.register(h2, base_hash).await?;
    for (id, h) in [("model-1", h1), ("model-2", h2)] {
        let m = wait_listed(&t, id).await?;
        ensure!(
            m["servable"] == json!(false)
                && reason(&m).contains(&h.to_string())
                && reason(&m).contains("is not in this server's adapter store")
                && reason(&m).contains(&store_loc),
            "{m}"
        );
    }
    // a chat to it: a clear error, and the hooks never asked to authorize (nothing reserved)
    let (s, v) = chat(&t, "model-1").await?;
    ensure!(
        s == 502
            && v["error"]["code"] == "adapter_unavailable"
            && message(&v).contains(&h1.to_string())
            && message(&v).contains(&store_loc),
        "{s} {v}"
    );
    ensure!(
        hooks.counts() == (0, 0, 0),
        "authorize/completed/abandoned for a model that cannot load: {:?}",
        hooks.counts()
    );
    // the first blob arrives: the next chat finds it, without a restart
    let store = ContentStore::open(&store_loc)?;
    store.put(first.into()).await?;
    let (s, v) = chat(&t, "model-1").await?;
    ensure!(
        s == 200 && v["usage"]["completion_tokens"].as_u64().unwrap_or(0) >= 1,
        "{s} {v}"
    );
    ensure!(hooks.counts() == (1, 1, 0), "{:?}", hooks.counts());
    let m = listed(&t, "model-1").await?.unwrap_or_default();
    ensure!(
        m["servable"] == json!(true) && m.get("reason").is_none(),
        "{m}"
    );
    // the second arrives: the listing asks for it again and shows it servable
    store.put(second.into()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = listed(&t, "model-2").await?.unwrap_or_default();
        if m["servable"] == json!(true) {
            break;
        }
        ensure!(Instant::now() < deadline, "model-2 never servable: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = chat(&t, "model-2").await?;
    ensure!(s == 200, "{s} {v}");
    drop(t);
    chain.devnet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_unloadable_blobs_are_not_servable() -> Result<()> {
    let chain = Chain::start().await?;
    let store_dir = tempfile::tempdir()?;
    let store_loc = store_dir.path().display().to_string();
    let hooks = Arc::new(CountingHooks::default());
    let t = chain.serve_with(&store_loc, hooks.clone(), |_| {}).await?;
    let (_, base_hash) = t.server.base();
    let store = ContentStore::open(&store_loc)?;
    let cfg = base_config()?;
    // 1: stored bytes that do not hash to the registered hash
    let (_, a) = adapter_dir(t.dir.path(), "tampered", &cfg, 8, 93)?;
    let blob = a.to_blob()?;
    let h1 = store.put(blob.clone().into()).await?;
    let hex = hex_of(&h1);
    let mut bad = blob;
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    std::fs::write(
        store_dir.path().join("blobs").join(&hex[..2]).join(&hex),
        &bad,
    )?;
    chain.register(h1, base_hash).await?;
    // 2: bytes that are not an adapter blob at all
    let h2 = store
        .put(b"these bytes are not an adapter blob".to_vec().into())
        .await?;
    chain.register(h2, base_hash).await?;
    // 3: an adapter made for a wider base, registered as if for this one
    let mut wide = cfg.clone();
    wide.hidden_size *= 2;
    wide.intermediate_size *= 2;
    let (_, w) = adapter_dir(t.dir.path(), "wide", &wide, 8, 94)?;
    let h3 = store.put(w.to_blob()?.into()).await?;
    chain.register(h3, base_hash).await?;
    let m = wait_listed(&t, "model-1").await?;
    ensure!(
        m["servable"] == json!(false)
            && reason(&m).contains(&h1.to_string())
            && reason(&m).contains("hashes to"),
        "{m}"
    );
    for id in ["model-2", "model-3"] {
        let m = wait_listed(&t, id).await?;
        ensure!(
            m["servable"] == json!(false) && reason(&m).contains("does not load on this base"),
            "{m}"
        );
    }
    let (s, v) = chat(&t, "model-1").await?;
    ensure!(
        s == 400 && v["error"]["code"] == "adapter_hash_mismatch",
        "{s} {v}"
    );
    for id in ["model-2", "model-3"] {
        let (s, v) = chat(&t, id).await?;
        ensure!(
            s == 400 && v["error"]["code"] == "adapter_refused" && message(&v).contains(id),
            "{s} {v}"
        );
    }
    ensure!(hooks.counts() == (0, 0, 0), "{:?}", hooks.counts());
    drop(t);
    chain.devnet.shutdown().await;
    Ok(())
}
