//! Load checks: whether this server can load the adapter of each model it lists.
//!
//! A check is a real load through the adapter cache ([`AdapterCache::verify`], the same path a
//! request takes: RAM → disk → object store, keccak-256 verified, parsed as a PEFT adapter that
//! fits the base model), so `servable` in `/v1/models` means what a request will find. The
//! verdict is kept per adapter hash in the [`Directory`]:
//!
//! - the chain follower checks each new registration in the background (at most
//!   [`BACKGROUND_CHECKS`] at a time), a local adapter is checked by being loaded;
//! - a request for a listed adapter reads the verdict before `authorize` (nothing is reserved
//!   for an adapter that cannot load), and one not checked yet is checked then;
//! - a "cannot load" verdict other than [`Verdict::Refused`] (whose bytes cannot change under
//!   their hash) is checked again when asked for after `recheck_interval`: by a request
//!   (inline) or a listing (in the background), so a blob uploaded after its registration is
//!   served without a restart.

use alloy_primitives::B256;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{AdapterCache, Tier};
use crate::error::ServeError;
use crate::registry::Directory;

/// Background checks that may run at once (each reads a blob and parses it).
pub const BACKGROUND_CHECKS: usize = 2;

/// What a load check found for one adapter blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read, verified and parsed: it fits this base model.
    Loadable,
    /// In no tier the server reads: not cached, and not in the store (or there is no store).
    Missing {
        /// The blob's hash.
        hash: B256,
        /// The store's location, `None` when the server has none.
        store: Option<String>,
    },
    /// The store could not be read.
    StoreFailed {
        /// The blob's hash.
        hash: B256,
        /// The store's location.
        store: String,
        /// The store's error.
        reason: String,
    },
    /// The stored bytes do not hash to the blob's name.
    Corrupt {
        /// The hash it is registered under.
        hash: B256,
        /// What the stored bytes hash to.
        actual: B256,
        /// The store's location.
        store: String,
    },
    /// Not a PEFT adapter that fits this base model (final: the bytes are fixed by the hash).
    Refused {
        /// The blob's hash.
        hash: B256,
        /// What is wrong with it.
        reason: String,
    },
}

impl Verdict {
    /// What a load of `hash` through the cache says about its blob; `None` for an outcome that
    /// says nothing about it (an internal error, a shutdown).
    pub fn of_load(hash: B256, store: Option<&str>, r: Result<Tier, &ServeError>) -> Option<Self> {
        let store_name = || store.unwrap_or("none").to_string();
        Some(match r {
            Ok(_) => Verdict::Loadable,
            // no store, and no cache tier has it
            Err(ServeError::ModelNotFound(_) | ServeError::AdapterMissing { .. }) => {
                Verdict::Missing {
                    hash,
                    store: store.map(str::to_string),
                }
            }
            Err(ServeError::StoreUnavailable { reason, .. }) => Verdict::StoreFailed {
                hash,
                store: store_name(),
                reason: reason.clone(),
            },
            Err(ServeError::HashMismatch { actual, .. }) => Verdict::Corrupt {
                hash,
                actual: *actual,
                store: store_name(),
            },
            Err(ServeError::AdapterRefused { reason, .. }) => Verdict::Refused {
                hash,
                reason: reason.clone(),
            },
            Err(_) => return None,
        })
    }

    /// Whether it can only change by a change of the server (a new base), not of the store.
    pub fn is_final(&self) -> bool {
        matches!(self, Verdict::Loadable | Verdict::Refused { .. })
    }

    /// Why the adapter cannot be served, `None` when it can.
    pub fn reason(&self) -> Option<String> {
        Some(match self {
            Verdict::Loadable => return None,
            Verdict::Missing {
                hash,
                store: Some(store),
            } => format!(
                "adapter blob {hash} is not in this server's adapter store ({store}); `openledger model publish` copies it there (or train with `--store {store}`); it is looked for again when asked for"
            ),
            Verdict::Missing { hash, store: None } => format!(
                "adapter blob {hash} is not in this server's adapter cache and the server has no adapter store (start it with --store, the store the adapter was trained into)"
            ),
            Verdict::StoreFailed {
                hash,
                store,
                reason,
            } => format!("the adapter store ({store}) could not be read for blob {hash}: {reason}"),
            Verdict::Corrupt {
                hash,
                actual,
                store,
            } => format!(
                "adapter blob {hash} in this server's adapter store ({store}) hashes to {actual}: the stored bytes are corrupt or were replaced"
            ),
            Verdict::Refused { hash, reason } => {
                format!("adapter blob {hash} does not load on this base model: {reason}")
            }
        })
    }

