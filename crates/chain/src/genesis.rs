//! Genesis: geth-style `genesis.json` files and the built-in presets.
//!
//! OpenLedger-specific settings live in the `config.openledger` object of a geth-style genesis:
//!
//! ```json
//! { "config": { "chainId": 1337, "openledger": { "baseFeeRecipient": "0x…" } }, … }
//! ```
//!
//! `baseFeeRecipient` absent or `null` means the base fee is burned, as on Ethereum; an address
//! means the base fee of every transaction is credited to that treasury. Priority fees always go
//! to the block's fee recipient (the header's `beneficiary`).

use crate::error::ChainError;
use alloy_genesis::{Genesis, GenesisAccount};
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use openledger_protocol::{DEV_CHAIN_ID, DEV_MNEMONIC, OPEN};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Default block gas limit (anvil's default).
pub const DEFAULT_GAS_LIMIT: u64 = 30_000_000;
/// Default initial base fee: 1 gwei (anvil's default).
pub const DEFAULT_BASE_FEE: u64 = 1_000_000_000;

/// OpenLedger-specific chain parameters, read from `config.openledger` of the genesis file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenLedgerParams {
    /// Treasury credited with the base fee; `None` burns it.
    #[serde(default)]
    pub base_fee_recipient: Option<Address>,
}

/// The parsed chain specification the node runs with.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    /// The genesis as given (geth format).
    pub genesis: Genesis,
    /// OpenLedger parameters from `config.openledger`.
    pub params: OpenLedgerParams,
}

impl ChainSpec {
    /// Parses a geth-style genesis JSON document.
    pub fn from_json(json: &str) -> Result<Self, ChainError> {
        let raw: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| ChainError::Genesis(format!("invalid genesis JSON: {e}")))?;
        // alloy defaults a missing chain id to 1 (Ethereum mainnet); refuse that silently-wrong default.
        if raw.pointer("/config/chainId").is_none() {
            return Err(ChainError::Genesis("config.chainId must be set".into()));
        }
        let genesis: Genesis = serde_json::from_value(raw)
            .map_err(|e| ChainError::Genesis(format!("invalid genesis JSON: {e}")))?;
        Self::from_genesis(genesis)
    }

    /// Reads a geth-style genesis file.
    pub fn from_file(path: &Path) -> Result<Self, ChainError> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| ChainError::Genesis(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&json)
    }

    /// Wraps an already-built genesis, validating it.
    pub fn from_genesis(genesis: Genesis) -> Result<Self, ChainError> {
        let params = match genesis.config.extra_fields.get("openledger") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| ChainError::Genesis(format!("invalid config.openledger: {e}")))?,
            None => OpenLedgerParams::default(),
        };
        if genesis.config.chain_id == 0 {
            return Err(ChainError::Genesis(
                "config.chainId must be set and non-zero".into(),
            ));
        }
        if genesis.gas_limit < 21_000 {
            return Err(ChainError::Genesis(format!(
                "gasLimit {} is below the 21000 a transfer needs",
                genesis.gas_limit
            )));
        }
        Ok(Self { genesis, params })
    }

    /// Chain id (EIP-155).
    pub fn chain_id(&self) -> u64 {
        self.genesis.config.chain_id
    }

    /// Initial base fee per gas.
    pub fn initial_base_fee(&self) -> u64 {
        self.genesis
            .base_fee_per_gas
            .map(|b| b.min(u64::MAX as u128) as u64)
            .unwrap_or(DEFAULT_BASE_FEE)
    }

    /// Serialises the genesis back to JSON (stored in the datadir so a restart uses the same one).
    pub fn to_json(&self) -> String {
        let mut genesis = self.genesis.clone();
        if let Ok(v) = serde_json::to_value(&self.params) {
            genesis
                .config
                .extra_fields
                .insert("openledger".to_string(), v);
        }
        serde_json::to_string_pretty(&genesis).unwrap_or_default()
    }
}

/// A development account derived from the dev mnemonic.
#[derive(Clone, Debug)]
pub struct DevAccount {
    /// Its address.
    pub address: Address,
    /// Its signer (private key).
    pub signer: PrivateKeySigner,
}

