//! Who pays for an answer: a signed session header or an API key bound to an address.
//!
//! **Signed session** (EIP-712, signable by a browser wallet with `eth_signTypedData_v4`):
//!
//! ```text
//! domain  {name: "OpenLedger Inference", version: "1", chainId, verifyingContract: AttributionSettlement}
//! message InferenceSession(string model, uint256 nonce, uint256 expiry)
//! headers x-ol-signer: 0x<address>   x-ol-nonce: <decimal>   x-ol-expiry: <unix seconds>
//!         x-ol-signature: <65-byte hex r‖s‖v>
//! ```
//!
//! `model` is the model name the client sends, or `"*"` for any model. The signature is a
//! session credential: it may be reused (fixed headers, e.g. the OpenAI SDK's
//! `default_headers`) until `expiry`, at most 24 hours ahead; the nonce only tells sessions
//! apart. Treat the headers like a bearer token.
//!
//! **API key**: `POST /api/keys` with body `{"label": "..."}` and the same four headers
//! signed over `ApiKeyRequest(string label, uint256 nonce, uint256 expiry)` (same domain; the
//! nonce is single-use) returns `{"key": "olk_<64 hex>", "address": ...}`. Send it as
//! `Authorization: Bearer olk_...` (the OpenAI SDK's `api_key`). Only its keccak-256 is kept.

use alloy::signers::{SignerSync, local::PrivateKeySigner};
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain, sol};
use openledger_datanet::auth::{self as dauth, AuthError, SignedRequest};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use openledger_datanet::auth::headers;

sol! {
    /// A payer's signed inference session.
    #[derive(Debug)]
    struct InferenceSession {
        string model;
        uint256 nonce;
        uint256 expiry;
    }
    /// A request for an API key.
    #[derive(Debug)]
    struct ApiKeyRequest {
        string label;
        uint256 nonce;
        uint256 expiry;
    }
}

/// The EIP-712 domain.
pub fn domain(chain_id: u64, settlement: Address) -> Eip712Domain {
    eip712_domain! {
        name: "OpenLedger Inference",
        version: "1",
        chain_id: chain_id,
        verifying_contract: settlement,
    }
}

fn headers_of(
    signer: Address,
    nonce: U256,
    expiry: u64,
    sig: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        (headers::SIGNER, signer.to_string()),
        (headers::NONCE, nonce.to_string()),
        (headers::EXPIRY, expiry.to_string()),
        (headers::SIGNATURE, hex::encode(sig)),
    ]
}

/// Signs a session for `model` (or `"*"`), valid `validity_secs`; returns the headers.
pub fn sign_session(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    model: &str,
    validity_secs: u64,
) -> Result<Vec<(&'static str, String)>, alloy::signers::Error> {
    let nonce = U256::from(rand::random::<u64>());
    let expiry = dauth::now() + validity_secs;
    let msg = InferenceSession {
        model: model.to_string(),
        nonce,
        expiry: U256::from(expiry),
    };
    let sig = signer.sign_hash_sync(&msg.eip712_signing_hash(domain))?;
    Ok(headers_of(signer.address(), nonce, expiry, &sig.as_bytes()))
}

/// Signs an API key request; returns the headers.
pub fn sign_key_request(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    label: &str,
) -> Result<Vec<(&'static str, String)>, alloy::signers::Error> {
    let nonce = U256::from(rand::random::<u64>());
    let expiry = dauth::now() + 300;
    let msg = ApiKeyRequest {
        label: label.to_string(),
        nonce,
        expiry: U256::from(expiry),
    };
    let sig = signer.sign_hash_sync(&msg.eip712_signing_hash(domain))?;
    Ok(headers_of(signer.address(), nonce, expiry, &sig.as_bytes()))
}

fn check(req: &SignedRequest, hash: B256, now: u64) -> Result<Address, AuthError> {
    if req.expiry < now || req.expiry > now + dauth::MAX_VALIDITY_SECS {
        return Err(AuthError::Expired {
            expiry: req.expiry,
            now,
        });
    }
    match req.signature.recover_address_from_prehash(&hash) {
        Ok(a) if a == req.signer => Ok(a),
        _ => Err(AuthError::BadSignature(req.signer)),
    }
}

