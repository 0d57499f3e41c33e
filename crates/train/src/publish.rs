//! Publication: `ModelRegistry.registerModel` with the adapter, the training manifest and the
//! Datanet versions a finished run used.
//!
//! Two ways in: [`publish`] signs and sends from a local key (the CLI), and [`relay`] forwards
//! a transaction the owner signed elsewhere (a browser wallet) after checking that it is
//! exactly the `registerModel` call of that job, sent by the job's owner to the registry.

use alloy::consensus::transaction::SignerRecoverable;
use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::Decodable2718;
use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::SolCall;
use openledger_protocol::bindings::ModelRegistry;
use openledger_protocol::confirm::{RECEIPT_TIMEOUT, wait_for_receipt};
use openledger_protocol::{ChainError, ModelId};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What is registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// Base model name.
    pub base_model_id: String,
    /// Base model content hash (32 bytes of the `sha256:` hash).
    pub base_model_hash: B256,
    /// keccak-256 of the adapter blob.
    pub adapter_hash: B256,
    /// keccak-256 of the training manifest.
    pub training_manifest_hash: B256,
    /// (datanet, version) pairs.
    pub trained_on: Vec<(u64, u64)>,
    /// Price in wei of OPEN per 1,000 tokens.
    pub price_per_1k_tokens: U256,
    /// Free-form metadata (e.g. a name).
    pub metadata_uri: String,
}

/// `sha256:<hex>` → 32 bytes.
pub fn base_hash_bytes(hash: &str) -> Result<B256> {
    hash.strip_prefix("sha256:")
        .unwrap_or(hash)
        .parse::<B256>()
        .map_err(|e| TrainError::field("baseModelHash", format!("{hash:?}: {e}")))
}

impl PublishSpec {
    /// The ABI call.
    pub fn call(&self) -> ModelRegistry::registerModelCall {
        ModelRegistry::registerModelCall {
            spec: ModelRegistry::ModelSpec {
                baseModelId: self.base_model_id.clone(),
                baseModelHash: self.base_model_hash,
                adapterHash: self.adapter_hash,
                trainingManifestHash: self.training_manifest_hash,
                trainedOn: self
                    .trained_on
                    .iter()
                    .map(|(d, v)| ModelRegistry::DatanetVersion {
                        datanetId: U256::from(*d),
                        version: U256::from(*v),
                    })
                    .collect(),
                pricePer1kTokens: self.price_per_1k_tokens,
                metadataURI: self.metadata_uri.clone(),
            },
        }
    }

    /// Calldata of the call.
    pub fn calldata(&self) -> Bytes {
        Bytes::from(self.call().abi_encode())
    }
}

/// A confirmed registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Model id in `ModelRegistry`.
    pub model_id: ModelId,
    /// Transaction hash.
    pub tx_hash: B256,
}

fn revert(e: alloy::contract::Error) -> TrainError {
    use ModelRegistry::ModelRegistryErrors as E;
    match e.as_decoded_interface_error::<E>() {
        Some(E::NotLicensed(x)) => TrainError::NotLicensed {
            datanet: u64::try_from(x.datanetId).unwrap_or(u64::MAX),
            account: x.caller.to_string(),
        },
        Some(E::DuplicateAdapter(x)) => TrainError::Conflict(format!(
            "adapter {} is already model {}",
            x.adapterHash, x.modelId
        )),
        Some(other) => TrainError::Chain(ChainError::Reverted(format!(
            "registerModel reverted: {other:?}"
        ))),
        None => TrainError::Chain(e.into()),
    }
}

async fn confirm(provider: &DynProvider, tx_hash: B256) -> Result<Published> {
    let receipt = wait_for_receipt(provider, tx_hash, RECEIPT_TIMEOUT)
        .await
        .map_err(ChainError::from)?;
    let ev = receipt
        .decoded_log::<ModelRegistry::ModelRegistered>()
        .ok_or_else(|| {
            ChainError::Reverted("registerModel reverted (no ModelRegistered)".into())
        })?;
    Ok(Published {
        model_id: ModelId::try_from(ev.modelId)
            .map_err(|e| ChainError::unexpected(e.to_string()))?,
        tx_hash,
    })
}

/// Signs and sends `registerModel(spec)` from `signer`.
pub async fn publish(
    rpc_url: &str,
    signer: PrivateKeySigner,
    registry: Address,
    spec: &PublishSpec,
) -> Result<Published> {
    let url = rpc_url
        .parse()
        .map_err(|e| TrainError::field("rpcUrl", format!("{e}")))?;
    // nonce read per transaction (a failed publish must not leave a nonce gap)
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased();
    let reg = ModelRegistry::new(registry, provider.clone());
    let call = reg.registerModel(spec.call().spec);
    // eth_call first so a revert comes back decoded.
    call.call().await.map_err(revert)?;
    let pending = call.send().await.map_err(revert)?;
    confirm(&provider, *pending.tx_hash()).await
}

/// Checks that `raw` (an EIP-2718 signed transaction) is `registerModel(spec)` sent by `owner`
/// to `registry`, then broadcasts it and waits for the receipt.
pub async fn relay(
    provider: &DynProvider,
    raw: &[u8],
    owner: Address,
    registry: Address,
    spec: &PublishSpec,
) -> Result<Published> {
    let bad = |r: &str| TrainError::field("signedTransaction", r);
    let tx = TxEnvelope::decode_2718(&mut &raw[..]).map_err(|e| bad(&e.to_string()))?;
    let from = tx
        .recover_signer()
        .map_err(|e| bad(&format!("signature: {e}")))?;
    if from != owner {
        return Err(TrainError::Forbidden(format!(
            "the transaction is signed by {from}, not by the job's owner {owner}"
        )));
    }
    if tx.to() != Some(registry) {
        return Err(bad("must be sent to ModelRegistry"));
    }
    if tx.input() != &spec.calldata() {
        return Err(bad("calldata is not this job's registerModel call"));
    }
    // Simulate for a decoded revert before broadcasting.
    let reg = ModelRegistry::new(registry, provider.clone());
    reg.registerModel(spec.call().spec)
        .from(owner)
        .call()
        .await
        .map_err(revert)?;
    let pending = provider
        .send_raw_transaction(raw)
        .await
        .map_err(ChainError::from)?;
    confirm(provider, *pending.tx_hash()).await
}
