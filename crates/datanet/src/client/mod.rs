//! Client of the Datanet API and the registry: what the CLI, the UI backend and tests use.
//! Uploads go to the service (signed, streamed); chain actions are transactions from the
//! client's own account.

use crate::api::UploadReceipt;
use crate::auth::{self, headers};
use crate::manifest::{Manifest, Proof};
use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use bytes::Bytes;
use openledger_protocol::bindings::{DatanetRegistry, ProtocolParams};
use openledger_protocol::{ChainError, Confirm, ContributionId, DatanetId, Version};
use serde::{Deserialize, Serialize};
use std::path::Path;

mod io;
pub use io::{dev_signer, hash_file, progress_bar};
use io::{file_stream, send, url_encode};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{status} {kind}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error type.
        kind: String,
        /// Message.
        message: String,
    },
    /// HTTP transport.
    #[error("http: {0}")]
    Http(String),
    /// A transaction or call failed (reverts are decoded when known).
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// Local I/O.
    #[error("io: {0}")]
    Io(String),
    /// A response did not match expectations.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

fn http_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Http(e.to_string())
}

/// Result of `verify`.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// Root on chain.
    pub onchain_root: B256,
    /// Root recomputed from the manifest.
    pub recomputed_root: B256,
    /// Manifest hash on chain.
    pub onchain_manifest_hash: B256,
    /// Hash of the manifest served.
    pub manifest_hash: B256,
    /// Every contribution's inclusion proof verified against the on-chain root.
    pub proofs_ok: usize,
    /// The manifest.
    pub manifest: Manifest,
}

impl VerifyReport {
    /// Whether everything matched.
    pub fn ok(&self) -> bool {
        self.onchain_root == self.recomputed_root
            && self.onchain_manifest_hash == self.manifest_hash
            && self.proofs_ok == self.manifest.contributions.len()
    }
}

/// A version published by [`DatanetClient::publish_tx`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Version number.
    pub version: Version,
    /// Merkle root on chain.
    pub root: B256,
    /// The manifest's hash on chain.
    pub manifest_hash: B256,
    /// Contributions in the version.
    pub contributions: u64,
    /// The `publishVersion` transaction.
    pub tx: B256,
}

/// A client acting as one account.
#[derive(Clone)]
pub struct DatanetClient {
    api: String,
    http: reqwest::Client,
    provider: DynProvider,
    signer: PrivateKeySigner,
    registry: Address,
    chain_id: u64,
}

