//! Every EIP-712 message a service accepts, and its domain, defined once: the services sign and
//! verify these structs, and the UI's typed-data endpoint hands wallets [`typed_data`] of the
//! same structs, so a field changed here changes everywhere.
//!
//! | message | domain `name` | `verifyingContract` | used by |
//! | --- | --- | --- | --- |
//! | [`DatanetRequest`] | `OpenLedger Datanets` | DatanetRegistry | Datanet uploads and reads |
//! | [`DatanetRequest`] | `OpenLedger Jobs` | ModelRegistry | training jobs (create, cancel, publish, show) |
//! | [`InferenceSession`] | `OpenLedger Inference` | AttributionSettlement | trying an unpublished adapter |
//! | [`InferenceVoucher`] | `OpenLedger Inference` | AttributionSettlement | paying for answers (signed by the payer) |
//! | [`InferenceReceipt`] | `OpenLedger Inference` | AttributionSettlement | what was answered (signed by the attributor) |
//! | [`ApiKeyRequest`] | `OpenLedger Inference` | AttributionSettlement | API keys |
//!
//! All domains are version `"1"` with the chain id.

use alloy_primitives::Address;
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain, sol};

sol! {
    /// A signed request to a Datanet or the jobs service (`contentHash`: keccak-256 of the
    /// body, or of the id the action names).
    #[derive(Debug, serde::Serialize)]
    struct DatanetRequest {
        string action;
        uint256 datanetId;
        bytes32 contentHash;
        uint256 nonce;
        uint256 expiry;
    }
    /// A payer's signed inference session (`model`: the name the client sends, or `"*"`).
    #[derive(Debug, serde::Serialize)]
    struct InferenceSession {
        string model;
        uint256 nonce;
        uint256 expiry;
    }
    /// A request for an API key.
    #[derive(Debug, serde::Serialize)]
    struct ApiKeyRequest {
        string label;
        uint256 nonce;
        uint256 expiry;
    }
    /// A payer's spending cap on a channel with one attributor (see [`crate::voucher`]).
    #[derive(Debug, PartialEq, Eq, serde::Serialize)]
    struct InferenceVoucher {
        address payer;
        address attributor;
        uint256 modelId;
        uint256 maxPricePer1k;
        uint256 channel;
        uint256 cumulative;
        uint256 expiry;
    }
    /// The attributor's statement of what it answered: the leaf it will settle for a request.
    #[derive(Debug, serde::Serialize)]
    struct InferenceReceipt {
        bytes32 requestKey;
        bytes32 leaf;
    }
}

/// The Datanet service's domain.
pub fn datanets_domain(chain_id: u64, datanet_registry: Address) -> Eip712Domain {
    eip712_domain! {
        name: "OpenLedger Datanets",
        version: "1",
        chain_id: chain_id,
        verifying_contract: datanet_registry,
    }
}

/// The training jobs service's domain.
pub fn jobs_domain(chain_id: u64, model_registry: Address) -> Eip712Domain {
    eip712_domain! {
        name: "OpenLedger Jobs",
        version: "1",
        chain_id: chain_id,
        verifying_contract: model_registry,
    }
}

/// The inference (sessions, API keys, vouchers, receipts) domain; `AttributionSettlement`
/// verifies vouchers under the same domain.
pub fn inference_domain(chain_id: u64, settlement: Address) -> Eip712Domain {
    eip712_domain! {
        name: "OpenLedger Inference",
        version: "1",
        chain_id: chain_id,
        verifying_contract: settlement,
    }
}

/// `msg` under `domain` as the JSON a wallet signs with `eth_signTypedData_v4`
/// (`{types, primaryType, domain, message}`).
pub fn typed_data<S: SolStruct + serde::Serialize>(
    msg: &S,
    domain: Eip712Domain,
) -> serde_json::Value {
    serde_json::to_value(alloy_dyn_abi::TypedData::from_struct(msg, Some(domain)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, U256, address};

    /// The JSON a wallet signs hashes to the same digest the services verify.
    #[test]
    fn typed_data_signs_what_the_services_verify() {
        let domain = jobs_domain(1337, address!("0x00000000000000000000000000000000000000aa"));
        let msg = DatanetRequest {
            action: "create_job".into(),
            datanetId: U256::from(3),
            contentHash: B256::repeat_byte(7),
            nonce: U256::from(99),
            expiry: U256::from(1_700_000_000u64),
        };
        let json = typed_data(&msg, domain.clone());
        assert_eq!(json["primaryType"], "DatanetRequest");
        assert_eq!(json["domain"]["name"], "OpenLedger Jobs");
        let parsed: alloy_dyn_abi::TypedData = serde_json::from_value(json).expect("typed data");
        assert_eq!(
            parsed.eip712_signing_hash().expect("hash"),
            msg.eip712_signing_hash(&domain)
        );
        let s = InferenceSession {
            model: "model-1".into(),
            nonce: U256::from(1),
            expiry: U256::from(2),
        };
        let d = inference_domain(1337, Address::ZERO);
        let parsed: alloy_dyn_abi::TypedData =
            serde_json::from_value(typed_data(&s, d.clone())).expect("typed data");
        assert_eq!(
            parsed.eip712_signing_hash().expect("hash"),
            s.eip712_signing_hash(&d)
        );
    }
}
