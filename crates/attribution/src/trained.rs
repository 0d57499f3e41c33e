//! Influence for adapters trained here: what the trainer left in the models content store,
//! and the answer's gradient sketch under the published adapter.
//!
//! ```text
//! ModelRegistry.getModel(id).trainingManifestHash ──► models store: training manifest (JSON)
//!     baseModel.hash   must equal the served base model's content hash
//!     adapterHash      must equal the served adapter (the on-chain adapterHash)
//!     sketchHash ────► sketch blob (openledger_train::sketch, format v1): rows = row ids
//!     data[]     ────► Datanet version manifests: contentHash → contribution id
//! row id "0x<contentHash>:<j>" → (datanet, version, contribution)
//! ```
//!
//! Only the fields named above are read from the manifest, so it may grow. A row whose content
//! hash is in none of the versions is kept in the DataInf statistics but credits nobody.

use crate::corpus::{self, RowSource};
use crate::influence::{self, InfluenceParams, Score, SketchMatrix};
use crate::span::ContributionKey;
use alloy_primitives::{B256, keccak256};
use openledger_datanet::{ChainView, ContentStore};
use openledger_model::{DType, LoraAdapter, Pretrained};
use openledger_train::sketch::{Projector, QuerySketch, SketchConfig, SketchSet, TrainableAdapter};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Why influence could not be computed for a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainedError {
    /// A blob is missing or unreadable.
    #[error("models store: {0}")]
    Store(String),
    /// The manifest, sketches or adapter do not fit together or with the served model.
    #[error("training artifacts: {0}")]
    Mismatch(String),
    /// Datanet manifests could not be read.
    #[error(transparent)]
    Corpus(#[from] corpus::CorpusError),
    /// The gradient could not be computed.
    #[error("query gradient: {0}")]
    Gradient(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BaseView {
    hash: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataView {
    datanet_id: u64,
    version: u64,
    manifest_hash: B256,
}

#[derive(Deserialize)]
struct RowsView {
    train: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestView {
    format: u32,
    kind: String,
    base_model: BaseView,
    data: Vec<DataView>,
    rows: RowsView,
    adapter_hash: B256,
    sketch_hash: B256,
}

/// `sha256:<hex>` (or plain hex) → 32 bytes.
fn base_hash(s: &str) -> Option<B256> {
    s.strip_prefix("sha256:").unwrap_or(s).parse().ok()
}

/// A trained adapter ready for influence queries.
pub struct TrainedModel {
    /// keccak-256 of the training manifest.
    pub manifest_hash: B256,
    /// keccak-256 of the sketch blob.
    pub sketch_hash: B256,
    /// The sketches.
    pub set: SketchSet,
    /// Contribution of each sketch row.
    pub keys: Vec<Option<ContributionKey>>,
    matrix: SketchMatrix,
    params: TrainableAdapter,
    projector: Projector,
}

impl TrainedModel {
    /// Loads the manifest, sketches and adapter from `models` and maps rows to contributions
    /// (each Datanet version's manifest checked against the chain through `chain`).
    pub async fn load(
        models: &ContentStore,
        rows: &RowSource,
        chain: &ChainView,
        base: &Pretrained,
        base_model_hash: B256,
        manifest_hash: B256,
        adapter_hash: B256,
    ) -> Result<Self, TrainedError> {
        let get = |h: B256, what: &'static str| async move {
            models
                .get(&h)
                .await
                .map_err(|e| TrainedError::Store(format!("{what} {h}: {e}")))
        };
        let mbytes = get(manifest_hash, "training manifest").await?;
        let m: ManifestView = serde_json::from_slice(&mbytes)
            .map_err(|e| TrainedError::Mismatch(format!("training manifest: {e}")))?;
        let bad = |s: String| Err(TrainedError::Mismatch(s));
        if m.format != 1 || m.kind != "openledger.training-manifest" {
            return bad(format!("manifest kind {:?} format {}", m.kind, m.format));
        }
        if m.adapter_hash != adapter_hash {
            return bad(format!(
                "manifest names adapter {}, served {adapter_hash}",
                m.adapter_hash
            ));
        }
        if base_hash(&m.base_model.hash) != Some(base_model_hash) {
            return bad(format!(
                "trained on base model {}, served {base_model_hash}",
                m.base_model.hash
            ));
        }
        let sbytes = get(m.sketch_hash, "sketch").await?;
        let set = SketchSet::from_bytes(&sbytes)
            .map_err(|e| TrainedError::Mismatch(format!("sketch: {e}")))?;
        if set.header.rows != m.rows.train {
            return bad("sketch rows differ from the manifest's training rows".into());
        }
        let abytes = get(adapter_hash, "adapter").await?;
        if keccak256(&abytes) != adapter_hash {
            return bad("adapter blob does not hash to its name".into());
        }
        let device = base.model.device().clone();
        let adapter = LoraAdapter::from_blob(&abytes, &base.config, &device, DType::F32)
            .map_err(|e| TrainedError::Mismatch(format!("adapter: {e}")))?;
        let params = TrainableAdapter::from_adapter(&adapter, &base.config, &device)
            .map_err(|e| TrainedError::Mismatch(format!("adapter: {e}")))?;
        let cfg = SketchConfig {
            dim: set.header.dim,
            seed: set.header.seed,
        };
        let projector = Projector::new(cfg, &params.adapter, &device)
            .map_err(|e| TrainedError::Mismatch(format!("projection: {e}")))?;
        if projector.num_layers() != set.header.layers.len() {
            return bad(format!(
                "sketch has {} layers, the adapter {}",
                set.header.layers.len(),
                projector.num_layers()
            ));
        }
        let mut by_content: HashMap<B256, ContributionKey> = HashMap::new();
        for d in &m.data {
            for (h, c) in corpus::contributions_by_content(
                rows,
                chain,
                d.datanet_id,
                d.version,
                d.manifest_hash,
            )
            .await?
            {
                by_content.entry(h).or_insert((d.datanet_id, d.version, c));
            }
        }
        let keys = set
            .header
            .rows
            .iter()
            .map(|r| {
                r.split_once(':')
                    .and_then(|(h, _)| h.parse::<B256>().ok())
                    .and_then(|h| by_content.get(&h).copied())
            })
            .collect();
        let width = set.header.layers.len() * set.header.dim;
        let mut matrix = SketchMatrix::new(width);
        for i in 0..set.len() {
            matrix
                .push((0, 0, 0), set.row(i))
                .map_err(|e| TrainedError::Mismatch(format!("sketch row {i}: {e}")))?;
        }
        Ok(Self {
            manifest_hash,
            sketch_hash: m.sketch_hash,
            set,
            keys,
            matrix,
            params,
            projector,
        })
    }

    /// The answer's sketch: gradient of its mean NLL (answer tokens only) under the adapter,
    /// projected like the training examples. Blocking (a forward and backward pass).
    pub fn query(
        &self,
        base: &Pretrained,
        prompt: &[u32],
        answer: &[u32],
    ) -> Result<QuerySketch, TrainedError> {
        let max = base.config.max_position_embeddings;
        // Keep the end of an over-long transcript: the answer matters, the prompt's start less.
        let (prompt, answer) = if prompt.len() + answer.len() > max {
            let a = &answer[answer.len().saturating_sub(max.saturating_sub(1))..];
            let keep = max - a.len();
            (&prompt[prompt.len().saturating_sub(keep)..], a)
        } else {
            (prompt, answer)
        };
        self.projector
            .query(&base.model, &self.params, prompt, answer)
            .map_err(|e| TrainedError::Gradient(e.to_string()))
    }

    /// Per-example scores of a query under `rule` (positive = helped).
    pub fn scores(&self, q: &QuerySketch, rule: Score) -> Result<Vec<f64>, TrainedError> {
        match rule {
            Score::Cosine => self
                .matrix
                .cosines(&q.grads)
                .map_err(|e| TrainedError::Mismatch(e.to_string())),
            Score::Datainf => Ok(influence::datainf(&self.set, q)),
        }
    }

    /// Positive influence per contribution, in micro-units.
    pub fn attribute(
        &self,
        q: &QuerySketch,
        p: &InfluenceParams,
    ) -> Result<BTreeMap<ContributionKey, u128>, TrainedError> {
        let s = self.scores(q, p.score)?;
        Ok(influence::aggregate(&s, &self.keys, p.top_k))
    }
}
