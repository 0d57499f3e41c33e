//! `openledger devnet`, `node`, `chain verify` and `bench chain`.

use alloy_primitives::Address;
use clap::{Args, Subcommand};
use eyre::{Context, bail};
use openledger_chain::{
    ChainSpec, DevPreset, Node, NodeConfig, PoolConfig, SealMode, dev_accounts,
};
use openledger_rpc::{RpcConfig, RpcState};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags shared by `node` and `devnet`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Interface to listen on.
    #[arg(long, env = "OPENLEDGER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// JSON-RPC port (HTTP and WebSocket); 0 picks a free port.
    #[arg(long, env = "OPENLEDGER_PORT", default_value_t = 8545)]
    pub port: u16,
    /// Data directory.
    #[arg(long, env = "OPENLEDGER_DATADIR")]
    pub datadir: Option<PathBuf>,
    /// Block interval in milliseconds; 0 seals a block as soon as transactions wait.
    #[arg(long, env = "OPENLEDGER_BLOCK_TIME")]
    pub block_time: Option<u64>,
    /// Number of funded dev accounts (dev preset).
    #[arg(long, env = "OPENLEDGER_ACCOUNTS", default_value_t = 10)]
    pub accounts: usize,
    /// Chain id (dev preset).
    #[arg(long, env = "OPENLEDGER_CHAIN_ID", default_value_t = openledger_protocol::DEV_CHAIN_ID)]
    pub chain_id: u64,
    /// Recipient of priority fees (block beneficiary).
    #[arg(long, env = "OPENLEDGER_FEE_RECIPIENT", default_value_t = Address::ZERO)]
    pub fee_recipient: Address,
    /// Treasury credited with base fees (dev preset); burned when absent.
    #[arg(long, env = "OPENLEDGER_TREASURY")]
    pub treasury: Option<Address>,
    /// Block gas limit (dev preset).
    #[arg(long, env = "OPENLEDGER_GAS_LIMIT", default_value_t = 30_000_000)]
    pub gas_limit: u64,
    /// Largest JSON-RPC request body in bytes.
    #[arg(long, env = "OPENLEDGER_RPC_MAX_BODY", default_value_t = 5 * 1024 * 1024)]
    pub rpc_max_body: usize,
    /// Most requests in a JSON-RPC batch.
    #[arg(long, env = "OPENLEDGER_RPC_MAX_BATCH", default_value_t = 1000)]
    pub rpc_max_batch: usize,
    /// Gas cap of eth_call and eth_estimateGas.
    #[arg(long, env = "OPENLEDGER_RPC_GAS_CAP", default_value_t = 50_000_000)]
    pub rpc_gas_cap: u64,
    /// Widest block range of eth_getLogs.
    #[arg(long, env = "OPENLEDGER_RPC_MAX_LOG_RANGE", default_value_t = 100_000)]
    pub rpc_max_log_range: u64,
    /// Most logs returned by eth_getLogs.
    #[arg(long, env = "OPENLEDGER_RPC_MAX_LOGS", default_value_t = 20_000)]
    pub rpc_max_logs: usize,
    /// Time limit of eth_call / eth_estimateGas (and of all the calls of one batch together),
    /// e.g. 5s or 500ms; execution is stopped when it is reached.
    #[arg(long, env = "OPENLEDGER_RPC_CALL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub rpc_call_timeout: Duration,
}

/// `500ms`, `5s` or plain seconds (`2.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 5s, 500ms)"))?;
    Duration::try_from_secs_f64(v * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive duration"))
}

impl CommonArgs {
    fn rpc_config(&self) -> RpcConfig {
        RpcConfig {
            max_body_bytes: self.rpc_max_body,
            max_batch: self.rpc_max_batch,
            gas_cap: self.rpc_gas_cap,
            max_log_range: self.rpc_max_log_range,
            max_logs: self.rpc_max_logs,
            call_timeout: self.rpc_call_timeout,
            ..Default::default()
        }
    }

    fn seal_mode(&self, default_ms: u64) -> SealMode {
        match self.block_time.unwrap_or(default_ms) {
            0 => SealMode::OnDemand,
            ms => SealMode::Interval(Duration::from_millis(ms)),
        }
    }

