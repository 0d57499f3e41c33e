//! The transaction pool: geth's checks, limits and messages; pending and queued (future-nonce)
//! transactions, fee-bump replacement, price-based eviction when full, expiry of queued
//! transactions, and selection by effective tip for the next block.
//!
//! Capacity is counted in geth's 32 KiB slots (a transaction takes ⌈size / 32 KiB⌉ of them), so
//! the pool never holds more than `(global_slots + global_queue) × 32 KiB` of transactions.

use crate::error::PoolError;
use crate::exec::{SPEC, tx_env};
use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction, TxEnvelope, TxType};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, U256};
use revm::context_interface::cfg::gas::calculate_initial_tx_gas_for_tx;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// EIP-7825 (Osaka): maximum gas limit of one transaction.
pub const TX_GAS_LIMIT_CAP: u64 = 1 << 24;

/// Size of one pool slot (geth's `txSlotSize`).
pub const TX_SLOT_SIZE: usize = 32 * 1024;

/// Slots a transaction of `size` encoded bytes takes.
pub fn num_slots(size: usize) -> usize {
    size.div_ceil(TX_SLOT_SIZE).max(1)
}

/// Pool limits and policy. The defaults are geth's.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Largest accepted encoded transaction (geth: 128 KiB, four slots).
    pub max_tx_bytes: usize,
    /// A replacement must raise both fee fields by at least this percentage.
    pub price_bump_percent: u128,
    /// Slots each sender keeps when the pool is full (geth's `accountslots`): a sender holding
    /// no more than this may displace the transactions of senders holding more, whatever they
    /// pay.
    pub account_slots: usize,
    /// Slots for executable (pending) transactions (geth's `globalslots`).
    pub global_slots: usize,
    /// Most future-nonce (queued) transactions one sender may have (geth's `accountqueue`).
    pub account_queue: usize,
    /// Slots for queued transactions in total (geth's `globalqueue`); the pool as a whole holds
    /// at most `global_slots + global_queue` slots.
    pub global_queue: usize,
    /// How long a queued transaction may wait for its nonce gap to fill (geth's `lifetime`).
    pub lifetime: Duration,
    /// How far ahead of the account nonce a queued transaction may be.
    pub max_nonce_gap: u64,
    /// Minimum fee cap / gas price accepted (wei).
    pub min_gas_price: u128,
    /// Accept legacy transactions without EIP-155 chain id.
    pub allow_unprotected: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_tx_bytes: 4 * TX_SLOT_SIZE,
            price_bump_percent: 10,
            account_slots: 16,
            global_slots: 5120,
            account_queue: 64,
            global_queue: 1024,
            lifetime: Duration::from_secs(3 * 3600),
            max_nonce_gap: 16_384,
            min_gas_price: 1,
            allow_unprotected: false,
        }
    }
}

impl PoolConfig {
    /// Most slots the pool holds.
    pub fn max_slots(&self) -> usize {
        self.global_slots.saturating_add(self.global_queue)
    }

    /// Most bytes of encoded transactions the pool holds.
    pub fn max_bytes(&self) -> usize {
        self.max_slots().saturating_mul(TX_SLOT_SIZE)
    }
}

/// A decoded, signature-checked transaction.
#[derive(Clone, Debug)]
pub struct PooledTx {
    /// The transaction.
    pub tx: TxEnvelope,
    /// Recovered sender.
    pub sender: Address,
    /// Hash.
    pub hash: B256,
    /// Arrival order.
    pub seq: u64,
    /// Encoded size in bytes.
    pub size: usize,
    /// When it was checked (queued transactions expire `lifetime` after it).
    pub arrived: Instant,
}

impl PooledTx {
    /// Nonce.
    pub fn nonce(&self) -> u64 {
        self.tx.nonce()
    }
    /// Fee cap (gas price for legacy).
    pub fn max_fee(&self) -> u128 {
        self.tx.max_fee_per_gas()
    }
    /// Priority fee cap (gas price for legacy).
    pub fn max_tip(&self) -> u128 {
        self.tx
            .max_priority_fee_per_gas()
            .unwrap_or_else(|| self.tx.max_fee_per_gas())
    }
    /// Tip the block producer receives at `base_fee`, `None` if the fee cap is below it.
    pub fn effective_tip(&self, base_fee: u64) -> Option<u128> {
        let base = base_fee as u128;
        let cap = self.max_fee();
        if cap < base {
            return None;
        }
        Some(self.max_tip().min(cap - base))
    }
    /// Upper bound of what the transaction can cost: gas * fee cap + value.
    pub fn max_cost(&self) -> U256 {
        U256::from(self.tx.gas_limit())
            .saturating_mul(U256::from(self.max_fee()))
            .saturating_add(self.tx.value())
    }
    /// Pool slots it takes.
    pub fn slots(&self) -> usize {
        num_slots(self.size)
    }
    /// What eviction compares: the cheapest goes first, the newest of equals first.
    fn price_key(&self) -> (u128, u128, Reverse<u64>) {
        (self.max_fee(), self.max_tip(), Reverse(self.seq))
    }
}

