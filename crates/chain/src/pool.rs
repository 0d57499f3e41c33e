//! The transaction pool: geth's checks and messages, pending and queued (future-nonce)
//! transactions, fee-bump replacement, and selection by effective tip for the next block.

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

/// EIP-7825 (Osaka): maximum gas limit of one transaction.
pub const TX_GAS_LIMIT_CAP: u64 = 1 << 24;

/// Pool limits and policy.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Largest accepted encoded transaction (geth: 128 KiB).
    pub max_tx_bytes: usize,
    /// A replacement must raise both fee fields by at least this percentage.
    pub price_bump_percent: u128,
    /// Most transactions one sender may have in the pool.
    pub max_per_sender: usize,
    /// Most transactions in the pool.
    pub max_total: usize,
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
            max_tx_bytes: 128 * 1024,
            price_bump_percent: 10,
            max_per_sender: 16_384,
            max_total: 262_144,
            max_nonce_gap: 16_384,
            min_gas_price: 1,
            allow_unprotected: false,
        }
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
        U256::from(self.tx.gas_limit()) * U256::from(self.max_fee()) + self.tx.value()
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
}

#[derive(Debug, Default)]
struct SenderTxs {
    /// Account nonce as of the last check.
    state_nonce: u64,
    txs: BTreeMap<u64, Arc<PooledTx>>,
}

impl SenderTxs {
    /// Transactions executable in order from the state nonce.
    fn pending(&self) -> impl Iterator<Item = &Arc<PooledTx>> {
        let mut expect = self.state_nonce;
        self.txs.range(self.state_nonce..).map_while(move |(n, t)| {
            if *n == expect {
                expect += 1;
                Some(t)
            } else {
                None
            }
        })
    }
}

/// The pool itself: plain state, driven by the node under a lock.
#[derive(Debug, Default)]
pub struct Pool {
    cfg: PoolConfig,
    by_hash: HashMap<B256, Arc<PooledTx>>,
    senders: HashMap<Address, SenderTxs>,
    seq: u64,
}

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

    /// A transaction by hash.
    pub fn get(&self, hash: &B256) -> Option<Arc<PooledTx>> {
        self.by_hash.get(hash).cloned()
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
        let cost = tx.max_cost();
        if cost > balance {
            return Err(PoolError::InsufficientFunds { balance, cost });
        }
        let bump = self.cfg.price_bump_percent;
        let entry = self.senders.entry(tx.sender).or_default();
        entry.state_nonce = state_nonce;
        let mut replaced = None;
        if let Some(old) = entry.txs.get(&nonce) {
            let need = |old: u128| old.saturating_mul(100 + bump).div_ceil(100);
            if tx.max_fee() < need(old.max_fee()) || tx.max_tip() < need(old.max_tip()) {
                return Err(PoolError::ReplacementUnderpriced);
            }
            replaced = Some(old.hash);
        } else if entry.txs.len() >= self.cfg.max_per_sender
            || self.by_hash.len() >= self.cfg.max_total
        {
            return Err(PoolError::PoolFull);
        }
        self.seq += 1;
        tx.seq = self.seq;
        let hash = tx.hash;
        let tx = Arc::new(tx);
        if let Some(old) = entry.txs.insert(nonce, tx.clone()) {
            self.by_hash.remove(&old.hash);
        }
        self.by_hash.insert(hash, tx);
        let pending = entry.pending().any(|t| t.hash == hash);
        Ok(Inserted {
            hash,
            replaced,
            pending,
        })
    }

    /// The next nonce a sender would use, counting its pending transactions.
    pub fn next_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        match self.senders.get(sender) {
            None => state_nonce,
            Some(s) => {
                let mut n = state_nonce;
                while s.txs.contains_key(&n) {
                    n += 1;
                }
                n
            }
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

    /// Removes a transaction (e.g. invalid at execution time) and the later ones of its sender
    /// only if `cascade`.
    pub fn remove(&mut self, hash: &B256) -> Option<Arc<PooledTx>> {
        let tx = self.by_hash.remove(hash)?;
        if let Some(s) = self.senders.get_mut(&tx.sender) {
            s.txs.remove(&tx.nonce());
            if s.txs.is_empty() {
                self.senders.remove(&tx.sender);
            }
        }
        Some(tx)
    }

    /// After a block: updates the account nonce of `sender` and drops its stale transactions.
    pub fn set_state_nonce(&mut self, sender: &Address, state_nonce: u64) {
        let Some(s) = self.senders.get_mut(sender) else {
            return;
        };
        s.state_nonce = state_nonce;
        let stale: Vec<u64> = s.txs.range(..state_nonce).map(|(n, _)| *n).collect();
        for n in stale {
            if let Some(t) = s.txs.remove(&n) {
                self.by_hash.remove(&t.hash);
            }
        }
        if s.txs.is_empty() {
            self.senders.remove(sender);
        }
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
            let q: Vec<_> = s
                .txs
                .values()
                .filter(|t| !p.iter().any(|x| x.hash == t.hash))
                .cloned()
                .collect();
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
        let pending: usize = self.senders.values().map(|s| s.pending().count()).sum();
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
        let tx = TxEip1559 {
            chain_id: 1337,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(1),
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
}
