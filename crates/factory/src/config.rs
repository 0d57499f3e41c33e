//! What the UI needs to know about the deployment it is part of.

use alloy_primitives::Address;
use openledger_protocol::{Contract, Contracts};

/// Configuration of the UI router.
#[derive(Clone, Debug)]
pub struct FactoryConfig {
    /// JSON-RPC endpoint the server reads the chain from (e.g. the devnet's `rpc_url()`).
    pub rpc_url: String,
    /// Base URL of the Datanet API the server reads lists from (`…/api/datanets`).
    pub datanets_url: String,
    /// Chain id (for EIP-712 domains and wallet checks).
    pub chain_id: u64,
    /// Where the protocol contracts are (`None`: not deployed; the pages that need them say so).
    pub contracts: Option<Contracts>,
    /// Accounts offered by the "dev account" switcher (their keys live in the node).
    pub dev_accounts: Vec<Address>,
    /// Whether the node answers `evm_increaseTime` / `evm_mine` (shows the time-travel button).
    pub dev_methods: bool,
    /// Largest upload the Datanet service accepts (checked in the browser before sending).
    pub max_upload_bytes: u64,
    /// Same-origin path of JSON-RPC for the browser.
    pub browser_rpc: String,
}

impl FactoryConfig {
    /// A configuration with no contracts and no dev accounts; fill the rest in.
    pub fn new(rpc_url: impl Into<String>, datanets_url: impl Into<String>, chain_id: u64) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            datanets_url: datanets_url.into(),
            chain_id,
            contracts: None,
            dev_accounts: Vec::new(),
            dev_methods: true,
            max_upload_bytes: openledger_datanet::validate::ValidationConfig::default().max_bytes,
            browser_rpc: "/rpc".into(),
        }
    }

    /// The configuration for a devnet: its JSON-RPC URL, its predeployed contracts and its dev
    /// accounts. The Datanet API is read at `{rpc_url}/api/datanets`.
    pub fn for_devnet(
        rpc_url: &str,
        deployments: &openledger_protocol::Deployments,
        dev_accounts: impl IntoIterator<Item = Address>,
    ) -> Self {
        let mut cfg = Self::new(
            rpc_url,
            format!("{}/api/datanets", rpc_url.trim_end_matches('/')),
            deployments.chain_id,
        );
        cfg.contracts = Some(deployments.contracts);
        cfg.dev_accounts = dev_accounts.into_iter().collect();
        cfg
    }

    /// Address of a protocol contract.
    pub fn contract(&self, c: Contract) -> Option<Address> {
        self.contracts.map(|cs| cs.address(c))
    }
}
