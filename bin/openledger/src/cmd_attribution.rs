//! `openledger attribution ...` (index a Datanet version: `--datanet ID --datanet-version N`;
//! verify a record) and
//! `openledger earnings [--claim]`.

use crate::endpoints::{Endpoints, Resolved, Who, emit};
use alloy::providers::{Provider, ProviderBuilder};
use alloy_primitives::{Address, B256, U256};
use eyre::{Result, WrapErr, bail, eyre};
use openledger_attribution::corpus::{self, RowSource};
use openledger_attribution::index::IndexMeta;
use openledger_attribution::watch::{BatchReport, WatchConfig, Watcher};
use openledger_attribution::{AttributionConfig, AttributionService};
use openledger_datanet::ContentStore;
use openledger_datanet::client::progress_bar;
use openledger_protocol::bindings::{AttributionSettlement, DatanetRegistry};
use std::path::PathBuf;

/// A devnet's path, or an error naming the flag to pass.
fn devnet_default<T>(
    r: &Resolved,
    flag: &str,
    f: impl FnOnce(&openledger_protocol::endpoints::DevnetInfo) -> Option<T>,
) -> Result<T> {
    r.devnet.as_ref().and_then(f).ok_or_else(|| {
        eyre!(
            "{flag} is required: {} is not a devnet that names it (or its model services have not started yet)",
            r.rpc_url
        )
    })
}

/// Attribution commands.
#[derive(Debug, clap::Subcommand)]
pub enum AttributionCmd {
    /// Build the span index of a Datanet version (suffix array over its tokenized rows).
    Index {
        #[command(flatten)]
        at: Endpoints,
        /// Datanet id.
        #[arg(long)]
        datanet: u64,
        /// Version.
        #[arg(long = "datanet-version", id = "datanet_version")]
        version: u64,
        /// The base model's tokenizer.json [default: the devnet's base model's].
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Content store with the Datanet's manifests and contributions [default: the
        /// devnet's].
        #[arg(long)]
        datanet_store: Option<String>,
        /// Output directory.
        #[arg(long, default_value = "attribution-indexes")]
        out: PathBuf,
    },
    /// Attributor staking: bond, unbond, withdraw, show a stake.
    #[command(flatten)]
    Stake(crate::cmd_stake::StakeCmd),
    /// Show an attribution record: the answer's fee, the contributions it is credited to with
    /// their weights, and its settlement on chain.
    Show(ShowArgs),
    /// Recompute a record from its transcript and the artifacts (Datanet data, base model,
    /// adapter, training manifest and sketches), and check its inclusion in the on-chain batch
    /// root. Exits non-zero on any mismatch.
    ///
    /// The transcript (prompt and answer token ids) is content-addressed: it is read from the
    /// record store `<dir>/records` by the record's promptHash / answerHash, where the service
    /// puts it next to every record. A payer or auditor holding it elsewhere passes
    /// `--transcript FILE` (JSON `{"prompt": [ids], "answer": [ids]}`, as returned by the
    /// tokenizer); only token lists that hash to the record's values can ever be used.
    Verify {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// Record id (0x…).
        record: B256,
        #[command(flatten)]
        v: VerifierArgs,
        /// The transcript as JSON `{"prompt": [ids], "answer": [ids]}`.
        #[arg(long)]
        transcript: Option<PathBuf>,
    },
    /// Watch every settled batch and re-verify each of its records, as `verify` does: one log
    /// line per batch, a MISMATCH line per wrong record, Prometheus metrics. Records come from
    /// `--dir`'s record store or from the attributor's announced endpoint; a record whose
    /// transcript or artifacts this machine cannot get is reported skipped with the reason.
    /// (Challenging a mismatch on chain comes with the disputes contract.)
    Watch {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        v: VerifierArgs,
        /// Read records from this origin instead of each attributor's announced endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Where the watcher keeps its cursor [default: `<dir>/watch`].
        #[arg(long)]
        watch_dir: Option<PathBuf>,
        /// First block to check when there is no cursor yet.
        #[arg(long, default_value_t = 0)]
        from_block: u64,
        /// Check up to the chain head, print the batches, and exit (non-zero if a record
        /// does not verify).
        #[arg(long)]
        once: bool,
        /// Milliseconds between looks at the chain.
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
}

/// Where `verify` and `watch` find the artifacts to recompute records from.
#[derive(Debug, clap::Args)]
pub struct VerifierArgs {
    /// The attribution service's directory; its `records/` store holds the record (and
    /// usually the transcript) [default: the devnet's, `<datadir>/attribution`].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Read the Datanet data from this content store instead of the Datanet API (devnet:
    /// `<datadir>/datanets/content`). Without it the data is read over the Datanet API
    /// (`--datanet-api`), signed by the acting account, which needs a licence for
    /// permissioned Datanets.
    #[arg(long)]
    datanet_store: Option<String>,
    /// The base model's tokenizer.json [default: the base's].
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Models content store (adapters, training manifests, sketches): needed to recompute
    /// the influence method [default: the devnet's].
    #[arg(long)]
    models_store: Option<String>,
    /// Base model directory [default: the devnet's base; else the tokenizer's directory].
    #[arg(long)]
    base: Option<PathBuf>,
}

/// An attribution service that only recomputes (no attributor key): what `verify` and
/// `watch` check records with. Returns it with its directory.
async fn verifier(
    r: &Resolved,
    who: &Who,
    v: VerifierArgs,
) -> Result<(std::sync::Arc<AttributionService>, PathBuf)> {
    let dir = match v.dir {
        Some(d) => d,
        None => devnet_default(r, "--dir", |i| i.attribution_dir.clone())?,
    };
    let base = v
        .base
        .or_else(|| r.devnet.as_ref().and_then(|i| i.base_model.clone()));
    let tokenizer = match (v.tokenizer, &base) {
        (Some(t), _) => t,
        (None, Some(b)) => b.join("tokenizer.json"),
        (None, None) => devnet_default(r, "--tokenizer", |_| None::<PathBuf>)?,
    };
    let models_store = v
        .models_store
        .or_else(|| r.models_store().map(str::to_string));
    let via_api = v.datanet_store.is_none();
    let mut cfg = AttributionConfig::new(
        &r.rpc_url,
        &r.deployments,
        dir.clone(),
        v.datanet_store.unwrap_or_default(),
    );
    cfg.tokenizer = Some(tokenizer);
    cfg.models_store = models_store;
    cfg.base_model = base;
    if via_api {
        cfg.datanet_api = Some((r.datanet_api.clone(), who.signer()?));
    }
    Ok((AttributionService::open(cfg).await?, dir))
}

/// `openledger attribution show` arguments.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    at: Endpoints,
    /// Record id (0x…), as an answer's `attribution.recordId` gives it.
    record: B256,
    /// Wait up to this many seconds until the record is settled on chain (in a batch).
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
}

