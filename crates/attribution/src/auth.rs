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
use alloy_sol_types::{Eip712Domain, SolStruct};
use openledger_datanet::auth::{self as dauth, AuthError, SignedRequest};
use openledger_datanet::nonces::NonceStore;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

pub use openledger_datanet::auth::headers;

pub use openledger_protocol::eip712::{ApiKeyRequest, InferenceSession};

/// The EIP-712 domain.
pub fn domain(chain_id: u64, settlement: Address) -> Eip712Domain {
    openledger_protocol::eip712::inference_domain(chain_id, settlement)
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

/// The earlier `keys.json` format (the whole file rewritten per key, nonces kept for ever):
/// read once by [`KeyStore::open`], its keys moved into the log, then removed.
#[derive(Default, Deserialize)]
struct LegacyKeyFile {
    /// keccak(key) → (owner, label).
    keys: BTreeMap<B256, (Address, String)>,
}

/// One issued key in `keys.log`.
#[derive(Serialize, Deserialize)]
struct KeyLine {
    /// keccak-256 of the key.
    hash: B256,
    /// The address it acts for.
    owner: Address,
    /// The label it was requested with.
    label: String,
}

const KEY_LOG_HEADER: &str = "openledger-keys 1";

/// keccak(key) → (owner, label), and the log they are appended to.
type Keys = (HashMap<B256, (Address, String)>, std::fs::File);

/// API keys bound to addresses, and the used nonces of key requests.
///
/// On disk, next to the configured path (`<dir>/keys.json`):
///
/// ```text
/// keys.log        append-only: "openledger-keys 1", then one JSON line per key
///                 {"hash": keccak256(key), "owner", "label"}, fdatasync'ed before the key
///                 is returned (a torn last line is dropped at open)
/// key-nonces.log  openledger_datanet::nonces: a key request's nonce, kept until its signature
///                 has expired (at most MAX_VALIDITY_SECS = 24 h after it was used)
/// ```
///
/// Issuing a key appends one line to each; nothing is rewritten per request, and used nonces
/// are forgotten once they cannot be replayed, so the nonce log stays bounded.
pub struct KeyStore {
    log_path: PathBuf,
    keys: Mutex<Keys>,
    nonces: NonceStore,
}

impl KeyStore {
    /// Opens (or creates) the key store for `path` (`keys.json`; see the type's docs).
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let log_path = path.with_extension("log");
        let nonce_path = path.with_file_name("key-nonces.log");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut keys = HashMap::new();
        let text = match std::fs::read(&log_path) {
            Ok(b) => String::from_utf8(b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        // A crash mid-append leaves a torn last line: its key was never handed out.
        let good = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for (i, line) in good.lines().enumerate() {
            if i == 0 {
                if line != KEY_LOG_HEADER {
                    return Err(std::io::Error::other(format!(
                        "{}: not a key log ({line:?})",
                        log_path.display()
                    )));
                }
                continue;
            }
            let k: KeyLine = serde_json::from_str(line).map_err(|e| {
                std::io::Error::other(format!("{} line {}: {e}", log_path.display(), i + 1))
            })?;
            keys.insert(k.hash, (k.owner, k.label));
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        if good.len() != text.len() {
            log.set_len(good.len() as u64)?;
        }
        if good.is_empty() {
            log.write_all(format!("{KEY_LOG_HEADER}\n").as_bytes())?;
            log.sync_data()?;
        }
        // Keys of the earlier whole-file format move into the log once.
        match std::fs::read(&path) {
            Ok(b) => {
                let legacy: LegacyKeyFile =
                    serde_json::from_slice(&b).map_err(std::io::Error::other)?;
                for (hash, (owner, label)) in legacy.keys {
                    if let std::collections::hash_map::Entry::Vacant(e) = keys.entry(hash) {
                        append_key(&mut log, hash, owner, &label)?;
                        e.insert((owner, label));
                    }
                }
                std::fs::remove_file(&path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let nonces = NonceStore::open(nonce_path, dauth::now()).map_err(std::io::Error::other)?;
        Ok(Self {
            log_path,
            keys: Mutex::new((keys, log)),
            nonces,
        })
    }

    /// Issues a key for `owner`; `None` if the nonce was used before (and has not expired).
    /// The nonce is kept for [`dauth::MAX_VALIDITY_SECS`], the longest a key request's
    /// signature can be valid.
    pub fn issue(
        &self,
        owner: Address,
        nonce: U256,
        label: &str,
    ) -> std::io::Result<Option<String>> {
        let now = dauth::now();
        let fresh = self
            .nonces
            .use_nonce(owner, nonce, now + dauth::MAX_VALIDITY_SECS, now)
            .map_err(std::io::Error::other)?;
        if !fresh {
            return Ok(None);
        }
        let key = format!("olk_{}", hex::encode(rand::random::<[u8; 32]>()));
        let hash = keccak256(key.as_bytes());
        let mut guard = self.keys.lock();
        let (keys, log) = &mut *guard;
        append_key(log, hash, owner, label)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.log_path.display())))?;
        keys.insert(hash, (owner, label.to_string()));
        Ok(Some(key))
    }

    /// The owner of a key.
    pub fn owner(&self, key: &str) -> Option<Address> {
        self.keys
            .lock()
            .0
            .get(&keccak256(key.as_bytes()))
            .map(|k| k.0)
    }

    /// Used key-request nonces held now (bounded by the requests of the last 24 h).
    pub fn nonces_held(&self) -> usize {
        self.nonces.len()
    }
}

fn append_key(
    log: &mut std::fs::File,
    hash: B256,
    owner: Address,
    label: &str,
) -> std::io::Result<()> {
    let line = serde_json::to_string(&KeyLine {
        hash,
        owner,
        label: label.to_string(),
    })
    .map_err(std::io::Error::other)?;
    log.write_all(format!("{line}\n").as_bytes())?;
    log.sync_data()
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
        let k2 = ks.issue(a, U256::from(2), "phone")?.ok_or("no key")?;
        drop(ks);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(ks.owner(&k), Some(a));
        assert_eq!(ks.owner(&k2), Some(a));
        assert_eq!(ks.owner("olk_nope"), None);
        // The nonce is still refused after the restart.
        assert!(ks.issue(a, U256::from(1), "replay")?.is_none());
        assert_eq!(ks.nonces_held(), 2);
        // Append-only: a header and one line per key.
        let log = std::fs::read_to_string(dir.path().join("keys.log"))?;
        assert_eq!(log.lines().count(), 3, "{log}");
        Ok(())
    }

    #[test]
    fn the_old_key_file_moves_into_the_log_and_a_torn_line_is_dropped()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let a = Address::with_last_byte(4);
        let key = "olk_legacy";
        let legacy = serde_json::json!({
            "keys": {keccak256(key.as_bytes()).to_string(): [a, "old laptop"]},
            "used": [[a, "0x5"]],
        });
        std::fs::write(dir.path().join("keys.json"), serde_json::to_vec(&legacy)?)?;
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(ks.owner(key), Some(a));
        assert!(!dir.path().join("keys.json").exists());
        let k = ks.issue(a, U256::from(6), "new")?.ok_or("no key")?;
        drop(ks);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("keys.log"))?;
        f.write_all(b"{\"hash\": \"0x12")?;
        drop(f);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!((ks.owner(key), ks.owner(&k)), (Some(a), Some(a)));
        let k3 = ks.issue(a, U256::from(7), "after")?.ok_or("no key")?;
        drop(ks);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(ks.owner(&k3), Some(a));
        Ok(())
    }
}
