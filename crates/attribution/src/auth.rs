//! Who pays for an answer: a payer-signed voucher (in headers or bound to an API key), and who
//! may try an unpublished adapter: a signed session.
//!
//! **Voucher** (EIP-712 `InferenceVoucher`, see `openledger_protocol::voucher`; signable by a
//! browser wallet with `eth_signTypedData_v4`, fetched ready to sign from
//! `GET /api/vouchers/typed-data`):
//!
//! ```text
//! domain  {name: "OpenLedger Inference", version: "1", chainId, verifyingContract: AttributionSettlement}
//! message InferenceVoucher(address payer, address attributor, uint256 modelId,
//!         uint256 maxPricePer1k, uint256 channel, uint256 cumulative, uint256 expiry)
//! headers x-ol-signer: payer   x-ol-channel   x-ol-cumulative (wei)   x-ol-max-price (wei per
//!         1,000 tokens)   x-ol-model-id (0 = any)   x-ol-expiry (unix seconds)
//!         x-ol-signature: <65-byte hex r‖s‖v>
//! ```
//!
//! The attributor is the server's own (`GET /api/attribution/terms`). Signed once, the headers
//! are a spending cap until `expiry` (fixed headers, e.g. the OpenAI SDK's `default_headers`):
//! whatever happens, the payer is never charged more than `cumulative` on the channel. A client
//! that wants a tighter bound signs a new voucher per request on the same channel with a higher
//! `cumulative`.
//!
//! **API key**: `POST /api/keys` with body `{"label": "...", "voucher": {…}}` and the headers
//! below signed over `ApiKeyRequest(string label, uint256 nonce, uint256 expiry)` (same domain;
//! the nonce is single-use) returns `{"key": "olk_<64 hex>", "address": ...}`. Send it as
//! `Authorization: Bearer olk_...` (the OpenAI SDK's `api_key`): answers are charged under the
//! key's voucher, which `POST /api/keys/voucher` replaces with a higher one on the same channel.
//! Only the key's keccak-256 is kept.
//!
//! **Session** (`InferenceSession(string model, uint256 nonce, uint256 expiry)`, headers
//! `x-ol-signer`, `x-ol-nonce`, `x-ol-expiry`, `x-ol-signature`): proves who asks, pays
//! nothing; only for an adapter's trainer trying it before it is published. `model` is the
//! model name the client sends, or `"*"`.

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

pub use openledger_protocol::eip712::{ApiKeyRequest, InferenceSession, InferenceVoucher};
pub use openledger_protocol::voucher::SignedVoucher;

/// The voucher headers besides `x-ol-signer`, `x-ol-expiry` and `x-ol-signature`.
pub mod voucher_headers {
    /// Channel number.
    pub const CHANNEL: &str = "x-ol-channel";
    /// Cumulative cap, wei.
    pub const CUMULATIVE: &str = "x-ol-cumulative";
    /// Highest price, wei per 1,000 tokens.
    pub const MAX_PRICE: &str = "x-ol-max-price";
    /// `ModelRegistry` id, 0 for any model.
    pub const MODEL_ID: &str = "x-ol-model-id";
}

/// What a voucher grants, before signing.
#[derive(Clone, Debug)]
pub struct VoucherTerms {
    /// Redeeming attributor.
    pub attributor: Address,
    /// Model id, 0 for any.
    pub model_id: u64,
    /// Highest price, wei per 1,000 tokens.
    pub max_price_per_1k: U256,
    /// Channel number.
    pub channel: U256,
    /// Cumulative cap, wei.
    pub cumulative: U256,
    /// Seconds from now until it expires.
    pub validity_secs: u64,
}

/// Signs a voucher.
pub fn sign_voucher(
    signer: &PrivateKeySigner,
    domain: &Eip712Domain,
    t: &VoucherTerms,
) -> Result<SignedVoucher, alloy::signers::Error> {
    let msg = InferenceVoucher {
        payer: signer.address(),
        attributor: t.attributor,
        modelId: U256::from(t.model_id),
        maxPricePer1k: t.max_price_per_1k,
        channel: t.channel,
        cumulative: t.cumulative,
        expiry: U256::from(dauth::now() + t.validity_secs),
    };
    let sig = signer.sign_hash_sync(&msg.eip712_signing_hash(domain))?;
    Ok(SignedVoucher::new(&msg, sig.as_bytes().to_vec().into()))
}

/// A voucher as request headers.
pub fn voucher_headers(v: &SignedVoucher) -> Vec<(&'static str, String)> {
    vec![
        (headers::SIGNER, v.payer.to_string()),
        (voucher_headers::CHANNEL, v.channel.to_string()),
        (voucher_headers::CUMULATIVE, v.cumulative.to_string()),
        (voucher_headers::MAX_PRICE, v.max_price_per_1k.to_string()),
        (voucher_headers::MODEL_ID, v.model_id.to_string()),
        (headers::EXPIRY, v.expiry.to_string()),
        (headers::SIGNATURE, hex::encode(&v.signature)),
    ]
}