    fn dev_preset(&self) -> DevPreset {
        DevPreset {
            accounts: self.accounts,
            chain_id: self.chain_id,
            gas_limit: self.gas_limit,
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            base_fee_recipient: self.treasury,
            ..Default::default()
        }
    }
}

/// `openledger devnet`.
#[derive(Args, Debug)]
pub struct DevnetArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Protocol settings for the genesis predeploy (governance periods, fee split, attributors),
    /// in the format of contracts/deployments/dev-config.json.
    #[arg(long, env = "OPENLEDGER_CONTRACTS_CONFIG")]
    pub contracts_config: Option<PathBuf>,
    /// Datanet uploads that a killed process left half-written for longer than this many
    /// seconds are removed at start.
    #[arg(long, env = "OPENLEDGER_STAGING_GRACE_SECS", default_value_t = 600)]
    pub staging_grace_secs: u64,
    /// Port of the web UI and the service APIs (`/api/...`, `/v1/...`, `/rpc`) on --host.
    #[arg(long, env = "OPENLEDGER_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Prepare the demo: make the `small` base model if missing (once, cached), seed demo
    /// Datanets from several dev accounts and publish a demo adapter, so you can chat at once.
    #[arg(long, env = "OPENLEDGER_DEMO")]
    pub demo: bool,
    /// Base model directory for training, serving and attribution (default with --demo: the
    /// cached `small` model).
    #[arg(long, env = "OPENLEDGER_BASE_MODEL")]
    pub base: Option<PathBuf>,
    /// Requests per second one client (IP address) may send to the HTTP origin, sustained;
    /// above it (and its burst) requests get 429 with Retry-After.
    #[arg(long, env = "OPENLEDGER_HTTP_RATE", default_value_t = 200.0)]
    pub http_rate: f64,
    /// Requests one client may send at once above --http-rate.
    #[arg(long, env = "OPENLEDGER_HTTP_BURST", default_value_t = 400)]
    pub http_burst: u32,
    /// Requests one client may have in flight on the HTTP origin.
    #[arg(long, env = "OPENLEDGER_HTTP_MAX_IN_FLIGHT", default_value_t = 64)]
    pub http_max_in_flight: u32,
    /// Seconds a request to the HTTP origin may take to answer (408 after).
    #[arg(long, env = "OPENLEDGER_HTTP_TIMEOUT", default_value_t = 120)]
    pub http_timeout: u64,
}

/// `openledger node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// geth-style genesis.json; without it the `dev` preset is used.
    #[arg(long, env = "OPENLEDGER_GENESIS")]
    pub genesis: Option<PathBuf>,
}

/// `openledger contracts ...`.
#[derive(Subcommand, Debug)]
pub enum ContractsCmd {
    /// Deploy and wire the protocol contracts on any EVM chain.
    Deploy {
        /// JSON-RPC URL of the chain.
        #[arg(long, env = "OPENLEDGER_RPC_URL")]
        rpc_url: String,
        /// Private key of the deploying account (0x-hex).
        #[arg(long, env = "OPENLEDGER_PRIVATE_KEY", hide_env_values = true)]
        private_key: String,
        /// Deployment configuration JSON (format of contracts/deployments/dev-config.json).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to write the deployments JSON.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the dev genesis deployments (what `devnet` predeploys) as JSON.
    DevGenesis,
}

/// `openledger chain ...`.
#[derive(Subcommand, Debug)]
pub enum ChainCmd {
    /// Re-execute every stored block from genesis and check every block hash and state root.
    Verify {
        /// Data directory of a stopped node.
        #[arg(long)]
        datadir: PathBuf,
    },
}

/// `openledger bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Throughput of eth_sendRawTransaction to receipt, against anvil in the same run.
    Chain(crate::cmd_chain::bench::BenchArgs),
    /// OpenLoRA serving: S-LoRA-style workload, 1 to 1,000 adapters, against one-adapter and naive baselines.
    Serve(crate::cmd_serve::BenchServeArgs),
    /// Proof of Attribution: planted-facts quality per method, index/span/influence speed.
    Attribution(crate::cmd_attribution::BenchAttributionArgs),
    /// Training tokens/s of the LoRA trainer (batched) against unbatched forward/backward.
    Train(crate::cmd_train::BenchTrainArgs),
}