/// `openledger earnings` arguments.
#[derive(Debug, clap::Args)]
pub struct EarningsArgs {
    #[command(flatten)]
    at: Endpoints,
    #[command(flatten)]
    who: Who,
    /// Account to show (defaults to the acting account).
    address: Option<Address>,
    /// Send `claim()` for the acting account.
    #[arg(long)]
    claim: bool,
    /// With --claim: when nothing is claimable yet but credits are pending, wait up to this many
    /// seconds for their challenge window to end, then claim.
    #[arg(long, requires = "claim")]
    wait: Option<u64>,
}

/// Runs `openledger attribution show`.
async fn show(a: ShowArgs) -> Result<()> {
    let r = a.at.resolve().await?;
    let url = format!("{}/api/attribution/{}", r.http_url()?, a.record);
    let deadline = a
        .wait
        .map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let v = loop {
        let resp = reqwest::get(&url)
            .await
            .wrap_err_with(|| format!("GET {url}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "{url} answered {status}: {}",
                v["error"]["message"].as_str().unwrap_or("(no message)")
            );
        }
        match deadline {
            Some(d) if v["batch"].is_null() => {
                if std::time::Instant::now() >= d {
                    bail!(
                        "record {} is not settled after {} s (pending: {})",
                        a.record,
                        a.wait.unwrap_or(0),
                        v["pending"]
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            _ => break v,
        }
    };
    let rec = &v["record"];
    let fee = serde_json::from_value::<U256>(rec["fee"].clone()).unwrap_or_default();
    let mut human = vec![format!(
        "record {}: model {}, fee {fee} wei, payer {}",
        a.record,
        rec["modelName"].as_str().unwrap_or("?"),
        rec["payer"].as_str().unwrap_or("none")
    )];
    if let Some(cs) = rec["contributions"].as_array() {
        for c in cs {
            human.push(format!(
                "  datanet {} version {} contribution {}: {:.2} %",
                c["datanet"],
                c["version"],
                c["contribution"],
                c["weightPpm"].as_f64().unwrap_or(0.0) / 10_000.0
            ));
        }
    }
    human.push(match v["batch"]["batchId"].as_u64() {
        Some(b) => match v["settlement"]["finalAt"].as_u64() {
            Some(t) if t > openledger_datanet::auth::now() => format!(
                "settled in batch {b}; challengeable until {t} (unix seconds), its credits pending until then"
            ),
            Some(_) => format!("settled in batch {b}; final (its challenge window has ended)"),
            None => format!("settled in batch {b}"),
        },
        None => "not settled yet".into(),
    });
    emit(human.join("\n"), v);
    Ok(())
}

/// One human line per batch (and one per wrong or skipped record).
fn batch_lines(r: &BatchReport) -> Vec<String> {
    let mut out = vec![format!(
        "batch {} by {} (block {}): {} records, {} ok, {} MISMATCH, {} skipped{}",
        r.batch_id,
        r.attributor,
        r.block,
        r.records.len(),
        r.ok.len(),
        r.mismatched.len(),
        r.skipped.len(),
        if r.root_ok {
            ""
        } else {
            "; ROOT does not match its records"
        }
    )];
    for (id, diff) in &r.mismatched {
        out.push(format!("  MISMATCH {id}: {}", diff.join("; ")));
    }
    for (id, why, detail) in &r.skipped {
        out.push(format!("  skipped {id} ({}): {detail}", why.as_str()));
    }
    out
}

/// Runs the watchtower until interrupted (or once, up to the head).
async fn watch(
    svc: std::sync::Arc<AttributionService>,
    cfg: WatchConfig,
    once: bool,
    every: std::time::Duration,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<()> {
    let mut w = Watcher::open(svc, cfg).await?;
    if let Some(addr) = metrics_addr {
        let m = w.metrics();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move { m.render() }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .wrap_err_with(|| format!("--metrics-addr {addr}"))?;
        eprintln!("metrics at http://{addr}/metrics");
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    if once {
        let reports = w.step().await?;
        let bad = reports
            .iter()
            .filter(|r| !r.root_ok || !r.mismatched.is_empty())
            .count();
        let human = if reports.is_empty() {
            "no settled batches".to_string()
        } else {
            reports
                .iter()
                .flat_map(batch_lines)
                .collect::<Vec<_>>()
                .join("\n")
        };
        emit(human, serde_json::json!({ "batches": reports }));
        if bad > 0 {
            bail!("{bad} batch(es) hold records that do not verify");
        }
        return Ok(());
    }
    loop {
        match w.step().await {
            Ok(reports) => {
                for r in &reports {
                    for l in batch_lines(r) {
                        println!("{l}");
                    }
                }
            }
            // The chain may be away for a while: say so and look again.
            Err(e) => eprintln!("watch: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Runs an attribution command.
pub async fn run(cmd: AttributionCmd) -> Result<()> {
    match cmd {
        AttributionCmd::Show(a) => show(a).await,
        AttributionCmd::Stake(c) => crate::cmd_stake::run(c).await,
        AttributionCmd::Index {
            at,
            datanet,
            version,
            tokenizer,
            datanet_store,
            out,
        } => {
            let r = at.resolve().await?;
            let d = &r.deployments;
            let tokenizer = match tokenizer {
                Some(t) => t,
                None => devnet_default(&r, "--tokenizer", |i| {
                    i.base_model.as_ref().map(|b| b.join("tokenizer.json"))
                })?,
            };
            let datanet_store = match datanet_store {
                Some(s) => s,
                None => devnet_default(&r, "--datanet-store", |i| i.datanet_store.clone())?,
            };
            let provider = ProviderBuilder::new()
                .connect_http(r.rpc_url.parse()?)
                .erased();
            let registry = d.contracts.datanet_registry;
            let chain = openledger_datanet::ChainView::new(provider.clone(), registry);
            let reg = DatanetRegistry::new(registry, provider);
            let v = reg
                .getVersion(U256::from(datanet), U256::from(version))
                .call()
                .await?;
            let tok = openledger_model::load_tokenizer(&tokenizer)?;
            let tok_hash = corpus::tokenizer_hash(&tokenizer)?;
            let source = RowSource::Store(ContentStore::open(&datanet_store)?);
            let c = corpus::load(&source, &chain, datanet, version, v.manifestHash, &tok).await?;
            let path = corpus::index_path(&out, datanet, version, &tok_hash);
            let meta = IndexMeta {
                datanet,
                version,
                vocab: tok.get_vocab_size(true) as u32,
                tokenizer_hash: tok_hash,
            };
            let bar = progress_bar(1000);
            let start = std::time::Instant::now();
            let p2 = path.clone();
            let ix = tokio::task::spawn_blocking(move || {
                corpus::build_index(&p2, &meta, &c, |stage, f| {
                    bar.set_message(stage.to_string());
                    bar.set_position((f * 1000.0) as u64);
                })
            })
            .await??;
            emit(
                format!(
                    "{}: {} tokens, {} rows, {:.2} bytes/token, {:.1} s",
                    path.display(),
                    ix.token_count(),
                    ix.doc_count(),
                    ix.file_size() as f64 / ix.token_count().max(1) as f64,
                    start.elapsed().as_secs_f64()
                ),
                serde_json::json!({"index": path, "tokens": ix.token_count(), "rows": ix.doc_count(), "bytes": ix.file_size()}),
            );
            Ok(())
        }
        AttributionCmd::Watch {
            at,
            who,
            v,
            endpoint,
            watch_dir,
            from_block,
            once,
            interval_ms,
            metrics_addr,
        } => {
            let r = at.resolve().await?;
            let (svc, dir) = verifier(&r, &who, v).await?;
            watch(
                svc,
                WatchConfig {
                    dir: watch_dir.unwrap_or_else(|| dir.join("watch")),
                    endpoint,
                    from_block,
                },
                once,
                std::time::Duration::from_millis(interval_ms.max(100)),
                metrics_addr,
            )
            .await
        }
        AttributionCmd::Verify {
            at,
            who,
            record,
            v,
            transcript,
        } => {
            let r = at.resolve().await?;
            let (svc, _) = verifier(&r, &who, v).await?;
            if let Some(t) = transcript {
                #[derive(serde::Deserialize)]
                struct Transcript {
                    prompt: Vec<u32>,
                    answer: Vec<u32>,
                }
                let t: Transcript = serde_json::from_slice(
                    &std::fs::read(&t).wrap_err_with(|| format!("reading {}", t.display()))?,
                )
                .wrap_err("--transcript must be {\"prompt\": [ids], \"answer\": [ids]}")?;
                for toks in [&t.prompt, &t.answer] {
                    svc.records()
                        .put(openledger_attribution::record::tokens_bytes(toks).into())
                        .await?;
                }
            }
            let rep = svc.verify(record).await?;
            let mut human: Vec<String> = rep
                .matched
                .iter()
                .map(|m| format!("match     {m}"))
                .collect();
            human.extend(rep.mismatched.iter().map(|m| format!("MISMATCH  {m}")));
            human.push(if rep.ok() {
                format!("record {record} verifies")
            } else {
                format!("record {record} does NOT verify")
            });
            emit(
                human.join("\n"),
                serde_json::json!({"record": record, "ok": rep.ok(), "matched": rep.matched, "mismatched": rep.mismatched}),
            );
            if rep.ok() {
                Ok(())
            } else {
                Err(eyre!("record {record} does not verify"))
            }
        }
    }
}

/// Shows (and optionally claims) earnings.
pub async fn earnings(a: EarningsArgs) -> Result<()> {
    let r = a.at.resolve().await?;
    let d = &r.deployments;
    let signer = a.who.signer()?;
    let who = a.address.unwrap_or(signer.address());
    let provider = crate::endpoints::wallet_provider(&r.rpc_url, signer.clone())?;
    let settlement = AttributionSettlement::new(d.contracts.settlement, provider.clone());
    // earned totals per model and Datanet come from the attribution API; what can be claimed
    // comes from the chain
    let earned = match &r.http_url {
        Some(h) => {
            let url = format!("{h}/api/earnings/{who}");
            let resp = reqwest::get(&url)
                .await
                .wrap_err_with(|| format!("attribution API {url}"))?;
            if !resp.status().is_success() {
                bail!("attribution API {url} answered {}", resp.status());
            }
            Some(resp.json::<serde_json::Value>().await?)
        }
        None => None,
    };
    let (mut claimable, mut pending) = claimable_and_pending(&settlement, who).await?;
    let open = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<U256>().ok())
            .map(openledger_protocol::format_open)
            .unwrap_or_else(|| "?".into())
    };
    let mut human = match &earned {
        Some(e) => {
            let mut parts = Vec::new();
            for c in e["contributions"].as_array().into_iter().flatten() {
                parts.push(format!(
                    "contribution {}: {} OPEN",
                    c["contributionId"],
                    open(&c["earned"])
                ));
            }
            for (k, what) in [
                ("asModelOwner", "as model owner"),
                ("asTreasury", "as treasury"),
            ] {
                if e[k].as_str().is_some_and(|v| v != "0") {
                    parts.push(format!("{what}: {} OPEN", open(&e[k])));
                }
            }
            format!(
                "{who} earned {} OPEN from attribution{}\n",
                open(&e["earned"]),
                if parts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", parts.join("; "))
                }
            )
        }
        None => {
            "(no attribution API known: pass --http-url for earned totals; the chain only)\n".into()
        }
    };
    let line = |claimable: U256, pending: (U256, u64)| {
        let mut s = format!(
            "{who} can claim {claimable} wei ({} OPEN)",
            openledger_protocol::format_open(claimable)
        );
        if !pending.0.is_zero() {
            s += &format!(
                "; {} OPEN more is pending until {} (unix seconds: the end of the challenge window of its batches)",
                openledger_protocol::format_open(pending.0),
                pending.1
            );
        }
        s
    };
    human += &line(claimable, pending);
    let mut out = serde_json::json!({
        "account": who,
        "earned": earned,
        "claimable": claimable.to_string(),
        "pending": pending.0.to_string(),
        "pendingUntil": pending.1,
    });
    if !a.claim {
        emit(human, out);
        return Ok(());
    }
    if who != signer.address() {
        return Err(eyre!(
            "--claim pays the acting account; drop the address or act as it"
        ));
    }
    if claimable.is_zero()
        && !pending.0.is_zero()
        && let Some(secs) = a.wait
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while claimable.is_zero() && !pending.0.is_zero() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            (claimable, pending) = claimable_and_pending(&settlement, who).await?;
        }
        human += &format!("\nafter waiting: {}", line(claimable, pending));
        out["claimable"] = serde_json::json!(claimable.to_string());
        out["pending"] = serde_json::json!(pending.0.to_string());
        out["pendingUntil"] = serde_json::json!(pending.1);
    }
    if claimable.is_zero() {
        human += if pending.0.is_zero() {
            "\nnothing to claim"
        } else {
            "\nnothing to claim yet (pass --wait SECS to wait for the pending credits)"
        };
        out["claimed"] = serde_json::json!("0");
        emit(human, out);
        return Ok(());
    }
    let tx = crate::endpoints::send(settlement.claim(), "claim").await?;
    human += &format!("\nclaimed {claimable} wei (tx {tx})");
    out["claimed"] = serde_json::json!(claimable.to_string());
    out["tx"] = serde_json::json!(tx);
    emit(human, out);
    Ok(())
}

/// What `who` can claim now, and its pending credits with the time the last of them is final
/// (by the wall clock: see `openledger_protocol::fees::Credits`).
async fn claimable_and_pending(
    settlement: &AttributionSettlement::AttributionSettlementInstance<
        alloy::providers::DynProvider,
    >,
    who: Address,
) -> Result<(U256, (U256, u64))> {
    let claimable = settlement.claimable(who).call().await?;
    let p = settlement.pendingOf(who).call().await?;
    let c = openledger_protocol::fees::Credits::at(
        claimable,
        p.amount,
        p.finalAt,
        openledger_datanet::auth::now(),
    );
    Ok((c.claimable, (c.pending, c.pending_until)))
}

/// `openledger bench attribution` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchAttributionArgs {
    /// Corpus tokens of the speed run (100M per the issue; less where memory or time is short).
    #[arg(long, default_value_t = 100_000_000)]
    tokens: usize,
    /// Training examples of the influence timing.
    #[arg(long, default_value_t = 10_000)]
    examples: usize,
    /// Base model directory (default: the cached `small` demo model, made on first use).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Contributors of the planted-facts Datanet (1 to 24: each owns some of the base world's
    /// 24 people).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=24))]
    contributors: u16,
    /// Training epochs of the quality run.
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    /// Peak learning rate of the quality run.
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
    /// Skip the quality run.
    #[arg(long)]
    no_quality: bool,
    /// Skip the speed run.
    #[arg(long)]
    no_speed: bool,
    /// JSON report.
    #[arg(long, default_value = "bench-out/attribution.json")]
    out: PathBuf,
}

/// Runs the attribution benchmarks, prints tables and writes the JSON report.
pub async fn bench(a: BenchAttributionArgs) -> Result<()> {
    use openledger_bench::attribution::{self as bench, QualityOpts, SpeedOpts};
    let mut report = serde_json::Map::new();
    if !a.no_speed {
        let o = SpeedOpts {
            tokens: a.tokens,
            examples: a.examples,
            ..SpeedOpts::default()
        };
        let r = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir()?;
            bench::speed(dir.path(), &o, |l| eprintln!("speed: {l}")).map_err(|e| eyre!("{e}"))
        })
        .await??;
        println!(
            "\nspeed ({} tokens, {} rows, one core)",
            r.opts.tokens, r.rows
        );
        println!("{:<48} {:>14} {:>10}", "measure", "value", "target");
        let row = |m: &str, v: String, t: &str| println!("{m:<48} {v:>14} {t:>10}");
        row(
            "index build, tokens/s",
            format!("{:.0}", r.build_tokens_per_sec),
            "",
        );
        row("index build, s", format!("{:.1}", r.build_secs), "");
        row(
            "index bytes/token",
            format!("{:.2}", r.bytes_per_token),
            "≤ 7",
        );
        row(
            &format!(
                "span attribution, {}-token answer, median ms",
                r.opts.answer_len
            ),
            format!("{:.2}", r.span_ms_median),
            "≤ 50",
        );
        row(
            "span attribution, max ms",
            format!("{:.2}", r.span_ms_max),
            "",
        );
        row(
            "baseline: count every 8-gram of the answer, ms",
            format!("{:.2}", r.baseline_ngram_count_ms),
            "",
        );
        row(
            &format!("influence cosine, {} examples, ms", r.opts.examples),
            format!("{:.2}", r.influence_cosine_ms),
            "≤ 200",
        );
        row(
            &format!("influence DataInf, {} examples, ms", r.opts.examples),
            format!("{:.2}", r.influence_datainf_ms),
            "≤ 200",
        );
        row(
            "baseline: raw inner products, ms",
            format!("{:.2}", r.baseline_dot_ms),
            "",
        );
        report.insert("speed".into(), serde_json::to_value(&r)?);
    }
    if !a.no_quality {
        let base = a
            .base
            .clone()
            .unwrap_or_else(openledger_devnet::demo::default_base_model);
        let o = QualityOpts {
            contributors: usize::from(a.contributors),
            epochs: a.epochs,
            learning_rate: a.lr,
            ..QualityOpts::default()
        };
        let r = tokio::task::spawn_blocking(move || {
            openledger_devnet::demo::ensure_base_model(&base, |l| eprintln!("{l}"))
                .map_err(|e| eyre!("{e}"))?;
            bench::quality(&base, &o, |l| eprintln!("quality: {l}")).map_err(|e| eyre!("{e}"))
        })
        .await??;
        println!(
            "\nquality ({} contributors × {} facts, {} training examples, {:.0} s training; {}/{} answers reproduce their fact; answer gradient {:.1} ms)",
            r.opts.contributors,
            r.opts.facts,
            r.examples,
            r.train_secs,
            r.reproduced,
            r.facts,
            r.query_gradient_ms
        );
        println!(
            "{:<34} {:>7} {:>7} {:>7} {:>7}",
            "method", "queries", "top-1", "p@3", "AUC"
        );
        for m in &r.methods {
            println!(
                "{:<34} {:>7} {:>7.3} {:>7.3} {:>7.3}",
                m.method, m.queries, m.top1, m.precision_at3, m.auc
            );
        }
        report.insert("quality".into(), serde_json::to_value(&r)?);
    }
    if let Some(p) = a.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&report)?)?;
    println!("\nwrote {}", a.out.display());
    Ok(())
}
