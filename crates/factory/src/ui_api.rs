//! `/api/ui/…`: the JSON helpers behind the pages' script.
//!
//! | method | path | does |
//! | --- | --- | --- |
//! | GET | `/api/ui/config` | chain id, contracts, dev accounts, upload limit, rpc path |
//! | POST | `/api/ui/tx/{action}` | form JSON (with `from`) → `{to, data, value}` or a plain-words 422 |
//! | POST | `/api/ui/hash` | file bytes → `{contentHash, size}` (keccak-256, for the upload signature) |
//! | POST | `/api/ui/typed/upload`, `/api/ui/typed/request` | `{signer, datanetId, contentHash, action?, service?}` → EIP-712 `DatanetRequest` (Datanets or jobs domain) + headers |
//! | POST | `/api/ui/explain` | `{data?, message?}` of a failed call → `{message}` in plain words |

use crate::error::UiError;
use crate::explain;
use crate::pages::AppState;
use crate::tx;
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use axum::Json;
use axum::body::Bytes as BodyBytes;
use axum::extract::{Path, State};
use openledger_protocol::{ChainError, Contract, eip712};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the script needs to know about the deployment.
pub(crate) fn client_config(st: &AppState) -> Value {
    json!({
        "chainId": st.cfg.chain_id,
        "rpc": st.cfg.browser_rpc,
        "contracts": st.cfg.contracts,
        "devAccounts": st.cfg.dev_accounts,
        "devMethods": st.cfg.dev_methods,
        "maxUploadBytes": st.cfg.max_upload_bytes,
    })
}

pub(crate) async fn config(State(st): State<AppState>) -> Json<Value> {
    Json(client_config(&st))
}

