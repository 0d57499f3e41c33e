//! `openledger bench serve`: an S-LoRA-style workload against the engine and the adapter
//! cache (no HTTP), with two baselines measured in the same run.
//!
//! Workload per scenario: `requests` requests with Poisson arrivals at `rate` per second,
//! adapters drawn from a power law (Zipf, exponent `zipf`) over `n` distinct adapters of
//! rank `r` on the `targets` projections (PEFT's Llama default `q_proj,v_proj` unless told),
//! prompt and output lengths uniform in the given ranges.
//! Adapters live as blobs in the disk tier; the RAM tier has `ram_budget` bytes, so cold
//! loads happen during the run as they would in service.
//!
//! Baselines: the same arrivals and lengths all on one adapter; and naive serving — one
//! request at a time, the adapter merged into the weights (`Model::merged`) and dropped
//! afterwards — over the first `naive_requests` requests.
//!
//! Beside the measurements the report carries two models that make the limits visible: the
//! bytes a decode step reads (base weights once, plus every distinct adapter in the batch), and
//! a compute ceiling — the one-adapter workload's matmul FLOPs at the best matmul rate this
//! machine reaches, which no batching can beat.

use alloy_primitives::B256;
use openledger_model::{
    DType, Device, LoraAdapter, Model, Pretrained, Proj, SamplingParams, generate,
};
use openledger_serve::cache::{AdapterCache, CacheConfig, adapter_bytes};
use openledger_serve::engine::{self, EngineParts, Event, Job};
use openledger_serve::metrics::Metrics;
use openledger_serve::scheduler::SchedulerConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bench parameters.
#[derive(Clone, Debug, Serialize)]
pub struct BenchOptions {
    /// Base model directory.
    pub base_dir: PathBuf,
    /// How the base weights are held (`None`: as the checkpoint stores them).
    pub weights: Option<openledger_model::WeightFormat>,
    /// Numbers of distinct adapters.
    pub adapters: Vec<usize>,
    /// Ranks.
    pub ranks: Vec<usize>,
    /// Projections the adapters target (Hugging Face names, `q_proj` ...).
    pub targets: Vec<String>,
    /// Requests per scenario.
    pub requests: usize,
    /// Poisson arrival rate (requests per second).
    pub rate: f64,
    /// Zipf exponent of adapter popularity.
    pub zipf: f64,
    /// Prompt length range (tokens, inclusive).
    pub prompt_len: (usize, usize),
    /// Output length range (tokens, inclusive).
    pub output_len: (usize, usize),
    /// Requests of the naive baseline.
    pub naive_requests: usize,
    /// RAM tier budget in bytes.
    pub ram_budget: u64,
    /// Most running sequences.
    pub max_running: usize,
    /// The scheduler's adapter affinity.
    pub adapter_affinity: usize,
    /// Runs of each batched scenario, interleaved (one adapter, then each adapter count, then
    /// again), so that a slow spell of a shared machine falls on all of them alike; the median
    /// run of each is reported.
    pub repeat: usize,
    /// Seed.
    pub seed: u64,
}

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// `lora`, `one-adapter` or `naive`.
    pub mode: String,
    /// Distinct adapters.
    pub adapters: usize,
    /// Rank.
    pub rank: usize,
    /// Requests completed.
    pub requests: usize,
    /// Output tokens.
    pub output_tokens: usize,
    /// Seconds from first arrival to last completion.
    pub seconds: f64,
    /// Output tokens per second.
    pub throughput: f64,
    /// Time to first token, p50 (ms).
    pub ttft_p50_ms: f64,
    /// Time to first token, p90 (ms).
    pub ttft_p90_ms: f64,
    /// Inter-token latency, mean (ms).
    pub itl_mean_ms: f64,
    /// Inter-token latency, p90 (ms).
    pub itl_p90_ms: f64,
    /// Mean sequences per forward pass.
    pub mean_batch: f64,
    /// Mean distinct adapters per forward pass.
    pub mean_adapters_per_batch: f64,
    /// Adapter loads from disk during the run.
    pub cold_loads: u64,
    /// Traffic model: MiB of base weights a forward pass reads (every linear layer and the
    /// output head, in the format they are held in), whatever the batch.
    pub base_mib_per_step: f64,
    /// Traffic model: MiB of adapter weights a forward pass reads (mean distinct adapters per
    /// batch × one adapter's serving copy, bf16).
    pub adapter_mib_per_step: f64,
    /// Throughput of every repeat of this scenario (`repeat` > 1); the row is the median one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub throughput_runs: Vec<f64>,
    /// Seconds per phase (`openledger_model::profile`), when `OPENLEDGER_PROFILE` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<(String, f64)>>,
}

