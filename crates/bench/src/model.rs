//! Throughput of prefill and decode on the current device, for `openledger model bench`.
//! Every figure comes with a baseline from the same run (batch 1, and no adapter), because
//! ratios survive a noisy machine and absolute numbers do not.

use std::sync::Arc;
use std::time::Instant;

use candle_nn::VarMap;
use openledger_model::{
    BatchAdapters, Dense, KvCache, LoraAdapter, LoraConfig, Model, Proj, Result, SeqStep,
    WeightFormat,
};
use serde::Serialize;

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Sequences decoded together.
    pub batch: usize,
    /// Distinct adapters in the batch (0: base model only).
    pub adapters: usize,
    /// Prompt tokens per sequence.
    pub prompt_len: usize,
    /// Decode steps measured.
    pub decode_steps: usize,
    /// Prompt tokens processed per second (all sequences).
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second (all sequences).
    pub decode_tokens_per_s: f64,
    /// Decode throughput relative to batch 1 without adapters in the same run.
    pub decode_vs_batch1: f64,
    /// Memory-traffic model: base weight bytes read per decode step (once for the whole batch).
    pub base_bytes_per_step: usize,
    /// Memory-traffic model: adapter bytes read per decode step (every distinct adapter once).
    pub adapter_bytes_per_step: usize,
}

fn run_one(
    model: &Model,
    batch: usize,
    ba: &BatchAdapters,
    prompt_len: usize,
    steps: usize,
) -> Result<(f64, f64)> {
    let cfg = model.config();
    let v = cfg.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|i| ((i * 31 + b * 7 + 3) as u32) % v)
                .collect()
        })
        .collect();
    let mut caches: Vec<KvCache> = (0..batch).map(|_| KvCache::new(cfg)).collect();
    let t0 = Instant::now();
    let mut steps_in: Vec<SeqStep> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, c)| SeqStep {
            tokens: p,
            cache: c,
        })
        .collect();
    let logits = model.forward_step(&mut steps_in, ba)?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut next: Vec<u32> = logits.argmax(1)?.to_vec1::<u32>()?;
    let t1 = Instant::now();
    for _ in 0..steps {
        let toks: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut s: Vec<SeqStep> = toks
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, c)| SeqStep {
                tokens: t,
                cache: c,
            })
            .collect();
        next = model
            .forward_step(&mut s, ba)?
            .argmax(1)?
            .to_vec1::<u32>()?;
    }
    let decode = t1.elapsed().as_secs_f64();
    Ok((
        (batch * prompt_len) as f64 / prefill,
        (batch * steps) as f64 / decode,
    ))
}

/// Batch-1 prefill and decode tokens/s of the base model with the prompt llama.cpp's
/// comparison uses (token i = (31 i + 3) mod vocab).
pub fn batch1(model: &Model, prompt_len: usize, decode_steps: usize) -> Result<(f64, f64)> {
    run_one(model, 1, &BatchAdapters::none(1), prompt_len, decode_steps)
}

/// Last-position logits of `ids` fed one chunk (prefill), `[len, vocab]` for every position,
/// and the mean negative log-likelihood of each next token, in nats.
pub fn logits_and_nll(model: &Model, ids: &[u32]) -> Result<(candle_core::Tensor, f64)> {
    let x = candle_core::Tensor::new(ids, model.device())?.unsqueeze(0)?;
    let logits = model.forward(&x, &BatchAdapters::none(1))?.squeeze(0)?;
    let n = ids.len();
    let lp = candle_nn::ops::log_softmax(&logits.narrow(0, 0, n - 1)?, 1)?;
    let next = candle_core::Tensor::new(&ids[1..], model.device())?.unsqueeze(1)?;
    let nll = lp.gather(&next, 1)?.mean_all()?.to_scalar::<f32>()?;
    Ok((logits, -f64::from(nll)))
}

/// Measures each batch size without adapters, and the largest one with one shared adapter and
/// with one distinct adapter per sequence (rank 8 on q_proj and v_proj, PEFT's default targets).
pub fn throughput(
    model: &Model,
    batch_sizes: &[usize],
    prompt_len: usize,
    decode_steps: usize,
) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let mut baseline = None;
    let elem = model.dtype().size_in_bytes();
    let base_bytes = model.config().num_parameters() * elem;
    let mut add = |batch: usize,
                   n_adapters: usize,
                   ba: &BatchAdapters,
                   rows: &mut Vec<BenchRow>|
     -> Result<()> {
        let adapter_bytes: usize = ba
            .adapters()
            .iter()
            .map(|a| a.num_parameters() * elem)
            .sum();
        let (p, d) = run_one(model, batch, ba, prompt_len, decode_steps)?;
        let base = *baseline.get_or_insert(d);
        rows.push(BenchRow {
            batch,
            adapters: n_adapters,
            prompt_len,
            decode_steps,
            prefill_tokens_per_s: p,
            decode_tokens_per_s: d,
            decode_vs_batch1: d / base,
            base_bytes_per_step: base_bytes,
            adapter_bytes_per_step: adapter_bytes,
        });
        Ok(())
    };
    let mut sizes = batch_sizes.to_vec();
    sizes.sort_unstable();
    if sizes.first() != Some(&1) {
        sizes.insert(0, 1);
    }
    for &b in &sizes {
        add(b, 0, &BatchAdapters::none(b), &mut rows)?;
    }
    let b = sizes.last().copied().unwrap_or(1);
    let lcfg = LoraConfig::new(8, 16.0, &[Proj::Q, Proj::V]);
    let dt = model.dtype();
    let adapters: Vec<Arc<LoraAdapter>> = (0..b)
        .map(|i| {
            LoraAdapter::trainable(
                lcfg.clone(),
                model.config(),
                &VarMap::new(),
                model.device(),
                dt,
                i as u64,
            )
            .map(Arc::new)
        })
        .collect::<Result<_>>()?;
    let same = BatchAdapters::uniform(adapters[0].clone(), b);
    add(b, 1, &same, &mut rows)?;
    let distinct = BatchAdapters::new(adapters, (0..b).map(Some).collect())?;
    add(b, b, &distinct, &mut rows)?;
    Ok(rows)
}

/// The rate (GFLOP/s) of the dense kernel multiplying `rows` rows by a random `[out, in]`
/// weight held in `format` (best of three timings).
pub fn dense_gflops(out: usize, inp: usize, rows: usize, format: WeightFormat) -> Result<f64> {
    use candle_core::{Device, Tensor};
    let w = Tensor::randn(0f32, 0.02, (out, inp), &Device::Cpu)?;
    let d = Arc::new(Dense::from_tensor(&w, format)?);
    let x = Tensor::randn(0f32, 1.0, (rows, inp), &Device::Cpu)?;
    let op = || -> Result<Tensor> { d.forward(&x) };
    op()?; // warm
    let reps = (2_000_000_000 / (2 * rows * out * inp)).clamp(4, 2_000);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(op()?);
        }
        best = best.max((2 * rows * out * inp * reps) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

/// A plain-text table of the rows.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "batch  adapters  prompt  prefill tok/s  decode tok/s  decode vs b1  base MB/step  adapter MB/step\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{:>5}  {:>8}  {:>6}  {:>13.0}  {:>12.1}  {:>11.2}x  {:>12.2}  {:>15.3}\n",
            r.batch,
            r.adapters,
            r.prompt_len,
            r.prefill_tokens_per_s,
            r.decode_tokens_per_s,
            r.decode_vs_batch1,
            r.base_bytes_per_step as f64 / 1e6,
            r.adapter_bytes_per_step as f64 / 1e6
        ));
    }
    s
}