/// Derives the first `n` accounts of the dev mnemonic at m/44'/60'/0'/0/i.
pub fn dev_accounts(n: usize) -> Result<Vec<DevAccount>, ChainError> {
    (0..n)
        .map(|i| {
            let signer = MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .index(i as u32)
                .and_then(|b| b.build())
                .map_err(|e| ChainError::Genesis(format!("dev account {i}: {e}")))?;
            Ok(DevAccount {
                address: signer.address(),
                signer,
            })
        })
        .collect()
}

/// Options of the `dev` preset.
#[derive(Clone, Debug)]
pub struct DevPreset {
    /// Number of funded dev accounts.
    pub accounts: usize,
    /// Chain id.
    pub chain_id: u64,
    /// OPEN given to each account.
    pub balance_open: u64,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Genesis timestamp (seconds).
    pub timestamp: u64,
    /// Treasury for base fees (`None` burns).
    pub base_fee_recipient: Option<Address>,
}

impl Default for DevPreset {
    fn default() -> Self {
        Self {
            accounts: 10,
            chain_id: DEV_CHAIN_ID,
            balance_open: 10_000,
            gas_limit: DEFAULT_GAS_LIMIT,
            timestamp: 0,
            base_fee_recipient: None,
        }
    }
}

impl DevPreset {
    /// Builds the chain spec: the dev accounts funded, nothing else.
    pub fn build(&self) -> Result<(ChainSpec, Vec<DevAccount>), ChainError> {
        let accounts = dev_accounts(self.accounts)?;
        let balance = U256::from(self.balance_open) * U256::from(OPEN);
        let mut genesis = Genesis {
            timestamp: self.timestamp,
            gas_limit: self.gas_limit,
            base_fee_per_gas: Some(DEFAULT_BASE_FEE as u128),
            extra_data: Bytes::from_static(b"openledger dev"),
            ..Default::default()
        };
        genesis.config.chain_id = self.chain_id;
        for a in &accounts {
            genesis
                .alloc
                .insert(a.address, GenesisAccount::default().with_balance(balance));
        }
        let spec = ChainSpec {
            genesis,
            params: OpenLedgerParams {
                base_fee_recipient: self.base_fee_recipient,
            },
        };
        Ok((spec, accounts))
    }
}

/// Adds an account with code and storage to a genesis (used for predeploys).
pub fn add_predeploy(
    spec: &mut ChainSpec,
    address: Address,
    code: Bytes,
    storage: impl IntoIterator<Item = (B256, B256)>,
    balance: U256,
) {
    let storage = storage.into_iter().collect();
    spec.genesis.alloc.insert(
        address,
        GenesisAccount::default()
            .with_code(Some(code))
            .with_storage(Some(storage))
            .with_balance(balance)
            .with_nonce(Some(1)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_account_zero_is_the_well_known_one() {
        let a = dev_accounts(2).expect("derive");
        assert_eq!(
            a[0].address.to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_ne!(a[0].address, a[1].address);
    }

    #[test]
    fn genesis_json_round_trips_with_params() {
        let treasury = Address::repeat_byte(7);
        let (mut spec, _) = DevPreset {
            accounts: 1,
            ..Default::default()
        }
        .build()
        .expect("dev");
        spec.params.base_fee_recipient = Some(treasury);
        let back = ChainSpec::from_json(&spec.to_json()).expect("parse");
        assert_eq!(back.params.base_fee_recipient, Some(treasury));
        assert_eq!(back.chain_id(), 1337);
        assert_eq!(back.genesis.alloc.len(), 1);
    }

    #[test]
    fn bad_genesis_is_a_clear_error() {
        let err = ChainSpec::from_json("{\"config\":{},\"gasLimit\":\"0x1c9c380\"}")
            .expect_err("no chain id");
        assert!(err.to_string().contains("chainId"), "{err}");
        let err = ChainSpec::from_json("{\"config\":{\"chainId\":5},\"gasLimit\":\"0x10\"}")
            .expect_err("gas");
        assert!(err.to_string().contains("gasLimit 16"), "{err}");
        let err = ChainSpec::from_json("not json").expect_err("not json");
        assert!(err.to_string().contains("invalid genesis JSON"), "{err}");
    }
}
