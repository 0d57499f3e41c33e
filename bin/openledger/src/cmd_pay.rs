//! `openledger pay ...`: what a payer does before asking paid models — escrow OPEN in
//! `AttributionSettlement`, allow a model to spend from it, and get an API key for clients
//! that send fixed headers (the OpenAI SDK's `api_key`).

use crate::endpoints::{Endpoints, Who, emit, send, wallet_provider};
use alloy::providers::DynProvider;
use alloy_primitives::{Address, U256};
use eyre::{Result, WrapErr, bail, eyre};
use openledger_protocol::bindings::AttributionSettlement;
use openledger_protocol::{ModelId, format_open, parse_open};
use serde_json::json;

/// Payment commands.
#[derive(Debug, clap::Subcommand)]
pub enum PayCmd {
    /// Deposit OPEN into the acting account's inference escrow (answers are charged from it).
    Deposit {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// Amount of OPEN (a decimal: 1, 0.25).
        amount: String,
    },
    /// Let a model spend up to an amount of the escrow (the allowance is replaced, not added).
    Allow {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// The model: its id or name (`3` or `model-3`).
        model: String,
        /// Amount of OPEN (a decimal: 1, 0.25).
        amount: String,
    },
    /// Create an API key for the acting account (send it as `Authorization: Bearer olk_…`, the
    /// OpenAI SDK's `api_key`); paid answers are charged to this account's escrow.
    Key {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// A label to recognise the key by.
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Show the escrow of an account, and its allowance for a model.
    Status {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// Account to show (defaults to the acting account).
        address: Option<Address>,
        /// Also show the allowance for this model (id or `model-N`).
        #[arg(long)]
        model: Option<String>,
    },
}

fn model_id(s: &str) -> Result<ModelId> {
    let digits = s.strip_prefix("model-").unwrap_or(s);
    digits
        .parse::<u64>()
        .map(ModelId::from)
        .map_err(|_| eyre!("{s:?} is not a model id (a number, or model-N as /v1/models names it)"))
}

fn amount(s: &str) -> Result<U256> {
    parse_open(s).map_err(|e| eyre!("{e}"))
}

async fn settlement(
    at: &Endpoints,
    who: &Who,
) -> Result<(
    AttributionSettlement::AttributionSettlementInstance<DynProvider>,
    Address,
    crate::endpoints::Resolved,
)> {
    let r = at.resolve().await?;
    let signer = who.signer()?;
    let me = signer.address();
    let provider = wallet_provider(&r.rpc_url, signer)?;
    Ok((
        AttributionSettlement::new(r.deployments.contracts.settlement, provider),
        me,
        r,
    ))
}

/// Runs a payment command.
pub async fn run(cmd: PayCmd) -> Result<()> {
    match cmd {
        PayCmd::Deposit { at, who, amount: a } => {
            let value = amount(&a)?;
            if value.is_zero() {
                bail!("deposit an amount above zero");
            }
            let (s, me, _) = settlement(&at, &who).await?;
            let tx = send(s.deposit().value(value), "deposit").await?;
            let escrow = s.escrowOf(me).call().await?;
            emit(
                format!(
                    "deposited {} OPEN; escrow of {me} is {} OPEN (tx {})",
                    format_open(value),
                    format_open(escrow),
                    tx
                ),
                json!({"account": me, "deposited": value.to_string(), "escrow": escrow.to_string(), "tx": tx}),
            );
        }
        PayCmd::Allow {
            at,
            who,
            model,
            amount: a,
        } => {
            let id = model_id(&model)?;
            let value = amount(&a)?;
            let (s, me, _) = settlement(&at, &who).await?;
            let tx = send(s.setAllowance(U256::from(id), value), "setAllowance").await?;
            emit(
                format!(
                    "model-{id} may spend up to {} OPEN of {me}'s escrow (tx {})",
                    format_open(value),
                    tx
                ),
                json!({"account": me, "model": id, "allowance": value.to_string(), "tx": tx}),
            );
        }
        PayCmd::Key { at, who, label } => {
            let r = at.resolve().await?;
            let signer = who.signer()?;
            let domain = openledger_attribution::auth::domain(
                r.chain_id,
                r.deployments.contracts.settlement,
            );
            let headers = openledger_attribution::auth::sign_key_request(&signer, &domain, &label)
                .map_err(|e| eyre!("signing the key request: {e}"))?;
            let url = format!("{}/api/keys", r.http_url()?);
            let mut req = reqwest::Client::new()
                .post(&url)
                .json(&json!({ "label": label }));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.wrap_err_with(|| format!("POST {url}"))?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if !status.is_success() {
                bail!(
                    "POST {url} answered {status}: {}",
                    body["error"]["message"].as_str().unwrap_or("(no message)")
                );
            }
            let key = body["key"]
                .as_str()
                .ok_or_else(|| eyre!("POST {url} answered no key"))?;
            emit(
                format!(
                    "{key}\n(API key of {} labelled {label:?}: OpenAI(base_url=\"{}/v1\", api_key=KEY); paid answers are charged to this account's escrow)",
                    signer.address(),
                    r.http_url()?
                ),
                json!({"key": key, "account": signer.address(), "label": label, "baseUrl": format!("{}/v1", r.http_url()?)}),
            );
        }
        PayCmd::Status {
            at,
            who,
            address,
            model,
        } => {
            let (s, me, _) = settlement(&at, &who).await?;
            let who = address.unwrap_or(me);
            let escrow = s.escrowOf(who).call().await?;
            let mut human = format!("escrow of {who}: {} OPEN", format_open(escrow));
            let mut out = json!({"account": who, "escrow": escrow.to_string()});
            if let Some(m) = model {
                let id = model_id(&m)?;
                let allowed = s.allowance(who, U256::from(id)).call().await?;
                human += &format!("\nallowance for model-{id}: {} OPEN", format_open(allowed));
                out["model"] = json!(id);
                out["allowance"] = json!(allowed.to_string());
            }
            emit(human, out);
        }
    }
    Ok(())
}
