//! Payer-signed vouchers and the settlement leaf, as `AttributionSettlement` checks them.
//!
//! A payer signs an EIP-712 [`InferenceVoucher`] (domain [`crate::eip712::inference_domain`]):
//! a cumulative spending cap on the channel [`channel_key`]`(payer, attributor, channel)`, for
//! one model (`modelId`, 0 = any), at most `maxPricePer1k` wei per 1,000 tokens, until `expiry`
//! (unix seconds; the contract settles answers given under it until `expiry + voucherGrace`).
//! The contract keeps `spent[channelKey]` and never charges past the highest voucher's
//! `cumulative`. Each settled answer becomes a Merkle leaf ([`Leaf::hash`]) that the contract
//! computes itself from what it checked, so the batch root commits to payer, channel, fee, token
//! counts, price, engine, transcript hashes and shares.

use crate::bindings::AttributionSettlement;
use crate::eip712::InferenceVoucher;
use alloy_primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, SolValue};
use serde::{Deserialize, Serialize};

/// The string whose keccak-256 is the first word of every leaf preimage.
pub const LEAF_TAG: &str = "OpenLedger.InferenceLeaf.v2";

/// Most contributions one settled answer may credit.
pub const MAX_SHARES: usize = 64;

/// `keccak256(abi.encode(payer, attributor, channel))`.
pub fn channel_key(payer: Address, attributor: Address, channel: U256) -> B256 {
    keccak256((payer, attributor, channel).abi_encode_params())
}

/// A voucher with its payer's signature (65 bytes r‖s‖v for an EOA).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedVoucher {
    /// Signing account.
    pub payer: Address,
    /// The only account that may redeem it.
    pub attributor: Address,
    /// `ModelRegistry` id, or 0 for any model.
    pub model_id: U256,
    /// Highest price accepted, wei per 1,000 tokens.
    pub max_price_per_1k: U256,
    /// Channel number chosen by the payer.
    pub channel: U256,
    /// Most that may ever be charged on the channel, in wei.
    pub cumulative: U256,
    /// Unix seconds after which nothing new is served under it.
    pub expiry: U256,
    /// The payer's signature.
    pub signature: Bytes,
}

/// Why a voucher was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VoucherError {
    /// The signature is malformed or not the payer's.
    #[error("the voucher is not signed by its payer {0}")]
    BadSignature(Address),
}

impl SignedVoucher {
    /// The signed message.
    pub fn message(&self) -> InferenceVoucher {
        InferenceVoucher {
            payer: self.payer,
            attributor: self.attributor,
            modelId: self.model_id,
            maxPricePer1k: self.max_price_per_1k,
            channel: self.channel,
            cumulative: self.cumulative,
            expiry: self.expiry,
        }
    }

    /// Joins a message and its signature.
    pub fn new(msg: &InferenceVoucher, signature: Bytes) -> Self {
        Self {
            payer: msg.payer,
            attributor: msg.attributor,
            model_id: msg.modelId,
            max_price_per_1k: msg.maxPricePer1k,
            channel: msg.channel,
            cumulative: msg.cumulative,
            expiry: msg.expiry,
            signature,
        }
    }

    /// The channel's key.
    pub fn channel_key(&self) -> B256 {
        channel_key(self.payer, self.attributor, self.channel)
    }

    /// Checks that the payer signed it under `domain` (an EOA signature; a contract wallet's
    /// ERC-1271 signature is checked by the contract only).
    pub fn verify(&self, domain: &Eip712Domain) -> Result<(), VoucherError> {
        let hash = self.message().eip712_signing_hash(domain);
        match Signature::try_from(self.signature.as_ref())
            .ok()
            .and_then(|s| s.recover_address_from_prehash(&hash).ok())
        {
            Some(a) if a == self.payer => Ok(()),
            _ => Err(VoucherError::BadSignature(self.payer)),
        }
    }

