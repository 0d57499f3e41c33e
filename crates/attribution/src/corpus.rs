//! A Datanet version as attribution sees it: its rows, tokenized with the base model's
//! tokenizer, each mapped to its contribution; and the span index built from them.
//!
//! Rows come from a version manifest exactly as training reads them: for each manifest entry in
//! order, the content's bytes, `formats::parse(bytes, format_for(file_name), 4096)`, row `j`
//! with id `0x<contentHash>:j` and text `Row::text()`, tokenized without special tokens.
//!
//! Every manifest is first checked against the version it claims on chain
//! ([`openledger_datanet::ChainView::check`]: datanet id, registry, chain id, manifest hash,
//! root, and each listed contribution's id, content hash and contributor): a Datanet owner
//! chooses a version's hashes freely, and a manifest of another Datanet must not credit (or
//! index) that Datanet's contributions under his version.

use crate::index::{self, Document, IndexError, IndexMeta, SpanIndex};
use alloy_primitives::{B256, keccak256};
use openledger_datanet::{
    ChainView, ContentStore, DatanetClient, Manifest, ManifestEntry,
    formats::{self, Format},
};
use openledger_protocol::{DatanetId, Version};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Row size limit used when parsing (the Datanet service's default).
pub const MAX_ROW_BYTES: usize = 4096;

/// Errors reading a version.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The content or manifest could not be read.
    #[error("reading Datanet data: {0}")]
    Source(String),
    /// The manifest is not the version it claims on chain.
    #[error(transparent)]
    Manifest(#[from] openledger_datanet::ManifestCheckError),
    /// A contribution could not be parsed into rows.
    #[error("contribution {contribution}: {reason}")]
    Parse {
        /// The contribution.
        contribution: u64,
        /// Why.
        reason: String,
    },
    /// Tokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Building or opening the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Where a version's manifest and contents come from.
pub enum RowSource {
    /// A content store holding manifests and contributions (the service's own, on the devnet).
    Store(ContentStore),
    /// The Datanet HTTP API with a licensed account (for anyone else, e.g. a verifier).
    Client(Box<DatanetClient>),
}

impl RowSource {
    /// The manifest of `datanet` `version`, which `manifest_hash` must be on chain, checked
    /// against the chain through `chain`.
    async fn checked_manifest(
        &self,
        chain: &ChainView,
        datanet: u64,
        version: u64,
        manifest_hash: B256,
    ) -> Result<Manifest, CorpusError> {
        let v = chain.version(datanet, version).await?;
        if v.manifest_hash != manifest_hash {
            return Err(CorpusError::Source(format!(
                "datanet {datanet} version {version} has manifest {} on chain, not {manifest_hash}",
                v.manifest_hash
            )));
        }
        let m = self.manifest(datanet, version, manifest_hash).await?;
        chain.check(&v, &m).await?;
        Ok(m)
    }

    async fn manifest(
        &self,
        datanet: u64,
        version: u64,
        hash: B256,
    ) -> Result<Manifest, CorpusError> {
        let src = |e: &dyn std::fmt::Display| CorpusError::Source(e.to_string());
        match self {
            RowSource::Store(s) => {
                let b = s.get(&hash).await.map_err(|e| src(&e))?;
                serde_json::from_slice(&b).map_err(|e| src(&e))
            }
            RowSource::Client(c) => Ok(c.manifest(datanet, version).await.map_err(|e| src(&e))?.0),
        }
    }

    async fn content(&self, datanet: u64, e: &ManifestEntry) -> Result<bytes::Bytes, CorpusError> {
        let src = |x: &dyn std::fmt::Display| CorpusError::Source(x.to_string());
        match self {
            RowSource::Store(s) => s.get(&e.content_hash).await.map_err(|x| src(&x)),
            RowSource::Client(c) => c
                .download(datanet, e.contribution_id)
                .await
                .map_err(|x| src(&x)),
        }
    }
}

/// A tokenized version.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    /// Rows in manifest order.
    pub docs: Vec<Document>,
    /// Row id (`0x<contentHash>:j`) → contribution id.
    pub row_ids: HashMap<String, u64>,
}

/// Content hash → contribution id of every entry of a version's manifest (`manifest_hash`,
/// checked against the chain), for mapping the trainer's row ids (`0x<contentHash>:j`) to
/// contributions.
pub async fn contributions_by_content(
    source: &RowSource,
    chain: &ChainView,
    datanet: impl Into<DatanetId>,
    version: impl Into<Version>,
    manifest_hash: B256,
) -> Result<HashMap<B256, u64>, CorpusError> {
    let (datanet, version) = (datanet.into().get(), version.into().get());
    let manifest = source
        .checked_manifest(chain, datanet, version, manifest_hash)
        .await?;
    Ok(manifest
        .contributions
        .iter()
        .map(|e| (e.content_hash, e.contribution_id))
        .collect())
}

/// Parses and tokenizes every row of the version's manifest (`manifest_hash`, checked against
/// the chain through `chain` first).
pub async fn load(
    source: &RowSource,
    chain: &ChainView,
    datanet: impl Into<DatanetId>,
    version: impl Into<Version>,
    manifest_hash: B256,
    tokenizer: &Tokenizer,
) -> Result<Corpus, CorpusError> {
    let (datanet, version) = (datanet.into().get(), version.into().get());
    let manifest = source
        .checked_manifest(chain, datanet, version, manifest_hash)
        .await?;
    let mut out = Corpus::default();
    for e in &manifest.contributions {
        let bytes = source.content(datanet, e).await?;
        let perr = |reason: String| CorpusError::Parse {
            contribution: e.contribution_id,
            reason,
        };
        let format: Format =
            formats::format_for(&e.file_name, &[]).map_err(|x| perr(x.to_string()))?;
        let rows =
            formats::parse(&bytes, &format, MAX_ROW_BYTES).map_err(|x| perr(x.to_string()))?;
        for (j, row) in rows.iter().enumerate() {
            let enc = tokenizer
                .encode(row.text(), false)
                .map_err(|x| CorpusError::Tokenizer(x.to_string()))?;
            out.row_ids
                .insert(format!("{}:{j}", e.content_hash), e.contribution_id);
            out.docs.push(Document {
                contribution: e.contribution_id,
                tokens: enc.get_ids().to_vec(),
            });
        }
    }
    Ok(out)
}

/// keccak-256 of a tokenizer file's bytes (recorded in indexes built with it).
pub fn tokenizer_hash(path: &Path) -> Result<B256, CorpusError> {
    std::fs::read(path)
        .map(keccak256)
        .map_err(|e| CorpusError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Path of a version's index in `dir`.
pub fn index_path(dir: &Path, datanet: u64, version: u64, tokenizer: &B256) -> PathBuf {
    dir.join(format!(
        "datanet-{datanet}-v{version}-{}.olspan",
        &hex::encode(tokenizer)[..16]
    ))
}

/// Builds the index of `corpus` at `path` (blocking; call from a blocking thread).
pub fn build_index(
    path: &Path,
    meta: &IndexMeta,
    corpus: &Corpus,
    progress: impl FnMut(&str, f64),
) -> Result<SpanIndex, CorpusError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            CorpusError::Index(IndexError::Io {
                path: parent.to_path_buf(),
                source: e,
            })
        })?;
    }
    index::build(path, meta, &corpus.docs, progress)?;
    Ok(SpanIndex::open(path)?)
}