    /// The error a request for `name` gets, `None` when it can be served.
    pub fn error(&self, name: &str) -> Option<ServeError> {
        let name = name.to_string();
        Some(match self {
            Verdict::Loadable => return None,
            Verdict::Missing { .. } | Verdict::StoreFailed { .. } => ServeError::StoreUnavailable {
                name,
                reason: self.reason().unwrap_or_default(),
            },
            Verdict::Corrupt { hash, actual, .. } => ServeError::HashMismatch {
                name,
                expected: *hash,
                actual: *actual,
            },
            Verdict::Refused { reason, .. } => ServeError::AdapterRefused {
                name,
                reason: reason.clone(),
            },
        })
    }
}

/// A verdict and when it was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What the check found.
    pub verdict: Verdict,
    /// When it finished.
    pub at: Instant,
}

impl Check {
    /// Whether it still stands at `now`: a final verdict always, another for `recheck` after it
    /// was reached.
    pub fn stands(&self, now: Instant, recheck: Duration) -> bool {
        self.verdict.is_final() || now.saturating_duration_since(self.at) < recheck
    }
}

/// Runs load checks and keeps their verdicts in the directory.
pub(crate) struct Checker {
    cache: Arc<AdapterCache>,
    dir: Arc<RwLock<Directory>>,
    store: Option<String>,
    recheck: Duration,
    /// One check of a hash at a time; later askers wait and read its verdict.
    running: Mutex<HashMap<B256, Arc<tokio::sync::Mutex<()>>>>,
    /// Hashes with a background check queued or running.
    queued: Mutex<HashSet<B256>>,
    slots: tokio::sync::Semaphore,
}

impl Checker {
    pub(crate) fn new(
        cache: Arc<AdapterCache>,
        dir: Arc<RwLock<Directory>>,
        store: Option<String>,
        recheck: Duration,
    ) -> Self {
        Checker {
            cache,
            dir,
            store,
            recheck,
            running: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            slots: tokio::sync::Semaphore::new(BACKGROUND_CHECKS),
        }
    }

    /// The directory the verdicts are kept in.
    pub(crate) fn dir(&self) -> &RwLock<Directory> {
        &self.dir
    }

    /// Before `authorize`: refuses an adapter the directory lists whose blob cannot be loaded,
    /// checking it first when its verdict is missing or no longer stands. Hashes the directory
    /// does not list pass (raw hashes: they load after `authorize`, which decides who may try
    /// them, so a stranger cannot make the server look up arbitrary hashes).
    pub(crate) async fn gate(&self, hash: B256, name: &str) -> Result<(), ServeError> {
        let check = {
            let d = self.dir.read();
            if !d.lists(&hash) {
                return Ok(());
            }
            d.check(&hash).cloned()
        };
        let verdict = match check {
            Some(c) if c.stands(Instant::now(), self.recheck) => c.verdict,
            _ => self.run(hash, name, true).await?,
        };
        verdict.error(name).map_or(Ok(()), Err)
    }

    /// Checks `hash` unless a verdict that still stands appears while waiting for another
    /// check of it; `admit` keeps the loaded adapter in RAM (a request is about to use it).
    async fn run(&self, hash: B256, name: &str, admit: bool) -> Result<Verdict, ServeError> {
        let lock = self.running.lock().entry(hash).or_default().clone();
        let _guard = lock.lock().await;
        let standing = self
            .dir
            .read()
            .check(&hash)
            .filter(|c| c.stands(Instant::now(), self.recheck))
            .map(|c| c.verdict.clone());
        let out = match standing {
            Some(v) => Ok(v),
            None => {
                let r = if admit {
                    self.cache.get(hash, name).await.map(|(_, tier)| tier)
                } else {
                    self.cache.verify(hash, name).await
                };
                match (self.record(hash, r.as_ref().copied()), r) {
                    (Some(v), _) => Ok(v),
                    (None, Err(e)) => Err(e),
                    (None, Ok(_)) => Ok(Verdict::Loadable),
                }
            }
        };
        self.running.lock().remove(&hash);
        out
    }

