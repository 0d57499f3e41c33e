//! What a finished run leaves in the models content store: the adapter blob, the sketch blob
//! and the training manifest that ties them to the base model and the Datanet version.
//!
//! Training manifest (format 1), canonical JSON (compact, fields in this order, content-
//! addressed by keccak-256 in the same store):
//!
//! ```text
//! { "format": 1, "kind": "openledger.training-manifest",
//!   "baseModel": {"id", "hash": "sha256:…"},
//!   "data": [{"datanetId", "version", "merkleRoot", "manifestHash"}],
//!   "rows": {"rule": "…", "train": [rowId…], "validation": [rowId…], "skipped": [rowId…],
//!            "trainHash": keccak256(train ids joined by "\n")},
//!   "config": TrainConfig, "seed", "metrics": Metrics,
//!   "adapterHash", "sketchHash", "sketch": {"format": 1, "dim", "seed"},
//!   "code": {"crate": "openledger-train", "version", "gitDescribe"} }
//! ```

use alloy_primitives::{B256, keccak256};
use bytes::Bytes;
use openledger_datanet::ContentStore;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::source::VersionRef;
use crate::trainer::{Metrics, TrainOutput};

/// The base model a run started from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModelRef {
    /// Name (directory name or hub id).
    pub id: String,
    /// `openledger_model::content_hash` of the directory (`sha256:` + hex).
    pub hash: String,
}

/// A Datanet version trained on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataRef {
    /// Datanet id.
    pub datanet_id: u64,
    /// Version.
    pub version: u64,
    /// On-chain Merkle root of the version.
    pub merkle_root: B256,
    /// On-chain manifest hash of the version.
    pub manifest_hash: B256,
}

/// Exactly which rows were used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowsUsed {
    /// How the lists follow from the version and the config.
    pub rule: String,
    /// Training rows in example order.
    pub train: Vec<String>,
    /// Validation rows.
    pub validation: Vec<String>,
    /// Rows without a target token within maxSeqLen.
    pub skipped: Vec<String>,
    /// keccak-256 of the training ids joined by "\n".
    pub train_hash: B256,
}

/// Sketch parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchRef {
    /// Sketch format version.
    pub format: u32,
    /// Dimension per layer.
    pub dim: usize,
    /// Projection seed.
    pub seed: u64,
}

/// Code that produced the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeVersion {
    /// Crate name.
    #[serde(rename = "crate")]
    pub krate: String,
    /// Crate version.
    pub version: String,
    /// `git describe --always --tags` at build time ("" when unavailable).
    pub git_describe: String,
}

impl CodeVersion {
    /// This build.
    pub fn current() -> Self {
        CodeVersion {
            krate: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_describe: env!("OPENLEDGER_GIT_DESCRIBE").into(),
        }
    }
}

/// The training manifest (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingManifest {
    /// Always 1.
    pub format: u32,
    /// `openledger.training-manifest`.
    pub kind: String,
    /// Base model.
    pub base_model: BaseModelRef,
    /// Datanet versions.
    pub data: Vec<DataRef>,
    /// Rows.
    pub rows: RowsUsed,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Seed (also in config).
    pub seed: u64,
    /// Metrics.
    pub metrics: Metrics,
    /// keccak-256 of the adapter blob.
    pub adapter_hash: B256,
    /// keccak-256 of the sketch blob.
    pub sketch_hash: B256,
    /// Sketch parameters.
    pub sketch: SketchRef,
    /// Code version.
    pub code: CodeVersion,
}

impl TrainingManifest {
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| TrainError::corrupt("training manifest", e))
    }
}

/// Hashes of what was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// Adapter blob (the `adapterHash` on chain).
    pub adapter_hash: B256,
    /// Training manifest (the `trainingManifestHash` on chain).
    pub manifest_hash: B256,
    /// Sketch blob.
    pub sketch_hash: B256,
}

/// Builds the manifest of `out` (with the blob hashes) without storing anything.
pub fn manifest(
    out: &TrainOutput,
    base: BaseModelRef,
    version: &VersionRef,
    cfg: &TrainConfig,
) -> Result<(TrainingManifest, Vec<u8>, Vec<u8>)> {
    let adapter_blob = out.adapter.to_blob()?;
    let sketch_blob = out.sketch.to_bytes()?;
    let m = TrainingManifest {
        format: 1,
        kind: "openledger.training-manifest".into(),
        base_model: base,
        data: vec![DataRef {
            datanet_id: version.datanet,
            version: version.version,
            merkle_root: version.merkle_root,
            manifest_hash: version.manifest_hash,
        }],
        rows: RowsUsed {
            rule: "rows of the version in manifest order (row id = 0x<contentHash>:<index>); \
                   validation iff u64_be(keccak256(\"openledger-split-v1:\" seed \":\" rowId)[..8]) \
                   < valFraction·2^64; skipped iff no target token within maxSeqLen"
                .into(),
            train_hash: keccak256(out.train_rows.join("\n").as_bytes()),
            train: out.train_rows.clone(),
            validation: out.val_rows.clone(),
            skipped: out.skipped_rows.clone(),
        },
        config: cfg.clone(),
        seed: cfg.seed,
        metrics: out.metrics.clone(),
        adapter_hash: keccak256(&adapter_blob),
        sketch_hash: keccak256(&sketch_blob),
        sketch: SketchRef {
            format: crate::sketch::FORMAT_VERSION,
            dim: out.sketch.header.dim,
            seed: out.sketch.header.seed,
        },
        code: CodeVersion::current(),
    };
    Ok((m, adapter_blob, sketch_blob))
}

/// Stores the adapter, the sketches and the manifest in `store`.
pub async fn store(
    store: &ContentStore,
    out: &TrainOutput,
    base: BaseModelRef,
    version: &VersionRef,
    cfg: &TrainConfig,
) -> Result<(Stored, TrainingManifest)> {
    let (m, adapter_blob, sketch_blob) = manifest(out, base, version, cfg)?;
    let adapter_hash = store.put(Bytes::from(adapter_blob)).await?;
    let sketch_hash = store.put(Bytes::from(sketch_blob)).await?;
    let manifest_hash = store.put(Bytes::from(m.to_bytes()?)).await?;
    Ok((
        Stored {
            adapter_hash,
            manifest_hash,
            sketch_hash,
        },
        m,
    ))
}
