//! `openledger serve` (OpenLoRA, OpenAI-compatible) and `openledger bench serve`.

use alloy_primitives::Address;
use eyre::WrapErr;
use openledger_bench::serve::{self as bench, BenchOptions};
use openledger_model::{LoraAdapter, Proj};
use openledger_serve::scheduler::SchedulerConfig;
use openledger_serve::{NoHooks, ServeConfig, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `openledger serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Base model directory (Hugging Face layout).
    #[arg(long)]
    base: PathBuf,
    /// Name of the base model in `model` (default: the directory's name).
    #[arg(long)]
    base_name: Option<String>,
    /// Adapter store: a directory or s3://bucket/prefix (where registered adapters' blobs live).
    #[arg(long)]
    store: Option<String>,
    /// JSON-RPC URL of the chain; models registered in ModelRegistry become servable.
    #[arg(long)]
    rpc: Option<String>,
    /// ModelRegistry address (default with --rpc: the dev genesis deployment's, on chain 1337
    /// only).
    #[arg(long)]
    registry: Option<Address>,
    /// Listen address (port 0 picks a free port; the address is printed as `Listening on ...`).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Disk tier directory of the adapter cache (default: a temporary directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// RAM tier budget in MiB.
    #[arg(long, default_value_t = 1024)]
    ram_mb: u64,
    /// Disk tier budget in MiB.
    #[arg(long, default_value_t = 4096)]
    disk_mb: u64,
    /// Most sequences in one batch.
    #[arg(long, default_value_t = 64)]
    max_running: usize,
    /// Most requests waiting for a slot (more get 429).
    #[arg(long, default_value_t = 256)]
    max_waiting: usize,
    /// Token budget of one forward pass.
    #[arg(long, default_value_t = 512)]
    max_batch_tokens: usize,
    /// Most admissions in a row that may go to an adapter already in the batch ahead of the
    /// round-robin's turn (fewer distinct adapters per batch; 0 = strict round-robin).
    #[arg(long, default_value_t = 3)]
    adapter_affinity: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 1024)]
    max_tokens_limit: usize,
    /// How long a "cannot load" verdict on an adapter (its blob missing from the store, the
    /// store unreadable) stands before a request or a listing checks it again (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = crate::cmd_chain::parse_duration)]
    recheck_interval: Duration,
    /// Bearer token of /v1/load_lora_adapter and /v1/unload_lora_adapter.
    #[arg(long, env = "OPENLEDGER_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Local adapters to serve from the start, as NAME=PATH (PEFT directory or blob file).
    #[arg(long = "adapter", value_name = "NAME=PATH")]
    adapters: Vec<String>,
    /// Make this many random adapters (`demo-1`, ...) for demos and tests.
    #[arg(long, default_value_t = 0)]
    demo_adapters: usize,
    /// Where the demo adapters are written as PEFT directories (default: inside the cache dir).
    #[arg(long)]
    demo_dir: Option<PathBuf>,
    /// Rank of the demo adapters.
    #[arg(long, default_value_t = 8)]
    demo_rank: usize,
}

/// The `ModelRegistry` to follow: `--registry`, else the dev genesis deployment's, only on the
/// dev chain (asked of `rpc`).
async fn registry(a: &ServeArgs) -> eyre::Result<Option<Address>> {
    let Some(rpc) = &a.rpc else {
        return Ok(a.registry);
    };
    if a.registry.is_some() {
        return Ok(a.registry);
    }
    use alloy::providers::Provider;
    let url = rpc.parse().map_err(|e| eyre::eyre!("--rpc {rpc}: {e}"))?;
    let chain_id = alloy::providers::ProviderBuilder::new()
        .connect_http(url)
        .get_chain_id()
        .await
        .map_err(|e| eyre::eyre!("asking --rpc {rpc} for its chain id: {e}"))?;
    if chain_id != openledger_protocol::DEV_CHAIN_ID {
        eyre::bail!(
            "chain {chain_id} at {rpc} has no built-in ModelRegistry address (only the devnet's chain {} has): pass --registry ADDRESS",
            openledger_protocol::DEV_CHAIN_ID
        );
    }
    Ok(Some(
        openledger_protocol::endpoints::dev_deployments()
            .contracts
            .model_registry,
    ))
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(a: ServeArgs) -> eyre::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("openlora-cache-")
        .tempdir()?;
    let cache_dir = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let mut cfg = ServeConfig::new(&a.base, &cache_dir);
    cfg.base_name = a.base_name.clone();
    cfg.store = a.store.clone();
    cfg.registry = registry(&a).await?;
    cfg.rpc_url = a.rpc.clone();
    cfg.cache.ram_budget = a.ram_mb << 20;
    cfg.cache.disk_budget = a.disk_mb << 20;
    cfg.scheduler = SchedulerConfig {
        max_running: a.max_running,
        max_waiting: a.max_waiting,
        max_batch_tokens: a.max_batch_tokens,
        adapter_affinity: a.adapter_affinity,
        ..Default::default()
    };
    cfg.max_tokens_limit = a.max_tokens_limit;
    cfg.recheck_interval = a.recheck_interval;
    cfg.admin_token = a.admin_token.clone();
    cfg.poll_interval = Duration::from_millis(500);
    let server = Server::start(cfg, Arc::new(NoHooks))
        .await
        .wrap_err("starting the server")?;
    for spec in &a.adapters {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| eyre::eyre!("--adapter wants NAME=PATH, got {spec}"))?;
        let h = server.load_local(name, path.as_ref(), None).await?;
        tracing::info!(target: "serve", name, %h, "adapter loaded");
    }
    if a.demo_adapters > 0 {
        let demo_dir = a.demo_dir.clone().unwrap_or_else(|| cache_dir.join("demo"));
        let base = openledger_model::Config::from_file(&a.base.join("config.json"))?;
        for i in 1..=a.demo_adapters {
            let dir = demo_dir.join(format!("demo-{i}"));
            LoraAdapter::random(&base, a.demo_rank, &Proj::ALL, 1000 + i as u64, 0.3)?
                .save(&dir)?;
            server.load_local(&format!("demo-{i}"), &dir, None).await?;
        }
    }
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    let addr = listener.local_addr()?;
    let (name, hash) = server.base();
    println!("Listening on {addr}");
    tracing::info!(target: "serve", %addr, base = %name, %hash, "OpenLoRA serving");
    axum::serve(listener, server.router())
        .with_graceful_shutdown(crate::cmd_chain::shutdown_signal())
        .await?;
    drop(server);
    drop(tmp);
    Ok(())
}

/// Options of `openledger bench serve`.
#[derive(clap::Args, Debug)]
pub struct BenchServeArgs {
    /// Base model directory (default: the SmolLM2-135M shape with random weights, made once
    /// under ~/.cache/openledger/shapes).
    #[arg(long)]
    base: Option<PathBuf>,
    /// How the base weights are held: f32, bf16 or int8 (default: as the checkpoint stores
    /// them).
    #[arg(long)]
    weights: Option<openledger_model::WeightFormat>,
    /// Numbers of distinct adapters.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    adapters: Vec<usize>,
    /// Adapter ranks.
    #[arg(long, value_delimiter = ',', default_value = "8,16")]
    ranks: Vec<usize>,
    /// Projections the adapters target: Hugging Face names (`q_proj,k_proj,...`) or `all` for
    /// all seven. The default is PEFT's for Llama, which keeps adapters a small share of the
    /// base as in S-LoRA's setting; `all` makes each rank-16 adapter 15–18 % of the `small` base.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
    targets: Vec<String>,
    /// Requests per scenario.
    #[arg(long, default_value_t = 256)]
    requests: usize,
    /// Poisson arrival rate, requests per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Zipf exponent of adapter popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Requests of the naive (merge per request, one at a time) baseline.
    #[arg(long, default_value_t = 24)]
    naive_requests: usize,
    /// RAM tier budget in MiB.
    #[arg(long, default_value_t = 256)]
    ram_mb: u64,
    /// Most sequences in one batch.
    #[arg(long, default_value_t = 64)]
    max_running: usize,
    /// The server's adapter affinity (see `serve --adapter-affinity`; 0 = strict round-robin).
    #[arg(long, default_value_t = 3)]
    adapter_affinity: usize,
    /// Runs of each batched scenario, interleaved; the median is reported (a shared machine's
    /// speed drifts by tens of percent within a minute).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// JSON report.
    #[arg(long, default_value = "bench-out/serve.json")]
    out: PathBuf,
}

/// Runs the benchmark, prints the table, writes the JSON.
pub async fn bench_serve(a: BenchServeArgs) -> eyre::Result<()> {
    let base = match a.base {
        Some(b) => b,
        None => {
            eprintln!("base: the SmolLM2-135M shape, random weights (made once, cached) ...");
            tokio::task::spawn_blocking(|| {
                openledger_model::init::cached_shape(openledger_model::init::Shape::Smollm2_135m)
            })
            .await??
        }
    };
    let opts = BenchOptions {
        base_dir: base,
        weights: a.weights,
        adapters: a.adapters,
        ranks: a.ranks,
        targets: if a.targets.iter().any(|t| t == "all") {
            openledger_model::Proj::ALL
                .iter()
                .map(|p| p.name().to_string())
                .collect()
        } else {
            a.targets
        },
        requests: a.requests,
        rate: a.rate,
        zipf: a.zipf,
        prompt_len: (8, 96),
        output_len: (8, 64),
        naive_requests: a.naive_requests,
        ram_budget: a.ram_mb << 20,
        max_running: a.max_running,
        adapter_affinity: a.adapter_affinity,
        repeat: a.repeat,
        seed: 7,
    };
    println!("{}", bench::HEADER);
    let report = bench::run(opts, |line| println!("{line}")).await?;
    println!(
        "cold load (disk → RAM, rank 16): p50 {:.2} ms, p90 {:.2} ms; first load after a \
         restart (hash checked) p50 {:.2} ms",
        report.cold_load_r16_p50_ms,
        report.cold_load_r16_p90_ms,
        report.cold_load_r16_after_restart_p50_ms
    );
    for ((r, b), (_, x)) in report.ram_per_adapter.iter().zip(&report.ram_vs_f32_params) {
        println!(
            "RAM per resident adapter, rank {r}: {:.1} KiB ({x:.2}× its f32 parameter bytes)",
            *b as f64 / 1024.0
        );
    }
    println!(
        "base weights held as {}: {:.1} MB",
        report.base_weights.0,
        report.base_weights.1 as f64 / 1e6
    );
    for ((r, one), (_, naive)) in report
        .ratio_vs_one_adapter
        .iter()
        .zip(&report.ratio_vs_naive)
    {
        println!("rank {r}: most adapters / one adapter = {one:.3}; / naive = {naive:.1}x");
    }
    for (r, p) in &report.ratio_vs_one_adapter_paired {
        println!("rank {r}: most adapters / one adapter, median of per-repeat ratios = {p:.3}");
    }
    for ((r, c), (_, cn)) in report.ceiling_tok_s.iter().zip(&report.ceiling_vs_naive) {
        println!(
            "rank {r}: compute ceiling {c:.0} tok/s at {:.1} GFLOP/s = {cn:.1}x naive \
             (no batching can gain more on this machine)",
            report.matmul_gflops
        );
    }
    if let Some(p) = a.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
