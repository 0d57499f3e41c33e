//! Correctness of heterogeneous batching: a request batched with other adapters' requests
//! gives, token for token (greedy), what it gives alone and what the merged weights give.

use crate::common::{adapter_dir, base_config, base_dir, metric, start};
use eyre::{Result, ensure};
use openledger_model::{DType, Device, Pretrained, SamplingParams, generate};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_equals_alone_equals_merged() -> Result<()> {
    let t = start(|_| {}).await?;
    let cfg = base_config()?;
    let mut adapters = Vec::new();
    for (i, rank) in [(1u64, 8usize), (2, 16), (3, 8)] {
        let name = format!("a{i}");
        let (dir, a) = adapter_dir(t.dir.path(), &name, &cfg, rank, 100 + i)?;
        t.server.load_local(&name, &dir, None).await?;
        adapters.push((name, a));
    }
    let prompts = ["the hive queen", "stars at night", "bread dough"];
    let models = ["tiny", "a1", "a2", "a3"];
    // alone, one at a time
    let mut alone = Vec::new();
    for m in models {
        for p in prompts {
            alone.push(((m, p), t.complete(m, p, 12).await?));
        }
    }
    // merged weights, no server
    let base = Pretrained::load(&base_dir()?, &Device::Cpu, DType::F32)?;
    for (name, a) in &adapters {
        // the adapter as the server holds it (rounded to bf16 at load)
        let mut a = a.clone();
        a.prepare_serving()?;
        let merged = base.model.merged(&a)?;
        for p in prompts {
            let params = SamplingParams {
                max_new_tokens: 12,
                stop_token_ids: base.eos_ids(),
                ..Default::default()
            };
            let seq = generate(
                &merged,
                base.tokenizer.as_ref(),
                &base.encode(p)?,
                None,
                &params,
                |_| true,
            )?;
            let served = &alone
                .iter()
                .find(|((m, q), _)| m == name && *q == p)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            ensure!(
                served.0 == seq.text(),
                "{name} {p:?}: served {:?} vs merged {:?}",
                served.0,
                seq.text()
            );
        }
    }
    // the adapters change the output (otherwise the test proves nothing)
    let texts: std::collections::HashSet<&String> = alone
        .iter()
        .filter(|((_, p), _)| *p == prompts[0])
        .map(|(_, (t, _))| t)
        .collect();
    ensure!(
        texts.len() >= 3,
        "adapters should give different answers: {texts:?}"
    );
    // all at once: 12 requests of 4 models in flight together
    let futs = alone.iter().map(|((m, p), _)| t.complete(m, p, 12));
    let together = futures::future::join_all(futs).await;
    for (((m, p), want), got) in alone.iter().zip(together) {
        let got = got?;
        ensure!(
            &got == want,
            "{m} {p:?}: batched {:?} vs alone {:?}",
            got,
            want
        );
    }
    let text = t.get("/metrics").await?;
    let one = metric(&text, "openlora_adapters_per_batch_bucket{le=\"1\"}")?;
    let all = metric(&text, "openlora_adapters_per_batch_count")?;
    ensure!(
        all > one,
        "some forward passes mixed adapters ({one} of {all} had at most one)"
    );
    // a one-adapter mix at weight 1 is that adapter
    let (s, v) = t
        .post(
            "/v1/completions",
            &json!({"model": "tiny", "prompt": prompts[0], "max_tokens": 12, "temperature": 0,
            "adapters": [{"id": "a2", "weight": 1.0}]}),
        )
        .await?;
    ensure!(s == 200, "{s} {v}");
    let a2 = &alone
        .iter()
        .find(|((m, p), _)| *m == "a2" && *p == prompts[0])
        .map(|(_, r)| r.0.clone())
        .unwrap_or_default();
    ensure!(
        v["choices"][0]["text"] == json!(a2),
        "mix {} vs a2 {a2:?}",
        v["choices"][0]["text"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_and_sampling_is_seeded() -> Result<()> {
    let t = start(|_| {}).await?;
    let cfg = base_config()?;
    let (dir, _) = adapter_dir(t.dir.path(), "c1", &cfg, 8, 9)?;
    t.server.load_local("c1", &dir, None).await?;
    let body = json!({"model": "c1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10,
        "temperature": 0.9, "top_p": 0.9, "seed": 5});
    let (s, v) = t.post("/v1/chat/completions", &body).await?;
    ensure!(s == 200, "{s} {v}");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 2, "{v}");
    ensure!(
        v.get("attribution").is_some(),
        "attribution field present: {v}"
    );
    let (_, v2) = t.post("/v1/chat/completions", &body).await?;
    ensure!(
        v2["choices"][0]["message"]["content"] == json!(text),
        "same seed, same text"
    );
    // the stream carries the same text, then usage + attribution in the last chunk, then [DONE]
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let raw = t
        .http
        .post(format!("{}/v1/chat/completions", t.url))
        .json(&sbody)
        .send()
        .await?
        .text()
        .await?;
    let datas: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    ensure!(datas.last() == Some(&"[DONE]"), "{raw}");
    let mut streamed = String::new();
    let mut last = serde_json::Value::Null;
    for d in &datas[..datas.len() - 1] {
        let c: serde_json::Value = serde_json::from_str(d)?;
        if let Some(s) = c["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(s);
        }
        last = c;
    }
    ensure!(streamed == text, "streamed {streamed:?} vs {text:?}");
    ensure!(
        last["usage"]["completion_tokens"].as_u64().is_some() && last.get("attribution").is_some(),
        "{last}"
    );
    Ok(())
}