pub mod bench;

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn run(
    node: Arc<Node>,
    common: &CommonArgs,
    banner: impl FnOnce(&std::net::SocketAddr),
) -> eyre::Result<()> {
    let addr = format!("{}:{}", common.host, common.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    banner(&local);
    println!("Listening on {local}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sealer = {
        let mut rx = stop_rx.clone();
        tokio::spawn(node.clone().run_sealer(async move {
            let _ = rx.changed().await;
        }))
    };
    let rpc = RpcState::new(node.clone(), common.rpc_config());
    let mut rx = stop_rx.clone();
    let server = tokio::spawn(openledger_rpc::serve(rpc, listener, async move {
        let _ = rx.changed().await;
    }));
    // The sealer only returns early when it gave up: then exit non-zero, never serve a dead chain.
    let halted = tokio::select! {
        _ = shutdown_signal() => None,
        _ = &mut sealer => Some(node.halted().unwrap_or_else(|| "the block sealer stopped".into())),
    };
    eprintln!("shutting down");
    let _ = stop_tx.send(true);
    if halted.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(5), sealer).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    drop(node);
    match halted {
        Some(reason) => bail!("node halted: {reason}"),
        None => Ok(()),
    }
}

fn print_accounts(accounts: &[openledger_chain::DevAccount], balance: u64) {
    println!("\nAvailable accounts\n==================");
    for (i, a) in accounts.iter().enumerate() {
        println!("({i}) {} ({balance} OPEN)", a.address);
    }
    println!("\nPrivate keys\n==================");
    for (i, a) in accounts.iter().enumerate() {
        println!(
            "({i}) 0x{}",
            alloy_primitives::hex::encode(a.signer.to_bytes())
        );
    }
    println!(
        "\nMnemonic: {}\nDerivation path: m/44'/60'/0'/0/i\n",
        openledger_protocol::DEV_MNEMONIC
    );
}

/// Runs `openledger devnet`.
pub async fn devnet(a: DevnetArgs) -> eyre::Result<()> {
    let c = a.common;
    let contracts = match &a.contracts_config {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("invalid contracts config {}", p.display()))?,
        None => openledger_protocol::DeployConfig::dev(),
    };
    let addr: std::net::SocketAddr = format!("{}:{}", c.host, c.port)
        .parse()
        .with_context(|| format!("invalid --host/--port {}:{}", c.host, c.port))?;
    let http_addr: std::net::SocketAddr = format!("{}:{}", c.host, a.http_port)
        .parse()
        .with_context(|| format!("invalid --host/--http-port {}:{}", c.host, a.http_port))?;
    let devnet_cfg = openledger_devnet::DevnetConfig {
        // absolute, so that what the devnet tells other commands (GET /api/devnet) holds from
        // any directory
        datadir: c.datadir.as_deref().map(std::path::absolute).transpose()?,
        rpc_addr: addr,
        http_addr: Some(http_addr),
        seal: c.seal_mode(0),
        accounts: c.accounts,
        chain_id: c.chain_id,
        gas_limit: c.gas_limit,
        base_fee_recipient: c.treasury,
        fee_recipient: c.fee_recipient,
        rpc: c.rpc_config(),
        contracts,
        genesis_timestamp: None,
        staging_grace: std::time::Duration::from_secs(a.staging_grace_secs),
        http_limits: openledger_devnet::HttpLimits {
            requests_per_second: a.http_rate,
            burst: a.http_burst,
            max_in_flight: a.http_max_in_flight,
            request_timeout: std::time::Duration::from_secs(a.http_timeout),
        },
    };
    if !(a.http_rate.is_finite() && a.http_rate > 0.0)
        || a.http_burst == 0
        || a.http_max_in_flight == 0
    {
        bail!("--http-rate, --http-burst and --http-max-in-flight must be above zero");
    }
    if let Some(b) = &a.base
        && !b.join("config.json").is_file()
    {
        bail!(
            "--base {}: not a model directory (no config.json); make one with `openledger model init --preset small --out DIR`, or use --demo",
            b.display()
        );
    }
    let stack = openledger_stack::Stack::start(openledger_stack::StackConfig {
        devnet: devnet_cfg,
        base_model: a.base.as_deref().map(std::path::absolute).transpose()?,
        demo: a.demo,
    })
    .await?;
    let devnet = &stack.devnet;
    println!(
        "OpenLedger devnet ({})",
        openledger_protocol::CLIENT_VERSION
    );
    print_accounts(&devnet.accounts, 10_000);
    println!("Protocol contracts (predeployed at genesis)\n==================");
    for (name, address) in devnet.deployments.contracts.iter() {
        println!("{name:<22} {address}");
    }
    println!();
    println!("Chain ID:  {}", devnet.node.chain_id());
    println!(
        "Blocks:    {}",
        match devnet.node.config().seal {
            SealMode::OnDemand => "sealed as soon as transactions arrive".to_string(),
            SealMode::Interval(d) => format!("every {} ms", d.as_millis()),
        }
    );
    println!(
        "Datadir:   {}{}",
        devnet.datadir.display(),
        if devnet.is_temporary() {
            " (temporary, removed on exit)"
        } else {
            ""
        }
    );
    if let Some(url) = devnet.http_url() {
        println!("Web UI:    {url}");
    }
    println!("RPC:       {}", devnet.rpc_url());
    println!("WebSocket: {}", devnet.ws_url());
    let written = write_devnet_file(&devnet.info());
    if let Some(p) = &written {
        println!(
            "Endpoints: {} (every `openledger` command finds this devnet through it)",
            p.display()
        );
    }
    println!("Listening on {}", devnet.rpc_addr);
    if a.demo {
        println!(
            "\nPreparing the demo in the background (progress below; the web UI shows it too)."
        );
        let s = stack.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let st = s.status();
                if let Some(e) = st.error {
                    eprintln!("demo preparation failed: {e}");
                    break;
                }
                if st.demo_ready {
                    if let Some(url) = s.devnet.http_url() {
                        println!("Demo ready: open {url}/playground to chat and see attribution.");
                    }
                    break;
                }
            }
        });
    }
    shutdown_signal().await;
    eprintln!("shutting down");
    if let Some(p) = &written {
        remove_devnet_file(p);
    }
    stack.shutdown().await;
    Ok(())
}

