//! Decoding for people: revert data into plain sentences, calldata and logs into readable lines
//! (the explorer and the governance page).

use crate::config::FactoryConfig;
use alloy_primitives::{Address, B256};
use alloy_sol_types::{SolEventInterface, SolInterface};
use openledger_protocol::Contract;
use openledger_protocol::bindings::{
    AttributionSettlement, DatanetRegistry, GOPEN, ModelRegistry, OpenLedgerGovernor,
    OpenLedgerTimelock, ProtocolParams,
};

/// Runs `$body` with `$m::{Errors, Calls, Events}` bound to a protocol contract's binding
/// enums, by contract name.
macro_rules! each_contract {
    ($name:expr, $m:ident => $body:expr) => {
        match $name {
            "DatanetRegistry" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::DatanetRegistry::DatanetRegistryErrors;
                    pub type Calls = super::DatanetRegistry::DatanetRegistryCalls;
                    pub type Events = super::DatanetRegistry::DatanetRegistryEvents;
                }
                $body
            }
            "ModelRegistry" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::ModelRegistry::ModelRegistryErrors;
                    pub type Calls = super::ModelRegistry::ModelRegistryCalls;
                    pub type Events = super::ModelRegistry::ModelRegistryEvents;
                }
                $body
            }
            "AttributionSettlement" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::AttributionSettlement::AttributionSettlementErrors;
                    pub type Calls = super::AttributionSettlement::AttributionSettlementCalls;
                    pub type Events = super::AttributionSettlement::AttributionSettlementEvents;
                }
                $body
            }
            "ProtocolParams" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::ProtocolParams::ProtocolParamsErrors;
                    pub type Calls = super::ProtocolParams::ProtocolParamsCalls;
                    pub type Events = super::ProtocolParams::ProtocolParamsEvents;
                }
                $body
            }
            "GOPEN" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::GOPEN::GOPENErrors;
                    pub type Calls = super::GOPEN::GOPENCalls;
                    pub type Events = super::GOPEN::GOPENEvents;
                }
                $body
            }
            "OpenLedgerGovernor" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::OpenLedgerGovernor::OpenLedgerGovernorErrors;
                    pub type Calls = super::OpenLedgerGovernor::OpenLedgerGovernorCalls;
                    pub type Events = super::OpenLedgerGovernor::OpenLedgerGovernorEvents;
                }
                $body
            }
            "OpenLedgerTimelock" => {
                #[allow(dead_code)]
                mod $m {
                    pub type Errors = super::OpenLedgerTimelock::OpenLedgerTimelockErrors;
                    pub type Calls = super::OpenLedgerTimelock::OpenLedgerTimelockCalls;
                    pub type Events = super::OpenLedgerTimelock::OpenLedgerTimelockEvents;
                }
                $body
            }
            _ => None,
        }
    };
}

const CONTRACTS: [&str; 7] = [
    "DatanetRegistry",
    "ModelRegistry",
    "AttributionSettlement",
    "ProtocolParams",
    "GOPEN",
    "OpenLedgerGovernor",
    "OpenLedgerTimelock",
];

fn variant(debug: &str) -> &str {
    debug.split(['(', ' ', '{']).next().unwrap_or(debug)
}

/// Decodes revert data against every protocol contract's errors: `(ErrorName, debug)`.
pub(crate) fn decode_revert(data: &[u8]) -> Option<(String, String)> {
    if data.len() < 4 {
        return None;
    }
    CONTRACTS.iter().find_map(|c| {
        each_contract!(*c, m => {
            paste_errors::<m::Errors>(data)
        })
    })
}

fn paste_errors<E: SolInterface + std::fmt::Debug>(data: &[u8]) -> Option<(String, String)> {
    let e = E::abi_decode(data).ok()?;
    let dbg = format!("{e:?}");
    // `Enum(Inner { .. })`: the inner struct's name is the Solidity error's name.
    let inner = dbg.split_once('(').map(|(_, r)| r).unwrap_or(&dbg);
    Some((
        variant(inner).to_string(),
        inner.trim_end_matches(')').to_string(),
    ))
}

