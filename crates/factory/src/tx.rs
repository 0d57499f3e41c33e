//! `POST /api/ui/tx/{action}`: a form's values in, a checked and ABI-encoded protocol call out
//! (`{to, data, value}`), which the browser hands to its wallet. Checks that a revert would
//! explain badly (or that would not revert at all, like a vote with no voting power) are made
//! here, before anything is signed.

use crate::chain::Chain;
use crate::error::UiError;
use alloy_primitives::utils::parse_ether;
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{SolCall, sol};
use openledger_protocol::bindings::{
    AttributionSettlement, DatanetRegistry, GOPEN, ModelRegistry, OpenLedgerGovernor,
    ProtocolParams,
};
use openledger_protocol::{ChainError, Contract};
use serde::{Deserialize, Serialize};
use serde_json::Value;

sol! {
    /// GovernorStorage's one-argument overloads (the bindings number overloads).
    function queue(uint256 proposalId);
    function execute(uint256 proposalId) payable;
}

/// A call for the wallet to send.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxCall {
    /// Contract.
    pub to: Address,
    /// Calldata.
    pub data: Bytes,
    /// OPEN sent along (wei, hex quantity).
    pub value: U256,
}

fn call(to: Address, data: Vec<u8>) -> TxCall {
    TxCall {
        to,
        data: data.into(),
        value: U256::ZERO,
    }
}

fn invalid(msg: impl Into<String>) -> UiError {
    UiError::Invalid(msg.into())
}

/// Typed access to the form fields, with errors that name the field.
struct Form<'a>(&'a Value);

impl Form<'_> {
    fn str(&self, k: &str) -> &str {
        self.0
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
    }
    fn u64(&self, k: &str, label: &str) -> Result<u64, UiError> {
        match self.0.get(k) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid(format!("{label} must be a whole number.")))
    }
    fn u256(&self, k: &str, label: &str) -> Result<U256, UiError> {
        let s = match self.0.get(k) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            _ => String::new(),
        };
        s.parse()
            .map_err(|_| invalid(format!("{label} must be a whole number.")))
    }
    fn b256(&self, k: &str, label: &str) -> Result<B256, UiError> {
        self.str(k)
            .parse()
            .map_err(|_| invalid(format!("{label} must be a 32-byte hex value.")))
    }
    fn address(&self, k: &str, label: &str) -> Result<Address, UiError> {
        self.str(k).parse().map_err(|_| {
            invalid(format!(
                "{label} must be an address (0x and 40 hex digits)."
            ))
        })
    }
    /// An amount of OPEN typed by a person ("1.5").
    fn amount(&self, k: &str, label: &str, allow_zero: bool) -> Result<U256, UiError> {
        let s = match self.0.get(k) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            _ => String::new(),
        };
        if s.is_empty() {
            return Err(invalid(format!("Enter {label} in OPEN.")));
        }
        let v = parse_ether(&s)
            .map_err(|_| invalid(format!("{label} must be an amount of OPEN, like 1.5.")))?;
        if v.is_zero() && !allow_zero {
            return Err(invalid(format!("{label} must be above zero.")));
        }
        Ok(v)
    }
    fn bps(&self, k: &str, label: &str) -> Result<u16, UiError> {
        let v = self.u64(k, label)?;
        u16::try_from(v)
            .ok()
            .filter(|v| *v <= 10_000)
            .ok_or_else(|| {
                invalid(format!(
                    "{label} must be between 0 and 10,000 basis points."
                ))
            })
    }
}

