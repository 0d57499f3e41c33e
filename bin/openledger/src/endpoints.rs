//! How every command finds the chain, the services, the contracts and the stores, and who
//! acts. One resolution for all of them, in this order:
//!
//! 1. a flag (`--rpc-url`, `--datanet-api`, `--http-url`, `--deployments`) or its
//!    `OPENLEDGER_*` variable;
//! 2. the running devnet: the RPC URL from the file `openledger devnet` writes
//!    (`$OPENLEDGER_HOME/devnet.json`, default `~/.openledger/devnet.json`), everything else
//!    from the devnet itself (`GET <rpc-url>/api/devnet`);
//! 3. defaults: `http://127.0.0.1:8545`, `<rpc-url>/api/datanets`, and the built-in dev
//!    contract addresses, only on chain 1337.
//!
//! The output helpers ([`emit`]) print a human line, or JSON under `--json`.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use eyre::{Result, WrapErr, bail, eyre};
use openledger_datanet::client::dev_signer;
use openledger_protocol::endpoints::{
    DEVNET_INFO_PATH, DevnetInfo, dev_deployments, well_known_path,
};
use openledger_protocol::{DEV_CHAIN_ID, Deployments};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The default JSON-RPC URL when neither a flag nor a running devnet names one.
pub const DEFAULT_RPC_URL: &str = "http://127.0.0.1:8545";

/// Where the chain and the services are.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Endpoints {
    /// JSON-RPC URL of the chain [default: the running devnet's, from
    /// ~/.openledger/devnet.json (`$OPENLEDGER_HOME`), else http://127.0.0.1:8545].
    #[arg(long, env = "OPENLEDGER_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Datanet API base URL [default: the devnet's, else <rpc-url>/api/datanets].
    #[arg(long, visible_alias = "api", env = "OPENLEDGER_DATANET_API")]
    pub datanet_api: Option<String>,
    /// The services' web origin (OpenAI API, attribution, earnings, API keys)
    /// [default: the devnet's].
    #[arg(long, env = "OPENLEDGER_HTTP_URL")]
    pub http_url: Option<String>,
    /// Contract addresses (JSON written by `openledger contracts deploy --out`)
    /// [default: the devnet's; the built-in dev addresses on chain 1337].
    #[arg(long, env = "OPENLEDGER_DEPLOYMENTS")]
    pub deployments: Option<PathBuf>,
}

/// Who acts: a private key, or a dev account of the dev mnemonic.
#[derive(Debug, Clone, clap::Args)]
pub struct Who {
    /// Private key of the acting account (hex).
    #[arg(
        long,
        env = "OPENLEDGER_PRIVATE_KEY",
        hide_env_values = true,
        conflicts_with = "account"
    )]
    pub private_key: Option<String>,
    /// Dev account index (dev mnemonic) of the acting account.
    #[arg(long, default_value_t = 0)]
    pub account: u32,
}

impl Who {
    /// The acting account's key.
    pub fn signer(&self) -> Result<PrivateKeySigner> {
        Ok(match &self.private_key {
            Some(k) => k.trim().parse().map_err(|_| {
                eyre!("--private-key / OPENLEDGER_PRIVATE_KEY is not a 32-byte hex key")
            })?,
            None => dev_signer(self.account)?,
        })
    }
}

/// Endpoints after resolution.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Chain id (asked of the node).
    pub chain_id: u64,
    /// Datanet API base URL.
    pub datanet_api: String,
    /// The services' web origin, if known.
    pub http_url: Option<String>,
    /// The protocol contracts.
    pub deployments: Deployments,
    /// The devnet's own description, when the node is a devnet.
    pub devnet: Option<DevnetInfo>,
}

impl Resolved {
    /// The services' origin, or an error saying how to name it.
    pub fn http_url(&self) -> Result<&str> {
        self.http_url.as_deref().ok_or_else(|| {
            eyre!(
                "the services' web origin is not known for {}: pass --http-url (or OPENLEDGER_HTTP_URL), e.g. http://127.0.0.1:8080",
                self.rpc_url
            )
        })
    }

    /// The store the server loads adapters from, when the devnet says.
    pub fn models_store(&self) -> Option<&str> {
        self.devnet.as_ref().and_then(|d| d.models_store.as_deref())
    }
}

/// Where the RPC URL came from, for error messages.
enum Origin {
    Flag,
    File(PathBuf),
    Default,
}

