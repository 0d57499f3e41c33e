//! Following one contract's events block range by block range: [`EventFollower`].
//!
//! The Datanet index and the serving registry both rebuild their state from a registry's
//! logs. Each asks for the events of the next range up to the head, applies them, and only
//! then moves on, so a crash or a failed request never skips a range. Logs that do not decode
//! as the contract's events are counted and logged, not fatal: a contract upgrade that adds an
//! event must not stop the follower.

use std::marker::PhantomData;

use alloy_primitives::Address;
use alloy_provider::{DynProvider, Provider};
use alloy_rpc_types_eth::Filter;
use alloy_sol_types::SolEventInterface;

use crate::chain_error::ChainError;

/// Blocks asked for in one `eth_getLogs` call unless set otherwise.
pub const DEFAULT_MAX_RANGE: u64 = 10_000;

/// The decoded events of one block range.
#[derive(Debug)]
pub struct EventRange<E> {
    /// First block of the range.
    pub from: u64,
    /// Last block of the range (inclusive).
    pub to: u64,
    /// The events in log order, each with its block number.
    pub events: Vec<(E, u64)>,
    /// Logs of the contract that did not decode as `E`.
    pub undecodable: usize,
}

/// Reads the events `E` (a `sol!` contract's `…Events` enum) emitted by one address.
#[derive(Debug)]
pub struct EventFollower<E> {
    provider: DynProvider,
    address: Address,
    max_range: u64,
    _events: PhantomData<fn() -> E>,
}

impl<E> Clone for EventFollower<E> {
    fn clone(&self) -> Self {
        Self {
            provider: self.provider.clone(),
            address: self.address,
            max_range: self.max_range,
            _events: PhantomData,
        }
    }
}

impl<E: SolEventInterface> EventFollower<E> {
    /// Follows `address` through `provider`, `max_range` blocks per request (at least 1).
    pub fn new(provider: DynProvider, address: Address, max_range: u64) -> Self {
        Self {
            provider,
            address,
            max_range: max_range.max(1),
            _events: PhantomData,
        }
    }

    /// The followed contract.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain's head block number.
    pub async fn head(&self) -> Result<u64, ChainError> {
        Ok(self.provider.get_block_number().await?)
    }

    /// The events of blocks `from..=min(head, from + max_range - 1)`; `None` when `from` is
    /// past `head` (caught up).
    pub async fn range(&self, from: u64, head: u64) -> Result<Option<EventRange<E>>, ChainError> {
        if from > head {
            return Ok(None);
        }
        let to = head.min(from.saturating_add(self.max_range - 1));
        let filter = Filter::new()
            .address(self.address)
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await?;
        let mut events = Vec::with_capacity(logs.len());
        let mut undecodable = 0;
        for log in &logs {
            match E::decode_log(&log.inner) {
                Ok(ev) => events.push((ev.data, log.block_number.unwrap_or(to))),
                Err(e) => {
                    undecodable += 1;
                    tracing::warn!(target: "follower", address = %self.address, error = %e, "undecodable log");
                }
            }
        }
        Ok(Some(EventRange {
            from,
            to,
            events,
            undecodable,
        }))
    }
}
