//! `openledger attribution ...` (index a Datanet version: `--datanet ID --datanet-version N`;
//! verify a record) and
//! `openledger earnings [--claim]`.

use alloy::network::EthereumWallet;
use alloy::providers::{Provider, ProviderBuilder};
use alloy_primitives::{Address, B256, U256};
use eyre::{Result, WrapErr, eyre};
use openledger_attribution::corpus::{self, RowSource};
use openledger_attribution::index::IndexMeta;
use openledger_attribution::{AttributionConfig, AttributionService};
use openledger_datanet::ContentStore;
use openledger_datanet::client::{dev_signer, progress_bar};
use openledger_protocol::Confirm;
use openledger_protocol::Deployments;
use openledger_protocol::bindings::{AttributionSettlement, DatanetRegistry};
use std::path::PathBuf;

/// Chain and deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct Chain {
    /// JSON-RPC URL of the chain.
    #[arg(
        long,
        env = "OPENLEDGER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    /// Contract addresses (JSON written by `openledger contracts deploy`).
    #[arg(long, default_value = "deployments/dev.json")]
    pub deployments: PathBuf,
}

impl Chain {
    fn deployments(&self) -> Result<Deployments> {
        let b = std::fs::read(&self.deployments)
            .wrap_err_with(|| format!("reading {}", self.deployments.display()))?;
        Ok(serde_json::from_slice(&b)?)
    }
}

/// Attribution commands.
#[derive(Debug, clap::Subcommand)]
pub enum AttributionCmd {
    /// Build the span index of a Datanet version (suffix array over its tokenized rows).
    Index {
        #[command(flatten)]
        chain: Chain,
        /// Datanet id.
        #[arg(long)]
        datanet: u64,
        /// Version.
        #[arg(long = "datanet-version", id = "datanet_version")]
        version: u64,
        /// The base model's tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Content store with the Datanet's manifests and contributions.
        #[arg(long)]
        datanet_store: String,
        /// Output directory.
        #[arg(long, default_value = "attribution-indexes")]
        out: PathBuf,
    },
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
        chain: Chain,
        /// Record id (0x…).
        record: B256,
        /// The attribution service's directory (devnet: `<datadir>/attribution`); its
        /// `records/` store holds the record (and usually the transcript).
        #[arg(long)]
        dir: PathBuf,
        /// Content store with the Datanet data (devnet: `<datadir>/datanets/content`).
        #[arg(
            long,
            required_unless_present = "datanet_api",
            conflicts_with = "datanet_api"
        )]
        datanet_store: Option<String>,
        /// Read the Datanet data over the Datanet HTTP API instead (e.g.
        /// `http://127.0.0.1:8080/api/datanets`), signed by the acting account, which needs a
        /// licence for permissioned Datanets.
        #[arg(long)]
        datanet_api: Option<String>,
        /// Private key of the acting account for `--datanet-api` (hex).
        #[arg(long, env = "OPENLEDGER_PRIVATE_KEY", conflicts_with = "account")]
        private_key: Option<String>,
        /// Dev account index of the acting account for `--datanet-api`.
        #[arg(long)]
        account: Option<u32>,
        /// The base model's tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Models content store (adapters, training manifests, sketches; devnet:
        /// `<datadir>/models`): needed to recompute the influence method.
        #[arg(long)]
        models_store: Option<String>,
        /// Base model directory (default: the tokenizer's directory).
        #[arg(long)]
        base: Option<PathBuf>,
        /// The transcript as JSON `{"prompt": [ids], "answer": [ids]}`.
        #[arg(long)]
        transcript: Option<PathBuf>,
    },
}

/// `openledger earnings` arguments.
#[derive(Debug, clap::Args)]
pub struct EarningsArgs {
    #[command(flatten)]
    chain: Chain,
    /// Account to show (defaults to the acting account).
    address: Option<Address>,
    /// Attribution API base URL (for earned totals); claimable balances come from the chain.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Send `claim()` for the acting account.
    #[arg(long)]
    claim: bool,
    /// Private key of the acting account (hex).
    #[arg(long, env = "OPENLEDGER_PRIVATE_KEY", conflicts_with = "account")]
    private_key: Option<String>,
    /// Dev account index of the acting account.
    #[arg(long, default_value_t = 0)]
    account: u32,
}

/// Runs an attribution command.
pub async fn run(cmd: AttributionCmd) -> Result<()> {
    match cmd {
        AttributionCmd::Index {
            chain,
            datanet,
            version,
            tokenizer,
            datanet_store,
            out,
        } => {
            let d = chain.deployments()?;
            let provider = ProviderBuilder::new()
                .connect_http(chain.rpc_url.parse()?)
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
            println!(
                "{}: {} tokens, {} rows, {:.2} bytes/token, {:.1} s",
                path.display(),
                ix.token_count(),
                ix.doc_count(),
                ix.file_size() as f64 / ix.token_count().max(1) as f64,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        AttributionCmd::Verify {
            chain,
            record,
            dir,
            datanet_store,
            datanet_api,
            private_key,
            account,
            tokenizer,
            models_store,
            base,
            transcript,
        } => {
            let d = chain.deployments()?;
            let mut cfg =
                AttributionConfig::new(&chain.rpc_url, &d, dir, datanet_store.unwrap_or_default());
            cfg.tokenizer = Some(tokenizer);
            cfg.models_store = models_store;
            cfg.base_model = base;
            if let Some(api) = datanet_api {
                let signer = match &private_key {
                    Some(k) => k.trim().parse().wrap_err("bad --private-key")?,
                    None => dev_signer(account.unwrap_or(0))?,
                };
                cfg.datanet_api = Some((api, signer));
            }
            let svc = AttributionService::open(cfg).await?;
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
            for m in &rep.matched {
                println!("match     {m}");
            }
            for m in &rep.mismatched {
                println!("MISMATCH  {m}");
            }
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
    let d = a.chain.deployments()?;
    let signer = match &a.private_key {
        Some(k) => k.trim().parse().wrap_err("bad --private-key")?,
        None => dev_signer(a.account)?,
    };
    let who = a.address.unwrap_or(signer.address());
    // nonce read per transaction (a failed call must not leave a nonce gap)
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_http(a.chain.rpc_url.parse()?)
        .erased();
    let settlement = AttributionSettlement::new(d.contracts.settlement, provider.clone());
    let url = format!("{}/api/earnings/{who}", a.api.trim_end_matches('/'));
    match reqwest::get(&url).await {
        Ok(r) if r.status().is_success() => {
            println!(
                "{}",
                serde_json::to_string_pretty(&r.json::<serde_json::Value>().await?)?
            )
        }
        _ => println!("(no attribution API at {url}; showing the chain only)"),
    }
    let claimable = settlement.balanceOf(who).call().await?;
    println!("claimable: {claimable} wei");
    if a.claim {
        if who != signer.address() {
            return Err(eyre!(
                "--claim pays the acting account; drop the address or act as it"
            ));
        }
        if claimable.is_zero() {
            return Err(eyre!("nothing to claim"));
        }
        let r = settlement.claim().send().await?.confirm().await?;
        if !r.status() {
            return Err(eyre!("claim reverted"));
        }
        println!("claimed {claimable} wei in {}", r.transaction_hash);
    }
    Ok(())
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
