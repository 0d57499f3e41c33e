//! Names → adapters: the served base model, adapters registered in `ModelRegistry` (followed
//! over JSON-RPC, so a model registered on chain becomes servable without a restart), local
//! adapters loaded by an admin, and raw content hashes.
//!
//! Accepted names: the base model's name (no adapter); `model-<id>` or `<id>` (on-chain id);
//! an alias (a local adapter's name); `0x<64 hex>` (an adapter blob's keccak-256).

use alloy::providers::{Provider, ProviderBuilder};
use alloy_primitives::{Address, B256};
use openledger_protocol::bindings::ModelRegistry;
use openledger_protocol::follower::{DEFAULT_MAX_RANGE, EventFollower};
use openledger_protocol::{ChainError, ModelId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::check::Check;
use crate::error::ServeError;

/// Where an adapter's record came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Registered on chain.
    Chain {
        /// Registering account.
        owner: Address,
        /// `baseModelId` of the registration.
        base_model_id: String,
        /// Registration block.
        block: u64,
    },
    /// Loaded from a local directory by an admin.
    Local {
        /// The directory or blob file.
        path: String,
    },
}

/// One known adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterEntry {
    /// The name listed in `/v1/models`.
    pub name: String,
    /// On-chain id.
    pub model_id: Option<ModelId>,
    /// keccak-256 of the blob.
    pub adapter_hash: B256,
    /// The base model it was made for (chain records only).
    pub base_model_hash: Option<B256>,
    /// Deactivated on chain.
    pub active: bool,
    /// Where it came from.
    pub origin: Origin,
}

/// What a name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The base model, no adapter.
    Base,
    /// An adapter.
    Adapter {
        /// On-chain id, if registered.
        model_id: Option<ModelId>,
        /// Content hash.
        hash: B256,
        /// A raw hash that is neither registered on chain nor loaded by the operator.
        unregistered: bool,
    },
}

/// Every name the server knows.
#[derive(Clone, Debug)]
pub struct Directory {
    /// The base model's name.
    pub base_name: String,
    /// The base model's content hash.
    pub base_hash: B256,
    chain: BTreeMap<u64, AdapterEntry>,
    local: BTreeMap<String, AdapterEntry>,
    /// Load-check verdicts per adapter hash ([`crate::check`]).
    checks: HashMap<B256, Check>,
}

impl Directory {
    /// A directory with only the base model.
    pub fn new(base_name: String, base_hash: B256) -> Self {
        Directory {
            base_name,
            base_hash,
            chain: BTreeMap::new(),
            local: BTreeMap::new(),
            checks: HashMap::new(),
        }
    }

    /// Why an entry cannot be served, if it cannot: deactivated, made for another base model,
    /// or its blob cannot be loaded here (the load check's verdict; while the check runs, that
    /// it runs).
    pub fn unservable_reason(&self, e: &AdapterEntry) -> Option<String> {
        if let Some(r) = self.registration_reason(e) {
            return Some(r);
        }
        match self.checks.get(&e.adapter_hash) {
            Some(c) => c.verdict.reason(),
            None => Some(format!(
                "checking that adapter blob {} loads",
                e.adapter_hash
            )),
        }
    }

    /// Why the registration itself cannot be served here (deactivated, another base model).
    fn registration_reason(&self, e: &AdapterEntry) -> Option<String> {
        if !e.active {
            return Some("deactivated on chain".into());
        }
        match e.base_model_hash {
            Some(h) if h != self.base_hash => Some(format!(
                "registered for base model {h}, but this server serves {} ({})",
                self.base_name, self.base_hash
            )),
            _ => None,
        }
    }

    /// Whether an entry (on chain or local) has this adapter hash.
    pub fn lists(&self, hash: &B256) -> bool {
        self.entries().any(|e| e.adapter_hash == *hash)
    }

    /// The load check of `hash`, if one finished.
    pub fn check(&self, hash: &B256) -> Option<&Check> {
        self.checks.get(hash)
    }

    /// Keeps a load check's verdict.
    pub fn set_check(&mut self, hash: B256, check: Check) {
        self.checks.insert(hash, check);
    }