impl Endpoints {
    /// Resolves every endpoint (see the module docs); asks the node its chain id.
    pub async fn resolve(&self) -> Result<Resolved> {
        let (rpc_url, origin) = match &self.rpc_url {
            Some(u) => (u.trim_end_matches('/').to_string(), Origin::Flag),
            None => match written_devnet()? {
                Some((path, info)) => (info.rpc_url, Origin::File(path)),
                None => (DEFAULT_RPC_URL.to_string(), Origin::Default),
            },
        };
        // Only a devnet on this machine is believed about contract addresses and stores: a
        // remote node answering /api/devnet could otherwise point payments at its own contracts.
        let ask = if is_loopback(&rpc_url) {
            ask_devnet(&rpc_url).await
        } else {
            Ok(None)
        };
        let devnet = match ask {
            Ok(d) => d,
            Err(e) => {
                let hint = match origin {
                    Origin::Flag => "check --rpc-url / OPENLEDGER_RPC_URL".to_string(),
                    Origin::File(p) => format!(
                        "the URL comes from {}, written by an `openledger devnet` that is not running any more; start it again or pass --rpc-url",
                        p.display()
                    ),
                    Origin::Default => {
                        "start `openledger devnet`, or pass --rpc-url (or OPENLEDGER_RPC_URL)"
                            .into()
                    }
                };
                bail!("no node answers at {rpc_url}: {e} ({hint})");
            }
        };
        let chain_id = match &devnet {
            Some(d) => d.chain_id,
            None => chain_id(&rpc_url).await?,
        };
        let deployments = match (&self.deployments, &devnet) {
            (Some(p), _) => read_deployments(p)?,
            (None, Some(d)) => d.deployments.clone(),
            (None, None) if chain_id == DEV_CHAIN_ID => dev_deployments(),
            (None, None) => bail!(
                "chain {chain_id} at {rpc_url} has no built-in contract addresses (only the devnet's chain {DEV_CHAIN_ID} has): pass --deployments FILE (written by `openledger contracts deploy --out FILE`) or set OPENLEDGER_DEPLOYMENTS"
            ),
        };
        if deployments.chain_id != chain_id {
            bail!(
                "the deployments are for chain {} but {rpc_url} is chain {chain_id}",
                deployments.chain_id
            );
        }
        let datanet_api = match (&self.datanet_api, &devnet) {
            (Some(a), _) => a.trim_end_matches('/').to_string(),
            (None, Some(d)) => d.datanet_api.clone(),
            (None, None) => format!("{rpc_url}/api/datanets"),
        };
        let http_url = match (&self.http_url, &devnet) {
            (Some(u), _) => Some(u.trim_end_matches('/').to_string()),
            (None, Some(d)) => d.http_url.clone(),
            (None, None) => None,
        };
        Ok(Resolved {
            rpc_url,
            chain_id,
            datanet_api,
            http_url,
            deployments,
            devnet,
        })
    }
}

/// Whether `url`'s host is this machine (localhost, 127.0.0.0/8, ::1).
fn is_loopback(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A provider that signs as `signer` and reads the nonce from the node for every transaction
/// (alloy's cached nonce is taken even when a transaction then fails before it is sent, and
/// every later one would wait behind the gap).
pub fn wallet_provider(rpc_url: &str, signer: PrivateKeySigner) -> Result<DynProvider> {
    let url = rpc_url
        .parse()
        .map_err(|e| eyre!("--rpc-url {rpc_url}: {e}"))?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

/// Sends a contract call and waits for its receipt; a revert is an error naming `what`.
pub async fn send<T, N>(
    call: alloy::contract::CallBuilder<&DynProvider, T, N>,
    what: &str,
) -> Result<alloy_primitives::B256>
where
    N: alloy::network::Network,
    T: alloy::contract::CallDecoder + Send,
    DynProvider: Provider<N>,
{
    use alloy::network::ReceiptResponse;
    use openledger_protocol::Confirm;
    let rc = call
        .send()
        .await
        .map_err(openledger_protocol::ChainError::from)?
        .confirm()
        .await?;
    if !rc.status() {
        bail!("{what} reverted (tx {})", rc.transaction_hash());
    }
    Ok(rc.transaction_hash())
}

/// The devnet file, if there is one: `Ok(None)` when absent, an error when unreadable.
fn written_devnet() -> Result<Option<(PathBuf, DevnetInfo)>> {
    let Some(path) = well_known_path() else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(b) => {
            let info = serde_json::from_slice(&b).wrap_err_with(|| {
                format!(
                    "{} is not a devnet description (delete it, or pass --rpc-url)",
                    path.display()
                )
            })?;
            Ok(Some((path, info)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(eyre!("reading {}: {e}", path.display())),
    }
}

/// `GET <rpc>/api/devnet`: `Ok(None)` when the node answers but is not a devnet.
async fn ask_devnet(rpc_url: &str) -> std::result::Result<Option<DevnetInfo>, String> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .get(format!("{rpc_url}{DEVNET_INFO_PATH}"))
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                "connection refused".to_string()
            } else if e.is_builder() {
                "not a URL".to_string()
            } else {
                e.to_string()
            }
        })?;
    if !resp.status().is_success() {
        return Ok(None);
    }
    // a node that answers something else at that path is not a devnet
    Ok(resp.json::<DevnetInfo>().await.ok())
}

