//! `openledger attribution bond|unbond|withdraw|stake`: an attributor's stake in
//! `AttributorStaking`. Only accounts whose active stake reaches the governed
//! `minAttributorStake` may settle batches; stake leaves after the unbonding delay and after the
//! challenge window of every batch the account settled.

use crate::endpoints::{Endpoints, Who, emit, send, wallet_provider};
use alloy::providers::DynProvider;
use alloy_primitives::{Address, U256};
use eyre::{Result, bail, eyre};
use openledger_protocol::bindings::{AttributorStaking, ProtocolParams};
use openledger_protocol::{format_open, parse_open};
use serde_json::json;

/// Staking commands (flattened into `openledger attribution`).
#[derive(Debug, clap::Subcommand)]
pub enum StakeCmd {
    /// Bond OPEN as an attributor (adds to the acting account's active stake).
    Bond {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// Amount of OPEN (a decimal: 100, 0.5) [default: what is missing to the minimum stake].
        amount: Option<String>,
        /// The origin that serves this attributor's records, announced on chain.
        #[arg(long, default_value = "")]
        endpoint: String,
    },
    /// Start unbonding an amount of active stake (it stops counting at once, and may be
    /// withdrawn after the unbonding delay and the challenge windows of the account's batches).
    Unbond {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// Amount of OPEN, or `all`.
        amount: String,
    },
    /// Withdraw the unbonded stake once nothing holds it.
    Withdraw {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
    },
    /// Show an account's stake: active, unbonding, when it may leave, and whether it may settle.
    Stake {
        #[command(flatten)]
        at: Endpoints,
        #[command(flatten)]
        who: Who,
        /// Account to show (defaults to the acting account).
        address: Option<Address>,
    },
}

struct Ctx {
    staking: AttributorStaking::AttributorStakingInstance<DynProvider>,
    params: ProtocolParams::ProtocolParamsInstance<DynProvider>,
    me: Address,
}

async fn ctx(at: &Endpoints, who: &Who) -> Result<Ctx> {
    let r = at.resolve().await?;
    let signer = who.signer()?;
    let me = signer.address();
    let provider = wallet_provider(&r.rpc_url, signer)?;
    Ok(Ctx {
        staking: AttributorStaking::new(r.deployments.contracts.staking, provider.clone()),
        params: ProtocolParams::new(r.deployments.contracts.params, provider),
        me,
    })
}

fn amount(s: &str) -> Result<U256> {
    let v = parse_open(s).map_err(|e| eyre!("{e}"))?;
    if v.is_zero() {
        bail!("give an amount above zero");
    }
    Ok(v)
}

/// Seconds since the epoch, by the chain's latest block.
async fn chain_now(c: &Ctx) -> Result<u64> {
    use alloy::providers::Provider;
    let b = c
        .staking
        .provider()
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await?
        .ok_or_else(|| eyre!("the node has no latest block"))?;
    Ok(b.header.timestamp)
}