/// Phase totals since the last call, when profiling is on.
fn profile_totals() -> Option<Vec<(String, f64)>> {
    let t = openledger_model::profile::take();
    openledger_model::profile::enabled().then(|| {
        t.into_iter()
            .map(|(p, s, _)| (p.name().to_string(), s))
            .collect()
    })
}

/// The phase totals of a scenario as one line (empty when not profiled).
pub fn profile_line(s: &Scenario) -> String {
    match &s.profile {
        None => String::new(),
        Some(p) => {
            let parts: Vec<String> = p
                .iter()
                .filter(|(_, x)| *x > 0.0)
                .map(|(n, x)| format!("{n} {x:.3}"))
                .collect();
            format!("  seconds: {} (run {:.3})", parts.join(", "), s.seconds)
        }
    }
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Parameters.
    pub options: BenchOptions,
    /// Every scenario.
    pub scenarios: Vec<Scenario>,
    /// Cold load from the local disk tier into RAM, rank 16: p50 (ms).
    pub cold_load_r16_p50_ms: f64,
    /// Same, p90 (ms).
    pub cold_load_r16_p90_ms: f64,
    /// The first load of a blob found on disk by a new process (hash checked then), p50 (ms).
    pub cold_load_r16_after_restart_p50_ms: f64,
    /// Cold-load stages run one after another (read, keccak-256, parse), p50 each (ms).
    pub cold_load_r16_stages_p50_ms: [f64; 3],
    /// RAM per resident adapter by rank (bytes).
    pub ram_per_adapter: Vec<(usize, u64)>,
    /// RAM per resident adapter ÷ its parameters' bytes in f32 (the blob's), by rank.
    pub ram_vs_f32_params: Vec<(usize, f64)>,
    /// The format the base weights were held in, and their bytes.
    pub base_weights: (String, usize),
    /// Per rank: throughput of the largest adapter count / one-adapter throughput (the ratio
    /// of their medians).
    pub ratio_vs_one_adapter: Vec<(usize, f64)>,
    /// Per rank: the median over repeats of (largest adapter count ÷ one adapter) within each
    /// repeat — less moved by the machine's drift than the ratio of medians.
    pub ratio_vs_one_adapter_paired: Vec<(usize, f64)>,
    /// Per rank: every repeat's ratio behind `ratio_vs_one_adapter_paired`.
    pub ratio_vs_one_adapter_pairs: Vec<(usize, Vec<f64>)>,
    /// Per rank: throughput of the largest adapter count / naive throughput.
    pub ratio_vs_naive: Vec<(usize, f64)>,
    /// Per rank: one adapter's parameters / the base model's parameters.
    pub adapter_share_of_base: Vec<(usize, f64)>,
    /// The best rate of a base-projection matmul on this machine (GFLOP/s, best of a few
    /// batch sizes, of candle's f32 gemm and the dense kernel in the served format).
    pub matmul_gflops: f64,
    /// The same rate by batch size: (rows, GFLOP/s).
    pub matmul_gflops_by_rows: Vec<(usize, f64)>,
    /// Per rank: the compute ceiling — output tokens per second if every matmul FLOP of the
    /// one-adapter workload (prefill rows, decode rows, output head) ran at `matmul_gflops` and
    /// nothing else took time.
    pub ceiling_tok_s: Vec<(usize, f64)>,
    /// Per rank: `ceiling_tok_s` / naive throughput — the most any batching could gain over
    /// naive serving on this machine.
    pub ceiling_vs_naive: Vec<(usize, f64)>,
}