    /// Adapters to check (hash and a name for messages): those of servable registrations
    /// without a verdict that still stands at `now`, each hash once.
    pub fn due(&self, now: Instant, recheck: Duration) -> Vec<(B256, String)> {
        let mut seen = HashSet::new();
        self.entries()
            .filter(|e| self.registration_reason(e).is_none())
            .filter(|e| {
                !self
                    .checks
                    .get(&e.adapter_hash)
                    .is_some_and(|c| c.stands(now, recheck))
            })
            .filter(|e| seen.insert(e.adapter_hash))
            .map(|e| (e.adapter_hash, e.name.clone()))
            .collect()
    }

    /// Every adapter, chain records first, then local ones.
    pub fn entries(&self) -> impl Iterator<Item = &AdapterEntry> {
        self.chain.values().chain(self.local.values())
    }

    /// Resolves a client's `model` string.
    pub fn resolve(&self, name: &str) -> Result<Resolved, ServeError> {
        if name == self.base_name {
            return Ok(Resolved::Base);
        }
        if let Some(e) = self.local.get(name) {
            return Ok(Resolved::Adapter {
                model_id: None,
                hash: e.adapter_hash,
                unregistered: false,
            });
        }
        let id = name.strip_prefix("model-").unwrap_or(name);
        if let Ok(id) = id.parse::<u64>() {
            let e = self
                .chain
                .get(&id)
                .ok_or_else(|| ServeError::ModelNotFound(name.to_string()))?;
            return self.servable(name, e);
        }
        if name.len() == 66
            && let Ok(hash) = name.parse::<B256>()
        {
            if let Some(e) = self.chain.values().find(|e| e.adapter_hash == hash) {
                return self.servable(name, e);
            }
            let loaded = self.local.values().any(|e| e.adapter_hash == hash);
            return Ok(Resolved::Adapter {
                model_id: None,
                hash,
                unregistered: !loaded,
            });
        }
        Err(ServeError::ModelNotFound(name.to_string()))
    }

    /// Whether `name` names an on-chain id (`model-<id>` or `<id>`): one not known yet may have
    /// been registered since the last poll.
    pub fn names_chain_id(name: &str) -> bool {
        name.strip_prefix("model-")
            .unwrap_or(name)
            .parse::<u64>()
            .is_ok()
    }

    /// Registration checks only: whether its blob loads is [`crate::check::Checker::gate`]'s
    /// question, asked before `authorize`.
    fn servable(&self, name: &str, e: &AdapterEntry) -> Result<Resolved, ServeError> {
        if let Some(reason) = self.registration_reason(e) {
            return Err(ServeError::NotServable {
                name: name.to_string(),
                reason,
            });
        }
        Ok(Resolved::Adapter {
            model_id: e.model_id,
            hash: e.adapter_hash,
            unregistered: false,
        })
    }

    /// Adds or replaces a local adapter under `name`. Names of the base model, of on-chain ids
    /// and of hashes are refused (they would shadow other names).
    pub fn add_local(&mut self, name: &str, hash: B256, path: &str) -> Result<(), ServeError> {
        let digits = name.strip_prefix("model-").unwrap_or(name);
        if name.is_empty()
            || name == self.base_name
            || digits.parse::<u64>().is_ok()
            || name.starts_with("0x")
        {
            return Err(ServeError::param(
                "lora_name",
                format!("'{name}' is reserved (base model name, on-chain id or hash)"),
            ));
        }
        self.local.insert(
            name.to_string(),
            AdapterEntry {
                name: name.to_string(),
                model_id: None,
                adapter_hash: hash,
                base_model_hash: None,
                active: true,
                origin: Origin::Local { path: path.into() },
            },
        );
        Ok(())
    }

    /// Removes a local adapter; returns its hash.
    pub fn remove_local(&mut self, name: &str) -> Option<B256> {
        let hash = self.local.remove(name)?.adapter_hash;
        if !self.lists(&hash) {
            self.checks.remove(&hash);
        }
        Some(hash)
    }