/// A plain sentence for a protocol revert (or `None` when the data is not a known error).
pub(crate) fn plain_revert(data: &[u8]) -> Option<String> {
    let (name, detail) = decode_revert(data)?;
    let words = match name.as_str() {
        "NotCurator" => "Only the Datanet's owner or one of its curators can do this.",
        "NotDatanetOwner" => "Only the Datanet's owner can do this.",
        "NotContributor" => "Only the person who made this contribution can do this.",
        "ContributorNotAllowed" => {
            "This Datanet is permissioned and you are not on its list of contributors."
        }
        "NotPending" => "This contribution has already been decided (or withdrawn).",
        "DuplicateContent" => "The same file is already in this Datanet.",
        "EmptyName" => "The Datanet needs a name.",
        "IncorrectCreationFee" => "The creation fee changed; reload the page and try again.",
        "LicenceFeeUnderpaid" | "LicenceFeeOverpaid" => {
            "The licence fee changed; reload the page and try again."
        }
        "AlreadyLicensed" => "You already hold a licence for this Datanet.",
        "NoPublishedVersion" => {
            "This Datanet has no published version yet, so there is nothing to license."
        }
        "VersionCountMismatch" => {
            "Contributions were approved meanwhile; reload and publish again."
        }
        "NothingToClaim" => "There is nothing to claim yet.",
        "InsufficientEscrow" => "Your escrow is too small: deposit OPEN into the escrow first.",
        "AllowanceExceeded" => "Your allowance for this model is used up: raise it first.",
        "ModelInactive" => "This model has been deactivated by its owner.",
        "DuplicateAdapter" => "This adapter is already published as a model.",
        "NotLicensed" => "You need a licence for the Datanet this model was trained on.",
        "UnknownDatanetVersion" => "That Datanet version does not exist.",
        "NoTrainingData" => "A model must name at least one Datanet version it was trained on.",
        "ZeroAmount" => "Enter an amount above zero.",
        "InvalidFeeSplit" => "The three shares must add up to 10,000 basis points (100%).",
        "ERC20InsufficientBalance" => "You do not hold that much GOPEN.",
        "GovernorInsufficientProposerVotes" => {
            "You do not have enough votes to make a proposal: wrap OPEN and delegate first."
        }
        "GovernorUnexpectedProposalState" => {
            "The proposal is not in the right state for this step (see its state on the page)."
        }
        "GovernorAlreadyCastVote" => "You have already voted on this proposal.",
        "GovernorNonexistentProposal" => "There is no such proposal.",
        "GovernorUnableToCancel" => "This proposal can no longer be cancelled.",
        "TimelockUnexpectedOperationState" => {
            "The timelock delay has not passed yet; wait and try again."
        }
        "GovernorInvalidVoteType" => "Choose For, Against or Abstain.",
        "GovernorRestrictedProposer" => "This proposal may only be made by a specific account.",
        _ => "",
    };
    Some(if words.is_empty() {
        format!("The contract refused the transaction: {detail}.")
    } else {
        words.to_string()
    })
}

/// The method a calldata calls, by name, if it is a protocol method ("transfer" otherwise).
pub(crate) fn method_name(input: &[u8]) -> String {
    if input.is_empty() {
        return "transfer".into();
    }
    if input.len() < 4 {
        return "(unknown)".into();
    }
    CONTRACTS
        .iter()
        .find_map(|c| {
            each_contract!(*c, m => {
                decode_calls::<m::Calls>(input).map(|d| variant(&d).to_string())
            })
        })
        .unwrap_or_else(|| format!("0x{}", hex::encode(&input[..4])))
}

/// "Contract.method(args…)" for a call to a protocol contract, or the raw selector.
pub(crate) fn describe_call(cfg: &FactoryConfig, to: Address, input: &[u8]) -> String {
    let name = cfg.contracts.and_then(|c| c.find(to)).map(Contract::name);
    let decoded = name.and_then(|n| {
        each_contract!(n, m => {
            decode_calls::<m::Calls>(input)
        })
    });
    match (name, decoded) {
        (Some(n), Some(d)) => format!("{n}.{d}"),
        (Some(n), None) => format!("{n} (unrecognised call)"),
        (None, _) if input.is_empty() => format!("transfer to {to}"),
        (None, _) => format!("call to {to}"),
    }
}

fn decode_calls<C: SolInterface + std::fmt::Debug>(input: &[u8]) -> Option<String> {
    let c = C::abi_decode(input).ok()?;
    let dbg = format!("{c:?}");
    let inner = dbg.split_once('(').map(|(_, r)| r).unwrap_or(&dbg);
    Some(
        inner
            .strip_suffix(')')
            .unwrap_or(inner)
            .replace("Call ", " "),
    )
}

fn decode_events<E: SolEventInterface + std::fmt::Debug>(
    topics: &[B256],
    data: &[u8],
) -> Option<String> {
    let e = E::decode_raw_log(topics, data).ok()?;
    let dbg = format!("{e:?}");
    let inner = dbg.split_once('(').map(|(_, r)| r).unwrap_or(&dbg);
    Some(inner.strip_suffix(')').unwrap_or(inner).to_string())
}

/// A decoded protocol event, or the raw topic when the emitter is not a protocol contract.
pub(crate) fn describe_log(
    cfg: &FactoryConfig,
    addr: Address,
    topics: &[B256],
    data: &[u8],
) -> String {
    let name = cfg.contracts.and_then(|c| c.find(addr)).map(Contract::name);
    name.and_then(|n| {
        each_contract!(n, m => {
            decode_events::<m::Events>(topics, data)
        })
    })
    .unwrap_or_else(|| match topics.first() {
        Some(t) => format!("log {t}"),
        None => "anonymous log".into(),
    })
}