/// Writes the devnet's description where the CLI looks for it
/// ([`openledger_protocol::endpoints::well_known_path`]); a failure is a warning, not fatal
/// (commands then need --rpc-url).
fn write_devnet_file(info: &openledger_protocol::endpoints::DevnetInfo) -> Option<PathBuf> {
    let path = openledger_protocol::endpoints::well_known_path()?;
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
        std::fs::rename(&tmp, &path)
    };
    match write() {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!(
                "warning: could not write {}: {e} (other commands need --rpc-url)",
                path.display()
            );
            None
        }
    }
}

/// Removes the devnet file at exit, unless a later devnet has replaced it.
fn remove_devnet_file(path: &std::path::Path) {
    let ours = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<openledger_protocol::endpoints::DevnetInfo>(&b).ok())
        .is_some_and(|i| i.pid == std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Runs `openledger node`.
pub async fn node(a: NodeArgs) -> eyre::Result<()> {
    let c = a.common;
    let Some(datadir) = c.datadir.clone() else {
        bail!(
            "--datadir (or OPENLEDGER_DATADIR) is required for `node`; use `devnet` for a throw-away chain"
        );
    };
    let (spec, accounts) = match &a.genesis {
        Some(path) => (ChainSpec::from_file(path)?, Vec::new()),
        None => {
            let (spec, _) = c.dev_preset().build()?;
            (spec, dev_accounts(c.accounts)?)
        }
    };
    let node = Node::open(NodeConfig {
        datadir: datadir.clone(),
        spec,
        seal: c.seal_mode(2000),
        fee_recipient: c.fee_recipient,
        pool: PoolConfig::default(),
        dev_accounts: accounts,
        dev_methods: false,
    })?;
    let head = node.head();
    let chain_id = node.chain_id();
    run(node, &c, |addr| {
        println!("OpenLedger node ({})", openledger_protocol::CLIENT_VERSION);
        println!("Chain ID: {chain_id}");
        println!("Head:     block {} {}", head.header.number, head.hash);
        println!("Datadir:  {}", datadir.display());
        println!("RPC:      http://{addr}  ws://{addr}");
    })
    .await
}

/// Runs `openledger chain ...`.
pub async fn chain(cmd: ChainCmd) -> eyre::Result<()> {
    match cmd {
        ChainCmd::Verify { datadir } => {
            let store = openledger_chain::Store::open(&datadir.join("chain.redb"))?;
            let json = store
                .genesis_json()?
                .ok_or_else(|| eyre::eyre!("{} holds no chain", datadir.display()))?;
            let spec = ChainSpec::from_json(&json)?;
            let scratch = tempfile::tempdir()?;
            let started = std::time::Instant::now();
            let n = tokio::task::spawn_blocking(move || {
                openledger_chain::replay_and_verify(&store, &spec, scratch.path())
            })
            .await??;
            let secs = started.elapsed().as_secs_f64();
            crate::endpoints::emit(
                format!(
                    "verified {n} blocks: every block hash and state root reproduced by re-execution ({secs:.1} s)"
                ),
                serde_json::json!({"blocks": n, "ok": true, "secs": secs}),
            );
            Ok(())
        }
    }
}

/// Runs `openledger contracts ...`.
pub async fn contracts(cmd: ContractsCmd) -> eyre::Result<()> {
    use alloy::network::EthereumWallet;
    use alloy::providers::ProviderBuilder;
    match cmd {
        ContractsCmd::Deploy {
            rpc_url,
            private_key,
            config,
            out,
        } => {
            let signer: alloy::signers::local::PrivateKeySigner = private_key
                .trim()
                .parse()
                .map_err(|e| eyre::eyre!("invalid --private-key: {e}"))?;
            let from = signer.address();
            let url = rpc_url
                .parse()
                .with_context(|| format!("invalid --rpc-url {rpc_url}"))?;
            let provider = ProviderBuilder::new()
                .wallet(EthereumWallet::from(signer))
                .connect_http(url);
            let chain_id = alloy::providers::Provider::get_chain_id(&provider)
                .await
                .with_context(|| format!("cannot reach {rpc_url}"))?;
            let explicit = config.is_some();
            let mut cfg: openledger_protocol::DeployConfig = match config {
                Some(p) => serde_json::from_str(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("invalid deployment config {}", p.display()))?,
                // The built-in settings are the devnet's (a 5 s timelock, a 60 s vote, no
                // proposal threshold): only for the devnet's chain id.
                None if chain_id == openledger_protocol::DEV_CHAIN_ID => {
                    openledger_protocol::DeployConfig::dev()
                }
                None => bail!(
                    "chain {chain_id} is not the devnet ({}): pass --config FILE with this deployment's governance periods, fees and attributors (format: contracts/deployments/dev-config.json; the built-in settings are devnet settings)",
                    openledger_protocol::DEV_CHAIN_ID
                ),
            };
            // The bonded attributors default to the deployer, never to a dev account whose key
            // is public (as the JavaScript deployer does).
            if !explicit || cfg.attributors.is_empty() {
                cfg.attributors = vec![from];
            }
            eprintln!(
                "deploying {} contracts from {from} and bonding {} attributor(s) …",
                openledger_protocol::Contract::ALL.len(),
                cfg.attributors.len()
            );
            let d = openledger_protocol::deploy(&provider, from, &cfg).await?;
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&d)? + "\n")?;
            let mut human: Vec<String> = d
                .contracts
                .iter()
                .map(|(name, a)| format!("{name:<22} {a}"))
                .collect();
            human.push(format!("deployments written to {}", out.display()));
            let mut v = serde_json::to_value(&d)?;
            v["out"] = serde_json::json!(out);
            crate::endpoints::emit(human.join("\n"), v);
            Ok(())
        }
        ContractsCmd::DevGenesis => {
            let (mut spec, _) = DevPreset::default().build()?;
            let d =
                openledger_devnet::predeploy(&mut spec, &openledger_protocol::DeployConfig::dev())?;
            println!("{}", serde_json::to_string_pretty(&d)?);
            Ok(())
        }
    }
}

/// Runs `openledger bench ...`.
pub async fn bench(cmd: BenchCmd) -> eyre::Result<()> {
    match cmd {
        BenchCmd::Chain(a) => bench::run(a).await,
        BenchCmd::Serve(a) => crate::cmd_serve::bench_serve(a).await,
        BenchCmd::Attribution(a) => crate::cmd_attribution::bench(a).await,
        BenchCmd::Train(a) => crate::cmd_train::bench(a).await,
    }
}
