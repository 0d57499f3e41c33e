//! Models registered in `ModelRegistry` on a real devnet become servable without a restart;
//! a model for another base is listed as not servable; a blob that does not match its hash
//! is refused at load and named.

use crate::common::{TestServer, adapter_dir, base_config, start_with};
use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy_primitives::{B256, U256, keccak256};
use eyre::{Result, ensure};
use openledger_datanet::{ContentStore, DatanetClient};
use openledger_devnet::{Devnet, DevnetConfig};
use openledger_protocol::Confirm;
use openledger_protocol::bindings::ModelRegistry;
use openledger_serve::{InferenceHooks, NoHooks, ServeConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) async fn listed(t: &TestServer, id: &str) -> Result<Option<Value>> {
    let v: Value = serde_json::from_str(&t.get("/v1/models").await?)?;
    Ok(v["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == json!(id)).cloned()))
}

/// The listing of `id` once it is listed and its load check has a verdict.
pub(crate) async fn wait_listed(t: &TestServer, id: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = listed(t, id).await?
            && !m["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("checking"))
        {
            return Ok(m);
        }
        ensure!(
            Instant::now() < deadline,
            "{id} never listed with a verdict"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A devnet with one published Datanet version (the registry requires one to train on) and
/// its first account registering models.
pub(crate) struct Chain {
    pub devnet: Devnet,
    reg: ModelRegistry::ModelRegistryInstance<DynProvider>,
    datanet: U256,
}

impl Chain {
    pub(crate) async fn start() -> Result<Self> {
        let devnet = Devnet::start(DevnetConfig::default()).await?;
        let owner = &devnet.accounts[0];
        let dn = DatanetClient::connect(
            &devnet.rpc_url(),
            &format!("{}/api/datanets", devnet.rpc_url()),
            owner.signer.clone(),
        )
        .await?;
        let d = dn
            .create_datanet("serve test", "", false, U256::ZERO)
            .await?;
        let bytes = b"{\"text\":\"the hive queen lays brood in the comb while foragers bring nectar home\"}\n{\"text\":\"a smoker puffs cool smoke over the frames to calm the colony\"}\n".to_vec();
        let r = dn.upload_bytes(d, "bees.jsonl", &[], bytes).await?;
        let c = dn.contribute(d, &r).await?;
        dn.approve(c).await?;
        dn.publish(d).await?;
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(owner.signer.clone()))
            .connect_http(devnet.rpc_url().parse()?)
            .erased();
        let reg = ModelRegistry::new(devnet.deployments.contracts.model_registry, provider);
        Ok(Chain {
            devnet,
            reg,
            datanet: d.to_u256(),
        })
    }

    /// A server following this chain's `ModelRegistry`, reading adapters from `store`.
    pub(crate) async fn serve(
        &self,
        store: &str,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Result<TestServer> {
        self.serve_with(store, Arc::new(NoHooks), tweak).await
    }

    /// Same, with these hooks.
    pub(crate) async fn serve_with(
        &self,
        store: &str,
        hooks: Arc<dyn InferenceHooks>,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Result<TestServer> {
        let (rpc, registry) = (
            self.devnet.rpc_url(),
            self.devnet.deployments.contracts.model_registry,
        );
        start_with(
            |c| {
                c.store = Some(store.to_string());
                c.rpc_url = Some(rpc);
                c.registry = Some(registry);
                tweak(c);
            },
            hooks,
        )
        .await
    }

    /// Registers an adapter made for `base`; waits for the receipt.
    pub(crate) async fn register(&self, adapter: B256, base: B256) -> Result<()> {
        let spec = ModelRegistry::ModelSpec {
            baseModelId: "tiny".into(),
            baseModelHash: base,
            adapterHash: adapter,
            trainingManifestHash: B256::ZERO,
            trainedOn: vec![ModelRegistry::DatanetVersion {
                datanetId: self.datanet,
                version: U256::ZERO,
            }],
            pricePer1kTokens: U256::ZERO,
            metadataURI: String::new(),
        };
        let rc = self.reg.registerModel(spec).send().await?.confirm().await?;
        ensure!(rc.status(), "register reverted");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_registered_models_become_servable_without_restart() -> Result<()> {
    let chain = Chain::start().await?;
    let store_dir = tempfile::tempdir()?;
    let store_loc = store_dir.path().display().to_string();
    let t = chain.serve(&store_loc, |_| {}).await?;
    ensure!(listed(&t, "model-1").await?.is_none());
    let (_, base_hash) = t.server.base();
    // an adapter, stored as one blob, and the same adapter loaded locally for comparison
    let cfg = base_config()?;
    let (dir, a) = adapter_dir(t.dir.path(), "reg", &cfg, 8, 77)?;
    let store = ContentStore::open(&store_loc)?;
    let blob = a.to_blob()?;
    let hash = store.put(blob.clone().into()).await?;
    ensure!(hash == keccak256(&blob));
    t.server.load_local("local-copy", &dir, None).await?;
    chain.register(hash, base_hash).await?;
    // listed and servable without a restart; same output as the local copy
    let m = wait_listed(&t, "model-1").await?;
    ensure!(
        m["servable"] == json!(true) && m["adapter_hash"] == json!(hash),
        "{m}"
    );
    let chain_out = t.complete("model-1", "the hive queen", 10).await?;
    let local_out = t.complete("local-copy", "the hive queen", 10).await?;
    ensure!(chain_out == local_out, "{chain_out:?} vs {local_out:?}");
    ensure!(
        t.complete(&hash.to_string(), "the hive queen", 10).await? == local_out,
        "by hash"
    );
    // registered for another base model: listed, not servable, refused clearly
    let other = keccak256(b"another adapter");
    chain.register(other, B256::repeat_byte(0x42)).await?;
    let m = wait_listed(&t, "model-2").await?;
    ensure!(
        m["servable"] == json!(false)
            && m["reason"]
                .as_str()
                .is_some_and(|r| r.contains("base model")),
        "{m}"
    );
    let (s, v) = t
        .post(
            "/v1/completions",
            &json!({"model": "model-2", "prompt": "x"}),
        )
        .await?;
    ensure!(
        s == 422 && v["error"]["code"] == "model_not_servable",
        "{s} {v}"
    );
    // a blob in the store that does not hash to its name: refused at load, named
    let (_, b) = adapter_dir(t.dir.path(), "tampered", &cfg, 8, 78)?;
    let tblob = b.to_blob()?;
    let th = store.put(tblob.clone().into()).await?;
    let hex = hex_of(&th);
    let path = store_dir.path().join("blobs").join(&hex[..2]).join(&hex);
    ensure!(path.exists(), "{}", path.display());
    let mut bad = tblob.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    std::fs::write(&path, &bad)?;
    chain.register(th, base_hash).await?;
    wait_listed(&t, "model-3").await?;
    let (s, v) = t
        .post(
            "/v1/completions",
            &json!({"model": "model-3", "prompt": "x"}),
        )
        .await?;
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        s == 400 && v["error"]["code"] == "adapter_hash_mismatch" && msg.contains("model-3"),
        "{s} {v}"
    );
    // a blob missing from the store
    let missing = keccak256(b"never stored");
    chain.register(missing, base_hash).await?;
    wait_listed(&t, "model-4").await?;
    let (s, v) = t
        .post(
            "/v1/completions",
            &json!({"model": "model-4", "prompt": "x"}),
        )
        .await?;
    ensure!(
        s == 502 && v["error"]["code"] == "adapter_unavailable",
        "{s} {v}"
    );
    t.complete("model-1", "x", 2).await?;
    drop(t);
    chain.devnet.shutdown().await;
    Ok(())
}

pub(crate) fn hex_of(h: &B256) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client may chat the moment its registration is confirmed: a request for an on-chain id
/// the server has not seen yet makes it catch up with the chain before answering 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_served_the_moment_its_registration_is_confirmed() -> Result<()> {
    let chain = Chain::start().await?;
    let store_dir = tempfile::tempdir()?;
    let store_loc = store_dir.path().display().to_string();
    // the poll never fires during the test: only the catch-up can see the registration
    let t = chain
        .serve(&store_loc, |c| c.poll_interval = Duration::from_secs(3600))
        .await?;
    let (_, base_hash) = t.server.base();
    let (_, a) = adapter_dir(t.dir.path(), "fresh", &base_config()?, 8, 91)?;
    let hash = ContentStore::open(&store_loc)?
        .put(a.to_blob()?.into())
        .await?;
    // before the registration: a clear 404, also for ids that are not numbers
    for (name, code) in [("model-1", 404), ("model-x", 404)] {
        let (s, v) = t
            .post("/v1/completions", &json!({"model": name, "prompt": "x"}))
            .await?;
        ensure!(
            s == code && v["error"]["code"] == "model_not_found",
            "{name}: {s} {v}"
        );
    }
    chain.register(hash, base_hash).await?;
    ensure!(
        listed(&t, "model-1").await?.is_none(),
        "the poll must not have run"
    );
    let (_, n) = t.complete("model-1", "the hive queen", 4).await?;
    ensure!(n > 0, "no tokens");
    // many concurrent requests for an id that does not exist are all answered 404
    let body = json!({"model": "model-77", "prompt": "x"});
    let mut all = Vec::new();
    for _ in 0..16 {
        all.push(t.post("/v1/completions", &body));
    }
    for r in futures::future::join_all(all).await {
        let (s, v) = r?;
        ensure!(
            s == 404 && v["error"]["code"] == "model_not_found",
            "{s} {v}"
        );
    }
    drop(t);
    chain.devnet.shutdown().await;
    Ok(())
}
