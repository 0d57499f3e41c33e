//! The inference-fee rule of `AttributionSettlement`, once, for every service that shows or
//! predicts a payout (settlement's credit lines, the UI's "who earns what").
//!
//! For a fee `F` and the governed split `(t, m, c)` in basis points:
//!
//! ```text
//! treasury   = ⌊F·t / 10,000⌋
//! modelOwner = ⌊F·m / 10,000⌋
//! pool       = F − treasury − modelOwner            (absorbs the rounding of the first two)
//! share_i    = ⌊pool·wᵢ / Σw⌋                       (contribution i with weight wᵢ > 0)
//! dust       = pool − Σ share_i  → treasury          (the whole pool when nobody is credited)
//! ```
//!
//! Every wei of `F` goes to exactly one account. `contracts/test/conservation.test.mjs` checks the
//! contract against the same rule; `tests::matches_the_contracts_documented_examples` and the
//! attribution crate's settlement test check this code against the contract.
//!
//! ```
//! use alloy_primitives::U256;
//! use openledger_protocol::fees::{FeeSplitBps, split};
//! let s = split(U256::from(1003u64), FeeSplitBps { treasury: 1000, model_owner: 4000 }, &[U256::from(1u64), U256::from(2u64)]);
//! assert_eq!((s.treasury, s.model_owner), (U256::from(101u64), U256::from(401u64)));
//! assert_eq!(s.contributions, vec![U256::from(167u64), U256::from(334u64)]);
//! ```

use alloy_primitives::U256;

/// 100 % in basis points.
pub const BPS: u64 = 10_000;

/// The treasury's and the model owner's share of a fee, in basis points (the contributors get
/// the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeSplitBps {
    /// Treasury share.
    pub treasury: u16,
    /// Model owner share.
    pub model_owner: u16,
}

/// Where one fee goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    /// To the treasury: its share, plus the pool's dust (or the whole pool when no contribution
    /// is credited).
    pub treasury: U256,
    /// To the model owner.
    pub model_owner: U256,
    /// The contributors' pool before it is divided.
    pub pool: U256,
    /// To each credited contribution, in the order of the weights given.
    pub contributions: Vec<U256>,
}

/// Splits `fee` by the contract's rule; `weights` are the credited contributions' weights
/// (zero weights are refused by the contract; here they simply earn nothing).
pub fn split(fee: U256, bps: FeeSplitBps, weights: &[U256]) -> Payout {
    let base = U256::from(BPS);
    let t = fee.saturating_mul(U256::from(bps.treasury)) / base;
    let m = fee.saturating_mul(U256::from(bps.model_owner)) / base;
    let pool = fee.saturating_sub(t).saturating_sub(m);
    // exact in 512 bits (the contract reverts on a weight sum past 2²⁵⁶; no panic here)
    let sum = weights.iter().fold(U512::ZERO, |a, w| a + U512::from(*w));
    let contributions: Vec<U256> = if sum.is_zero() {
        vec![U256::ZERO; weights.len()]
    } else {
        weights.iter().map(|w| mul_div(pool, *w, sum)).collect()
    };
    let paid = contributions
        .iter()
        .fold(U256::ZERO, |a, c| a.saturating_add(*c));
    Payout {
        treasury: t + (pool - paid),
        model_owner: m,
        pool,
        contributions,
    }
}

/// ⌊a·b / d⌋ without overflow (OpenZeppelin's `Math.mulDiv`), for `0 < b ≤ d`.
fn mul_div(a: U256, b: U256, d: U512) -> U256 {
    let q = a.widening_mul::<256, 4, 512, 8>(b) / d;
    U256::from_limbs_slice(&q.as_limbs()[..4])
}

type U512 = alloy_primitives::Uint<512, 8>;