/// Reads a voucher for `attributor` from request headers (`None` without `x-ol-channel`). The
/// signature is not checked here ([`SignedVoucher::verify`]).
pub fn parse_voucher(
    get: impl Fn(&str) -> Option<String>,
    attributor: Address,
) -> Result<Option<SignedVoucher>, String> {
    let Some(channel) = get(voucher_headers::CHANNEL) else {
        return Ok(None);
    };
    let need = |k: &str| get(k).ok_or_else(|| format!("a voucher needs the {k} header"));
    let num = |k: &str, v: String| {
        v.trim()
            .parse::<U256>()
            .map_err(|_| format!("{k} must be a decimal number, got {v:?}"))
    };
    let payer: Address = need(headers::SIGNER)?
        .trim()
        .parse()
        .map_err(|_| format!("{} must be an address", headers::SIGNER))?;
    let sig = need(headers::SIGNATURE)?;
    let signature = hex::decode(sig.trim().trim_start_matches("0x"))
        .map_err(|_| format!("{} must be hex", headers::SIGNATURE))?;
    Ok(Some(SignedVoucher {
        payer,
        attributor,
        model_id: num(voucher_headers::MODEL_ID, need(voucher_headers::MODEL_ID)?)?,
        max_price_per_1k: num(
            voucher_headers::MAX_PRICE,
            need(voucher_headers::MAX_PRICE)?,
        )?,
        channel: num(voucher_headers::CHANNEL, channel)?,
        cumulative: num(
            voucher_headers::CUMULATIVE,
            need(voucher_headers::CUMULATIVE)?,
        )?,
        expiry: num(headers::EXPIRY, need(headers::EXPIRY)?)?,
        signature: signature.into(),
    }))
}

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
    /// The voucher its answers are charged under (a later line for the same key replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voucher: Option<SignedVoucher>,
}

/// One issued key.
#[derive(Clone)]
struct KeyEntry {
    owner: Address,
    label: String,
    voucher: Option<SignedVoucher>,
}

const KEY_LOG_HEADER: &str = "openledger-keys 1";

/// keccak(key) → its entry, and the log they are appended to.
type Keys = (HashMap<B256, KeyEntry>, std::fs::File);

/// API keys bound to addresses, and the used nonces of key requests.
///
/// On disk, next to the configured path (`<dir>/keys.json`):
///
/// ```text
/// keys.log        append-only: "openledger-keys 1", then one JSON line per key or voucher
///                 change {"hash": keccak256(key), "owner", "label", "voucher"?}, the last
///                 line of a key winning, fdatasync'ed before the key is returned or the
///                 voucher accepted (a torn last line is dropped at open)
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
            keys.insert(
                k.hash,
                KeyEntry {
                    owner: k.owner,
                    label: k.label,
                    voucher: k.voucher,
                },
            );
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
                        let entry = KeyEntry {
                            owner,
                            label,
                            voucher: None,
                        };
                        append_key(&mut log, hash, &entry)?;
                        e.insert(entry);
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

    /// Issues a key for `owner`, charged under `voucher`; `None` if the nonce was used before
    /// (and has not expired). The nonce is kept for [`dauth::MAX_VALIDITY_SECS`], the longest a
    /// key request's signature can be valid.
    pub fn issue(
        &self,
        owner: Address,
        nonce: U256,
        label: &str,
        voucher: Option<SignedVoucher>,
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
        let entry = KeyEntry {
            owner,
            label: label.to_string(),
            voucher,
        };
        let mut guard = self.keys.lock();
        let (keys, log) = &mut *guard;
        append_key(log, hash, &entry)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.log_path.display())))?;
        keys.insert(hash, entry);
        Ok(Some(key))
    }

    /// The owner of a key.
    pub fn owner(&self, key: &str) -> Option<Address> {
        self.lookup(key).map(|k| k.0)
    }

    /// The owner of a key and the voucher its answers are charged under.
    pub fn lookup(&self, key: &str) -> Option<(Address, Option<SignedVoucher>)> {
        self.keys
            .lock()
            .0
            .get(&keccak256(key.as_bytes()))
            .map(|k| (k.owner, k.voucher.clone()))
    }

    /// Replaces a key's voucher (the caller checked its signature). Refused, with the reason,
    /// when the key is unknown, the voucher is another account's, or it lowers the cap of the
    /// key's channel.
    pub fn set_voucher(
        &self,
        key: &str,
        voucher: SignedVoucher,
    ) -> std::io::Result<Result<(), String>> {
        let hash = keccak256(key.as_bytes());
        let mut guard = self.keys.lock();
        let (keys, log) = &mut *guard;
        let Some(entry) = keys.get(&hash) else {
            return Ok(Err("unknown API key".into()));
        };
        if voucher.payer != entry.owner {
            return Ok(Err(format!(
                "the voucher is signed by {}, the key acts for {}",
                voucher.payer, entry.owner
            )));
        }
        if let Some(old) = &entry.voucher
            && old.channel == voucher.channel
            && old.cumulative > voucher.cumulative
        {
            return Ok(Err(format!(
                "the key's voucher on channel {} allows {} wei; a replacement cannot allow less ({})",
                old.channel, old.cumulative, voucher.cumulative
            )));
        }
        let entry = KeyEntry {
            voucher: Some(voucher),
            ..entry.clone()
        };
        append_key(log, hash, &entry)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.log_path.display())))?;
        keys.insert(hash, entry);
        Ok(Ok(()))
    }

    /// Used key-request nonces held now (bounded by the requests of the last 24 h).
    pub fn nonces_held(&self) -> usize {
        self.nonces.len()
    }
}