/// Decodes and checks everything that does not depend on state. Expensive (signature
/// recovery): call it without holding the pool lock.
pub fn validate_raw(
    raw: &[u8],
    chain_id: u64,
    block_gas_limit: u64,
    cfg: &PoolConfig,
) -> Result<PooledTx, PoolError> {
    if raw.len() > cfg.max_tx_bytes {
        return Err(PoolError::Oversized {
            size: raw.len(),
            limit: cfg.max_tx_bytes,
        });
    }
    let mut buf = raw;
    let tx = TxEnvelope::decode_2718(&mut buf).map_err(|e| PoolError::Decode(e.to_string()))?;
    if !buf.is_empty() {
        return Err(PoolError::Decode(format!("{} trailing bytes", buf.len())));
    }
    validate_tx(tx, chain_id, block_gas_limit, cfg)
}

/// Checks a decoded transaction (see [`validate_raw`]).
pub fn validate_tx(
    tx: TxEnvelope,
    chain_id: u64,
    block_gas_limit: u64,
    cfg: &PoolConfig,
) -> Result<PooledTx, PoolError> {
    if tx.tx_type() == TxType::Eip4844 {
        return Err(PoolError::UnsupportedType(
            "blob transactions (EIP-4844) are not accepted on this L2".into(),
        ));
    }
    let size = tx.encode_2718_len();
    if size > cfg.max_tx_bytes {
        return Err(PoolError::Oversized {
            size,
            limit: cfg.max_tx_bytes,
        });
    }
    match tx.chain_id() {
        Some(id) if id != chain_id => {
            return Err(PoolError::WrongChainId {
                have: id,
                want: chain_id,
            });
        }
        None if !cfg.allow_unprotected => return Err(PoolError::Unprotected),
        _ => {}
    }
    if tx.gas_limit() > block_gas_limit {
        return Err(PoolError::ExceedsBlockGasLimit {
            have: tx.gas_limit(),
            limit: block_gas_limit,
        });
    }
    if tx.gas_limit() > TX_GAS_LIMIT_CAP {
        return Err(PoolError::ExceedsBlockGasLimit {
            have: tx.gas_limit(),
            limit: TX_GAS_LIMIT_CAP,
        });
    }
    if let Some(tip) = tx.max_priority_fee_per_gas()
        && tip > tx.max_fee_per_gas()
    {
        return Err(PoolError::TipAboveFeeCap);
    }
    if tx.max_fee_per_gas() < cfg.min_gas_price {
        return Err(PoolError::Underpriced {
            have: tx.max_fee_per_gas(),
            min: cfg.min_gas_price,
        });
    }
    let sender = tx
        .recover_signer()
        .map_err(|_| PoolError::InvalidSignature)?;
    let env = tx_env(&tx, sender);
    let gas = calculate_initial_tx_gas_for_tx(&env, SPEC, None);
    let want = (gas.initial_regular_gas + gas.initial_state_gas).max(gas.floor_gas);
    if tx.gas_limit() < want {
        return Err(PoolError::IntrinsicGasTooLow {
            have: tx.gas_limit(),
            want,
        });
    }
    if tx.tx_type() == TxType::Eip7702 && tx.authorization_list().is_none_or(|l| l.is_empty()) {
        return Err(PoolError::Decode(
            "EIP-7702 transaction with an empty authorization list".into(),
        ));
    }
    let hash = *tx.tx_hash();
    Ok(PooledTx {
        tx,
        sender,
        hash,
        seq: 0,
        size,
        arrived: Instant::now(),
    })
}

/// What happened to an inserted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// Its hash.
    pub hash: B256,
    /// A transaction it replaced.
    pub replaced: Option<B256>,
    /// Whether it is executable now (no nonce gap).
    pub pending: bool,
    /// Transactions of other senders evicted to make room for it.
    pub evicted: Vec<B256>,
}

#[derive(Debug, Default)]
struct SenderTxs {
    /// Account nonce as of the last check.
    state_nonce: u64,
    txs: BTreeMap<u64, Arc<PooledTx>>,
    /// Slots of all its transactions.
    slots: usize,
    /// Sum of the transactions' maximum costs.
    cost: U256,
    /// Number of executable transactions (contiguous nonces from `state_nonce`).
    pending_len: usize,
    /// Slots of its queued (not executable) transactions.
    queued_slots: usize,
}

impl SenderTxs {
    /// Transactions executable in order from the state nonce.
    fn pending(&self) -> impl Iterator<Item = &Arc<PooledTx>> {
        self.txs.values().take(self.pending_len)
    }