async fn chain_id(rpc_url: &str) -> Result<u64> {
    let url = rpc_url
        .parse()
        .map_err(|e| eyre!("--rpc-url {rpc_url}: {e}"))?;
    ProviderBuilder::new()
        .connect_http(url)
        .get_chain_id()
        .await
        .map_err(|e| eyre!("asking {rpc_url} for its chain id: {e}"))
}

fn read_deployments(p: &Path) -> Result<Deployments> {
    let b = std::fs::read(p).wrap_err_with(|| format!("reading --deployments {}", p.display()))?;
    serde_json::from_slice(&b).wrap_err_with(|| {
        format!(
            "--deployments {}: not a deployments file (format of deployments/dev.json)",
            p.display()
        )
    })
}

static JSON: AtomicBool = AtomicBool::new(false);
static FIELD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets `--json` and `--field` for the whole process (once, from `main`).
pub fn set_output(json: bool, field: Option<String>) {
    JSON.store(json || field.is_some(), Ordering::Relaxed);
    if let Some(f) = field {
        let _ = FIELD.set(f);
    }
}

/// Whether the output is JSON (`--json` or `--field`): progress bars stay off stdout.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Prints what a command did: `human` (one or more lines); under `--json`, `value` as one
/// JSON line; under `--field NAME`, only that field of `value` (a string without quotes), for
/// `X=$(openledger … --field NAME)` in scripts.
pub fn emit(human: impl std::fmt::Display, value: serde_json::Value) {
    match FIELD.get() {
        Some(f) => match value.get(f) {
            Some(serde_json::Value::String(s)) => println!("{s}"),
            Some(v) => println!("{v}"),
            None => {
                let names: Vec<&str> = value
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                // The command has already done its work (a transaction may be mined): say so,
                // and leave its whole output on stdout, so that nobody runs it again to see.
                eprintln!(
                    "error: --field {f}: the command ran, but its output has no such field (it has: {}); the whole output is on stdout",
                    names.join(", ")
                );
                println!("{value}");
                std::process::exit(1);
            }
        },
        None if json() => println!("{value}"),
        None => println!("{human}"),
    }
}

/// `openledger status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub at: Endpoints,
    /// Wait up to this many seconds for the node to answer and, on a devnet, for its model
    /// services (serving, training, attribution) to be ready.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
}

/// Runs `openledger status`: where the chain, the services, the contracts and the stores are.
pub async fn status(a: StatusArgs) -> Result<()> {
    let deadline = a
        .wait
        .map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let r = loop {
        let ready = match a.at.resolve().await {
            Ok(r) if r.devnet.is_none() || r.models_store().is_some() => Ok(r),
            Ok(r) => Err((
                Some(r),
                "the devnet's model services are still starting".to_string(),
            )),
            Err(e) => Err((None, format!("{e:#}"))),
        };
        match (ready, deadline) {
            (Ok(r), _) => break r,
            (Err(_), Some(d)) if std::time::Instant::now() < d => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            (Err((Some(r), _)), None) => break r,
            (Err((_, why)), Some(_)) => bail!("not ready after {} s: {why}", a.wait.unwrap_or(0)),
            (Err((None, why)), None) => bail!("{why}"),
        }
    };
    let d = r.devnet.as_ref();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut human = vec![
        format!("chain id      {}", r.chain_id),
        format!("rpc url       {}", r.rpc_url),
        format!("http url      {}", opt(r.http_url.clone())),
        format!("datanet api   {}", r.datanet_api),
    ];
    if let Some(d) = d {
        human.push(format!("datadir       {}", d.datadir.display()));
        human.push(format!("models store  {}", opt(d.models_store.clone())));
        human.push(format!("datanet store {}", opt(d.datanet_store.clone())));
        human.push(format!(
            "base model    {}",
            opt(d.base_model.as_ref().map(|b| b.display().to_string()))
        ));
    }
    for (c, addr) in r.deployments.contracts.iter() {
        human.push(format!("{:<22}{addr}", c.name()));
    }
    let mut v = serde_json::json!({
        "chainId": r.chain_id,
        "rpcUrl": r.rpc_url,
        "httpUrl": r.http_url,
        "datanetApi": r.datanet_api,
        "deployments": r.deployments,
        "devnet": d.is_some(),
    });
    if let Some(d) = d {
        v["datadir"] = serde_json::json!(d.datadir);
        v["modelsStore"] = serde_json::json!(d.models_store);
        v["datanetStore"] = serde_json::json!(d.datanet_store);
        v["attributionDir"] = serde_json::json!(d.attribution_dir);
        v["baseModel"] = serde_json::json!(d.base_model);
    }
    emit(human.join("\n"), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_a_node_on_this_machine_is_asked_for_contract_addresses() {
        for local in [
            "http://127.0.0.1:8545",
            "http://localhost:8545",
            "http://LOCALHOST",
            "http://127.8.9.10:1",
            "http://[::1]:8545",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "https://rpc.example.org",
            "http://10.0.0.5:8545",
            "http://localhost.example.org:8545",
            "http://[2001:db8::1]:8545",
            "not a url",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }
}
