//! `openledger pay ...`: what a payer does before asking paid models — escrow OPEN in
//! `AttributionSettlement`, allow a model to spend from it, and sign a voucher (a spending cap
//! for the server's attributor): bound to an API key (the OpenAI SDK's `api_key`) or as fixed
//! headers (`default_headers`).

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
    /// OpenAI SDK's `api_key`); paid answers are charged to this account's escrow under a
    /// voucher signed here, never beyond its cap.
    Key {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// A label to recognise the key by.
        #[arg(long, default_value = "cli")]
        label: String,
        #[command(flatten)]
        voucher: VoucherArgs,
    },
    /// Sign a voucher for the server's attributor and print it as request headers (the OpenAI
    /// SDK's `default_headers`); anyone holding them may spend up to the cap until they expire.
    Voucher {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        voucher: VoucherArgs,
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

/// What a voucher grants.
#[derive(Debug, clap::Args)]
pub struct VoucherArgs {
    /// The most it may ever charge, in OPEN (a decimal).
    #[arg(long, default_value = "1")]
    cap: String,
    /// Only this model (id or `model-N`); any model when left out.
    #[arg(long)]
    model: Option<String>,
    /// Highest price accepted, in OPEN per 1,000 tokens (default: the model's current price
    /// with --model, 0.01 without).
    #[arg(long)]
    max_price: Option<String>,
    /// Channel number (default: a random one). A voucher on a channel already used raises
    /// that channel's cap; what was charged on it counts against the new cap.
    #[arg(long)]
    channel: Option<u64>,
    /// Days until it expires (at most 30).
    #[arg(long, default_value_t = 30)]
    days: u64,
}

/// Signs `a` for the server at `r` (its attributor from `GET /api/attribution/terms`).
async fn sign_voucher(
    r: &crate::endpoints::Resolved,
    signer: &alloy::signers::local::PrivateKeySigner,
    a: &VoucherArgs,
) -> Result<openledger_protocol::voucher::SignedVoucher> {
    if a.days == 0 || a.days > 30 {
        bail!("--days must be 1 to 30");
    }
    let cap = amount(&a.cap)?;
    if cap.is_zero() {
        bail!("--cap must be above zero");
    }
    let url = format!("{}/api/attribution/terms", r.http_url()?);
    let terms: serde_json::Value = reqwest::get(&url)
        .await
        .and_then(|x| x.error_for_status())
        .wrap_err_with(|| format!("GET {url}"))?
        .json()
        .await
        .wrap_err_with(|| format!("GET {url}"))?;
    let attributor: Address = serde_json::from_value(terms["attributor"].clone())
        .map_err(|_| eyre!("GET {url} names no attributor: {terms}"))?;
    if attributor == Address::ZERO {
        bail!(
            "the server at {} runs no attributor: it cannot be paid",
            r.http_url()?
        );
    }
    let model = a.model.as_deref().map(model_id).transpose()?;
    let max_price = match (&a.max_price, model) {
        (Some(p), _) => amount(p)?,
        (None, Some(id)) => {
            let p = wallet_provider(&r.rpc_url, signer.clone())?;
            openledger_protocol::bindings::ModelRegistry::new(
                r.deployments.contracts.model_registry,
                p,
            )
            .getModel(U256::from(id))
            .call()
            .await
            .map_err(|e| eyre!("model {id}: {e}"))?
            .pricePer1kTokens
        }
        (None, None) => amount("0.01")?,
    };
    let domain =
        openledger_attribution::auth::domain(r.chain_id, r.deployments.contracts.settlement);
    openledger_attribution::auth::sign_voucher(
        signer,
        &domain,
        &openledger_attribution::auth::VoucherTerms {
            attributor,
            model_id: model.map_or(0, |m| m.get()),
            max_price_per_1k: max_price,
            channel: U256::from(a.channel.unwrap_or_else(rand::random::<u64>)),
            cumulative: cap,
            validity_secs: a.days * 86_400,
        },
    )
    .map_err(|e| eyre!("signing the voucher: {e}"))
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
        PayCmd::Voucher { at, who, voucher } => {
            let r = at.resolve().await?;
            let signer = who.signer()?;
            let v = sign_voucher(&r, &signer, &voucher).await?;
            let headers: serde_json::Map<String, serde_json::Value> =
                openledger_attribution::auth::voucher_headers(&v)
                    .into_iter()
                    .map(|(k, val)| (k.to_string(), val.into()))
                    .collect();
            emit(
                format!(
                    "{}\n(a voucher of {} for up to {} OPEN on channel {}: send these headers with every request; they expire at {})",
                    serde_json::Value::Object(headers.clone()),
                    signer.address(),
                    format_open(v.cumulative),
                    v.channel,
                    v.expiry
                ),
                json!({"headers": headers, "voucher": v, "baseUrl": format!("{}/v1", r.http_url()?)}),
            );
        }
        PayCmd::Key {
            at,
            who,
            label,
            voucher,
        } => {
            let r = at.resolve().await?;
            let signer = who.signer()?;
            let domain = openledger_attribution::auth::domain(
                r.chain_id,
                r.deployments.contracts.settlement,
            );
            let v = sign_voucher(&r, &signer, &voucher).await?;
            let headers = openledger_attribution::auth::sign_key_request(&signer, &domain, &label)
                .map_err(|e| eyre!("signing the key request: {e}"))?;
            let url = format!("{}/api/keys", r.http_url()?);
            let mut req = reqwest::Client::new()
                .post(&url)
                .json(&json!({ "label": label, "voucher": v }));
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
                    "{key}\n(API key of {} labelled {label:?}: OpenAI(base_url=\"{}/v1\", api_key=KEY); paid answers are charged to this account's escrow, at most {} OPEN)",
                    signer.address(),
                    r.http_url()?,
                    format_open(v.cumulative)
                ),
                json!({"key": key, "account": signer.address(), "label": label, "cap": v.cumulative.to_string(), "channel": v.channel.to_string(), "baseUrl": format!("{}/v1", r.http_url()?)}),
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
