//! `openledger bench chain`: pre-signed plain and ERC-20 transfers sent through
//! `eth_sendRawTransaction` from concurrent connections, measured from first send to the last
//! transaction's inclusion, against our node (durable storage) and anvil in the same run.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use eyre::{Context, bail, eyre};
use openledger_chain::DevAccount;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `openledger bench chain`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Transactions per workload (plain transfers, then ERC-20 transfers).
    #[arg(long, default_value_t = 4000)]
    pub n: usize,
    /// Distinct sending accounts.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Concurrent HTTP connections sending.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Block gas limit for both chains. At 30M a 1 s block holds at most 1,428 transfers and
    /// both chains are bound by the gas limit, not by their speed.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub gas_limit: u64,
    /// Block interval in milliseconds for both chains.
    #[arg(long, default_value_t = 1000)]
    pub block_time: u64,
    /// anvil binary (default: contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil).
    #[arg(long, env = "ANVIL")]
    pub anvil: Option<PathBuf>,
    /// Skip the anvil baseline.
    #[arg(long)]
    pub skip_anvil: bool,
    /// JSON report path.
    #[arg(long, default_value = "bench-out/chain.json")]
    pub out: PathBuf,
}

struct Target {
    name: &'static str,
    url: String,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> eyre::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_ours(a: &BenchArgs) -> eyre::Result<Target> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "node",
            "--port",
            "0",
            "--block-time",
            &a.block_time.to_string(),
        ])
        .args([
            "--accounts",
            &(a.senders + 1).to_string(),
            "--gas-limit",
            &a.gas_limit.to_string(),
            "--datadir",
        ])
        .arg(dir.path())
        .env("OPENLEDGER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| eyre!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().ok_or_else(|| eyre!("node exited"))??;
        if let Some(addr) = line.strip_prefix("Listening on ") {
            break format!("http://{}", addr.trim());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Target {
        name: "openledger",
        url,
        child,
        _dir: Some(dir),
    })
}