/// Parameters of the base model's linear layers and output head (what a step reads).
fn base_params(cfg: &openledger_model::Config) -> usize {
    let per_layer: usize = Proj::ALL
        .iter()
        .map(|p| {
            let (o, i) = p.dims(cfg);
            o * i
        })
        .sum();
    per_layer * cfg.num_hidden_layers + cfg.vocab_size * cfg.hidden_size
}

/// Parameters of one adapter of rank `r` on `targets`.
fn adapter_params(cfg: &openledger_model::Config, r: usize, targets: &[Proj]) -> usize {
    let per_layer: usize = targets
        .iter()
        .map(|p| {
            let (o, i) = p.dims(cfg);
            r * (o + i)
        })
        .sum();
    per_layer * cfg.num_hidden_layers
}

/// The best f32 matmul rate (GFLOP/s) of the base model's projection shapes at a few batch
/// sizes (rows), through the same candle matmul the forward pass uses: (rows, rate) each.
fn matmul_gflops(
    cfg: &openledger_model::Config,
    format: Option<openledger_model::WeightFormat>,
) -> eyre_lite::Result<Vec<(usize, f64)>> {
    use openledger_model::Tensor;
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut rates = Vec::new();
    for rows in [16usize, 64, 256, 1024] {
        let mut best = 0.0f64;
        for (o, k) in [(i, h), (h, i)] {
            if let Some(f) = format {
                best = best.max(crate::model::dense_gflops(o, k, rows, f)?);
            }
            let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1.0, (o, k), &Device::Cpu)?;
            let wt = w.t()?;
            x.matmul(&wt)?; // warm
            let reps = (2_000_000_000 / (2 * rows * o * k)).clamp(4, 2_000);
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(x.matmul(&wt)?);
                }
                let s = t.elapsed().as_secs_f64();
                best = best.max((2 * rows * o * k * reps) as f64 / s / 1e9);
            }
        }
        rates.push((rows, best));
    }
    Ok(rates)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A random adapter of rank `r` on `targets`, B non-zero (uniform ±0.02).
fn random_adapter(
    cfg: &openledger_model::Config,
    r: usize,
    targets: &[Proj],
    seed: u64,
) -> Result<LoraAdapter, openledger_model::Error> {
    LoraAdapter::random(cfg, r, targets, seed, 0.02)
}

#[derive(Clone)]
struct Req {
    at: Duration,
    adapter: usize,
    prompt: Vec<u32>,
    out: usize,
}

fn workload(o: &BenchOptions, n: usize, vocab: usize, seed: u64) -> Vec<Req> {
    let mut rng = StdRng::seed_from_u64(seed);
    let weights: Vec<f64> = (0..n)
        .map(|i| 1.0 / ((i + 1) as f64).powf(o.zipf))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut t = 0.0;
    (0..o.requests)
        .map(|_| {
            t += -(1.0 - rng.random::<f64>()).ln() / o.rate;
            let mut u = rng.random::<f64>() * total;
            let mut adapter = n - 1;
            for (i, w) in weights.iter().enumerate() {
                if u < *w {
                    adapter = i;
                    break;
                }
                u -= w;
            }
            let pl = rng.random_range(o.prompt_len.0..=o.prompt_len.1);
            Req {
                at: Duration::from_secs_f64(t),
                adapter,
                prompt: (0..pl).map(|_| rng.random_range(3..vocab as u32)).collect(),
                out: rng.random_range(o.output_len.0..=o.output_len.1),
            }
        })
        .collect()
}

fn params(out: usize) -> SamplingParams {
    SamplingParams {
        max_new_tokens: out,
        ..Default::default()
    }
}