    /// The contract's form.
    pub fn to_binding(&self) -> AttributionSettlement::Voucher {
        AttributionSettlement::Voucher {
            payer: self.payer,
            attributor: self.attributor,
            modelId: self.model_id,
            maxPricePer1k: self.max_price_per_1k,
            channel: self.channel,
            cumulative: self.cumulative,
            expiry: self.expiry,
            signature: self.signature.clone(),
        }
    }
}

/// Everything a settled answer's leaf commits to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaf {
    /// keccak-256 of the canonical attribution record.
    pub record_id: B256,
    /// keccak-256 of the server's request id.
    pub request_key: B256,
    /// Who pays.
    pub payer: Address,
    /// The voucher channel charged.
    pub channel_key: B256,
    /// `ModelRegistry` id.
    pub model_id: U256,
    /// keccak-256 of the engine name.
    pub engine_id: B256,
    /// keccak-256 of the prompt tokens (u32 little-endian each).
    pub prompt_hash: B256,
    /// keccak-256 of the answer tokens.
    pub answer_hash: B256,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Answer tokens.
    pub completion_tokens: u64,
    /// Wei per 1,000 tokens the answer was served at.
    pub price_per_1k: U256,
    /// `⌈price × tokens / 1000⌉`.
    pub fee: U256,
    /// No contribution has evidence.
    pub fallback: bool,
    /// (contribution id, weight ppm), ids strictly ascending, weights summing to 1,000,000.
    pub shares: Vec<(u64, u32)>,
}

impl Leaf {
    fn shares(&self) -> Vec<AttributionSettlement::Share> {
        self.shares
            .iter()
            .map(|(c, w)| AttributionSettlement::Share {
                contributionId: U256::from(*c),
                weight: U256::from(*w),
            })
            .collect()
    }

    /// The leaf: `keccak256(abi.encode(keccak256(LEAF_TAG), recordId, requestKey, payer,
    /// channelKey, modelId, engineId, promptHash, answerHash, promptTokens, completionTokens,
    /// pricePer1k, fee, fallback, keccak256(abi.encode(shares))))`, as `leafOf` computes it.
    pub fn hash(&self) -> B256 {
        let shares = keccak256(self.shares().abi_encode());
        let head = (
            keccak256(LEAF_TAG),
            self.record_id,
            self.request_key,
            self.payer,
            self.channel_key,
            self.model_id,
            self.engine_id,
            self.prompt_hash,
        );
        let tail = (
            self.answer_hash,
            U256::from(self.prompt_tokens),
            U256::from(self.completion_tokens),
            self.price_per_1k,
            self.fee,
            self.fallback,
            shares,
        );
        let mut bytes = head.abi_encode_params();
        bytes.extend(tail.abi_encode_params());
        keccak256(bytes)
    }

    /// The contract's form, under voucher `voucher` of the batch.
    pub fn to_inference(&self, voucher: usize) -> AttributionSettlement::Inference {
        AttributionSettlement::Inference {
            recordId: self.record_id,
            requestKey: self.request_key,
            voucher: U256::from(voucher),
            modelId: self.model_id,
            engineId: self.engine_id,
            promptHash: self.prompt_hash,
            answerHash: self.answer_hash,
            promptTokens: U256::from(self.prompt_tokens),
            completionTokens: U256::from(self.completion_tokens),
            pricePer1k: self.price_per_1k,
            isFallback: self.fallback,
            shares: self.shares(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;

    #[test]
    fn a_tampered_voucher_fails_verification() {
        let d = crate::eip712::inference_domain(1337, Address::ZERO);
        let v = SignedVoucher {
            payer: address!("0x00000000000000000000000000000000000000aa"),
            attributor: Address::ZERO,
            model_id: U256::ZERO,
            max_price_per_1k: U256::from(1),
            channel: U256::from(1),
            cumulative: U256::from(1),
            expiry: U256::from(1),
            signature: Bytes::from(vec![1u8; 65]),
        };
        assert_eq!(v.verify(&d), Err(VoucherError::BadSignature(v.payer)));
        let short = SignedVoucher {
            signature: Bytes::new(),
            ..v
        };
        assert!(short.verify(&d).is_err());
    }
}