    /// Recomputes `pending_len` and `queued_slots`; every nonce is at least `state_nonce`.
    fn refresh(&mut self) {
        let mut pending_slots = 0;
        self.pending_len = 0;
        for (expect, (n, t)) in (self.state_nonce..).zip(&self.txs) {
            if *n != expect {
                break;
            }
            self.pending_len += 1;
            pending_slots += t.slots();
        }
        self.queued_slots = self.slots - pending_slots;
    }

    /// The first nonce after the executable run.
    fn next_nonce(&self) -> u64 {
        self.state_nonce + self.pending_len as u64
    }

    fn queued_len(&self) -> usize {
        self.txs.len() - self.pending_len
    }
}

/// The pool itself: plain state, driven by the node under a lock.
#[derive(Debug, Default)]
pub struct Pool {
    cfg: PoolConfig,
    by_hash: HashMap<B256, Arc<PooledTx>>,
    senders: HashMap<Address, SenderTxs>,
    seq: u64,
    /// Slots of every transaction.
    slots: usize,
    /// Encoded bytes of every transaction.
    bytes: usize,
    /// Slots of queued transactions.
    queued_slots: usize,
    last_expiry: Option<Instant>,
}

/// A transaction chosen for eviction: its sender and nonce.
type Victim = (Address, u64);