/// Runs a staking command.
pub async fn run(cmd: StakeCmd) -> Result<()> {
    match cmd {
        StakeCmd::Bond {
            at,
            who,
            amount: a,
            endpoint,
        } => {
            let c = ctx(&at, &who).await?;
            let min = U256::from(c.params.disputeConfig().call().await?.minAttributorStake);
            let active = c.staking.activeStake(c.me).call().await?;
            let value = match a {
                Some(a) => amount(&a)?,
                None if active >= min => bail!(
                    "{} already has {} OPEN bonded, the minimum is {} OPEN: give an amount to add more",
                    c.me,
                    format_open(active),
                    format_open(min)
                ),
                None => min - active,
            };
            let tx = send(c.staking.bond(endpoint.clone()).value(value), "bond").await?;
            let active = c.staking.activeStake(c.me).call().await?;
            let note = if active >= min {
                "may settle batches".to_string()
            } else {
                format!(
                    "{} OPEN short of the {} OPEN minimum",
                    format_open(min - active),
                    format_open(min)
                )
            };
            emit(
                format!(
                    "bonded {} OPEN; {} has {} OPEN active and {note} (tx {tx})",
                    format_open(value),
                    c.me,
                    format_open(active)
                ),
                json!({"account": c.me, "bonded": value.to_string(), "active": active.to_string(),
                       "bonded_enough": active >= min, "endpoint": endpoint, "tx": tx}),
            );
        }
        StakeCmd::Unbond { at, who, amount: a } => {
            let c = ctx(&at, &who).await?;
            let active = c.staking.activeStake(c.me).call().await?;
            let value = if a == "all" { active } else { amount(&a)? };
            if value.is_zero() {
                bail!("{} has no active stake to unbond", c.me);
            }
            if value > active {
                bail!(
                    "{} has {} OPEN active, less than {} OPEN",
                    c.me,
                    format_open(active),
                    format_open(value)
                );
            }
            let tx = send(c.staking.requestUnbond(value), "requestUnbond").await?;
            let s = c.staking.stakeOf(c.me).call().await?;
            let ready = s.unbondReadyAt.max(s.lockedUntil);
            emit(
                format!(
                    "unbonding {} OPEN of {} ({} OPEN in all); withdrawable from {} (unix time) (tx {tx})",
                    format_open(value),
                    c.me,
                    format_open(U256::from(s.unbonding)),
                    ready
                ),
                json!({"account": c.me, "unbonding": s.unbonding.to_string(), "active": s.active.to_string(),
                       "withdrawableAt": ready, "tx": tx}),
            );
        }
        StakeCmd::Withdraw { at, who } => {
            let c = ctx(&at, &who).await?;
            let s = c.staking.stakeOf(c.me).call().await?;
            if s.unbonding == 0 {
                bail!(
                    "{} has nothing unbonding: `openledger attribution unbond AMOUNT` first",
                    c.me
                );
            }
            // Say why it must wait instead of sending a transaction that reverts.
            let now = chain_now(&c).await?;
            let ready = s.unbondReadyAt.max(s.lockedUntil);
            if now < ready {
                let why = if s.lockedUntil > s.unbondReadyAt {
                    "a batch of this attributor is still in its challenge window"
                } else {
                    "the unbonding delay has not passed"
                };
                bail!(
                    "{} OPEN of {} may leave in {} s (at unix time {ready}): {why}",
                    format_open(U256::from(s.unbonding)),
                    c.me,
                    ready - now
                );
            }
            let tx = send(c.staking.withdrawUnbonded(), "withdrawUnbonded").await?;
            emit(
                format!(
                    "withdrew {} OPEN to {} (tx {tx})",
                    format_open(U256::from(s.unbonding)),
                    c.me
                ),
                json!({"account": c.me, "withdrawn": s.unbonding.to_string(), "tx": tx}),
            );
        }
        StakeCmd::Stake { at, who, address } => {
            let c = ctx(&at, &who).await?;
            let account = address.unwrap_or(c.me);
            let s = c.staking.stakeOf(account).call().await?;
            let min = c.params.disputeConfig().call().await?.minAttributorStake;
            let bonded = s.active >= min;
            let mut human = vec![
                format!(
                    "stake of {account}: {} OPEN active, {} OPEN unbonding",
                    format_open(U256::from(s.active)),
                    format_open(U256::from(s.unbonding))
                ),
                format!(
                    "{} (minimum {} OPEN)",
                    if bonded {
                        "may settle batches"
                    } else {
                        "may not settle batches"
                    },
                    format_open(U256::from(min))
                ),
            ];
            if s.unbonding > 0 {
                human.push(format!(
                    "unbonding stake withdrawable from unix time {}",
                    s.unbondReadyAt.max(s.lockedUntil)
                ));
            }
            if !s.endpoint.is_empty() {
                human.push(format!("records served at {}", s.endpoint));
            }
            emit(
                human.join("\n"),
                json!({"account": account, "active": s.active.to_string(), "unbonding": s.unbonding.to_string(),
                       "unbondReadyAt": s.unbondReadyAt, "lockedUntil": s.lockedUntil,
                       "endpoint": s.endpoint, "bonded": bonded, "minimum": min.to_string()}),
            );
        }
    }
    Ok(())
}