    /// Keeps what a load of a listed `hash` found (a request's load after `authorize` too).
    /// Returns the verdict, `None` when the outcome says nothing about the blob.
    pub(crate) fn record(&self, hash: B256, r: Result<Tier, &ServeError>) -> Option<Verdict> {
        let verdict = Verdict::of_load(hash, self.store.as_deref(), r)?;
        let mut d = self.dir.write();
        if d.lists(&hash) {
            if let Some(reason) = verdict.reason() {
                tracing::info!(target: "serve::check", %hash, reason, "adapter cannot be loaded");
            }
            d.set_check(
                hash,
                Check {
                    verdict: verdict.clone(),
                    at: Instant::now(),
                },
            );
        }
        Some(verdict)
    }

    /// Checks in the background every listed adapter without a verdict that stands (new
    /// registrations; "cannot load" verdicts past `recheck_interval`).
    pub(crate) fn spawn_due(self: &Arc<Self>) {
        let due = self.dir.read().due(Instant::now(), self.recheck);
        for (hash, name) in due {
            if !self.queued.lock().insert(hash) {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                if let Ok(_slot) = me.slots.acquire().await
                    && let Err(e) = me.run(hash, &name, false).await
                {
                    tracing::warn!(target: "serve::check", %hash, error = %e, "load check failed");
                }
                me.queued.lock().remove(&hash);
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn verdicts_stand_until_the_recheck_interval_unless_final() {
        let t0 = Instant::now();
        let after = Duration::from_secs(2);
        let missing = Check {
            verdict: Verdict::Missing {
                hash: B256::repeat_byte(1),
                store: Some("/s".into()),
            },
            at: t0,
        };
        assert!(missing.stands(t0 + Duration::from_millis(1999), after));
        assert!(!missing.stands(t0 + after, after));
        // a clock read before the verdict was reached (another thread) does not make it stale
        let later = Check {
            at: t0 + Duration::from_millis(10),
            ..missing.clone()
        };
        assert!(later.stands(t0, after));
        for v in [
            Verdict::Loadable,
            Verdict::Refused {
                hash: B256::ZERO,
                reason: "shape".into(),
            },
        ] {
            let c = Check { verdict: v, at: t0 };
            assert!(c.stands(t0 + Duration::from_secs(3600), after));
        }
    }

    #[test]
    fn load_outcomes_become_verdicts_with_reasons_and_errors() {
        let h = B256::repeat_byte(0xab);
        let store = Some("s3://models/ol");
        let v =
            |r: Result<Tier, ServeError>| Verdict::of_load(h, store, r.as_ref().copied()).unwrap();
        assert_eq!(v(Ok(Tier::Disk)), Verdict::Loadable);
        assert_eq!(Verdict::Loadable.reason(), None);
        let missing = v(Err(ServeError::AdapterMissing {
            name: "model-1".into(),
            hash: h,
        }));
        let why = missing.reason().unwrap();
        assert!(
            why.contains(&h.to_string()) && why.contains("(s3://models/ol)"),
            "{why}"
        );
        let e = missing.error("model-1").unwrap();
        assert_eq!(
            (e.status().as_u16(), e.code().as_str()),
            (502, "adapter_unavailable")
        );
        assert!(e.to_string().contains("'model-1'") && e.to_string().contains(&why));
        let no_store = Verdict::of_load(h, None, Err(&ServeError::ModelNotFound("x".into())));
        assert!(
            no_store
                .unwrap()
                .reason()
                .unwrap()
                .contains("has no adapter store")
        );
        let corrupt = v(Err(ServeError::HashMismatch {
            name: "x".into(),
            expected: h,
            actual: B256::ZERO,
        }));
        assert!(!corrupt.is_final());
        assert!(corrupt.reason().unwrap().contains("hashes to"));
        assert_eq!(corrupt.error("m").unwrap().code(), "adapter_hash_mismatch");
        let refused = v(Err(ServeError::AdapterRefused {
            name: "x".into(),
            reason: "shape [8, 32] is not [8, 64]".into(),
        }));
        assert!(refused.is_final());
        assert_eq!(refused.error("m").unwrap().code(), "adapter_refused");
        assert!(matches!(
            v(Err(ServeError::StoreUnavailable {
                name: "x".into(),
                reason: "connection refused".into(),
            })),
            Verdict::StoreFailed { .. }
        ));
        assert_eq!(
            Verdict::of_load(h, store, Err(&ServeError::ShuttingDown)),
            None
        );
    }
}
