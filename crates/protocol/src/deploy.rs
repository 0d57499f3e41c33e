//! Deploys and wires the protocol contracts on any EVM chain over JSON-RPC.

use crate::chain_error::decode_revert;
use crate::config::{Contracts, DeployConfig, Deployments, bonds, plan};
use crate::confirm::Confirm;
use alloy_network::TransactionBuilder;
use alloy_primitives::Address;
use alloy_provider::Provider;
use alloy_rpc_types_eth::TransactionRequest;

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The RPC call failed.
    #[error("rpc: {0}")]
    Rpc(String),
    /// The configuration breaks a rule (one line naming the field).
    #[error("invalid deployment config: {0}")]
    Config(String),
    /// A constructor refuses the configuration (found by simulating it before sending).
    #[error("{0} refuses the configuration: {1}")]
    Refused(String, String),
    /// A creation transaction reverted.
    #[error("deploying {0} reverted (tx {1})")]
    Reverted(String, alloy_primitives::B256),
    /// The contract landed somewhere other than planned (the nonce moved under us).
    #[error(
        "{name} deployed at {got}, expected {want}: was another transaction sent from the deployer meanwhile?"
    )]
    Misplaced {
        /// Contract.
        name: String,
        /// Actual address.
        got: Address,
        /// Planned address.
        want: Address,
    },
}

/// Deploys the eight contracts from `from` (the provider must sign for it), in plan order,
/// then bonds the configured attributors (the deployer pays their minimum stakes).
pub async fn deploy<P: Provider>(
    provider: &P,
    from: Address,
    cfg: &DeployConfig,
) -> Result<Deployments, DeployError> {
    cfg.check().map_err(DeployError::Config)?;
    let rpc = |e: alloy_transport::TransportError| DeployError::Rpc(e.to_string());
    let chain_id = provider.get_chain_id().await.map_err(rpc)?;
    let nonce = provider
        .get_transaction_count(from)
        .pending()
        .await
        .map_err(rpc)?;
    let mut block = 0;
    let steps = plan(cfg, from, nonce);
    let contracts = Contracts::planned(from, nonce);
    for s in steps {
        let tx = TransactionRequest::default()
            .with_from(from)
            .with_deploy_code(s.initcode.clone())
            .with_nonce(s.nonce);
        // A constructor that refuses the config says why here, before anything is sent.
        if let Err(e) = provider.call(tx.clone()).await
            && let Some(data) = e.as_error_resp().and_then(|r| r.as_revert_data())
        {
            let why = decode_revert(&data).unwrap_or_else(|| format!("reverted with {data}"));
            return Err(DeployError::Refused(s.name.into(), why));
        }
        let pending = provider.send_transaction(tx).await.map_err(rpc)?;
        let receipt = pending
            .confirm()
            .await
            .map_err(|e| DeployError::Rpc(e.to_string()))?;
        if !receipt.status() {
            return Err(DeployError::Reverted(
                s.name.into(),
                receipt.transaction_hash,
            ));
        }
        let got = receipt.contract_address.unwrap_or_default();
        if got != s.address {
            return Err(DeployError::Misplaced {
                name: s.name.into(),
                got,
                want: s.address,
            });
        }
        block = receipt.block_number.unwrap_or_default();
    }
    for b in bonds(cfg, from, nonce) {
        let tx = TransactionRequest::default()
            .with_from(from)
            .with_to(b.to)
            .with_value(b.value)
            .with_input(b.data.clone());
        let receipt = provider
            .send_transaction(tx)
            .await
            .map_err(rpc)?
            .confirm()
            .await
            .map_err(|e| DeployError::Rpc(e.to_string()))?;
        if !receipt.status() {
            return Err(DeployError::Reverted(
                format!("bonding attributor {}", b.account),
                receipt.transaction_hash,
            ));
        }
        block = receipt.block_number.unwrap_or_default();
    }
    Ok(Deployments {
        chain_id,
        deployer: from,
        block,
        contracts,
    })
}