/// An account's inference credits as a client should show them: `AttributionSettlement`'s
/// `claimable` and `pendingOf` are computed at the latest block's timestamp, which stands still
/// while a chain that seals on demand is idle; credits whose window has ended by the wall clock
/// are claimable (the claim's own block releases them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credits {
    /// What a claim sent now pays.
    pub claimable: U256,
    /// Still inside a challenge window.
    pub pending: U256,
    /// When the last pending credit becomes claimable (unix seconds; 0 when none).
    pub pending_until: u64,
}

impl Credits {
    /// From `claimable(account)` and `pendingOf(account)` (amount, final time), at wall-clock
    /// time `now`.
    pub fn at(claimable: U256, pending: U256, pending_until: u64, now: u64) -> Self {
        if pending.is_zero() || pending_until <= now {
            Self {
                claimable: claimable.saturating_add(pending),
                pending: U256::ZERO,
                pending_until: 0,
            }
        } else {
            Self {
                claimable,
                pending,
                pending_until,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(v: u64) -> U256 {
        U256::from(v)
    }

    #[test]
    fn credits_past_their_window_by_the_wall_clock_are_claimable() {
        let c = Credits::at(U256::from(5), U256::from(7), 100, 99);
        assert_eq!(
            (c.claimable, c.pending, c.pending_until),
            (U256::from(5), U256::from(7), 100)
        );
        let c = Credits::at(U256::from(5), U256::from(7), 100, 100);
        assert_eq!(
            (c.claimable, c.pending, c.pending_until),
            (U256::from(12), U256::ZERO, 0)
        );
        assert_eq!(
            Credits::at(U256::ZERO, U256::ZERO, 0, 0).claimable,
            U256::ZERO
        );
    }

    #[test]
    fn matches_the_contracts_documented_examples() {
        // contracts/test/settlement.test.mjs: fee 1003 with 10/40/50 and weights 1, 2:
        // treasury 100 + dust 1, owner 401, contributors 167 and 334
        let s = split(
            u(1003),
            FeeSplitBps {
                treasury: 1000,
                model_owner: 4000,
            },
            &[u(1), u(2)],
        );
        assert_eq!(s.pool, u(502));
        assert_eq!(s.contributions, vec![u(167), u(334)]);
        assert_eq!((s.treasury, s.model_owner), (u(101), u(401)));
        // fee 10, nobody credited: the whole pool to the treasury
        let s = split(
            u(10),
            FeeSplitBps {
                treasury: 1000,
                model_owner: 4000,
            },
            &[],
        );
        assert_eq!((s.treasury, s.model_owner, s.pool), (u(6), u(4), u(5)));
    }

    #[test]
    fn every_wei_goes_to_exactly_one_account() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let t = (next() % 10_001) as u16;
            let m = (next() % (10_001 - u64::from(t))) as u16;
            let fee = U256::from(next()) * U256::from(next() % 1_000_000 + 1);
            let n = (next() % 6) as usize;
            let weights: Vec<U256> = (0..n).map(|_| U256::from(next() % 1_000_000 + 1)).collect();
            let s = split(
                fee,
                FeeSplitBps {
                    treasury: t,
                    model_owner: m,
                },
                &weights,
            );
            let total = s.treasury + s.model_owner + s.contributions.iter().copied().sum::<U256>();
            assert_eq!(total, fee);
            let own_share = fee * U256::from(t) / U256::from(BPS);
            if n > 0 {
                assert!(
                    s.treasury - own_share < U256::from(n as u64),
                    "dust < one wei per share"
                );
            } else {
                assert_eq!(
                    s.treasury - own_share,
                    s.pool,
                    "no credits: the pool to the treasury"
                );
            }
        }
    }

    #[test]
    fn huge_fees_and_weights_do_not_overflow() {
        let s = split(
            U256::MAX,
            FeeSplitBps {
                treasury: 0,
                model_owner: 0,
            },
            &[U256::MAX, U256::MAX],
        );
        assert_eq!(s.contributions, vec![U256::MAX / u(2), U256::MAX / u(2)]);
        assert_eq!(s.treasury, u(1));
    }
}
