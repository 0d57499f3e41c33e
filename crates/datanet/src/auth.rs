//! EIP-712 signed requests.
//!
//! Domain: `{name: "OpenLedger Datanets", version: "1", chainId, verifyingContract: DatanetRegistry}`.
//! Message: `DatanetRequest(string action,uint256 datanetId,bytes32 contentHash,uint256 nonce,uint256 expiry)`.
//! `action` is `"upload"` (contentHash = keccak-256 of the file) or `"read"` (contentHash = the
//! content or manifest asked for). Sent as headers: `x-ol-signer`, `x-ol-nonce`, `x-ol-expiry`
//! (unix seconds), `x-ol-signature` (65-byte hex). A nonce can be used once per signer while
//! its signature is unexpired; expiries more than [`MAX_VALIDITY_SECS`] ahead are refused.

use alloy::signers::{SignerSync, local::PrivateKeySigner};
use alloy_primitives::Signature;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};

pub use openledger_protocol::eip712::DatanetRequest;

/// Longest accepted signature validity.
pub const MAX_VALIDITY_SECS: u64 = 24 * 3600;

/// Header names.
pub mod headers {
    /// Claimed signer address.
    pub const SIGNER: &str = "x-ol-signer";
    /// Nonce (decimal).
    pub const NONCE: &str = "x-ol-nonce";
    /// Expiry, unix seconds.
    pub const EXPIRY: &str = "x-ol-expiry";
    /// 65-byte signature, hex.
    pub const SIGNATURE: &str = "x-ol-signature";
    /// keccak-256 of the uploaded bytes.
    pub const CONTENT_HASH: &str = "x-ol-content-hash";
}

/// The EIP-712 domain.
pub fn domain(chain_id: u64, registry: Address) -> Eip712Domain {
    openledger_protocol::eip712::datanets_domain(chain_id, registry)
}

/// The fields of a signed request, as parsed from headers.
#[derive(Clone, Debug)]
pub struct SignedRequest {
    /// Claimed signer.
    pub signer: Address,
    /// Nonce.
    pub nonce: U256,
    /// Expiry (unix seconds).
    pub expiry: u64,
    /// Signature.
    pub signature: Signature,
}

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Headers missing or malformed.
    #[error("missing or malformed signature header {0}")]
    Missing(&'static str),
    /// The signature does not recover to the claimed signer.
    #[error("signature does not match signer {0}")]
    BadSignature(Address),
    /// The signature has expired (or expires too far ahead).
    #[error("signature expired at {expiry} (now {now})")]
    Expired {
        /// Expiry.
        expiry: u64,
        /// Now.
        now: u64,
    },
    /// The nonce was used before.
    #[error("nonce {nonce} of {signer} was already used")]
    Replayed {
        /// Signer.
        signer: Address,
        /// Nonce.
        nonce: U256,
    },
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Signs a request; returns the header values.
pub fn sign(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    action: &str,
    datanet_id: impl Into<openledger_protocol::DatanetId>,
    content_hash: B256,
    validity_secs: u64,
) -> Result<Vec<(&'static str, String)>, alloy::signers::Error> {
    let nonce = U256::from(rand::random::<u128>());
    sign_with(
        signer,
        domain,
        action,
        datanet_id.into().get(),
        content_hash,
        nonce,
        now() + validity_secs,
    )
}

/// Signs a request with an explicit nonce and expiry; returns the header values.
pub fn sign_with(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    action: &str,
    datanet_id: u64,
    content_hash: B256,
    nonce: U256,
    expiry: u64,
) -> Result<Vec<(&'static str, String)>, alloy::signers::Error> {
    let req = DatanetRequest {
        action: action.to_string(),
        datanetId: U256::from(datanet_id),
        contentHash: content_hash,
        nonce,
        expiry: U256::from(expiry),
    };
    let sig = signer.sign_hash_sync(&req.eip712_signing_hash(domain))?;
    Ok(vec![
        (headers::SIGNER, signer.address().to_string()),
        (headers::NONCE, nonce.to_string()),
        (headers::EXPIRY, expiry.to_string()),
        (headers::SIGNATURE, hex::encode(sig.as_bytes())),
    ])
}

/// Parses the signature headers.
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<SignedRequest, AuthError> {
    let signer = get(headers::SIGNER)
        .and_then(|s| s.parse::<Address>().ok())
        .ok_or(AuthError::Missing(headers::SIGNER))?;
    let nonce = get(headers::NONCE)
        .and_then(|s| s.parse::<U256>().ok())
        .ok_or(AuthError::Missing(headers::NONCE))?;
    let expiry = get(headers::EXPIRY)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(AuthError::Missing(headers::EXPIRY))?;
    let signature = get(headers::SIGNATURE)
        .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
        .and_then(|b| Signature::try_from(b.as_slice()).ok())
        .ok_or(AuthError::Missing(headers::SIGNATURE))?;
    Ok(SignedRequest {
        signer,
        nonce,
        expiry,
        signature,
    })
}

impl SignedRequest {
    /// Checks expiry and that the signature recovers to the claimed signer (not the nonce).
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        action: &str,
        datanet_id: u64,
        content_hash: B256,
        now: u64,
    ) -> Result<(), AuthError> {
        if self.expiry < now || self.expiry > now + MAX_VALIDITY_SECS {
            return Err(AuthError::Expired {
                expiry: self.expiry,
                now,
            });
        }
        let req = DatanetRequest {
            action: action.to_string(),
            datanetId: U256::from(datanet_id),
            contentHash: content_hash,
            nonce: self.nonce,
            expiry: U256::from(self.expiry),
        };
        let hash = req.eip712_signing_hash(domain);
        match self.signature.recover_address_from_prehash(&hash) {
            Ok(a) if a == self.signer => Ok(()),
            _ => Err(AuthError::BadSignature(self.signer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_forgery() -> Result<(), Box<dyn std::error::Error>> {
        let key = PrivateKeySigner::random();
        let other = PrivateKeySigner::random();
        let d = domain(1337, Address::with_last_byte(1));
        let h = B256::repeat_byte(3);
        let hdrs = sign(&key, &d, "upload", 4, h, 60)?;
        let get = |k: &str| hdrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let req = parse(get)?;
        req.verify(&d, "upload", 4, h, now())?;
        // Different content, datanet, action or domain: refused.
        assert!(req.verify(&d, "upload", 4, B256::ZERO, now()).is_err());
        assert!(req.verify(&d, "upload", 5, h, now()).is_err());
        assert!(req.verify(&d, "read", 4, h, now()).is_err());
        assert!(
            req.verify(&domain(1, Address::ZERO), "upload", 4, h, now())
                .is_err()
        );
        // Claiming another signer: refused.
        let forged = SignedRequest {
            signer: other.address(),
            ..req.clone()
        };
        assert!(matches!(
            forged.verify(&d, "upload", 4, h, now()),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            req.verify(&d, "upload", 4, h, now() + 120),
            Err(AuthError::Expired { .. })
        ));
        Ok(())
    }
}