impl std::fmt::Debug for DatanetClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatanetClient")
            .field("api", &self.api)
            .field("account", &self.signer.address())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    chain_id: u64,
    registry: Address,
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    Err(ClientError::Api {
        status,
        kind: v["error"]["type"].as_str().unwrap_or("unknown").to_string(),
        message: v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

impl DatanetClient {
    /// Connects to the chain and the API (`api` = base URL, e.g. `http://host/api/datanets`).
    pub async fn connect(
        rpc_url: &str,
        api: &str,
        signer: PrivateKeySigner,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::new();
        let api = api.trim_end_matches('/').to_string();
        let info: Info = check(
            http.get(format!("{api}/info"))
                .send()
                .await
                .map_err(http_err)?,
        )
        .await?
        .json()
        .await
        .map_err(http_err)?;
        let url = rpc_url
            .parse()
            .map_err(|e| ChainError::bad_url(rpc_url, e))?;
        // nonces are read from the node per transaction: alloy's default cached nonce is
        // taken even when the transaction then fails before it is sent (a revert found by the
        // gas estimate), and every later transaction of this client would wait forever
        // behind the gap
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_http(url)
            .erased();
        Ok(Self {
            api,
            http,
            provider,
            signer,
            registry: info.registry,
            chain_id: info.chain_id,
        })
    }

    /// The acting account.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    fn registry(&self) -> DatanetRegistry::DatanetRegistryInstance<DynProvider> {
        DatanetRegistry::new(self.registry, self.provider.clone())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        check(
            self.http
                .get(format!("{}{path}", self.api))
                .send()
                .await
                .map_err(http_err)?,
        )
        .await?
        .json()
        .await
        .map_err(http_err)
    }

    /// Creates a Datanet (paying the creation fee); returns its id.
    pub async fn create_datanet(
        &self,
        name: &str,
        metadata_uri: &str,
        permissioned: bool,
        licence_fee: U256,
    ) -> Result<DatanetId, ClientError> {
        Ok(self
            .create_datanet_tx(name, metadata_uri, permissioned, licence_fee)
            .await?
            .0)
    }

    /// [`DatanetClient::create_datanet`], with the transaction hash.
    pub async fn create_datanet_tx(
        &self,
        name: &str,
        metadata_uri: &str,
        permissioned: bool,
        licence_fee: U256,
    ) -> Result<(DatanetId, B256), ClientError> {
        let reg = self.registry();
        let params = reg.params().call().await.map_err(ChainError::from)?;
        let fee = ProtocolParams::new(params, self.provider.clone())
            .datanetCreationFee()
            .call()
            .await
            .map_err(ChainError::from)?;
        let receipt = reg
            .createDatanet(
                name.to_string(),
                metadata_uri.to_string(),
                permissioned,
                licence_fee,
            )
            .value(fee)
            .send()
            .await
            .map_err(ChainError::from)?
            .confirm()
            .await
            .map_err(ChainError::from)?;
        let ev = receipt
            .decoded_log::<DatanetRegistry::DatanetCreated>()
            .ok_or_else(|| ClientError::Unexpected("no DatanetCreated event".into()))?;
        let id = DatanetId::try_from(ev.datanetId)
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok((id, receipt.transaction_hash))
    }

    /// Allows a contributor on a permissioned Datanet (owner only); returns the transaction.
    pub async fn allow_contributor(
        &self,
        datanet: impl Into<DatanetId>,
        account: Address,
    ) -> Result<B256, ClientError> {
        let datanet: DatanetId = datanet.into();
        send(
            self.registry()
                .setContributorAllowed(datanet.to_u256(), account, true),
        )
        .await
    }

    /// Uploads bytes from a reader (streamed, hashed first) with a progress callback.
    pub async fn upload_file(
        &self,
        datanet: impl Into<DatanetId>,
        path: &Path,
        columns: &[String],
        progress: Option<indicatif::ProgressBar>,
    ) -> Result<UploadReceipt, ClientError> {
        let datanet: DatanetId = datanet.into();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ClientError::Io(format!("bad file name {}", path.display())))?
            .to_string();
        let hash = hash_file(path).await?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let stream = file_stream(file, progress);
        self.upload_body(
            datanet,
            &name,
            columns,
            hash,
            reqwest::Body::wrap_stream(stream),
        )
        .await
    }

    /// Uploads bytes held in memory.
    pub async fn upload_bytes(
        &self,
        datanet: impl Into<DatanetId>,
        name: &str,
        columns: &[String],
        bytes: Vec<u8>,
    ) -> Result<UploadReceipt, ClientError> {
        let datanet: DatanetId = datanet.into();
        let hash = alloy_primitives::keccak256(&bytes);
        self.upload_body(datanet, name, columns, hash, reqwest::Body::from(bytes))
            .await
    }

    /// Uploads a body whose keccak-256 is `hash`, signed with this account.
    pub async fn upload_body(
        &self,
        datanet: impl Into<DatanetId>,
        name: &str,
        columns: &[String],
        hash: B256,
        body: reqwest::Body,
    ) -> Result<UploadReceipt, ClientError> {
        let datanet: DatanetId = datanet.into();
        let hdrs = self.sign("upload", datanet, hash)?;
        let mut req = self
            .http
            .post(format!(
                "{}/{datanet}/uploads?name={}&columns={}",
                self.api,
                url_encode(name),
                url_encode(&columns.join(","))
            ))
            .header(headers::CONTENT_HASH, hash.to_string())
            .body(body);
        for (k, v) in hdrs {
            req = req.header(k, v);
        }
        check(req.send().await.map_err(http_err)?)
            .await?
            .json()
            .await
            .map_err(http_err)
    }

    /// Signature headers for an action.
    pub fn sign(
        &self,
        action: &str,
        datanet: impl Into<DatanetId>,
        hash: B256,
    ) -> Result<Vec<(&'static str, String)>, ClientError> {
        auth::sign(
            &self.signer,
            &auth::domain(self.chain_id, self.registry),
            action,
            datanet.into().get(),
            hash,
            300,
        )
        .map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Records an uploaded contribution on chain; returns its id.
    pub async fn contribute(
        &self,
        datanet: impl Into<DatanetId>,
        r: &UploadReceipt,
    ) -> Result<ContributionId, ClientError> {
        Ok(self.contribute_tx(datanet, r).await?.0)
    }

    /// [`DatanetClient::contribute`], with the transaction hash.
    pub async fn contribute_tx(
        &self,
        datanet: impl Into<DatanetId>,
        r: &UploadReceipt,
    ) -> Result<(ContributionId, B256), ClientError> {
        let datanet: DatanetId = datanet.into();
        let receipt = self
            .registry()
            .contribute(
                datanet.to_u256(),
                r.content_hash,
                r.byte_size,
                r.row_count,
                r.score,
                format!("rows-root:{}", r.rows_root),
            )
            .send()
            .await
            .map_err(ChainError::from)?
            .confirm()
            .await
            .map_err(ChainError::from)?;
        let ev = receipt
            .decoded_log::<DatanetRegistry::Contributed>()
            .ok_or_else(|| {
                ClientError::Unexpected("no Contributed event (transaction reverted?)".into())
            })?;
        let id = ContributionId::try_from(ev.contributionId)
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok((id, receipt.transaction_hash))
    }

    /// Approves a contribution (owner or curator); returns the transaction.
    pub async fn approve(
        &self,
        contribution: impl Into<ContributionId>,
    ) -> Result<B256, ClientError> {
        let contribution: ContributionId = contribution.into();
        send(self.registry().approve(contribution.to_u256())).await
    }

    /// Rejects a contribution with a reason; returns the transaction.
    pub async fn reject(
        &self,
        contribution: impl Into<ContributionId>,
        reason: &str,
    ) -> Result<B256, ClientError> {
        let contribution: ContributionId = contribution.into();
        send(
            self.registry()
                .reject(contribution.to_u256(), reason.to_string()),
        )
        .await
    }

    /// Withdraws one's own pending contribution; returns the transaction.
    pub async fn withdraw(
        &self,
        contribution: impl Into<ContributionId>,
    ) -> Result<B256, ClientError> {
        let contribution: ContributionId = contribution.into();
        send(self.registry().withdrawContribution(contribution.to_u256())).await
    }

    /// Buys a licence at the Datanet's fee; returns the transaction.
    pub async fn buy_licence(&self, datanet: impl Into<DatanetId>) -> Result<B256, ClientError> {
        let datanet: DatanetId = datanet.into();
        let d = self
            .registry()
            .getDatanet(datanet.to_u256())
            .call()
            .await
            .map_err(ChainError::from)?;
        send(
            self.registry()
                .buyLicence(datanet.to_u256())
                .value(d.licenceFee),
        )
        .await
    }

    /// Prepares the manifest (service) and publishes its root on chain (owner); returns the
    /// version number, root and manifest hash.
    pub async fn publish(
        &self,
        datanet: impl Into<DatanetId>,
    ) -> Result<(Version, B256, B256), ClientError> {
        let p = self.publish_tx(datanet).await?;
        Ok((p.version, p.root, p.manifest_hash))
    }

    /// [`DatanetClient::publish`], with the transaction hash and the row count.
    pub async fn publish_tx(
        &self,
        datanet: impl Into<DatanetId>,
    ) -> Result<Published, ClientError> {
        let datanet: DatanetId = datanet.into();
        let resp = check(
            self.http
                .post(format!("{}/{datanet}/versions/prepare", self.api))
                .send()
                .await
                .map_err(http_err)?,
        )
        .await?;
        let v: serde_json::Value = resp.json().await.map_err(http_err)?;
        let parse = |k: &str| -> Result<B256, ClientError> {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ClientError::Unexpected(format!("no {k}")))
        };
        let (root, mh) = (parse("merkleRoot")?, parse("manifestHash")?);
        let count = v["count"]
            .as_u64()
            .ok_or_else(|| ClientError::Unexpected("no count".into()))?;
        let receipt = self
            .registry()
            .publishVersion(datanet.to_u256(), root, U256::from(count), mh)
            .send()
            .await
            .map_err(ChainError::from)?
            .confirm()
            .await
            .map_err(ChainError::from)?;
        let ev = receipt
            .decoded_log::<DatanetRegistry::VersionPublished>()
            .ok_or_else(|| ClientError::Unexpected("no VersionPublished event".into()))?;
        let version =
            Version::try_from(ev.version).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok(Published {
            version,
            root,
            manifest_hash: mh,
            contributions: count,
            tx: receipt.transaction_hash,
        })
    }

    async fn signed_get(
        &self,
        path: &str,
        datanet: DatanetId,
        hash: B256,
    ) -> Result<Bytes, ClientError> {
        let mut req = self.http.get(format!("{}{path}", self.api));
        for (k, v) in self.sign("read", datanet, hash)? {
            req = req.header(k, v);
        }
        check(req.send().await.map_err(http_err)?)
            .await?
            .bytes()
            .await
            .map_err(http_err)
    }

    /// Downloads a contribution's content (signed read; checked against its hash).
    pub async fn download(
        &self,
        datanet: impl Into<DatanetId>,
        contribution: impl Into<ContributionId>,
    ) -> Result<Bytes, ClientError> {
        let datanet: DatanetId = datanet.into();
        let contribution: ContributionId = contribution.into();
        let c = self
            .registry()
            .getContribution(contribution.to_u256())
            .call()
            .await
            .map_err(ChainError::from)?;
        let bytes = self
            .signed_get(
                &format!("/{datanet}/contributions/{contribution}/content"),
                datanet,
                c.contentHash,
            )
            .await?;
        if alloy_primitives::keccak256(&bytes) != c.contentHash {
            return Err(ClientError::Unexpected(
                "downloaded content does not match its on-chain hash".into(),
            ));
        }
        Ok(bytes)
    }

    /// Fetches a version's manifest (signed read) and checks it against the on-chain hash.
    pub async fn manifest(
        &self,
        datanet: impl Into<DatanetId>,
        version: impl Into<Version>,
    ) -> Result<(Manifest, B256, B256), ClientError> {
        let datanet: DatanetId = datanet.into();
        let version: Version = version.into();
        let v = self
            .registry()
            .getVersion(datanet.to_u256(), version.to_u256())
            .call()
            .await
            .map_err(ChainError::from)?;
        let bytes = self
            .signed_get(
                &format!("/{datanet}/versions/{version}/manifest"),
                datanet,
                v.manifestHash,
            )
            .await?;
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok((m, v.merkleRoot, v.manifestHash))
    }

    /// Inclusion proof of a contribution in a version (from the service).
    pub async fn proof(
        &self,
        datanet: impl Into<DatanetId>,
        version: impl Into<Version>,
        contribution: impl Into<ContributionId>,
    ) -> Result<Proof, ClientError> {
        let datanet: DatanetId = datanet.into();
        let version: Version = version.into();
        let contribution: ContributionId = contribution.into();
        let v: serde_json::Value = self
            .get_json(&format!(
                "/{datanet}/versions/{version}/proof/{contribution}"
            ))
            .await?;
        serde_json::from_value(v["proof"].clone())
            .map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Recomputes a version's root from its manifest and checks every inclusion proof against
    /// the on-chain root.
    pub async fn verify(
        &self,
        datanet: impl Into<DatanetId>,
        version: impl Into<Version>,
    ) -> Result<VerifyReport, ClientError> {
        let datanet: DatanetId = datanet.into();
        let version: Version = version.into();
        let (manifest, onchain_root, onchain_mh) = self.manifest(datanet, version).await?;
        let mut proofs_ok = 0;
        for e in &manifest.contributions {
            let p = self.proof(datanet, version, e.contribution_id).await?;
            if p.leaf == e.leaf() && p.verify(&onchain_root) {
                proofs_ok += 1;
            }
        }
        Ok(VerifyReport {
            onchain_root,
            recomputed_root: manifest.merkle_root(),
            onchain_manifest_hash: onchain_mh,
            manifest_hash: manifest.hash(),
            proofs_ok,
            manifest,
        })
    }

    /// Every Datanet (index view).
    pub async fn list(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json("/list").await
    }

    /// A Datanet with its contributions (index view).
    pub async fn show(
        &self,
        datanet: impl Into<DatanetId>,
    ) -> Result<serde_json::Value, ClientError> {
        let datanet: DatanetId = datanet.into();
        self.get_json(&format!("/{datanet}")).await
    }
}