    /// Applies one `ModelRegistry` event.
    pub fn apply(&mut self, ev: &ModelRegistry::ModelRegistryEvents, block: u64) {
        use ModelRegistry::ModelRegistryEvents as E;
        match ev {
            E::ModelRegistered(r) => {
                let id = u64::try_from(r.modelId).unwrap_or(u64::MAX);
                self.chain.insert(
                    id,
                    AdapterEntry {
                        name: format!("model-{id}"),
                        model_id: Some(ModelId(id)),
                        adapter_hash: r.adapterHash,
                        base_model_hash: Some(r.spec.baseModelHash),
                        active: true,
                        origin: Origin::Chain {
                            owner: r.owner,
                            base_model_id: r.spec.baseModelId.clone(),
                            block,
                        },
                    },
                );
            }
            E::ModelDeactivated(d) => {
                if let Some(e) = u64::try_from(d.modelId)
                    .ok()
                    .and_then(|id| self.chain.get_mut(&id))
                {
                    e.active = false;
                }
            }
            _ => {}
        }
    }
}

/// Follows `ModelRegistry` logs block range by block range.
#[derive(Clone, Debug)]
pub struct ChainFollower {
    events: EventFollower<ModelRegistry::ModelRegistryEvents>,
    next_block: u64,
    /// When the last successful sync read the chain head.
    synced_from: Option<Instant>,
}

impl ChainFollower {
    /// Connects to `rpc_url` (HTTP JSON-RPC).
    pub fn connect(rpc_url: &str, registry: Address) -> Result<Self, ServeError> {
        let url = rpc_url
            .parse()
            .map_err(|e| ServeError::Internal(format!("bad rpc url {rpc_url}: {e}")))?;
        let provider = ProviderBuilder::new().connect_http(url).erased();
        Ok(ChainFollower {
            events: EventFollower::new(provider, registry, DEFAULT_MAX_RANGE),
            next_block: 0,
            synced_from: None,
        })
    }

    /// Whether a successful sync read the chain head at or after `t`: it has applied every
    /// registration confirmed before `t`.
    pub fn covers(&self, t: Instant) -> bool {
        self.synced_from.is_some_and(|s| s >= t)
    }

