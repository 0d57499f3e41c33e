//! Identifying a model directory: architecture summary, parameter count, content hash.
//!
//! Content hash, version 1 (`sha256:` + 64 hex digits):
//!
//! ```text
//! H = SHA-256( "openledger-model-dir-v1\n"
//!              ‖ for each regular file, by relative path ('/'-separated) in byte order,
//!                skipping names that start with '.':
//!                    path ‖ "\n" ‖ hex(SHA-256(file bytes)) ‖ "\n" )
//! ```
//!
//! The same value from a shell, for a flat directory:
//! `(printf 'openledger-model-dir-v1\n'; for f in $(ls | LC_ALL=C sort); do printf '%s\n%s\n' "$f" "$(sha256sum "$f" | cut -c1-64)"; done) | sha256sum`

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result, read_file};

/// One file of the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative path, '/'-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `sha256:` + hex.
    pub sha256: String,
}

/// What `info` reports about a model directory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: Config,
    /// Total parameters.
    pub parameters: usize,
    /// Files, in hash order.
    pub files: Vec<FileEntry>,
    /// The content hash (see the module docs).
    pub content_hash: String,
}

fn walk(root: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let dir = root.join(rel);
    let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let relpath = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        if ft.is_dir() {
            walk(root, &relpath, out)?;
        } else if ft.is_file() {
            out.push((relpath, entry.path()));
        }
    }
    Ok(())
}

/// The files of `dir` with their digests, and the directory's content hash.
pub fn content_hash(dir: &Path) -> Result<(String, Vec<FileEntry>)> {
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256::new();
    h.update(b"openledger-model-dir-v1\n");
    let mut entries = Vec::with_capacity(files.len());
    for (rel, path) in files {
        let bytes = read_file(&path)?;
        let d = hex::encode(Sha256::digest(&bytes));
        h.update(rel.as_bytes());
        h.update(b"\n");
        h.update(d.as_bytes());
        h.update(b"\n");
        entries.push(FileEntry {
            path: rel,
            size: bytes.len() as u64,
            sha256: format!("sha256:{d}"),
        });
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), entries))
}

/// Architecture, parameter count and content hash of a model directory.
pub fn info(dir: &Path) -> Result<ModelInfo> {
    let config = Config::from_file(&dir.join("config.json"))?;
    let (content_hash, files) = content_hash(dir)?;
    Ok(ModelInfo {
        dir: dir.to_path_buf(),
        parameters: config.num_parameters(),
        config,
        files,
        content_hash,
    })
}

impl std::fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        writeln!(f, "model        {}", self.dir.display())?;
        writeln!(
            f,
            "architecture {:?}: {} layers, hidden {}, mlp {}, heads {} (kv {}), head_dim {}, vocab {}, tied {}",
            c.model_type,
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_kv_heads(),
            c.head_dim(),
            c.vocab_size,
            c.tie_word_embeddings
        )?;
        writeln!(f, "parameters   {}", self.parameters)?;
        for e in &self.files {
            writeln!(f, "  {:<28} {:>10}  {}", e.path, e.size, e.sha256)?;
        }
        write!(f, "content hash {}", self.content_hash)
    }
}
