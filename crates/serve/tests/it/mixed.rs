//! The per-row LoRA kernel inside the engine: steps that mix prefill chunks with decode rows,
//! adapters of different ranks and requests without an adapter give every request, token for
//! token (greedy), what it gives alone.

use crate::common::{base_config, base_dir};
use eyre::{Result, ensure};
use openledger_model::{DType, Device, LoraAdapter, Pretrained, Proj, SamplingParams, generate};
use openledger_serve::engine::{self, EngineParts, Event, Job};
use openledger_serve::metrics::Metrics;
use openledger_serve::scheduler::SchedulerConfig;
use std::sync::Arc;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_ranks_and_mixed_prefill_decode_equal_each_request_alone() -> Result<()> {
    let base = Pretrained::load(&base_dir()?, &Device::Cpu, DType::F32)?;
    let cfg = base_config()?;
    let mut adapters = vec![None];
    for (rank, seed) in [(4usize, 11u64), (16, 12), (8, 13)] {
        let a = LoraAdapter::random(&cfg, rank, &Proj::ALL, seed, 0.3)?;
        adapters.push(Some(Arc::new(a)));
    }
    // 8 requests: base, r4, r16, r8, ... with prompts of 9..=37 tokens
    let reqs: Vec<(usize, Vec<u32>)> = (0..8usize)
        .map(|i| {
            let len = 9 + 4 * i;
            let prompt = (0..len)
                .map(|j| 3 + ((i * 31 + j * 7) % (cfg.vocab_size - 3)) as u32)
                .collect();
            (i % adapters.len(), prompt)
        })
        .collect();
    let params = SamplingParams {
        max_new_tokens: 10,
        ..Default::default()
    };
    let mut alone = Vec::new();
    for (a, prompt) in &reqs {
        let seq = generate(
            &base.model,
            None,
            prompt,
            adapters[*a].clone(),
            &params,
            |_| true,
        )?;
        alone.push(seq.generated().to_vec());
    }
    ensure!(
        alone[1] != alone[0] && alone[2] != alone[0],
        "the adapters must change the output, or this test proves nothing"
    );
    let metrics = Arc::new(Metrics::default());
    let (h, thread) = engine::spawn(EngineParts {
        model: Arc::new(base.model.clone()),
        tokenizer: None,
        scheduler: SchedulerConfig {
            prefill_chunk: 4, // prompts take 3..10 steps, beside others' decode rows
            ..Default::default()
        },
        metrics: metrics.clone(),
    })?;
    let submit = |i: usize| -> Result<_> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (a, prompt) = &reqs[i];
        h.submit(Job {
            id: h.next_id(),
            key: alloy_primitives::B256::repeat_byte(*a as u8),
            adapter: adapters[*a].clone(),
            prompt: prompt.clone(),
            params: params.clone(),
            events: tx,
            arrived: Instant::now(),
            permit: h.reserve()?,
        })?;
        Ok(rx)
    };
    // the first two requests start decoding before the others arrive
    let mut rxs = vec![submit(0)?, submit(1)?];
    let mut early = [Vec::new(), Vec::new()];
    for (rx, got) in rxs.iter_mut().zip(early.iter_mut()) {
        if let Some(Event::Token { id, .. }) = rx.recv().await {
            got.push(id);
        }
    }
    for i in 2..reqs.len() {
        rxs.push(submit(i)?);
    }
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let mut got = early.get(i).cloned().unwrap_or_default();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token { id, .. } => got.push(id),
                Event::Done(_) => break,
                Event::Failed(e) => eyre::bail!("request {i} failed: {e}"),
            }
        }
        ensure!(
            got == alone[i],
            "request {i} (adapter slot {}): batched {got:?} vs alone {:?}",
            reqs[i].0,
            alone[i]
        );
    }
    h.shutdown();
    let _ = thread.join();
    // some steps carried prefill chunks (more tokens than sequences) and several adapters
    let steps = metrics.batch_size.count() as f64;
    ensure!(
        metrics.batch_tokens.sum() > metrics.batch_size.sum(),
        "prefill chunks were batched"
    );
    ensure!(
        metrics.adapters_per_batch.sum() / steps > 1.5,
        "steps mixed adapters: {} adapters per step",
        metrics.adapters_per_batch.sum() / steps
    );
    Ok(())
}
