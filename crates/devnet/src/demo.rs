//! What `openledger devnet --demo` prepares so a newcomer can chat and see attribution within
//! minutes: the `small` base model (made once, cached), the demo Datanets with several dev
//! accounts' contributions (approved and published), then a fine-tuned, published adapter.

use openledger_datanet::client::dev_signer;
use openledger_datanet::{DatanetClient, demo};
use openledger_protocol::{ContributionId, DatanetId, Version};
use std::path::{Path, PathBuf};

/// Errors preparing the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Making or reading the base model.
    #[error("base model: {0}")]
    Model(#[from] openledger_model::Error),
    /// Datanet API or chain.
    #[error("demo Datanets: {0}")]
    Datanet(#[from] openledger_datanet::ClientError),
    /// Files.
    #[error("{0}")]
    Io(String),
    /// Training or publishing the demo adapter.
    #[error("demo adapter: {0}")]
    Train(String),
}

/// Seed of the demo base model.
pub const BASE_SEED: u64 = 42;

/// Where models made on this machine are cached: `$OPENLEDGER_CACHE`, else
/// `$XDG_CACHE_HOME/openledger`, else `~/.cache/openledger`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OPENLEDGER_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("openledger");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/openledger"),
        None => std::env::temp_dir().join("openledger-cache"),
    }
}

/// The cached `small` base model directory.
pub fn default_base_model() -> PathBuf {
    cache_dir().join(format!(
        "base/small-{BASE_SEED}-v{}",
        openledger_model::init::CORPUS_VERSION
    ))
}

/// Makes the `small` base model at `dir` unless it is already there; `progress` gets lines
/// like "pre-training the base model: step 120/300". Writes to a temporary sibling and
/// renames, so a killed run leaves no half model behind.
pub fn ensure_base_model(dir: &Path, mut progress: impl FnMut(String)) -> Result<(), DemoError> {
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| DemoError::Io(format!("{} has no parent", dir.display())))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| DemoError::Io(format!("{}: {e}", parent.display())))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let opts = openledger_model::init::InitOptions::preset(
        openledger_model::init::Preset::Small,
        BASE_SEED,
    );
    progress("making the small base model (once; cached for later runs)".into());
    openledger_model::init::init(&tmp, &opts, |p| {
        use openledger_model::init::Progress;
        match p {
            Progress::Tokenizer => progress("base model: tokenizer trained".into()),
            Progress::Step { step, total, loss } if step % 25 == 0 || step == total => progress(
                format!("base model: pre-training step {step}/{total}, loss {loss:.3}"),
            ),
            _ => {}
        }
    })?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another process finished first: keep its copy.
        Err(_) if dir.join("config.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(DemoError::Io(format!("{}: {e}", dir.display()))),
    }
}

/// One published demo Datanet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeededDatanet {
    /// Slug of the demo spec.
    pub slug: String,
    /// On-chain id.
    pub id: DatanetId,
    /// Published version.
    pub version: Version,
    /// Dev account index of the owner.
    pub owner: usize,
    /// Whether it is permissioned.
    pub permissioned: bool,
    /// (contribution id, dev account index) of every accepted contribution.
    pub contributions: Vec<(ContributionId, usize)>,
}

/// Creates the demo Datanets on the devnet: each owner creates its Datanet, each persona's dev
/// account uploads and contributes its files, the owner approves them and publishes version 0.
pub async fn seed_datanets(
    rpc_url: &str,
    api: &str,
    files_dir: &Path,
    mut progress: impl FnMut(String),
) -> Result<Vec<SeededDatanet>, DemoError> {
    let spec = demo::write_demo(files_dir, 7, 2, 12).map_err(|e| DemoError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for d in &spec.datanets {
        progress(format!("demo Datanet {:?}: creating", d.name));
        let owner = DatanetClient::connect(rpc_url, api, dev_signer(d.owner as u32)?).await?;
        let id = owner
            .create_datanet(
                &d.name,
                &format!("demo:{}", d.slug),
                d.permissioned,
                Default::default(),
            )
            .await?;
        let mut contributions = Vec::new();
        for f in &d.files {
            let who = DatanetClient::connect(rpc_url, api, dev_signer(f.account as u32)?).await?;
            if d.permissioned {
                owner.allow_contributor(id, who.address()).await?;
            }
            let bytes = std::fs::read(files_dir.join(&f.path))
                .map_err(|e| DemoError::Io(format!("{}: {e}", f.path.display())))?;
            let name = f
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file.txt")
                .to_string();
            let receipt = who.upload_bytes(id, &name, &[], bytes).await?;
            let c = who.contribute(id, &receipt).await?;
            owner.approve(c).await?;
            contributions.push((c, f.account));
        }
        progress(format!(
            "demo Datanet {:?}: {} contributions approved, publishing",
            d.name,
            contributions.len()
        ));
        let (version, _, _) = owner.publish(id).await?;
        out.push(SeededDatanet {
            slug: d.slug.clone(),
            id,
            version,
            owner: d.owner,
            permissioned: d.permissioned,
            contributions,
        });
    }
    Ok(out)
}