pub(crate) async fn tx(
    State(st): State<AppState>,
    Path(action): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<tx::TxCall>, UiError> {
    let call = tx::build(&st.chain, &action, &body).await?;
    tracing::debug!(target: "factory::tx", action, to = %call.to, "call prepared");
    Ok(Json(call))
}

pub(crate) async fn hash(
    State(st): State<AppState>,
    body: BodyBytes,
) -> Result<Json<Value>, UiError> {
    if body.len() as u64 > st.cfg.max_upload_bytes {
        return Err(UiError::Invalid(too_large(
            body.len() as u64,
            st.cfg.max_upload_bytes,
        )));
    }
    Ok(Json(
        json!({"contentHash": keccak256(&body), "size": body.len()}),
    ))
}

/// "This file is 70.0 MB; the most a contribution may be is 64.0 MB."
pub(crate) fn too_large(size: u64, max: u64) -> String {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "This file is {:.1} MB; the most a contribution may be is {:.1} MB. Split it into smaller files.",
        mb(size),
        mb(max)
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypedUpload {
    signer: Address,
    datanet_id: u64,
    content_hash: B256,
    #[serde(default)]
    action: Option<String>,
    /// `datanets` (default) or `jobs`: whose domain the request is signed for.
    #[serde(default)]
    service: Option<String>,
}

/// The EIP-712 typed data of a signed request in the `DatanetRequest` scheme of
/// `openledger_datanet::auth`: Datanet uploads/reads, or training jobs (same message, domain
/// "OpenLedger Jobs" on the ModelRegistry; `contentHash` = keccak-256 of the request body).
pub(crate) async fn typed_upload(
    State(st): State<AppState>,
    Json(req): Json<TypedUpload>,
) -> Result<Json<Value>, UiError> {
    let action = req.action.as_deref().unwrap_or("upload");
    let (name, registry) = match req.service.as_deref().unwrap_or("datanets") {
        "datanets" if matches!(action, "upload" | "read") => (
            "OpenLedger Datanets",
            st.chain.addr(Contract::DatanetRegistry)?,
        ),
        "jobs"
            if matches!(
                action,
                "create_job" | "cancel_job" | "publish_job" | "show_job"
            ) =>
        {
            ("OpenLedger Jobs", st.chain.addr(Contract::ModelRegistry)?)
        }
        s => {
            return Err(UiError::Invalid(format!(
                "no signed action {action} for service {s}"
            )));
        }
    };
    let nonce = rand::random::<u64>();
    let expiry = openledger_datanet::auth::now() + 300;
    let domain = match name {
        "OpenLedger Jobs" => eip712::jobs_domain(st.cfg.chain_id, registry),
        _ => eip712::datanets_domain(st.cfg.chain_id, registry),
    };
    let typed = eip712::typed_data(
        &eip712::DatanetRequest {
            action: action.to_string(),
            datanetId: U256::from(req.datanet_id),
            contentHash: req.content_hash,
            nonce: U256::from(nonce),
            expiry: U256::from(expiry),
        },
        domain,
    );
    Ok(Json(json!({
        "typedData": typed,
        "headers": {
            "x-ol-signer": req.signer,
            "x-ol-nonce": nonce.to_string(),
            "x-ol-expiry": expiry.to_string(),
            "x-ol-content-hash": req.content_hash,
        }
    })))
}

#[derive(Deserialize)]
pub(crate) struct TypedSession {
    signer: Address,
    model: String,
}

/// The EIP-712 `InferenceSession` with which an adapter's trainer tries it before it is
/// published (see `openledger_attribution::auth`; paid answers take a voucher instead): valid
/// one hour, for one model.
pub(crate) async fn typed_session(
    State(st): State<AppState>,
    Json(req): Json<TypedSession>,
) -> Result<Json<Value>, UiError> {
    let settlement = st.chain.addr(Contract::AttributionSettlement)?;
    if req.model.is_empty() {
        return Err(UiError::Invalid("Choose a model first.".into()));
    }
    let nonce = rand::random::<u64>();
    let expiry = openledger_datanet::auth::now() + 3600;
    let typed = eip712::typed_data(
        &eip712::InferenceSession {
            model: req.model.clone(),
            nonce: U256::from(nonce),
            expiry: U256::from(expiry),
        },
        eip712::inference_domain(st.cfg.chain_id, settlement),
    );
    Ok(Json(json!({
        "typedData": typed,
        "headers": {"x-ol-signer": req.signer, "x-ol-nonce": nonce.to_string(), "x-ol-expiry": expiry.to_string()},
        "expiry": expiry,
    })))
}

/// One credit of an answer's attribution (`openledger_attribution::record::Credit`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreditIn {
    datanet: u64,
    #[serde(default)]
    version: u64,
    contribution: u64,
    weight_ppm: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreditsReq {
    #[serde(default)]
    top_contributions: Vec<CreditIn>,
    #[serde(default)]
    fee: Option<String>,
}

/// Names the contributor of each credited contribution and splits the fee as the protocol
/// parameters say (treasury / model owner / contributors, contributors by weight).
pub(crate) async fn credits(
    State(st): State<AppState>,
    Json(req): Json<CreditsReq>,
) -> Result<Json<Value>, UiError> {
    use alloy_primitives::U256;
    use openledger_protocol::bindings::{DatanetRegistry, ProtocolParams};
    let reg = DatanetRegistry::new(
        st.chain.addr(Contract::DatanetRegistry)?,
        st.chain.provider.clone(),
    );
    let params = ProtocolParams::new(
        st.chain.addr(Contract::ProtocolParams)?,
        st.chain.provider.clone(),
    );
    let split = params.feeSplit().call().await.map_err(ChainError::from)?;
    let fee: U256 = req
        .fee
        .as_deref()
        .and_then(|f| f.parse().ok())
        .unwrap_or_default();
    let shown: Vec<&CreditIn> = req.top_contributions.iter().take(64).collect();
    // The contract's rule (openledger_protocol::fees), so what the page shows is what is paid.
    // A record's weights sum to 1,000,000 ppm; the page shows its top credits, so the rest of
    // the weight stands in as one more share (not shown) to keep the contract's divisor.
    let mut weights: Vec<U256> = shown.iter().map(|c| U256::from(c.weight_ppm)).collect();
    let listed: u64 = shown.iter().map(|c| u64::from(c.weight_ppm)).sum();
    if listed < 1_000_000 {
        weights.push(U256::from(1_000_000 - listed));
    }
    let pay = openledger_protocol::fees::split(
        fee,
        openledger_protocol::fees::FeeSplitBps {
            treasury: split.treasuryBps,
            model_owner: split.modelOwnerBps,
        },
        &weights,
    );
    let mut out = Vec::new();
    for (c, earned) in shown.iter().zip(&pay.contributions) {
        let info = reg
            .getContribution(U256::from(c.contribution))
            .call()
            .await
            .map_err(ChainError::from)?;
        out.push(json!({
            "datanet": c.datanet, "version": c.version, "contribution": c.contribution,
            "contributor": info.contributor.to_checksum(None), "weightPercent": f64::from(c.weight_ppm) / 10_000.0,
            "earned": crate::view::open(*earned),
        }));
    }
    Ok(Json(json!({
        "credits": out,
        "fee": crate::view::open(fee),
        "split": {"treasuryBps": split.treasuryBps, "modelOwnerBps": split.modelOwnerBps, "contributorsBps": split.contributorsBps},
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyReq {
    batch_id: u64,
    /// The record's settlement leaf (`GET /api/attribution/{id}` gives it as `leaf`).
    leaf: B256,
    proof: Vec<B256>,
}

/// `AttributionSettlement.verifyRecord` of a record's leaf at the latest block.
pub(crate) async fn verify(
    State(st): State<AppState>,
    Json(req): Json<VerifyReq>,
) -> Result<Json<Value>, UiError> {
    use openledger_protocol::bindings::AttributionSettlement;
    let s = AttributionSettlement::new(
        st.chain.addr(Contract::AttributionSettlement)?,
        st.chain.provider.clone(),
    );
    let ok = s
        .verifyRecord(
            alloy_primitives::U256::from(req.batch_id),
            req.leaf,
            req.proof,
        )
        .call()
        .await
        .map_err(ChainError::from)?;
    Ok(Json(json!({"included": ok})))
}

#[derive(Deserialize, Default)]
pub(crate) struct ExplainReq {
    #[serde(default)]
    data: Option<Bytes>,
    #[serde(default)]
    message: Option<String>,
}

/// A sentence for a failed call: decoded revert data first, then well-known node messages.
pub(crate) fn explain_text(data: Option<&[u8]>, message: &str) -> String {
    if let Some(words) = data.and_then(explain::plain_revert) {
        return words;
    }
    let m = message.to_ascii_lowercase();
    if m.contains("insufficient funds") {
        "Your account does not have enough OPEN to pay for this (amount plus gas).".into()
    } else if m.contains("nonce too low") || m.contains("replacement transaction") {
        "Another transaction from this account got in first; try again.".into()
    } else if m.contains("user rejected") || m.contains("user denied") {
        "You cancelled the request in your wallet; nothing was sent.".into()
    } else if m.contains("unknown account") || m.contains("no key") {
        "The node cannot sign for this account: pick a dev account or connect your wallet.".into()
    } else if message.is_empty() {
        "The transaction failed for an unknown reason.".into()
    } else {
        format!("The transaction failed: {message}")
    }
}

pub(crate) async fn explain(Json(req): Json<ExplainReq>) -> Json<Value> {
    let msg = explain_text(
        req.data.as_ref().map(|d| d.as_ref()),
        req.message.as_deref().unwrap_or(""),
    );
    Json(json!({"message": msg}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolError;
    use openledger_protocol::bindings::{DatanetRegistry, ProtocolParams};

    #[test]
    fn reverts_become_sentences() {
        let e = DatanetRegistry::NotCurator {
            datanetId: alloy_primitives::U256::from(3),
            caller: Address::repeat_byte(1),
        }
        .abi_encode();
        assert_eq!(
            explain_text(Some(&e), "execution reverted"),
            "Only the Datanet's owner or one of its curators can do this."
        );
        let e = ProtocolParams::InvalidFeeSplit {
            sum: alloy_primitives::U256::from(9_000),
        }
        .abi_encode();
        assert!(explain_text(Some(&e), "").contains("10,000"));
    }

    #[test]
    fn node_messages_become_sentences() {
        assert!(
            explain_text(None, "insufficient funds for gas * price + value")
                .contains("enough OPEN")
        );
        assert_eq!(
            explain_text(Some(&[1, 2, 3, 4, 5]), "execution reverted: weird"),
            "The transaction failed: execution reverted: weird"
        );
        assert!(too_large(70 << 20, 64 << 20).contains("70.0 MB"));
    }
}