/// Checks a session signature for `model`: the signed model must be `model` or `"*"`.
pub fn verify_session(
    req: &SignedRequest,
    domain: &Eip712Domain,
    model: &str,
    now: u64,
) -> Result<Address, AuthError> {
    let hash = |m: &str| {
        InferenceSession {
            model: m.to_string(),
            nonce: req.nonce,
            expiry: U256::from(req.expiry),
        }
        .eip712_signing_hash(domain)
    };
    check(req, hash(model), now).or_else(|_| check(req, hash("*"), now))
}

/// Checks an API key request signature.
pub fn verify_key_request(
    req: &SignedRequest,
    domain: &Eip712Domain,
    label: &str,
    now: u64,
) -> Result<Address, AuthError> {
    let msg = ApiKeyRequest {
        label: label.to_string(),
        nonce: req.nonce,
        expiry: U256::from(req.expiry),
    };
    check(req, msg.eip712_signing_hash(domain), now)
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    /// keccak(key) → (owner, label).
    keys: BTreeMap<B256, (Address, String)>,
    /// (signer, nonce) used for key requests.
    used: BTreeSet<(Address, U256)>,
}

/// API keys bound to addresses, persisted in a JSON file (written by temp file + rename).
pub struct KeyStore {
    path: PathBuf,
    inner: Mutex<KeyFile>,
}

impl KeyStore {
    /// Opens (or creates) the key file.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let inner = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            inner: Mutex::new(inner),
        })
    }

    /// Issues a key for `owner`; `None` if the nonce was used before.
    pub fn issue(
        &self,
        owner: Address,
        nonce: U256,
        label: &str,
    ) -> std::io::Result<Option<String>> {
        let mut f = self.inner.lock();
        if !f.used.insert((owner, nonce)) {
            return Ok(None);
        }
        let key = format!("olk_{}", hex::encode(rand::random::<[u8; 32]>()));
        f.keys
            .insert(keccak256(key.as_bytes()), (owner, label.to_string()));
        let bytes = serde_json::to_vec(&*f).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(Some(key))
    }

    /// The owner of a key.
    pub fn owner(&self, key: &str) -> Option<Address> {
        self.inner
            .lock()
            .keys
            .get(&keccak256(key.as_bytes()))
            .map(|k| k.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(h: &[(&'static str, String)]) -> Result<SignedRequest, AuthError> {
        dauth::parse(|k| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn sessions_bind_model_signer_and_domain() -> Result<(), Box<dyn std::error::Error>> {
        let key = PrivateKeySigner::random();
        let d = domain(1337, Address::with_last_byte(5));
        let req = parse(&sign_session(&key, &d, "m1", 60)?)?;
        assert_eq!(verify_session(&req, &d, "m1", dauth::now())?, key.address());
        assert!(verify_session(&req, &d, "m2", dauth::now()).is_err());
        assert!(verify_session(&req, &domain(1, Address::ZERO), "m1", dauth::now()).is_err());
        assert!(matches!(
            verify_session(&req, &d, "m1", dauth::now() + 120),
            Err(AuthError::Expired { .. })
        ));
        let any = parse(&sign_session(&key, &d, "*", 60)?)?;
        assert_eq!(verify_session(&any, &d, "m2", dauth::now())?, key.address());
        let forged = SignedRequest {
            signer: Address::with_last_byte(1),
            ..req
        };
        assert!(verify_session(&forged, &d, "m1", dauth::now()).is_err());
        Ok(())
    }

    #[test]
    fn keys_persist_and_nonces_are_single_use() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        let a = Address::with_last_byte(9);
        let k = ks.issue(a, U256::from(1), "laptop")?.ok_or("no key")?;
        assert!(ks.issue(a, U256::from(1), "again")?.is_none());
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(ks.owner(&k), Some(a));
        assert_eq!(ks.owner("olk_nope"), None);
        Ok(())
    }
}