fn append_key(log: &mut std::fs::File, hash: B256, entry: &KeyEntry) -> std::io::Result<()> {
    let line = serde_json::to_string(&KeyLine {
        hash,
        owner: entry.owner,
        label: entry.label.clone(),
        voucher: entry.voucher.clone(),
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
    fn voucher_headers_round_trip_and_bind_the_attributor() -> Result<(), Box<dyn std::error::Error>>
    {
        let payer = PrivateKeySigner::random();
        let attributor = Address::with_last_byte(0xa7);
        let d = domain(1337, Address::with_last_byte(5));
        let terms = VoucherTerms {
            attributor,
            model_id: 3,
            max_price_per_1k: U256::from(1000),
            channel: U256::from(42),
            cumulative: U256::from(10u64.pow(18)),
            validity_secs: 60,
        };
        let v = sign_voucher(&payer, &d, &terms)?;
        let h = voucher_headers(&v);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let parsed = parse_voucher(get, attributor)?.ok_or("no voucher")?;
        assert_eq!(parsed, v);
        parsed.verify(&d)?;
        // read for another attributor, or under another domain, the signature does not hold
        let elsewhere = parse_voucher(get, Address::with_last_byte(1))?.ok_or("no voucher")?;
        assert!(elsewhere.verify(&d).is_err());
        assert!(v.verify(&domain(1, Address::with_last_byte(5))).is_err());
        // no channel header: not a voucher; a malformed one: a clear error
        assert!(parse_voucher(|_| None, attributor)?.is_none());
        let bad = |k: &str| {
            if k == voucher_headers::CUMULATIVE {
                Some("lots".to_string())
            } else {
                get(k)
            }
        };
        let e = parse_voucher(bad, attributor).err().ok_or("accepted")?;
        assert!(e.contains(voucher_headers::CUMULATIVE), "{e}");
        Ok(())
    }

    #[test]
    fn a_keys_voucher_persists_and_is_only_raised_by_its_owner()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let owner = PrivateKeySigner::random();
        let d = domain(1337, Address::with_last_byte(5));
        let terms = |channel: u64, cap: u64| VoucherTerms {
            attributor: Address::with_last_byte(0xa7),
            model_id: 0,
            max_price_per_1k: U256::from(1000),
            channel: U256::from(channel),
            cumulative: U256::from(cap),
            validity_secs: 60,
        };
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        let v1 = sign_voucher(&owner, &d, &terms(1, 100))?;
        let k = ks
            .issue(owner.address(), U256::from(1), "sdk", Some(v1.clone()))?
            .ok_or("no key")?;
        assert_eq!(ks.lookup(&k), Some((owner.address(), Some(v1))));
        let lower = sign_voucher(&owner, &d, &terms(1, 99))?;
        assert!(ks.set_voucher(&k, lower)?.is_err(), "a lower cap");
        let other = sign_voucher(&PrivateKeySigner::random(), &d, &terms(1, 500))?;
        assert!(ks.set_voucher(&k, other)?.is_err(), "another account's");
        assert!(
            ks.set_voucher("olk_nope", sign_voucher(&owner, &d, &terms(1, 500))?)?
                .is_err()
        );
        let v2 = sign_voucher(&owner, &d, &terms(1, 500))?;
        ks.set_voucher(&k, v2.clone())??;
        drop(ks);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(
            ks.lookup(&k),
            Some((owner.address(), Some(v2))),
            "the last line wins"
        );
        Ok(())
    }

    #[test]
    fn keys_persist_and_nonces_are_single_use() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        let a = Address::with_last_byte(9);
        let k = ks
            .issue(a, U256::from(1), "laptop", None)?
            .ok_or("no key")?;
        assert!(ks.issue(a, U256::from(1), "again", None)?.is_none());
        let k2 = ks.issue(a, U256::from(2), "phone", None)?.ok_or("no key")?;
        drop(ks);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(ks.owner(&k), Some(a));
        assert_eq!(ks.owner(&k2), Some(a));
        assert_eq!(ks.owner("olk_nope"), None);
        // The nonce is still refused after the restart.
        assert!(ks.issue(a, U256::from(1), "replay", None)?.is_none());
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
        let k = ks.issue(a, U256::from(6), "new", None)?.ok_or("no key")?;
        drop(ks);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("keys.log"))?;
        f.write_all(b"{\"hash\": \"0x12")?;
        drop(f);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!((ks.owner(key), ks.owner(&k)), (Some(a), Some(a)));
        let k3 = ks.issue(a, U256::from(7), "after", None)?.ok_or("no key")?;
        drop(ks);
        let ks = KeyStore::open(dir.path().join("keys.json"))?;
        assert_eq!(ks.owner(&k3), Some(a));
        Ok(())
    }
}