impl Pool {
    /// An empty pool.
    pub fn new(cfg: PoolConfig) -> Self {
        Self {
            cfg,
            ..Default::default()
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Slots in use (at most [`PoolConfig::max_slots`]).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Encoded bytes of the pooled transactions (at most [`PoolConfig::max_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A transaction by hash.
    pub fn get(&self, hash: &B256) -> Option<Arc<PooledTx>> {
        self.by_hash.get(hash).cloned()
    }

    fn refresh_sender(&mut self, sender: &Address) {
        let Some(s) = self.senders.get_mut(sender) else {
            return;
        };
        self.queued_slots -= s.queued_slots;
        s.refresh();
        self.queued_slots += s.queued_slots;
        if s.txs.is_empty() {
            self.senders.remove(sender);
        }
    }

    /// Removes one transaction without refreshing its sender.
    fn take(&mut self, sender: &Address, nonce: u64) -> Option<Arc<PooledTx>> {
        let s = self.senders.get_mut(sender)?;
        let t = s.txs.remove(&nonce)?;
        s.slots -= t.slots();
        s.cost = s.cost.saturating_sub(t.max_cost());
        self.by_hash.remove(&t.hash);
        self.slots -= t.slots();
        self.bytes -= t.size;
        Some(t)
    }

    fn add(&mut self, tx: Arc<PooledTx>) {
        let s = self.senders.entry(tx.sender).or_default();
        s.slots += tx.slots();
        s.cost = s.cost.saturating_add(tx.max_cost());
        s.txs.insert(tx.nonce(), tx.clone());
        self.slots += tx.slots();
        self.bytes += tx.size;
        let sender = tx.sender;
        self.by_hash.insert(tx.hash, tx);
        self.refresh_sender(&sender);
    }

    /// Inserts a validated transaction given the sender's account nonce and balance.
    pub fn insert(
        &mut self,
        mut tx: PooledTx,
        state_nonce: u64,
        balance: U256,
    ) -> Result<Inserted, PoolError> {
        if self.by_hash.contains_key(&tx.hash) {
            return Err(PoolError::AlreadyKnown);
        }
        let sender = tx.sender;
        // The pool may already know a newer account nonce than the caller read.
        let state_nonce = state_nonce.max(self.senders.get(&sender).map_or(0, |s| s.state_nonce));
        let nonce = tx.nonce();
        if nonce < state_nonce {
            return Err(PoolError::NonceTooLow {
                state: state_nonce,
                tx: nonce,
            });
        }
        if nonce - state_nonce > self.cfg.max_nonce_gap {
            return Err(PoolError::NonceTooHigh {
                state: state_nonce,
                tx: nonce,
                max_gap: self.cfg.max_nonce_gap,
            });
        }
        self.set_state_nonce(&sender, state_nonce);
        let own = self.senders.get(&sender);
        let old = own.and_then(|s| s.txs.get(&nonce)).cloned();
        if let Some(old) = &old {
            let bump = self.cfg.price_bump_percent;
            let need = |old: u128| old.saturating_mul(100 + bump).div_ceil(100);
            if tx.max_fee() < need(old.max_fee()) || tx.max_tip() < need(old.max_tip()) {
                return Err(PoolError::ReplacementUnderpriced);
            }
        }
        // Everything the sender has pooled must stay affordable together.
        let spent = own.map_or(U256::ZERO, |s| s.cost);
        let spent = spent.saturating_sub(old.as_ref().map_or(U256::ZERO, |o| o.max_cost()));
        let cost = tx.max_cost();
        if spent.saturating_add(cost) > balance {
            return Err(PoolError::InsufficientFunds {
                balance,
                cost,
                pooled: spent,
            });
        }
        let next = own.map_or(state_nonce, |s| s.next_nonce());
        let queued = nonce > next;
        if queued && old.is_none() && own.map_or(0, |s| s.queued_len()) >= self.cfg.account_queue {
            return Err(PoolError::AccountLimit {
                limit: self.cfg.account_queue,
            });
        }
        let own_slots = own.map_or(0, |s| s.slots);
        let freed = old.as_ref().map_or(0, |o| o.slots());
        let grow = tx.slots().saturating_sub(freed);
        tx.seq = self.seq + 1;
        let victims = self.plan_room(&tx, grow, queued, own_slots + grow)?;
        let mut evicted = Vec::with_capacity(victims.len());
        let mut touched: Vec<Address> = Vec::new();
        for (a, n) in victims {
            if let Some(t) = self.take(&a, n) {
                evicted.push(t.hash);
            }
            touched.push(a);
        }
        touched.sort();
        touched.dedup();
        for a in &touched {
            self.refresh_sender(a);
        }
        if old.is_some() {
            self.take(&sender, nonce);
        }
        self.seq += 1;
        let hash = tx.hash;
        self.senders.entry(sender).or_insert_with(|| SenderTxs {
            state_nonce,
            ..Default::default()
        });
        self.add(Arc::new(tx));
        let pending = self
            .senders
            .get(&sender)
            .is_some_and(|s| nonce < s.next_nonce());
        Ok(Inserted {
            hash,
            replaced: old.map(|o| o.hash),
            pending,
            evicted,
        })
    }

    /// The transactions to evict so that `grow` more slots fit (`queued`: the newcomer waits
    /// for a nonce gap, and then only queued transactions may make way for it, and only within
    /// the queue's share). Other senders' last transactions go, cheapest first: those of
    /// senders above their guaranteed slots whatever they pay, if the newcomer's sender is
    /// within its own (`own_slots` after the insert); otherwise only those paying less than the
    /// newcomer.
    fn plan_room(
        &self,
        tx: &PooledTx,
        grow: usize,
        queued: bool,
        own_slots: usize,
    ) -> Result<Vec<Victim>, PoolError> {
        let mut need_total = (self.slots + grow).saturating_sub(self.cfg.max_slots());
        let mut need_queue = if queued {
            (self.queued_slots + grow).saturating_sub(self.cfg.global_queue)
        } else {
            0
        };
        if need_total == 0 && need_queue == 0 {
            return Ok(Vec::new());
        }
        // Per candidate sender: its transactions newest nonce first, how many are gone, and
        // the slots it keeps.
        struct Cand<'a> {
            sender: Address,
            txs: Vec<&'a Arc<PooledTx>>,
            taken: usize,
            slots: usize,
            first_queued: u64,
        }
        let mut cands: Vec<Cand<'_>> = self
            .senders
            .iter()
            .filter(|(a, _)| **a != tx.sender)
            .map(|(a, s)| Cand {
                sender: *a,
                txs: s.txs.values().rev().collect(),
                taken: 0,
                slots: s.slots,
                first_queued: s.next_nonce(),
            })
            .collect();
        let eligible = |c: &Cand<'_>, guarantee_only: bool| -> Option<(u128, u128, Reverse<u64>)> {
            let t = c.txs.get(c.taken)?;
            if queued && t.nonce() < c.first_queued {
                return None;
            }
            if guarantee_only && c.slots <= self.cfg.account_slots {
                return None;
            }
            Some(t.price_key())
        };
        let mut victims = Vec::new();
        let guaranteed = own_slots <= self.cfg.account_slots;
        for guarantee_only in [true, false] {
            if guarantee_only && !guaranteed {
                continue;
            }
            let mut heap = BinaryHeap::new();
            for (i, c) in cands.iter().enumerate() {
                if let Some(k) = eligible(c, guarantee_only) {
                    heap.push(Reverse((k, i)));
                }
            }
            while need_total > 0 || need_queue > 0 {
                let Some(Reverse((key, i))) = heap.pop() else {
                    break;
                };
                if !guarantee_only && (key.0, key.1) >= (tx.max_fee(), tx.max_tip()) {
                    return Err(PoolError::PoolUnderpriced { cheapest: key.0 });
                }
                let c = &mut cands[i];
                let t = c.txs[c.taken];
                c.taken += 1;
                c.slots -= t.slots();
                victims.push((c.sender, t.nonce()));
                need_total = need_total.saturating_sub(t.slots());
                if t.nonce() >= c.first_queued {
                    need_queue = need_queue.saturating_sub(t.slots());
                }
                if let Some(k) = eligible(c, guarantee_only) {
                    heap.push(Reverse((k, i)));
                }
            }
            if need_total == 0 && need_queue == 0 {
                return Ok(victims);
            }
        }
        Err(PoolError::PoolFull)
    }

    /// Drops queued transactions older than the configured lifetime; returns their hashes.
    pub fn expire_queued(&mut self, now: Instant) -> Vec<B256> {
        self.last_expiry = Some(now);
        let lifetime = self.cfg.lifetime;
        let old: Vec<Victim> = self
            .senders
            .iter()
            .flat_map(|(a, s)| {
                s.txs
                    .values()
                    .skip(s.pending_len)
                    .filter(|t| now.saturating_duration_since(t.arrived) >= lifetime)
                    .map(|t| (*a, t.nonce()))
            })
            .collect();
        let mut out = Vec::with_capacity(old.len());
        for (a, n) in &old {
            if let Some(t) = self.take(a, *n) {
                out.push(t.hash);
            }
        }
        let mut senders: Vec<Address> = old.into_iter().map(|(a, _)| a).collect();
        senders.sort();
        senders.dedup();
        for a in &senders {
            self.refresh_sender(a);
        }
        out
    }

    /// [`Self::expire_queued`] if it has not run for a while (an eighth of the lifetime, at
    /// most a second), so that callers may invoke it on every insert.
    pub fn maybe_expire(&mut self, now: Instant) -> Vec<B256> {
        let every = (self.cfg.lifetime / 8).min(Duration::from_secs(1));
        match self.last_expiry {
            Some(t) if now.saturating_duration_since(t) < every => Vec::new(),
            _ => self.expire_queued(now),
        }
    }

    /// The next nonce a sender would use, counting its pending transactions.
    pub fn next_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        match self.senders.get(sender) {
            None => state_nonce,
            Some(s) if s.state_nonce < state_nonce => {
                let mut n = state_nonce;
                while s.txs.contains_key(&n) {
                    n += 1;
                }
                n
            }
            Some(s) => s.next_nonce(),
        }
    }

    /// Whether any transaction could go in a block at `base_fee`.
    pub fn has_executable(&self, base_fee: u64) -> bool {
        self.senders.values().any(|s| {
            s.pending()
                .next()
                .is_some_and(|t| t.effective_tip(base_fee).is_some())
        })
    }

    /// Executable transactions for the next block, best effective tip first, each sender's
    /// in nonce order; at most `max` of them.
    pub fn best(&self, base_fee: u64, max: usize) -> Vec<(TxEnvelope, Address)> {
        let mut iters: Vec<Vec<&Arc<PooledTx>>> = Vec::new();
        let mut heap = BinaryHeap::new();
        for s in self.senders.values() {
            let list: Vec<_> = s.pending().collect();
            if let Some(first) = list.first()
                && let Some(tip) = first.effective_tip(base_fee)
            {
                heap.push((tip, Reverse(first.seq), iters.len(), 0usize));
                iters.push(list);
            }
        }
        let mut out = Vec::new();
        while let Some((_, _, i, j)) = heap.pop() {
            let t = iters[i][j];
            out.push((t.tx.clone(), t.sender));
            if out.len() >= max {
                break;
            }
            if let Some(next) = iters[i].get(j + 1)
                && let Some(tip) = next.effective_tip(base_fee)
            {
                heap.push((tip, Reverse(next.seq), i, j + 1));
            }
        }
        out
    }

    /// Removes a transaction (e.g. invalid at execution time); the later ones of its sender
    /// stay, queued behind the gap, until they expire.
    pub fn remove(&mut self, hash: &B256) -> Option<Arc<PooledTx>> {
        let (sender, nonce) = self.by_hash.get(hash).map(|t| (t.sender, t.nonce()))?;
        let t = self.take(&sender, nonce);
        self.refresh_sender(&sender);
        t
    }

    /// After a block: updates the account nonce of `sender` and drops its stale transactions.
    pub fn set_state_nonce(&mut self, sender: &Address, state_nonce: u64) {
        let Some(s) = self.senders.get_mut(sender) else {
            return;
        };
        if state_nonce <= s.state_nonce && s.txs.range(..state_nonce).next().is_none() {
            return;
        }
        s.state_nonce = s.state_nonce.max(state_nonce);
        let stale: Vec<u64> = s.txs.range(..state_nonce).map(|(n, _)| *n).collect();
        for n in stale {
            self.take(sender, n);
        }
        self.refresh_sender(sender);
    }

    /// (pending, queued) transactions per sender, for `txpool_content`.
    #[allow(clippy::type_complexity)]
    pub fn content(
        &self,
    ) -> (
        BTreeMap<Address, Vec<Arc<PooledTx>>>,
        BTreeMap<Address, Vec<Arc<PooledTx>>>,
    ) {
        let mut pending = BTreeMap::new();
        let mut queued = BTreeMap::new();
        for (a, s) in &self.senders {
            let p: Vec<_> = s.pending().cloned().collect();
            let q: Vec<_> = s.txs.values().skip(s.pending_len).cloned().collect();
            if !p.is_empty() {
                pending.insert(*a, p);
            }
            if !q.is_empty() {
                queued.insert(*a, q);
            }
        }
        (pending, queued)
    }

    /// (pending, queued) counts.
    pub fn status(&self) -> (usize, usize) {
        let pending: usize = self.senders.values().map(|s| s.pending_len).sum();
        (pending, self.by_hash.len() - pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559};
    use alloy_primitives::TxKind;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    fn signed(signer: &PrivateKeySigner, nonce: u64, max_fee: u128, tip: u128) -> PooledTx {
        sized(signer, nonce, max_fee, tip, 0)
    }

    /// With `input` zero bytes of calldata (and the gas they need).
    fn sized(
        signer: &PrivateKeySigner,
        nonce: u64,
        max_fee: u128,
        tip: u128,
        input: usize,
    ) -> PooledTx {
        let tx = TxEip1559 {
            chain_id: 1337,
            nonce,
            gas_limit: 21_000 + 10 * input as u64,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(1),
            input: vec![0u8; input].into(),
            ..Default::default()
        };
        let sig = signer.sign_hash_sync(&tx.signature_hash()).expect("sign");
        let env: TxEnvelope = tx.into_signed(sig).into();
        validate_tx(env, 1337, 30_000_000, &PoolConfig::default()).expect("valid")
    }

    #[test]
    fn queued_tx_is_promoted_when_gap_fills() {
        let s = PrivateKeySigner::random();
        let mut pool = Pool::new(PoolConfig::default());
        let rich = U256::from(10u128.pow(20));
        let r = pool.insert(signed(&s, 1, 10, 1), 0, rich).expect("insert");
        assert!(!r.pending);
        assert_eq!(pool.best(1, 100).len(), 0);
        let r = pool.insert(signed(&s, 0, 10, 1), 0, rich).expect("insert");
        assert!(r.pending);
        let best = pool.best(1, 100);
        assert_eq!(
            best.iter().map(|(t, _)| t.nonce()).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(pool.status(), (2, 0));
    }

    #[test]
    fn replacement_needs_ten_percent_bump() {
        let s = PrivateKeySigner::random();
        let mut pool = Pool::new(PoolConfig::default());
        let rich = U256::from(10u128.pow(20));
        pool.insert(signed(&s, 0, 100, 10), 0, rich)
            .expect("insert");
        let err = pool
            .insert(signed(&s, 0, 109, 11), 0, rich)
            .expect_err("too small");
        assert_eq!(err, PoolError::ReplacementUnderpriced);
        let ok = pool
            .insert(signed(&s, 0, 110, 11), 0, rich)
            .expect("bumped");
        assert!(ok.replaced.is_some());
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn best_orders_by_tip_and_skips_underpriced() {
        let a = PrivateKeySigner::random();
        let b = PrivateKeySigner::random();
        let c = PrivateKeySigner::random();
        let mut pool = Pool::new(PoolConfig::default());
        let rich = U256::from(10u128.pow(20));
        pool.insert(signed(&a, 0, 100, 1), 0, rich).expect("a");
        pool.insert(signed(&b, 0, 100, 50), 0, rich).expect("b");
        pool.insert(signed(&c, 0, 5, 5), 0, rich).expect("c");
        let best = pool.best(10, 10);
        assert_eq!(best.len(), 2, "fee cap below base fee waits");
        assert_eq!(best[0].1, b.address());
        assert!(!pool.has_executable(1000));
    }

    #[test]
    fn stateless_checks() {
        let s = PrivateKeySigner::random();
        let cfg = PoolConfig::default();
        let p = signed(&s, 0, 10, 1);
        let raw = p.tx.encoded_2718();
        assert_eq!(
            validate_raw(&raw, 1, 30_000_000, &cfg)
                .expect_err("chain")
                .to_string(),
            "invalid chain id for signer: have 1337 want 1"
        );
        assert!(matches!(
            validate_raw(&raw[..raw.len() - 3], 1337, 30_000_000, &cfg),
            Err(PoolError::Decode(_))
        ));
        assert!(matches!(
            validate_raw(&raw, 1337, 20_000, &cfg),
            Err(PoolError::ExceedsBlockGasLimit { .. })
        ));
        // r = s = 0 recovers to no address.
        let zero = alloy_primitives::Signature::new(U256::ZERO, U256::ZERO, false);
        let bad: TxEnvelope = match &p.tx {
            TxEnvelope::Eip1559(t) => t.tx().clone().into_signed(zero).into(),
            _ => unreachable!("built as EIP-1559"),
        };
        assert_eq!(
            validate_raw(&bad.encoded_2718(), 1337, 30_000_000, &cfg).expect_err("bad sig"),
            PoolError::InvalidSignature
        );
        let mut pool = Pool::new(cfg);
        let err = pool.insert(p, 0, U256::from(1)).expect_err("poor");
        assert!(
            err.to_string()
                .starts_with("insufficient funds for gas * price + value")
        );
    }

    fn small(account_slots: usize, global_slots: usize, global_queue: usize) -> PoolConfig {
        PoolConfig {
            account_slots,
            global_slots,
            global_queue,
            ..Default::default()
        }
    }

    const RICH: U256 = U256::from_limbs([0, 0, 1, 0]);

    /// Recomputes every counter the pool keeps and checks them and its bounds.
    fn check_invariants(pool: &Pool) {
        let slots: usize = pool.by_hash.values().map(|t| t.slots()).sum();
        let bytes: usize = pool.by_hash.values().map(|t| t.size).sum();
        assert_eq!(pool.slots(), slots);
        assert_eq!(pool.bytes(), bytes);
        assert!(slots <= pool.config().max_slots(), "{slots} slots");
        assert!(bytes <= pool.config().max_bytes());
        let mut queued = 0;
        let mut count = 0;
        for s in pool.senders.values() {
            assert!(!s.txs.is_empty());
            let mut n = s.state_nonce;
            let mut pending = 0;
            while s.txs.contains_key(&n) {
                n += 1;
                pending += 1;
            }
            assert_eq!(s.pending_len, pending);
            queued += s
                .txs
                .values()
                .skip(pending)
                .map(|t| t.slots())
                .sum::<usize>();
            assert_eq!(s.slots, s.txs.values().map(|t| t.slots()).sum::<usize>());
            let cost = s
                .txs
                .values()
                .fold(U256::ZERO, |a, t| a.saturating_add(t.max_cost()));
            assert_eq!(s.cost, cost);
            count += s.txs.len();
        }
        assert_eq!(pool.queued_slots, queued);
        assert_eq!(count, pool.len());
    }

    #[test]
    fn slots_count_thirty_two_kib_each() {
        assert_eq!(num_slots(0), 1);
        assert_eq!(num_slots(TX_SLOT_SIZE), 1);
        assert_eq!(num_slots(TX_SLOT_SIZE + 1), 2);
        assert_eq!(num_slots(PoolConfig::default().max_tx_bytes), 4);
        assert_eq!(PoolConfig::default().max_bytes(), 6144 * 32 * 1024);
    }

    #[test]
    fn a_sender_within_its_slots_displaces_one_above_them() {
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut pool = Pool::new(small(2, 2, 2));
        let mut a_txs = vec![];
        for n in 0..4 {
            a_txs.push(pool.insert(signed(&a, n, 100, 1), 0, RICH).expect("a").hash);
        }
        // A holds all four slots; B, within its two guaranteed slots, takes A's last ones
        // although it pays less.
        let r = pool.insert(signed(&b, 0, 10, 1), 0, RICH).expect("b0");
        assert_eq!(r.evicted, vec![a_txs[3]]);
        let r = pool.insert(signed(&b, 1, 10, 1), 0, RICH).expect("b1");
        assert_eq!(r.evicted, vec![a_txs[2]]);
        // Beyond its guarantee B must outbid, and A's remaining transactions pay more.
        let err = pool.insert(signed(&b, 2, 10, 1), 0, RICH).expect_err("b2");
        assert_eq!(err, PoolError::PoolUnderpriced { cheapest: 100 });
        // Outbidding works: A's last transaction goes.
        let r = pool.insert(signed(&b, 2, 101, 1), 0, RICH).expect("b2");
        assert_eq!(r.evicted, vec![a_txs[1]]);
        assert_eq!(pool.status(), (4, 0));
        check_invariants(&pool);
    }

    #[test]
    fn a_future_transaction_never_evicts_pending_ones() {
        let mut pool = Pool::new(small(1, 2, 1));
        for fee in [10, 20, 30] {
            let s = PrivateKeySigner::random();
            pool.insert(signed(&s, 0, fee, 1), 0, RICH)
                .expect("pending");
        }
        let d = PrivateKeySigner::random();
        let err = pool
            .insert(signed(&d, 1, 1000, 1), 0, RICH)
            .expect_err("gapped");
        assert_eq!(err, PoolError::PoolFull);
        // An executable one outbids the cheapest.
        let r = pool
            .insert(signed(&d, 0, 1000, 1), 0, RICH)
            .expect("pending");
        assert_eq!(r.evicted.len(), 1);
        check_invariants(&pool);
    }

    #[test]
    fn the_queue_keeps_its_share_by_price() {
        let mut pool = Pool::new(small(16, 10, 2));
        let signers: Vec<_> = (0..4).map(|_| PrivateKeySigner::random()).collect();
        let first = pool
            .insert(signed(&signers[0], 1, 10, 1), 0, RICH)
            .expect("q0");
        pool.insert(signed(&signers[1], 1, 20, 1), 0, RICH)
            .expect("q1");
        let r = pool
            .insert(signed(&signers[2], 1, 15, 1), 0, RICH)
            .expect("q2");
        assert_eq!(r.evicted, vec![first.hash]);
        let err = pool
            .insert(signed(&signers[3], 1, 5, 1), 0, RICH)
            .expect_err("q3");
        assert!(
            matches!(err, PoolError::PoolUnderpriced { cheapest: 15 }),
            "{err}"
        );
        // Pending transactions do not count against the queue.
        pool.insert(signed(&signers[3], 0, 5, 1), 0, RICH)
            .expect("pending");
        assert_eq!(pool.status(), (1, 2));
        check_invariants(&pool);
    }

    #[test]
    fn one_sender_queues_at_most_account_queue() {
        let s = PrivateKeySigner::random();
        let mut pool = Pool::new(PoolConfig {
            account_queue: 3,
            ..Default::default()
        });
        for n in 1..=3 {
            pool.insert(signed(&s, n, 10, 1), 0, RICH).expect("queued");
        }
        let err = pool.insert(signed(&s, 4, 10, 1), 0, RICH).expect_err("4th");
        assert_eq!(err, PoolError::AccountLimit { limit: 3 });
        // Replacing a queued one and filling the gap are still allowed.
        pool.insert(signed(&s, 3, 20, 2), 0, RICH).expect("replace");
        pool.insert(signed(&s, 0, 10, 1), 0, RICH).expect("gap");
        pool.insert(signed(&s, 4, 10, 1), 0, RICH)
            .expect("now pending");
        assert_eq!(pool.status(), (5, 0));
        check_invariants(&pool);
    }

    #[test]
    fn pooled_costs_must_fit_the_balance_together() {
        let s = PrivateKeySigner::random();
        let mut pool = Pool::new(PoolConfig::default());
        let one = signed(&s, 0, 10, 1).max_cost();
        let balance = one * U256::from(2);
        pool.insert(signed(&s, 0, 10, 1), 0, balance).expect("1st");
        pool.insert(signed(&s, 5, 10, 1), 0, balance)
            .expect("2nd, queued");
        let err = pool
            .insert(signed(&s, 1, 10, 1), 0, balance)
            .expect_err("3rd");
        assert_eq!(
            err,
            PoolError::InsufficientFunds {
                balance,
                cost: one,
                pooled: one * U256::from(2)
            }
        );
        // A replacement is charged only the difference.
        let bumped = signed(&s, 0, 11, 2);
        let err = pool.insert(bumped, 0, balance).expect_err("bump overdraws");
        assert!(matches!(err, PoolError::InsufficientFunds { .. }));
        pool.insert(signed(&s, 0, 11, 2), 0, balance + U256::from(21_000))
            .expect("bump fits");
        check_invariants(&pool);
    }

    #[test]
    fn queued_transactions_expire_and_pending_ones_stay() {
        let s = PrivateKeySigner::random();
        let mut pool = Pool::new(PoolConfig {
            lifetime: Duration::from_secs(60),
            ..Default::default()
        });
        pool.insert(signed(&s, 0, 10, 1), 0, RICH).expect("pending");
        let q = pool.insert(signed(&s, 2, 10, 1), 0, RICH).expect("queued");
        let now = Instant::now();
        assert!(pool.expire_queued(now).is_empty());
        assert_eq!(
            pool.expire_queued(now + Duration::from_secs(61)),
            vec![q.hash]
        );
        assert_eq!(pool.status(), (1, 0));
        check_invariants(&pool);
        // Rate-limited: a second call right after does nothing.
        pool.insert(signed(&s, 3, 10, 1), 0, RICH).expect("queued");
        assert!(pool.maybe_expire(now + Duration::from_secs(61)).is_empty());
        assert_eq!(pool.maybe_expire(now + Duration::from_secs(200)).len(), 1);
    }

    /// Random inserts, blocks (nonce moves), removals and expiry: the counters always match a
    /// recount and the pool stays within its slots.
    #[test]
    fn counters_match_a_recount_under_random_traffic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let signers: Vec<_> = (0..6).map(|_| PrivateKeySigner::random()).collect();
        let mut nonces = [0u64; 6];
        let mut pool = Pool::new(PoolConfig {
            account_slots: 2,
            global_slots: 12,
            account_queue: 4,
            global_queue: 6,
            lifetime: Duration::from_secs(10),
            ..Default::default()
        });
        let start = Instant::now();
        for step in 0..600u64 {
            let i = rng.random_range(0..signers.len());
            match rng.random_range(0..10) {
                0 => {
                    // A block moved this sender's nonce on.
                    nonces[i] += rng.random_range(0..3);
                    pool.set_state_nonce(&signers[i].address(), nonces[i]);
                }
                1 => {
                    let any = pool.by_hash.keys().next().copied();
                    if let Some(h) = any {
                        pool.remove(&h);
                    }
                }
                2 => {
                    pool.expire_queued(start + Duration::from_secs(step / 20));
                }
                _ => {
                    let nonce = nonces[i] + rng.random_range(0..6);
                    let fee = rng.random_range(1..100);
                    let input = [0, 0, 40_000, 100_000][rng.random_range(0..4)];
                    let tx = sized(&signers[i], nonce, fee, 1, input);
                    let _ = pool.insert(tx, nonces[i], RICH);
                }
            }
            check_invariants(&pool);
        }
        assert!(!pool.is_empty());
    }
}