fn anvil_path(a: &BenchArgs) -> Option<PathBuf> {
    if let Some(p) = &a.anvil {
        return Some(p.clone());
    }
    let p = PathBuf::from("contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    p.exists().then_some(p)
}

async fn start_anvil(a: &BenchArgs, path: &PathBuf) -> eyre::Result<Target> {
    let port = free_port()?;
    let secs = (a.block_time as f64 / 1000.0).to_string();
    let child = Command::new(path)
        .args([
            "--port",
            &port.to_string(),
            "--block-time",
            &secs,
            "--chain-id",
            "1337",
        ])
        .args([
            "--accounts",
            &(a.senders + 1).to_string(),
            "--silent",
            "--hardfork",
            "prague",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let t = Target {
        name: "anvil",
        url,
        child,
        _dir: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while rpc(&reqwest::Client::new(), &t.url, "eth_chainId", json!([]))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("anvil did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(t)
}

async fn rpc(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> eyre::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let v: Value = client.post(url).json(&body).send().await?.json().await?;
    if let Some(e) = v.get("error") {
        bail!("{method}: {e}");
    }
    Ok(v.get("result").cloned().unwrap_or(Value::Null))
}

fn hex_u64(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default()
}

fn sign(
    acct: &DevAccount,
    nonce: u64,
    to: Address,
    value: U256,
    input: Vec<u8>,
    gas: u64,
) -> eyre::Result<(B256, Bytes)> {
    let tx = TxEip1559 {
        chain_id: 1337,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 50_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value,
        input: input.into(),
        ..Default::default()
    };
    let sig = acct.signer.sign_hash_sync(&tx.signature_hash())?;
    let env: TxEnvelope = tx.into_signed(sig).into();
    Ok((*env.tx_hash(), env.encoded_2718().into()))
}

async fn wait_receipt(client: &reqwest::Client, url: &str, h: B256) -> eyre::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rpc(client, url, "eth_getTransactionReceipt", json!([h])).await?;
        if !r.is_null() {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!("no receipt for {h}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Results of one workload on one target.
#[derive(Debug, serde::Serialize)]
struct Run {
    target: String,
    workload: String,
    txs: usize,
    seconds: f64,
    tx_per_s: f64,
    mgas_per_s: f64,
    accept_tx_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn workload(
    t: &Target,
    workload: &str,
    txs: Vec<Vec<(B256, Bytes)>>,
    connections: usize,
) -> eyre::Result<Run> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections * 2)
        .build()?;
    let total: usize = txs.iter().map(|v| v.len()).sum();
    let start_block = hex_u64(&rpc(&client, &t.url, "eth_blockNumber", json!([])).await?);
    // Group senders' streams onto connections so each sender's nonces arrive in order.
    // Request bodies are serialised before the clock starts: the client should cost as little
    // as possible so the chains, not the load generator, set the pace.
    let mut lanes: Vec<Vec<(B256, String)>> = vec![Vec::new(); connections];
    for (i, s) in txs.into_iter().enumerate() {
        lanes[i % connections].extend(s.into_iter().map(|(h, raw)| {
            (h, json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}).to_string())
        }));
    }
    let sent_at: Arc<parking_lot_free::Map> = Arc::new(parking_lot_free::Map::default());
    let started = Instant::now();
    let mut handles = vec![];
    for lane in lanes {
        let client = client.clone();
        let url = t.url.clone();
        let sent_at = sent_at.clone();
        handles.push(tokio::spawn(async move {
            for (h, body) in lane {
                sent_at.insert(h, started.elapsed());
                let v: Value = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .json()
                    .await?;
                if let Some(e) = v.get("error") {
                    bail!("eth_sendRawTransaction: {e}");
                }
            }
            Ok::<_, eyre::Report>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let accepted = started.elapsed();
    // Follow blocks until every transaction is included.
    let sent = sent_at.take();
    let mut included: HashMap<B256, Duration> = HashMap::new();
    let mut next = start_block + 1;
    let mut gas = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while included.len() < total {
        if Instant::now() > deadline {
            bail!(
                "{}: only {} of {total} transactions included after 300 s",
                t.name,
                included.len()
            );
        }
        let head = hex_u64(&rpc(&client, &t.url, "eth_blockNumber", json!([])).await?);
        while next <= head {
            let b = rpc(
                &client,
                &t.url,
                "eth_getBlockByNumber",
                json!([format!("{next:#x}"), false]),
            )
            .await?;
            let now = started.elapsed();
            gas += hex_u64(&b["gasUsed"]);
            for h in b["transactions"].as_array().into_iter().flatten() {
                if let Ok(h) = serde_json::from_value::<B256>(h.clone())
                    && sent.contains_key(&h)
                {
                    included.insert(h, now);
                }
            }
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = included.values().max().copied().unwrap_or_default();
    let mut lat: Vec<f64> = included
        .iter()
        .map(|(h, t)| {
            t.saturating_sub(sent.get(h).copied().unwrap_or_default())
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let secs = end.as_secs_f64();
    Ok(Run {
        target: t.name.into(),
        workload: workload.into(),
        txs: total,
        seconds: secs,
        tx_per_s: total as f64 / secs,
        mgas_per_s: gas as f64 / secs / 1e6,
        accept_tx_per_s: total as f64 / accepted.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// A tiny mutex-protected map (std only), so the bench needs no extra dependency.
mod parking_lot_free {
    use alloy_primitives::B256;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    pub struct Map(Mutex<HashMap<B256, Duration>>);

    impl Map {
        pub fn insert(&self, k: B256, v: Duration) {
            if let Ok(mut m) = self.0.lock() {
                m.insert(k, v);
            }
        }
        pub fn take(&self) -> HashMap<B256, Duration> {
            self.0
                .lock()
                .map(|mut m| std::mem::take(&mut *m))
                .unwrap_or_default()
        }
    }
}

async fn bench_target(
    t: &Target,
    a: &BenchArgs,
    accounts: &[DevAccount],
) -> eyre::Result<Vec<Run>> {
    let client = reqwest::Client::new();
    let deployer = &accounts[0];
    let senders = &accounts[1..];
    // Deploy BenchToken and fund each sender with tokens.
    let art: Value = serde_json::from_str(
        &std::fs::read_to_string("contracts/out/BenchToken.json")
            .context("reading contracts/out/BenchToken.json (run from the repository root)")?,
    )?;
    let mut code: Vec<u8> =
        alloy_primitives::hex::decode(art["bytecode"].as_str().unwrap_or_default())?;
    code.extend_from_slice(&U256::from(10u128.pow(30)).to_be_bytes::<32>());
    let tx = TxEip1559 {
        chain_id: 1337,
        nonce: hex_u64(
            &rpc(
                &client,
                &t.url,
                "eth_getTransactionCount",
                json!([deployer.address, "latest"]),
            )
            .await?,
        ),
        gas_limit: 3_000_000,
        max_fee_per_gas: 50_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Create,
        input: code.into(),
        ..Default::default()
    };
    let nonce0 = tx.nonce;
    let sig = deployer.signer.sign_hash_sync(&tx.signature_hash())?;
    let env: TxEnvelope = tx.into_signed(sig).into();
    let h = *env.tx_hash();
    rpc(
        &client,
        &t.url,
        "eth_sendRawTransaction",
        json!([Bytes::from(env.encoded_2718())]),
    )
    .await?;
    let r = wait_receipt(&client, &t.url, h).await?;
    let token: Address = serde_json::from_value(r["contractAddress"].clone())?;
    let transfer = |to: Address, amount: U256| {
        let mut d = vec![0xa9, 0x05, 0x9c, 0xbb];
        d.extend_from_slice(to.into_word().as_slice());
        d.extend_from_slice(&amount.to_be_bytes::<32>());
        d
    };
    let mut last = B256::ZERO;
    for (i, s) in senders.iter().enumerate() {
        let (h, raw) = sign(
            deployer,
            nonce0 + 1 + i as u64,
            token,
            U256::ZERO,
            transfer(s.address, U256::from(10u128.pow(24))),
            100_000,
        )?;
        rpc(&client, &t.url, "eth_sendRawTransaction", json!([raw])).await?;
        last = h;
    }
    wait_receipt(&client, &t.url, last).await?;
    let mut nonces = vec![];
    for s in senders {
        nonces.push(hex_u64(
            &rpc(
                &client,
                &t.url,
                "eth_getTransactionCount",
                json!([s.address, "latest"]),
            )
            .await?,
        ));
    }
    let per = a.n.div_ceil(senders.len());
    let mut plain = vec![];
    let mut erc20 = vec![];
    for (k, s) in senders.iter().enumerate() {
        let mut p = vec![];
        let mut e = vec![];
        for j in 0..per {
            if k * per + j >= a.n {
                break;
            }
            let to = Address::repeat_byte((j % 200) as u8 + 0x20);
            p.push(sign(
                s,
                nonces[k] + j as u64,
                to,
                U256::from(1),
                vec![],
                21_000,
            )?);
            e.push(sign(
                s,
                nonces[k] + (per + j) as u64,
                token,
                U256::ZERO,
                transfer(to, U256::from(1)),
                60_000,
            )?);
        }
        plain.push(p);
        erc20.push(e);
    }
    let r1 = workload(t, "plain transfer", plain, a.connections).await?;
    let r2 = workload(t, "ERC-20 transfer", erc20, a.connections).await?;
    Ok(vec![r1, r2])
}

/// Runs the benchmark and writes the report.
pub async fn run(a: BenchArgs) -> eyre::Result<()> {
    if a.senders == 0 || a.n == 0 || a.connections == 0 {
        bail!("--n, --senders and --connections must be positive");
    }
    let accounts = openledger_chain::dev_accounts(a.senders + 1)?;
    let mut runs = vec![];
    eprintln!(
        "signing {} transactions and running against openledger (durable, {} ms blocks)…",
        2 * a.n,
        a.block_time
    );
    let ours = start_ours(&a)?;
    runs.extend(bench_target(&ours, &a, &accounts).await?);
    drop(ours);
    let mut anvil_note = None;
    if !a.skip_anvil {
        match anvil_path(&a) {
            Some(path) => {
                eprintln!(
                    "running the same workload against anvil ({})…",
                    path.display()
                );
                let t = start_anvil(&a, &path).await?;
                runs.extend(bench_target(&t, &a, &accounts).await?);
            }
            None => {
                let m = "anvil not found: run `(cd contracts && npm ci)` or pass --anvil PATH"
                    .to_string();
                eprintln!("{m}");
                anvil_note = Some(m);
            }
        }
    }
    println!(
        "\n{:<12} {:<16} {:>7} {:>8} {:>9} {:>8} {:>10} {:>9} {:>9}",
        "target", "workload", "txs", "secs", "tx/s", "Mgas/s", "accept/s", "p50 ms", "p99 ms"
    );
    for r in &runs {
        println!(
            "{:<12} {:<16} {:>7} {:>8.2} {:>9.0} {:>8.2} {:>10.0} {:>9.0} {:>9.0}",
            r.target,
            r.workload,
            r.txs,
            r.seconds,
            r.tx_per_s,
            r.mgas_per_s,
            r.accept_tx_per_s,
            r.p50_ms,
            r.p99_ms
        );
    }
    let mut ratios = serde_json::Map::new();
    for w in ["plain transfer", "ERC-20 transfer"] {
        let ours = runs
            .iter()
            .find(|r| r.target == "openledger" && r.workload == w);
        let base = runs.iter().find(|r| r.target == "anvil" && r.workload == w);
        if let (Some(o), Some(b)) = (ours, base) {
            let ratio = o.tx_per_s / b.tx_per_s;
            println!("{w}: openledger / anvil end-to-end tx/s = {ratio:.2}x");
            ratios.insert(w.to_string(), json!(ratio));
        }
    }
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = json!({
        "benchmark": "chain",
        "n": a.n, "senders": a.senders, "connections": a.connections, "block_time_ms": a.block_time,
        "gas_limit": a.gas_limit,
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "runs": runs, "ratio_vs_anvil": ratios, "note": anvil_note,
    });
    std::fs::write(&a.out, serde_json::to_string_pretty(&report)?)?;
    println!("report written to {}", a.out.display());
    Ok(())
}
