//! Polling filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`).
//! A filter not polled for five minutes is removed, as in geth.

use alloy_primitives::{B256, U256};
use alloy_rpc_types_eth::Filter;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How long an unpolled filter lives.
pub const FILTER_TTL: Duration = Duration::from_secs(300);
/// Most installed filters.
pub const MAX_FILTERS: usize = 10_000;

/// What a filter watches, with its cursor.
#[derive(Debug)]
pub enum FilterKind {
    /// New block hashes from `next`.
    Blocks {
        /// Next block to report.
        next: u64,
    },
    /// Logs matching `filter` from block `next`.
    Logs {
        /// The filter.
        filter: Box<Filter>,
        /// Next block to scan.
        next: u64,
    },
    /// New pending transaction hashes.
    Pending {
        /// The pool's announcements.
        rx: broadcast::Receiver<B256>,
    },
}

/// Installed filters.
#[derive(Debug, Default)]
pub struct Filters {
    map: HashMap<U256, (FilterKind, Instant)>,
    next_id: u64,
}

impl Filters {
    /// Installs a filter and returns its id (as a quantity string).
    pub fn install(&mut self, kind: FilterKind) -> String {
        self.expire();
        if self.map.len() >= MAX_FILTERS {
            // Drop the least recently polled filter.
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        self.next_id += 1;
        let id = U256::from(self.next_id) << 64 | U256::from(rand_u64());
        self.map.insert(id, (kind, Instant::now()));
        format!("{id:#x}")
    }

    /// Removes a filter; whether it existed.
    pub fn remove(&mut self, id: U256) -> bool {
        self.map.remove(&id).is_some()
    }

    /// A filter for polling (refreshes its lifetime).
    pub fn get_mut(&mut self, id: U256) -> Option<&mut FilterKind> {
        self.expire();
        self.map.get_mut(&id).map(|(k, t)| {
            *t = Instant::now();
            k
        })
    }

    /// The log filter of a logs filter.
    pub fn log_filter(&mut self, id: U256) -> Option<Filter> {
        match self.get_mut(id)? {
            FilterKind::Logs { filter, .. } => Some((**filter).clone()),
            _ => None,
        }
    }

    fn expire(&mut self) {
        self.map.retain(|_, (_, t)| t.elapsed() < FILTER_TTL);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}