async fn run_batched(
    o: &BenchOptions,
    base: &Pretrained,
    hashes: &[B256],
    cache: Arc<AdapterCache>,
    reqs: &[Req],
    (mode, rank): (&str, usize),
    traffic: Traffic,
) -> eyre_lite::Result<Scenario> {
    let metrics = Arc::new(Metrics::default());
    let (h, thread) = engine::spawn(EngineParts {
        model: Arc::new(base.model.clone()),
        tokenizer: None,
        scheduler: SchedulerConfig {
            max_running: o.max_running,
            max_waiting: o.requests + 1,
            adapter_affinity: o.adapter_affinity,
            ..Default::default()
        },
        metrics: metrics.clone(),
    })?;
    let disk_before = metrics_disk(&cache);
    profile_totals();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in reqs {
        let (h, cache, hash) = (h.clone(), cache.clone(), hashes[r.adapter]);
        let (prompt, out, at) = (r.prompt.clone(), r.out, r.at);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + at).into()).await;
            let arrived = Instant::now();
            let (adapter, _) = cache.get(hash, "bench").await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            h.submit(Job {
                id: h.next_id(),
                key: hash,
                adapter: Some(adapter),
                prompt,
                params: params(out),
                events: tx,
                arrived,
                permit: h.reserve()?,
            })?;
            let mut times = Vec::new();
            loop {
                match rx.recv().await {
                    Some(Event::Token { .. }) => times.push(Instant::now()),
                    Some(Event::Done(_)) | None => break,
                    Some(Event::Failed(e)) => return Err(eyre_lite::Error(e)),
                }
            }
            Ok::<_, eyre_lite::Error>((arrived, times))
        }));
    }
    let (mut ttft, mut itl, mut tokens, mut end) = (Vec::new(), Vec::new(), 0, start);
    for t in tasks {
        let (arrived, times) = t.await.map_err(|e| eyre_lite::Error(e.to_string()))??;
        if let Some(first) = times.first() {
            ttft.push((*first - arrived).as_secs_f64() * 1e3);
        }
        for w in times.windows(2) {
            itl.push((w[1] - w[0]).as_secs_f64() * 1e3);
        }
        tokens += times.len();
        if let Some(l) = times.last() {
            end = end.max(*l);
        }
    }
    h.shutdown();
    let _ = thread.join();
    let secs = (end - start).as_secs_f64();
    let itl_mean = itl.iter().sum::<f64>() / itl.len().max(1) as f64;
    let bs = &metrics.batch_size;
    let steps = bs.count().max(1) as f64;
    let adapters_per_batch = hist_sum(&metrics.adapters_per_batch) / steps;
    Ok(Scenario {
        throughput_runs: Vec::new(),
        mode: mode.into(),
        adapters: hashes.len(),
        rank,
        requests: reqs.len(),
        output_tokens: tokens,
        seconds: secs,
        throughput: tokens as f64 / secs,
        ttft_p50_ms: pct(&mut ttft.clone(), 0.5),
        ttft_p90_ms: pct(&mut ttft, 0.9),
        itl_mean_ms: itl_mean,
        itl_p90_ms: pct(&mut itl, 0.9),
        mean_batch: hist_sum(bs) / steps,
        mean_adapters_per_batch: adapters_per_batch,
        cold_loads: metrics_disk(&cache) - disk_before,
        base_mib_per_step: traffic.base_mib,
        adapter_mib_per_step: adapters_per_batch * traffic.adapter_mib,
        profile: profile_totals(),
    })
}

/// The traffic model's inputs: MiB of base weights per step, MiB of one adapter.
#[derive(Clone, Copy)]
struct Traffic {
    base_mib: f64,
    adapter_mib: f64,
}

fn hist_sum(h: &openledger_serve::metrics::Histogram) -> f64 {
    h.sum()
}