    /// Applies every event up to the chain head to `dir`; returns how many were applied.
    pub async fn sync(
        &mut self,
        dir: &parking_lot::RwLock<Directory>,
    ) -> Result<usize, ChainError> {
        let started = Instant::now();
        let head = self.events.head().await?;
        let mut applied = 0;
        while let Some(range) = self.events.range(self.next_block, head).await? {
            let mut d = dir.write();
            for (ev, block) in &range.events {
                d.apply(ev, *block);
                applied += 1;
            }
            self.next_block = range.to + 1;
        }
        self.synced_from = Some(started);
        Ok(applied)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn load_verdicts_decide_servable_and_which_checks_are_due() {
        use crate::check::{Check, Verdict};
        let base = B256::repeat_byte(7);
        let mut d = Directory::new("tiny".into(), base);
        d.add_local("a", B256::repeat_byte(1), "/a").unwrap();
        d.add_local("b", B256::repeat_byte(2), "/b").unwrap();
        d.add_local("a-again", B256::repeat_byte(1), "/a").unwrap();
        let entry = |d: &Directory, n: &str| d.entries().find(|e| e.name == n).cloned().unwrap();
        let (t0, after) = (Instant::now(), Duration::from_secs(2));
        // never checked: not servable yet, and due once per hash
        assert!(
            d.unservable_reason(&entry(&d, "a"))
                .unwrap()
                .starts_with("checking")
        );
        let mut due = d.due(t0, after);
        due.sort();
        assert_eq!(
            due.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            vec![B256::repeat_byte(1), B256::repeat_byte(2)]
        );
        d.set_check(
            B256::repeat_byte(1),
            Check {
                verdict: Verdict::Loadable,
                at: t0,
            },
        );
        let missing = Verdict::Missing {
            hash: B256::repeat_byte(2),
            store: Some("/store".into()),
        };
        d.set_check(
            B256::repeat_byte(2),
            Check {
                verdict: missing.clone(),
                at: t0,
            },
        );
        assert_eq!(d.unservable_reason(&entry(&d, "a")), None);
        assert_eq!(d.unservable_reason(&entry(&d, "b")), missing.reason());
        // a missing blob stands until the interval, then is due again; a loadable one is not
        assert!(d.due(t0 + Duration::from_secs(1), after).is_empty());
        assert_eq!(
            d.due(t0 + after, after),
            vec![(B256::repeat_byte(2), "b".to_string())]
        );
        // the name still resolves: whether its blob loads is asked before `authorize`
        assert!(d.resolve("b").is_ok());
        // the last entry of a hash gone, its verdict goes too
        d.remove_local("b");
        assert!(d.check(&B256::repeat_byte(2)).is_none());
        d.remove_local("a");
        assert!(d.check(&B256::repeat_byte(1)).is_some());
    }

    #[test]
    fn names_resolve_and_foreign_bases_are_refused() {
        let base = B256::repeat_byte(7);
        let mut d = Directory::new("tiny".into(), base);
        let spec = |h: B256| ModelRegistry::ModelSpec {
            baseModelId: "tiny".into(),
            baseModelHash: h,
            adapterHash: B256::repeat_byte(1),
            trainingManifestHash: B256::ZERO,
            trainedOn: vec![],
            pricePer1kTokens: Default::default(),
            metadataURI: String::new(),
        };
        let reg = |id: u64, a: u8, h: B256| {
            let mut s = spec(h);
            s.adapterHash = B256::repeat_byte(a);
            ModelRegistry::ModelRegistryEvents::ModelRegistered(ModelRegistry::ModelRegistered {
                modelId: alloy_primitives::U256::from(id),
                owner: Address::ZERO,
                adapterHash: B256::repeat_byte(a),
                spec: s,
            })
        };
        d.apply(&reg(1, 1, base), 5);
        d.apply(&reg(2, 2, B256::repeat_byte(9)), 6);
        assert_eq!(d.resolve("tiny").unwrap(), Resolved::Base);
        let one = Resolved::Adapter {
            model_id: Some(ModelId(1)),
            hash: B256::repeat_byte(1),
            unregistered: false,
        };
        assert_eq!(d.resolve("model-1").unwrap(), one);
        assert_eq!(d.resolve("1").unwrap(), one);
        assert_eq!(d.resolve(&B256::repeat_byte(1).to_string()).unwrap(), one);
        assert!(matches!(
            d.resolve("model-2"),
            Err(ServeError::NotServable { .. })
        ));
        assert!(matches!(
            d.resolve("model-3"),
            Err(ServeError::ModelNotFound(_))
        ));
        assert!(matches!(
            d.resolve("nope"),
            Err(ServeError::ModelNotFound(_))
        ));
        d.apply(
            &ModelRegistry::ModelRegistryEvents::ModelDeactivated(
                ModelRegistry::ModelDeactivated {
                    modelId: alloy_primitives::U256::from(1),
                },
            ),
            7,
        );
        assert!(matches!(
            d.resolve("model-1"),
            Err(ServeError::NotServable { .. })
        ));
        d.add_local("mine", B256::repeat_byte(3), "/x").unwrap();
        assert!(d.add_local("12", B256::ZERO, "/x").is_err());
        assert!(d.add_local("tiny", B256::ZERO, "/x").is_err());
        assert_eq!(
            d.resolve("mine").unwrap(),
            Resolved::Adapter {
                model_id: None,
                hash: B256::repeat_byte(3),
                unregistered: false,
            }
        );
        // a raw hash: the operator's adapter is not "unregistered", any other hash is
        assert_eq!(
            d.resolve(&B256::repeat_byte(3).to_string()).unwrap(),
            Resolved::Adapter {
                model_id: None,
                hash: B256::repeat_byte(3),
                unregistered: false,
            }
        );
        assert_eq!(
            d.resolve(&B256::repeat_byte(4).to_string()).unwrap(),
            Resolved::Adapter {
                model_id: None,
                hash: B256::repeat_byte(4),
                unregistered: true,
            }
        );
        assert_eq!(d.remove_local("mine"), Some(B256::repeat_byte(3)));
        assert!(d.resolve("mine").is_err());
    }
}