/// Builds the call for `action` from the form `body` (`from` = the acting account).
pub(crate) async fn build(chain: &Chain, action: &str, body: &Value) -> Result<TxCall, UiError> {
    let f = Form(body);
    let p = chain.provider.clone();
    match action {
        "createDatanet" => {
            let name = f.str("name");
            if name.is_empty() {
                return Err(invalid("Give the Datanet a name."));
            }
            if name.len() > 100 {
                return Err(invalid("Keep the name under 100 characters."));
            }
            let fee = if f.str("licenceFee").is_empty() {
                U256::ZERO
            } else {
                f.amount("licenceFee", "The licence fee", true)?
            };
            let params = ProtocolParams::new(chain.addr(Contract::ProtocolParams)?, p);
            let creation = params
                .datanetCreationFee()
                .call()
                .await
                .map_err(ChainError::from)?;
            let data = DatanetRegistry::createDatanetCall {
                name: name.to_string(),
                metadataURI: f.str("description").to_string(),
                permissioned: body
                    .get("permissioned")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                licenceFee: fee,
            }
            .abi_encode();
            Ok(TxCall {
                value: creation,
                ..call(chain.addr(Contract::DatanetRegistry)?, data)
            })
        }
        "contribute" => {
            let score = f.u64("score", "The score")?;
            let data = DatanetRegistry::contributeCall {
                datanetId: U256::from(f.u64("datanetId", "The Datanet id")?),
                contentHash: f.b256("contentHash", "The content hash")?,
                byteSize: f.u64("byteSize", "The size")?,
                rowCount: f.u64("rowCount", "The row count")?,
                qualityScore: u32::try_from(score)
                    .map_err(|_| invalid("The score is out of range."))?,
                metadataURI: format!("rows-root:{}", f.b256("rowsRoot", "The rows root")?),
            }
            .abi_encode();
            Ok(call(chain.addr(Contract::DatanetRegistry)?, data))
        }
        "approve" => Ok(call(
            chain.addr(Contract::DatanetRegistry)?,
            DatanetRegistry::approveCall {
                contributionId: U256::from(f.u64("contributionId", "The contribution id")?),
            }
            .abi_encode(),
        )),
        "reject" => {
            let reason = f.str("reason");
            if reason.is_empty() {
                return Err(invalid(
                    "Say why the contribution is rejected; the contributor sees the reason.",
                ));
            }
            Ok(call(
                chain.addr(Contract::DatanetRegistry)?,
                DatanetRegistry::rejectCall {
                    contributionId: U256::from(f.u64("contributionId", "The contribution id")?),
                    reason: reason.to_string(),
                }
                .abi_encode(),
            ))
        }
        "publishVersion" => {
            let id = f.u64("datanetId", "The Datanet id")?;
            let prep = chain.post_json(&format!("/{id}/versions/prepare")).await?;
            let get = |k: &str| -> Result<B256, UiError> {
                prep[k]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| UiError::Upstream(format!("the Datanet service sent no {k}")))
            };
            let count = prep["count"]
                .as_u64()
                .ok_or_else(|| UiError::Upstream("the Datanet service sent no count".into()))?;
            Ok(call(
                chain.addr(Contract::DatanetRegistry)?,
                DatanetRegistry::publishVersionCall {
                    datanetId: U256::from(id),
                    merkleRoot: get("merkleRoot")?,
                    count: U256::from(count),
                    manifestHash: get("manifestHash")?,
                }
                .abi_encode(),
            ))
        }
        "buyLicence" => {
            let id = U256::from(f.u64("datanetId", "The Datanet id")?);
            let reg = DatanetRegistry::new(chain.addr(Contract::DatanetRegistry)?, p);
            let d = reg.getDatanet(id).call().await.map_err(ChainError::from)?;
            Ok(TxCall {
                value: d.licenceFee,
                ..call(
                    *reg.address(),
                    DatanetRegistry::buyLicenceCall { datanetId: id }.abi_encode(),
                )
            })
        }
        "collect" => {
            let ids: Vec<U256> = body
                .get("contributionIds")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).map(U256::from).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                return Err(invalid("There are no licence earnings to collect."));
            }
            Ok(call(
                chain.addr(Contract::DatanetRegistry)?,
                DatanetRegistry::collectCall {
                    contributionIds: ids,
                }
                .abi_encode(),
            ))
        }
        "claim" => {
            let name = match f.str("contract") {
                "DatanetRegistry" => Contract::DatanetRegistry,
                "AttributionSettlement" => Contract::AttributionSettlement,
                _ => {
                    return Err(invalid(
                        "Choose what to claim: licence or inference earnings.",
                    ));
                }
            };
            Ok(call(
                chain.addr(name)?,
                DatanetRegistry::claimCall {}.abi_encode(),
            ))
        }
        "wrap" => Ok(TxCall {
            value: f.amount("amount", "The amount to wrap", false)?,
            ..call(
                chain.addr(Contract::Gopen)?,
                GOPEN::depositCall {}.abi_encode(),
            )
        }),
        "unwrap" => Ok(call(
            chain.addr(Contract::Gopen)?,
            GOPEN::withdrawCall {
                amount: f.amount("amount", "The amount to unwrap", false)?,
            }
            .abi_encode(),
        )),
        "delegate" => {
            let to = if f.str("delegatee").is_empty() {
                f.address("from", "Your account")?
            } else {
                f.address("delegatee", "The delegate")?
            };
            Ok(call(
                chain.addr(Contract::Gopen)?,
                GOPEN::delegateCall { delegatee: to }.abi_encode(),
            ))
        }
        "proposeFeeSplit" => {
            let t = f.bps("treasuryBps", "The treasury share")?;
            let m = f.bps("modelOwnerBps", "The model owner share")?;
            let c = f.bps("contributorsBps", "The contributors' share")?;
            let sum = u32::from(t) + u32::from(m) + u32::from(c);
            if sum != 10_000 {
                return Err(invalid(format!(
                    "The three shares add up to {sum} basis points; they must add up to 10,000 (100%)."
                )));
            }
            let mut description = f.str("description").to_string();
            if description.is_empty() {
                description = format!(
                    "Set the inference fee split to treasury {t} / model owner {m} / contributors {c} bps"
                );
            }
            let params = chain.addr(Contract::ProtocolParams)?;
            let inner = ProtocolParams::setFeeSplitCall {
                treasuryBps: t,
                modelOwnerBps: m,
                contributorsBps: c,
            }
            .abi_encode();
            Ok(call(
                chain.addr(Contract::Governor)?,
                OpenLedgerGovernor::proposeCall {
                    targets: vec![params],
                    values: vec![U256::ZERO],
                    calldatas: vec![inner.into()],
                    description,
                }
                .abi_encode(),
            ))
        }
        "castVote" => {
            let id = f.u256("proposalId", "The proposal id")?;
            let support = f.u64("support", "The vote")?;
            if support > 2 {
                return Err(invalid("Choose For, Against or Abstain."));
            }
            let voter = f.address("from", "Your account")?;
            let gov = OpenLedgerGovernor::new(chain.addr(Contract::Governor)?, p);
            let snapshot = gov
                .proposalSnapshot(id)
                .call()
                .await
                .map_err(ChainError::from)?;
            if snapshot.is_zero() {
                return Err(UiError::NotFound("There is no such proposal.".into()));
            }
            let votes = gov
                .getVotes(voter, snapshot)
                .call()
                .await
                .map_err(ChainError::from);
            // Before the snapshot time has passed the past-votes lookup reverts: not votable yet.
            let votes = match votes {
                Ok(v) => v,
                Err(_) => {
                    return Err(invalid(
                        "Voting has not started yet: wait for the voting delay to pass.",
                    ));
                }
            };
            if votes.is_zero() {
                return Err(invalid(
                    "You had no voting power when this proposal's vote started: wrap OPEN into GOPEN and delegate (to yourself) before a proposal is made. Your vote was not sent.",
                ));
            }
            Ok(call(
                *gov.address(),
                OpenLedgerGovernor::castVoteCall {
                    proposalId: id,
                    support: support as u8,
                }
                .abi_encode(),
            ))
        }
        "queue" => Ok(call(
            chain.addr(Contract::Governor)?,
            queueCall {
                proposalId: f.u256("proposalId", "The proposal id")?,
            }
            .abi_encode(),
        )),
        "execute" => Ok(call(
            chain.addr(Contract::Governor)?,
            executeCall {
                proposalId: f.u256("proposalId", "The proposal id")?,
            }
            .abi_encode(),
        )),
        "escrowDeposit" => Ok(TxCall {
            value: f.amount("amount", "The deposit", false)?,
            ..call(
                chain.addr(Contract::AttributionSettlement)?,
                AttributionSettlement::depositCall {}.abi_encode(),
            )
        }),
        "setAllowance" => {
            // A finite cap unless the user asks for none in so many words.
            let amount = if f.str("amount").trim() == "unlimited" {
                U256::MAX
            } else {
                f.amount("amount", "The allowance", true)?
            };
            Ok(call(
                chain.addr(Contract::AttributionSettlement)?,
                AttributionSettlement::setAllowanceCall {
                    modelId: U256::from(f.u64("modelId", "The model id")?),
                    amount,
                }
                .abi_encode(),
            ))
        }
        "registerModel" => register_model(chain, &f).map(|d| call(d.0, d.1)),
        other => Err(UiError::NotFound(format!("unknown action {other}"))),
    }
}

fn register_model(chain: &Chain, f: &Form<'_>) -> Result<(Address, Vec<u8>), UiError> {
    let datanet = U256::from(f.u64("datanetId", "The Datanet id")?);
    let version = U256::from(f.u64("version", "The Datanet version")?);
    let price = f.amount("price", "The price per 1,000 tokens", true)?;
    let spec = ModelRegistry::ModelSpec {
        baseModelId: f.str("baseModelId").to_string(),
        baseModelHash: f.b256("baseModelHash", "The base model hash")?,
        adapterHash: f.b256("adapterHash", "The adapter hash")?,
        trainingManifestHash: f.b256("manifestHash", "The training manifest hash")?,
        trainedOn: vec![ModelRegistry::DatanetVersion {
            datanetId: datanet,
            version,
        }],
        pricePer1kTokens: price,
        metadataURI: f.str("metadataURI").to_string(),
    };
    Ok((
        chain.addr(Contract::ModelRegistry)?,
        ModelRegistry::registerModelCall { spec }.abi_encode(),
    ))
}
