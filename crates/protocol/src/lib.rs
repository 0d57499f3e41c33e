//! The typed seam between OpenLedger's services and its chain, and the constants they share.
//!
//! - ids and constants: [`DatanetId`], [`ModelId`], [`ContributionId`], [`Version`], [`OPEN`],
//!   [`DEV_MNEMONIC`], [`DEV_CHAIN_ID`], [`CLIENT_VERSION`];
//! - the contracts: `sol!` bindings generated from the committed artifacts in `contracts/out`
//!   ([`bindings`]), the deployment configuration and plan (which the devnet's genesis
//!   predeploy executes), typed [`Deployments`], and deployment to any EVM chain over JSON-RPC;
//! - the rules services and contracts share: the fee split ([`fees`]), every EIP-712 message
//!   and domain ([`eip712`]), vouchers and settlement leaves ([`voucher`]), the payment hooks
//!   between serving and attribution ([`hooks`]);
//! - finding a running devnet's chain, services, contracts and stores ([`endpoints`]);
//! - talking to the chain: receipts by polling ([`Confirm`]) and one error type
//!   ([`ChainError`]); answering HTTP: one error envelope ([`api_error`]).
//!
//! ```
//! use openledger_protocol::{DeployConfig, OPEN, DEV_MNEMONIC, plan};
//! assert_eq!(OPEN, 10u128.pow(18));
//! assert!(DEV_MNEMONIC.ends_with("junk"));
//! let cfg = DeployConfig::dev();
//! let steps = plan(&cfg, openledger_protocol::GENESIS_DEPLOYER, 0);
//! assert_eq!(steps.len(), 8);
//! assert_eq!(steps[0].name, "GOPEN");
//! ```

pub mod api_error;
pub mod bindings;
pub mod chain_error;
mod config;
pub mod confirm;
mod deploy;
pub mod eip712;
pub mod endpoints;
pub mod fees;
pub mod follower;
pub mod hooks;
mod ids;
pub mod merkle;
pub mod voucher;

pub use api_error::ApiError;
pub use chain_error::ChainError;
pub use config::{
    Bond, Contract, Contracts, DeployConfig, Deployments, DisputeConfig, FeeSplit,
    GENESIS_DEPLOYER, Step, bonds, plan,
};
pub use confirm::{Confirm, ReceiptError};
pub use deploy::{DeployError, deploy};
pub use ids::{ContributionId, DatanetId, IdError, ModelId, Version};

pub use alloy_primitives::{Address, B256, Bytes, U256, keccak256};

/// One OPEN (the gas token) in its smallest unit; OPEN has 18 decimals like ether.
pub const OPEN: u128 = 1_000_000_000_000_000_000;

/// The well-known development mnemonic used by anvil and hardhat.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Chain id of the `dev` genesis preset (what MetaMask's "Localhost 8545" network expects).
pub const DEV_CHAIN_ID: u64 = 1337;

/// The attribution engine (name and version) that produces records: the string whose
/// keccak-256 `ProtocolParams.allowedEngine` must accept for its records to settle. Every
/// workspace crate shares one version, so this is the attribution crate's too.
pub const ENGINE: &str = concat!("openledger-attribution/", env!("CARGO_PKG_VERSION"));

/// Name and version reported by `web3_clientVersion`.
pub const CLIENT_VERSION: &str = concat!("openledger/v", env!("CARGO_PKG_VERSION"));

/// `wei` as OPEN with trailing zeros trimmed ("1.5", "0", "0.000001").
///
/// ```
/// use openledger_protocol::{U256, format_open, parse_open};
/// assert_eq!(format_open(U256::from(1_500_000_000_000_000_000u128)), "1.5");
/// assert_eq!(format_open(U256::ZERO), "0");
/// assert_eq!(parse_open("0.25").unwrap(), U256::from(250_000_000_000_000_000u128));
/// assert!(parse_open("1e16").is_err());
/// ```
pub fn format_open(wei: U256) -> String {
    let s = alloy_primitives::utils::format_ether(wei);
    match s.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => s,
    }
}

/// An amount of OPEN written as a decimal ("1", "0.25"; at most 18 decimals) in wei.
pub fn parse_open(s: &str) -> Result<U256, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not an amount of OPEN (a decimal such as 1 or 0.25)");
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    match t.split_once('.') {
        Some((int, frac)) if frac.contains('.') || (int.is_empty() && frac.is_empty()) => {
            return Err(bad());
        }
        // wei is the smallest unit: more decimals would be cut off silently
        Some((_, frac)) if frac.len() > 18 => {
            return Err(format!(
                "{s:?} has more than 18 decimals (1 wei is 0.000000000000000001 OPEN)"
            ));
        }
        _ => {}
    }
    alloy_primitives::utils::parse_ether(t)
        .map_err(|e| format!("{s:?} is not an amount of OPEN: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_amounts_format_and_parse_both_ways() {
        assert_eq!(format_open(U256::from(1_000_000_000_000u64)), "0.000001");
        let ten_thousand = U256::from(10_000u64) * U256::from(OPEN);
        assert_eq!(format_open(ten_thousand), "10000");
        for s in ["0", "1", "1.5", "0.000001", "10000"] {
            assert_eq!(format_open(parse_open(s).expect("parses")), s);
        }
        for bad in [
            "",
            "-1",
            "1e18",
            "0x10",
            "one",
            "1.2.3",
            "0.0000000000000000001",
        ] {
            assert!(parse_open(bad).is_err(), "{bad:?} parsed");
        }
    }
}
