//! Bad inputs: each a clear OpenAI-shaped error, and the server keeps serving.

use crate::common::{adapter_dir, base_config, metric, start};
use eyre::{Result, ensure};
use serde_json::{Value, json};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors() -> Result<()> {
    let t = start(|_| {}).await?;
    let long = "bee ".repeat(2000);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/completions",
            json!({"model": "nope", "prompt": "x"}),
            404,
            "model_not_found",
        ),
        (
            "/v1/completions",
            json!({"model": "model-99", "prompt": "x"}),
            404,
            "model_not_found",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": long}),
            400,
            "context_length_exceeded",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "max_tokens": 65}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "max_tokens": 0}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "temperature": 3.5}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "temperature": -1}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "top_p": 0}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "top_p": 1.5}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "stop": ["", "a"]}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "n": 3}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": [99999]}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny"}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "temperature": "hot"}),
            400,
            "invalid_json",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "adapters": [{"id": "nope", "weight": 1}]}),
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": []}),
            400,
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}),
            400,
            "invalid_value",
        ),
    ];
    for (path, body, status, want) in cases {
        let (s, v) = t.post(path, &body).await?;
        ensure!(
            s == status && code(&v) == want,
            "{body}: got {s} {v}, want {status} {want}"
        );
        ensure!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
                && v["error"]["type"].is_string(),
            "{v}"
        );
    }
    for raw in ["{not json", "[1,2]", ""] {
        let r = t
            .http
            .post(format!("{}/v1/completions", t.url))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await?;
        let s = r.status().as_u16();
        let v: Value = r.json().await?;
        ensure!(s == 400 && code(&v) == "invalid_json", "{raw:?}: {s} {v}");
    }
    // still serving
    let (text, n) = t.complete("tiny", "the hive", 4).await?;
    ensure!((1..=4).contains(&n), "{text:?} {n}");
    let m = t.get("/metrics").await?;
    ensure!(
        metric(&m, "openlora_requests_total{outcome=\"client_error\"}")? >= 20.0,
        "{m}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_that_do_not_fit_are_refused_at_load_and_named() -> Result<()> {
    let t = start(|_| {}).await?;
    let cfg = base_config()?;
    let mut other = cfg.clone();
    other.hidden_size *= 2;
    other.intermediate_size *= 2;
    let (foreign, _) = adapter_dir(t.dir.path(), "foreign", &other, 8, 1)?;
    let (good, a) = adapter_dir(t.dir.path(), "good", &cfg, 8, 2)?;
    let (s, body) = t
        .admin(
            "/v1/load_lora_adapter",
            &json!({"lora_name": "wide", "lora_path": foreign}),
        )
        .await?;
    ensure!(
        s == 400
            && body.contains("adapter_refused")
            && body.contains("'wide'")
            && body.contains("shape"),
        "{s} {body}"
    );
    let wrong = alloy_primitives::B256::repeat_byte(0xab);
    let (s, body) = t
        .admin(
            "/v1/load_lora_adapter",
            &json!({"lora_name": "g", "lora_path": good, "adapter_hash": wrong}),
        )
        .await?;
    ensure!(
        s == 400 && body.contains("adapter_hash_mismatch") && body.contains("'g'"),
        "{s} {body}"
    );
    let right = alloy_primitives::keccak256(a.to_blob()?);
    let (s, body) = t
        .admin(
            "/v1/load_lora_adapter",
            &json!({"lora_name": "g", "lora_path": good, "adapter_hash": right}),
        )
        .await?;
    ensure!(s == 200 && body.contains(&right.to_string()), "{s} {body}");
    // without the token
    let (s, v) = t
        .post(
            "/v1/load_lora_adapter",
            &json!({"lora_name": "h", "lora_path": good}),
        )
        .await?;
    ensure!(s == 401 && code(&v) == "invalid_admin_token", "{s} {v}");
    // servable by alias and by hash; unload makes the alias unknown
    t.complete("g", "x", 2).await?;
    t.complete(&right.to_string(), "x", 2).await?;
    let (s, _) = t
        .admin("/v1/unload_lora_adapter", &json!({"lora_name": "g"}))
        .await?;
    ensure!(s == 200);
    let (s, v) = t
        .post("/v1/completions", &json!({"model": "g", "prompt": "x"}))
        .await?;
    ensure!(s == 404 && code(&v) == "model_not_found", "{s} {v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gives_429_and_a_disconnect_frees_the_slot() -> Result<()> {
    let t = start(|c| {
        c.scheduler.max_running = 1;
        c.scheduler.max_waiting = 2;
        c.max_tokens_limit = 200;
    })
    .await?;
    let body =
        json!({"model": "tiny", "prompt": "the hive queen", "max_tokens": 24, "temperature": 0});
    let futs = (0..16).map(|_| t.post("/v1/completions", &body));
    let res = futures::future::join_all(futs).await;
    let (mut ok, mut busy) = (0, 0);
    for r in res {
        let (s, v) = r?;
        match s {
            200 => ok += 1,
            429 => {
                ensure!(
                    code(&v) == "queue_full" && v["error"]["type"] == "rate_limit_error",
                    "{v}"
                );
                busy += 1
            }
            _ => eyre::bail!("unexpected {s} {v}"),
        }
    }
    ensure!(
        ok >= 3 && busy >= 1 && ok + busy == 16,
        "ok {ok}, 429 {busy}"
    );
    // a streaming client that goes away: its slot is freed without waiting for max_tokens.
    // The tiny model can finish a whole answer before the client has read its first chunk, so
    // the client tries again until it disconnects while its request is still running.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["max_tokens"] = json!(200);
    sbody["ignore_eos"] = json!(true);
    let mut disconnected_mid_answer = false;
    for _ in 0..20 {
        let mut r = t
            .http
            .post(format!("{}/v1/completions", t.url))
            .json(&sbody)
            .send()
            .await?;
        let first = r.chunk().await?;
        ensure!(first.is_some());
        let running = t.server.inflight() == 1;
        drop(r);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while t.server.inflight() != 0 {
            ensure!(std::time::Instant::now() < deadline, "slot not freed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if running {
            disconnected_mid_answer = true;
            break;
        }
    }
    ensure!(
        disconnected_mid_answer,
        "every answer finished before its first chunk was read"
    );
    let m = t.get("/metrics").await?;
    ensure!(
        metric(&m, "openlora_requests_total{outcome=\"cancelled\"}")? >= 1.0,
        "{m}"
    );
    ensure!(
        metric(&m, "openlora_requests_total{outcome=\"rejected\"}")? >= 1.0,
        "{m}"
    );
    t.complete("tiny", "x", 2).await?;
    Ok(())
}
