//! Shared test setup: a devnet with the demo Datanets published, and the `small` base model
//! (built once per machine into a temp dir, reused by later runs).

use std::path::PathBuf;

use eyre::{Result, WrapErr, eyre};
use openledger_datanet::DatanetClient;
use openledger_devnet::{Devnet, DevnetConfig};

/// The `small` base model directory (seed 42): the devnet demo's cached copy, made on first
/// use (once per machine, shared with `openledger devnet --demo` and the benches).
pub fn small_model() -> Result<PathBuf> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME
        .lock()
        .map_err(|_| eyre!("model lock poisoned"))?;
    let dir = openledger_devnet::demo::default_base_model();
    openledger_devnet::demo::ensure_base_model(&dir, |line| eprintln!("{line}"))?;
    Ok(dir)
}

/// A devnet with the two demo Datanets, each with one published version (version 0).
pub struct World {
    pub devnet: Devnet,
    pub api: String,
    /// Public "field notes" Datanet (owner account 0).
    pub public: u64,
    /// Permissioned "harbour logs" Datanet (owner account 4).
    pub permissioned: u64,
    _demo_dir: tempfile::TempDir,
}

pub async fn client(devnet: &Devnet, api: &str, i: usize) -> Result<DatanetClient> {
    DatanetClient::connect(&devnet.rpc_url(), api, devnet.accounts[i].signer.clone())
        .await
        .wrap_err("datanet client")
}

impl World {
    /// `files` files of `rows` rows per contributor.
    pub async fn start(files: usize, rows: usize) -> Result<Self> {
        let devnet = Devnet::start(DevnetConfig::default()).await?;
        let api = format!("{}/api/datanets", devnet.rpc_url());
        let demo_dir = tempfile::tempdir()?;
        let spec = openledger_datanet::demo::write_demo(demo_dir.path(), 11, files, rows)?;
        let mut ids = Vec::new();
        for d in &spec.datanets {
            let owner = client(&devnet, &api, d.owner).await?;
            let id = owner
                .create_datanet(
                    &d.name,
                    "demo",
                    d.permissioned,
                    alloy_primitives::U256::from(1000u64),
                )
                .await?;
            for f in &d.files {
                let c = client(&devnet, &api, f.account).await?;
                if d.permissioned {
                    owner.allow_contributor(id, c.address()).await?;
                }
                let r = c
                    .upload_file(id, &demo_dir.path().join(&f.path), &[], None)
                    .await?;
                let cid = c.contribute(id, &r).await?;
                owner.approve(cid).await?;
            }
            // The service indexes approvals from chain events; retry until it sees them all.
            let mut tries = 0;
            loop {
                match owner.publish(id).await {
                    Ok(_) => break,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        tracing::debug!("publish retry: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(eyre!("publish: {e}")),
                }
            }
            ids.push(id);
        }
        Ok(World {
            devnet,
            api,
            public: ids[0].get(),
            permissioned: ids[1].get(),
            _demo_dir: demo_dir,
        })
    }

    pub fn registry(&self) -> Result<alloy_primitives::Address> {
        Ok(self.devnet.deployments.contracts.datanet_registry)
    }

    pub fn model_registry(&self) -> Result<alloy_primitives::Address> {
        Ok(self.devnet.deployments.contracts.model_registry)
    }
}