fn metrics_disk(c: &AdapterCache) -> u64 {
    c.metrics()
        .disk
        .hits
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Naive serving: per request, merge the adapter into a copy of the weights, decode alone,
/// drop the copy. Merge cost does not depend on which adapter it is, so one adapter stands in
/// for all `distinct` of them.
fn run_naive(
    base: &Pretrained,
    adapters: &[Arc<LoraAdapter>],
    reqs: &[Req],
    rank: usize,
    distinct: usize,
    base_mib: f64,
) -> eyre_lite::Result<Scenario> {
    profile_totals();
    let start = Instant::now();
    let (mut tokens, mut ttft, mut itl) = (0, Vec::new(), Vec::new());
    for r in reqs {
        let t0 = Instant::now();
        let merged: Model = base.model.merged(&adapters[r.adapter])?; // merge
        let mut last = None::<Instant>;
        let seq = generate(&merged, None, &r.prompt, None, &params(r.out), |_| {
            let now = Instant::now();
            match last {
                None => ttft.push((now - t0).as_secs_f64() * 1e3),
                Some(l) => itl.push((now - l).as_secs_f64() * 1e3),
            }
            last = Some(now);
            true
        })?;
        drop(merged); // unmerge: back to the shared base weights
        tokens += seq.generated().len();
    }
    let secs = start.elapsed().as_secs_f64();
    let itl_mean = itl.iter().sum::<f64>() / itl.len().max(1) as f64;
    Ok(Scenario {
        throughput_runs: Vec::new(),
        mode: "naive".into(),
        adapters: distinct,
        rank,
        requests: reqs.len(),
        output_tokens: tokens,
        seconds: secs,
        throughput: tokens as f64 / secs,
        ttft_p50_ms: pct(&mut ttft.clone(), 0.5),
        ttft_p90_ms: pct(&mut ttft, 0.9),
        itl_mean_ms: itl_mean,
        itl_p90_ms: pct(&mut itl, 0.9),
        mean_batch: 1.0,
        mean_adapters_per_batch: 1.0,
        cold_loads: 0,
        base_mib_per_step: base_mib,
        adapter_mib_per_step: 0.0,
        profile: profile_totals(),
    })
}

/// Runs the whole benchmark; `progress` gets one line per finished scenario.
pub async fn run(
    o: BenchOptions,
    mut progress: impl FnMut(&str),
) -> eyre_lite::Result<BenchReport> {
    let (dir, weights) = (o.base_dir.clone(), o.weights);
    let base = Arc::new(
        tokio::task::spawn_blocking(move || Pretrained::load_as(&dir, &Device::Cpu, weights))
            .await
            .map_err(|e| eyre_lite::Error(e.to_string()))??,
    );
    let format = base.model.weight_format();
    let base_bytes = base.model.weight_bytes();
    let cfg = base.config.clone();
    let targets = o
        .targets
        .iter()
        .map(|t| {
            Proj::from_name(t).ok_or_else(|| {
                eyre_lite::Error(format!(
                    "unknown target {t:?} (one of {})",
                    Proj::ALL.map(Proj::name).join(", ")
                ))
            })
        })
        .collect::<eyre_lite::Result<Vec<Proj>>>()?;
    if targets.is_empty() {
        return Err(eyre_lite::Error("no target projections".into()));
    }
    let c2 = cfg.clone();
    let rates = tokio::task::spawn_blocking(move || matmul_gflops(&c2, format))
        .await
        .map_err(|e| eyre_lite::Error(e.to_string()))??;
    let gflops = rates.iter().map(|r| r.1).fold(0.0, f64::max);
    progress(&format!(
        "matmul rate on this machine (base projection shapes, f32), GFLOP/s by rows: {}",
        rates
            .iter()
            .map(|(r, g)| format!("{r}: {g:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let n_base = base_params(&cfg);
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let (mut share, mut ceiling, mut ceiling_naive) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratio_paired, mut paired_runs) = (Vec::new(), Vec::new());
    let tmp = std::env::temp_dir().join(format!("openlora-bench-{:x}", rand::random::<u64>()));
    let mut scenarios = Vec::new();
    let (mut ram_per, mut ratio_one, mut ratio_naive) = (Vec::new(), Vec::new(), Vec::new());
    let mut ram_ratio = Vec::new();
    let (mut cold_p50, mut cold_p90, mut cold_stages) = (0.0, 0.0, [0.0; 3]);
    let mut cold_restart_p50 = 0.0;
    let max_n = o.adapters.iter().copied().max().unwrap_or(1);
    for &rank in &o.ranks {
        let disk = tmp.join(format!("r{rank}"));
        let new_cache = |ram: u64| {
            AdapterCache::open(
                CacheConfig {
                    disk_dir: disk.clone(),
                    disk_budget: u64::MAX,
                    ram_budget: ram,
                },
                None,
                cfg.clone(),
                Device::Cpu,
                DType::F32,
                Arc::new(Metrics::default()),
            )
        };
        // make max_n adapters, write them to the disk tier
        let cache = Arc::new(new_cache(o.ram_budget)?);
        let mut hashes = Vec::with_capacity(max_n);
        let mut first = None;
        for i in 0..max_n {
            let a = random_adapter(
                &cfg,
                rank,
                &targets,
                o.seed.wrapping_add(i as u64 * 7919 + rank as u64),
            )?;
            let blob = a.to_blob()?;
            if first.is_none() {
                // the one-adapter baseline, readied as the cache readies what it loads
                let mut a = a;
                a.prepare_serving()?;
                ram_per.push((rank, adapter_bytes(&a)));
                ram_ratio.push((
                    rank,
                    adapter_bytes(&a) as f64 / (4 * a.num_parameters()) as f64,
                ));
                first = Some(Arc::new(a));
            }
            let (h, _) = cache.insert_blob(blob, "bench", None).await?;
            hashes.push(h);
        }
        // cold loads from disk, rank 16: blobs that entered the disk tier in this process
        // (hashed then), dropped from RAM, loaded again — what a server does all day
        if rank == 16 || (cold_p50 == 0.0 && rank == *o.ranks.last().unwrap_or(&16)) {
            let mut ms = Vec::new();
            for h in hashes.iter().take(200) {
                cache.evict_ram(h);
                let t = Instant::now();
                let (_, tier) = cache.get(*h, "bench").await?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                if tier != openledger_serve::cache::Tier::Disk {
                    return Err(eyre_lite::Error(format!(
                        "a cold load came from {tier:?}, not the disk tier"
                    )));
                }
                cache.evict_ram(h);
            }
            cold_p50 = pct(&mut ms.clone(), 0.5);
            cold_p90 = pct(&mut ms, 0.9);
            // after a restart: a new cache on the same directory hashes each file at its
            // first load
            let fresh = new_cache(u64::MAX)?;
            let mut ms = Vec::new();
            for h in hashes.iter().take(200) {
                let t = Instant::now();
                fresh.get(*h, "bench").await?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            cold_restart_p50 = pct(&mut ms, 0.5);
            // the stages one after another on one thread, on the same blobs
            let mut stages = [Vec::new(), Vec::new(), Vec::new()];
            for h in hashes.iter().take(200) {
                let s = openledger_serve::cache::cold_load_stages(
                    &fresh.disk_path(h),
                    &cfg,
                    &Device::Cpu,
                    DType::F32,
                )?;
                for (v, x) in stages.iter_mut().zip(s) {
                    v.push(x * 1e3);
                }
            }
            for (slot, v) in cold_stages.iter_mut().zip(stages.iter_mut()) {
                *slot = pct(v, 0.5);
            }
            progress(&format!(
                "rank {rank}: cold load from disk p50 {cold_p50:.2} ms, p90 {cold_p90:.2} ms; \
                 first load after a restart (hash checked) p50 {cold_restart_p50:.2} ms \
                 (stages alone, p50: read {:.2} ms, keccak {:.2} ms, parse {:.2} ms)",
                cold_stages[0], cold_stages[1], cold_stages[2]
            ));
        }
        let n_adapter = adapter_params(&cfg, rank, &targets);
        // the base as held (a tied head is read twice a step: embedding rows and the head)
        let held = base_bytes as f64 / cfg.num_parameters() as f64;
        let traffic = Traffic {
            base_mib: mib((held * n_base as f64) as usize),
            adapter_mib: mib(2 * n_adapter),
        };
        share.push((rank, n_adapter as f64 / n_base as f64));
        let reqs = workload(&o, max_n, cfg.vocab_size, o.seed ^ rank as u64);
        // the compute ceiling of this workload: matmul FLOPs only, at the best measured rate
        let (rows, outs): (usize, usize) = reqs
            .iter()
            .map(|r| (r.prompt.len() + r.out - 1, r.out))
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
        let head = cfg.vocab_size * cfg.hidden_size;
        let flops = 2.0 * (rows * (n_base - head) + outs * head) as f64;
        let ceiling_tp = outs as f64 / (flops / (gflops * 1e9));
        progress(&format!(
            "rank {rank}: adapter = {:.2} % of the base; a step reads {:.2} MiB of base weights \
             and {:.3} MiB per distinct adapter; compute ceiling {ceiling_tp:.0} tok/s",
            100.0 * n_adapter as f64 / n_base as f64,
            traffic.base_mib,
            traffic.adapter_mib
        ));
        ceiling.push((rank, ceiling_tp));
        let one: Vec<Req> = reqs
            .iter()
            .map(|r| Req {
                adapter: 0,
                prompt: r.prompt.clone(),
                ..*r
            })
            .collect();
        // one adapter, then each adapter count; `repeat` times over, interleaved
        let mut runs: Vec<Vec<Scenario>> = vec![Vec::new(); 1 + o.adapters.len()];
        for _ in 0..o.repeat.max(1) {
            for (k, runs) in runs.iter_mut().enumerate() {
                let (n, reqs, mode) = match k {
                    0 => (1, one.clone(), "one-adapter"),
                    _ => {
                        let n = o.adapters[k - 1];
                        (
                            n,
                            workload(&o, n, cfg.vocab_size, o.seed ^ rank as u64),
                            "lora",
                        )
                    }
                };
                let s = run_batched(
                    &o,
                    &base,
                    &hashes[..n],
                    Arc::new(new_cache(o.ram_budget)?),
                    &reqs,
                    (mode, rank),
                    traffic,
                )
                .await?;
                progress(&row(&s));
                if s.profile.is_some() {
                    progress(&profile_line(&s));
                }
                runs.push(s);
            }
        }
        // the ratio of each repeat's most-adapters run to its own one-adapter run, which ran
        // moments before it: a slow spell of the machine falls on both of a pair
        let mut paired: Vec<f64> = o
            .adapters
            .iter()
            .position(|&n| n == max_n)
            .map(|k| {
                runs[0]
                    .iter()
                    .zip(&runs[k + 1])
                    .map(|(one, most)| most.throughput / one.throughput)
                    .collect()
            })
            .unwrap_or_default();
        let paired_median = pct(&mut paired, 0.5);
        paired_runs.push((rank, paired));
        let mut medians = Vec::with_capacity(runs.len());
        for mut r in runs {
            let all: Vec<f64> = r.iter().map(|s| s.throughput).collect();
            r.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
            let mut m = r.swap_remove(r.len() / 2);
            if all.len() > 1 {
                m.throughput_runs = all;
            }
            medians.push(m);
        }
        if o.repeat > 1 {
            progress(&format!("medians of {} interleaved runs:", o.repeat));
            for m in &medians {
                progress(&row(m));
            }
        }
        let one_tp = medians[0].throughput;
        let last_tp = medians
            .iter()
            .skip(1)
            .zip(&o.adapters)
            .find(|(_, n)| **n == max_n)
            .map_or(0.0, |(m, _)| m.throughput);
        scenarios.extend(medians);
        let mut adapters = Vec::with_capacity(max_n);
        let reqs = workload(&o, max_n, cfg.vocab_size, o.seed ^ rank as u64);
        let naive_reqs: Vec<Req> = reqs.into_iter().take(o.naive_requests).collect();
        for r in &naive_reqs {
            while adapters.len() <= r.adapter {
                adapters.push(
                    first
                        .clone()
                        .ok_or_else(|| eyre_lite::Error("no adapter".into()))?,
                );
            }
        }
        let (b2, nr) = (base.clone(), naive_reqs);
        let s = tokio::task::spawn_blocking(move || {
            run_naive(&b2, &adapters, &nr, rank, max_n, traffic.base_mib)
        })
        .await
        .map_err(|e| eyre_lite::Error(e.to_string()))??;
        progress(&row(&s));
        if s.profile.is_some() {
            progress(&profile_line(&s));
        }
        ratio_one.push((rank, last_tp / one_tp));
        ratio_paired.push((rank, paired_median));
        ratio_naive.push((rank, last_tp / s.throughput));
        ceiling_naive.push((rank, ceiling_tp / s.throughput));
        scenarios.push(s);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(BenchReport {
        options: o,
        scenarios,
        cold_load_r16_p50_ms: cold_p50,
        cold_load_r16_p90_ms: cold_p90,
        cold_load_r16_after_restart_p50_ms: cold_restart_p50,
        cold_load_r16_stages_p50_ms: cold_stages,
        ram_per_adapter: ram_per,
        ram_vs_f32_params: ram_ratio,
        base_weights: (
            format.map_or("tensor", |f| f.name()).to_string(),
            base_bytes,
        ),
        ratio_vs_one_adapter: ratio_one,
        ratio_vs_naive: ratio_naive,
        ratio_vs_one_adapter_paired: ratio_paired,
        ratio_vs_one_adapter_pairs: paired_runs,
        adapter_share_of_base: share,
        matmul_gflops: gflops,
        matmul_gflops_by_rows: rates,
        ceiling_tok_s: ceiling,
        ceiling_vs_naive: ceiling_naive,
    })
}

/// One table row.
pub fn row(s: &Scenario) -> String {
    format!(
        "{:<12} {:>5} {:>3} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>6.1} {:>6.1} {:>6} {:>7.2}",
        s.mode,
        s.adapters,
        s.rank,
        s.output_tokens,
        s.throughput,
        s.ttft_p50_ms,
        s.ttft_p90_ms,
        s.itl_mean_ms,
        s.itl_p90_ms,
        s.mean_batch,
        s.mean_adapters_per_batch,
        s.cold_loads,
        s.adapter_mib_per_step / s.base_mib_per_step
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "mode         adapt   r tokens     tok/s  ttft50ms  ttft90ms   itl ms  itl90ms  batch  adpt/b  loads  ad÷base";

/// A tiny error type for the benchmark (the library does not use eyre).
pub mod eyre_lite {
    /// Any failure, as text.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Error(pub String);
    /// Result with [`Error`].
    pub type Result<T> = std::result::Result<T, Error>;
    macro_rules! from {
        ($($t:ty),*) => {$(impl From<$t> for Error { fn from(e: $t) -> Self { Error(e.to_string()) } })*};
    }
    from!(
        openledger_model::Error,
        openledger_serve::ServeError,
        std::io::Error,
        openledger_model::candle::Error
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> openledger_model::Config {
        openledger_model::init::InitOptions::preset(openledger_model::init::Preset::Small, 1)
            .config()
    }

    #[test]
    fn the_traffic_model_counts_what_an_adapter_and_the_base_hold() {
        let cfg = small();
        for (r, targets) in [(8, &[Proj::Q, Proj::V][..]), (16, &Proj::ALL[..])] {
            let a = random_adapter(&cfg, r, targets, 3).expect("adapter");
            assert_eq!(adapter_params(&cfg, r, targets), a.num_parameters());
        }
        // the base: every parameter but the norms' (the head is tied to the embedding)
        let norms = (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size;
        assert_eq!(base_params(&cfg) + norms, cfg.num_parameters());
        // PEFT's default targets keep an adapter a few percent of the base; all seven do not
        let qv = adapter_params(&cfg, 16, &[Proj::Q, Proj::V]) as f64 / base_params(&cfg) as f64;
        let all = adapter_params(&cfg, 16, &Proj::ALL) as f64 / base_params(&cfg) as f64;
        assert!(qv < 0.05 && all > 0.1, "q,v {qv}, all {all}");
    }

    #[test]
    fn the_matmul_rate_is_measured_at_every_batch_size() {
        let rates =
            matmul_gflops(&small(), Some(openledger_model::WeightFormat::Bf16)).expect("rates");
        assert_eq!(
            rates.iter().map(|r| r.0).collect::<Vec<_>>(),
            [16, 64, 256, 1024]
        );
        assert!(
            rates.iter().all(|r| r.1.is_finite() && r.1 > 0.0),
            "{rates:?}"
        );
    }
}
