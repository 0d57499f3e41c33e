//! Content-addressed blob store over [`object_store`]: keccak-256 names, streaming atomic
//! writes, verification on every read.
//!
//! Layout under the store's prefix:
//!
//! ```text
//! <prefix>/blobs/<aa>/<64 hex chars>   content, named by keccak-256 of its bytes
//! <prefix>/tmp/<random>                in-flight uploads (deleted on success or failure)
//! ```
//!
//! A write streams into `tmp/`, hashing as it goes; only when the hash (and the caller's
//! validation) is known does the object move to its final name, with the backend's
//! "create only" rename (a hard link on a local disk). Where the backend cannot rename
//! conditionally (S3 without conditional copy), an overwriting copy is used: both objects hold
//! the same bytes, because the name is their hash, so a race cannot change what is read.

use alloy_primitives::{B256, Keccak256};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, path::Path};
use std::sync::Arc;

/// Errors of the content store. Backend errors stay as the backend reports them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The upload exceeded the configured size limit.
    #[error("content larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The stored bytes do not hash to their name (corruption or tampering).
    #[error("stored content {expected} hashes to {actual}")]
    Corrupt {
        /// The name asked for.
        expected: B256,
        /// What the bytes hash to.
        actual: B256,
    },
    /// No content with this hash.
    #[error("no content {0}")]
    NotFound(B256),
    /// The upload stream failed.
    #[error("upload stream failed: {0}")]
    Stream(String),
    /// The store location could not be parsed or built.
    #[error("bad store location {0}")]
    Location(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] object_store::Error),
}

/// A content-addressed store over any [`ObjectStore`] (the seam: local disk, S3, memory).
#[derive(Clone, Debug)]
pub struct ContentStore {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The directory of a local store. `object_store`'s local backend writes a multipart
    /// upload to a `<name>#<n>` file that its listings skip, so a killed upload's part file is
    /// only visible to a directory scan.
    local_root: Option<std::path::PathBuf>,
}

/// An upload streamed into the store's staging area, hashed, not yet visible under its name.
#[derive(Debug)]
pub struct Staged {
    tmp: Path,
    /// keccak-256 of the bytes.
    pub hash: B256,
    /// Size in bytes.
    pub size: u64,
}

impl ContentStore {
    /// Wraps a backend; every object lives under `prefix`.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            inner,
            prefix: Path::from(prefix),
            local_root: None,
        }
    }

    /// Opens a store from a location: `s3://bucket/prefix` (credentials, region and
    /// `AWS_ENDPOINT_URL` / `AWS_ALLOW_HTTP` from the environment) or a local directory,
    /// created if missing.
    pub fn open(location: &str) -> Result<Self, StoreError> {
        Self::open_with(location, &[])
    }

    /// Same as [`ContentStore::open`], with S3 options (`object_store` config keys such as
    /// `aws_endpoint`, `aws_allow_http`, `aws_region`) applied over the environment's.
    pub fn open_with(location: &str, s3_options: &[(&str, &str)]) -> Result<Self, StoreError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Location(location.to_string()));
            }
            let mut builder =
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in s3_options {
                let key: object_store::aws::AmazonS3ConfigKey = k
                    .parse()
                    .map_err(|_| StoreError::Location(format!("unknown S3 option {k}")))?;
                builder = builder.with_config(key, *v);
            }
            let s3 = builder.build()?;
            return Ok(Self::new(Arc::new(s3), prefix.trim_end_matches('/')));
        }
        std::fs::create_dir_all(location)
            .map_err(|e| StoreError::Location(format!("{location}: {e}")))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(location)?;
        let mut store = Self::new(Arc::new(fs), "");
        store.local_root = Some(std::path::PathBuf::from(location));
        Ok(store)
    }

    fn blob_path(&self, hash: &B256) -> Path {
        let hex = hex::encode(hash);
        self.prefix
            .clone()
            .join("blobs")
            .join(&hex[..2])
            .join(hex.as_str())
    }

    /// Streams bytes into the staging area, hashing on the way; fails (leaving nothing behind)
    /// past `limit` bytes. Memory use is bounded by the backend's part size, not the upload.
    pub async fn stage<S, E>(&self, mut body: S, limit: u64) -> Result<Staged, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self
            .prefix
            .clone()
            .join("tmp")
            .join(format!("{:032x}", rand::random::<u128>()).as_str());
        let upload = self.inner.put_multipart(&tmp).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
        let mut hasher = Keccak256::new();
        let mut size = 0u64;
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(StoreError::Stream(e.to_string())),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > limit {
                        break Some(StoreError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    if let Err(e) = writer.wait_for_capacity(8).await {
                        break Some(e.into());
                    }
                    writer.put(chunk);
                }
            }
        };
        if let Some(e) = failure {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await?;
        Ok(Staged {
            tmp,
            hash: hasher.finalize(),
            size,
        })
    }

    /// Reads a staged upload back (for parsing and validation before it is committed).
    pub async fn read_staged(&self, staged: &Staged) -> Result<Bytes, StoreError> {
        Ok(self.inner.get(&staged.tmp).await?.bytes().await?)
    }

    /// Makes a staged upload visible under its hash. Idempotent: committing content that is
    /// already stored leaves the stored copy and removes the staged one.
    pub async fn commit(&self, staged: Staged) -> Result<B256, StoreError> {
        let dest = self.blob_path(&staged.hash);
        match self.inner.rename_if_not_exists(&staged.tmp, &dest).await {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.inner.delete(&staged.tmp).await?;
            }
            Err(object_store::Error::NotImplemented { .. })
            | Err(object_store::Error::NotSupported { .. }) => {
                self.inner.copy(&staged.tmp, &dest).await?;
                self.inner.delete(&staged.tmp).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(staged.hash)
    }

    /// Drops a staged upload (validation failed): nothing is stored.
    pub async fn discard(&self, staged: Staged) -> Result<(), StoreError> {
        match self.inner.delete(&staged.tmp).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores bytes held in memory (manifests, small files); returns their hash.
    pub async fn put(&self, bytes: Bytes) -> Result<B256, StoreError> {
        let hash = alloy_primitives::keccak256(&bytes);
        if self.contains(&hash).await? {
            return Ok(hash);
        }
        let tmp = self
            .prefix
            .clone()
            .join("tmp")
            .join(format!("{:032x}", rand::random::<u128>()).as_str());
        self.inner.put(&tmp, PutPayload::from(bytes)).await?;
        self.commit(Staged { tmp, hash, size: 0 }).await?;
        Ok(hash)
    }

    /// Reads content by hash and checks that it hashes to its name.
    pub async fn get(&self, hash: &B256) -> Result<Bytes, StoreError> {
        let bytes = match self.inner.get(&self.blob_path(hash)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(StoreError::NotFound(*hash)),
            Err(e) => return Err(e.into()),
        };
        let actual = alloy_primitives::keccak256(&bytes);
        if actual != *hash {
            return Err(StoreError::Corrupt {
                expected: *hash,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether content with this hash is stored.
    pub async fn contains(&self, hash: &B256) -> Result<bool, StoreError> {
        match self.inner.head(&self.blob_path(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Hashes of every stored blob (sorted), for audits and tests.
    pub async fn list(&self) -> Result<Vec<B256>, StoreError> {
        let prefix = self.prefix.clone().join("blobs");
        let mut out = Vec::new();
        let mut items = self.inner.list(Some(&prefix));
        while let Some(meta) = items.next().await {
            let meta = meta?;
            if let Some(name) = meta.location.filename()
                && let Ok(h) = name.parse::<B256>()
            {
                out.push(h);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes staged objects older than `grace`: uploads abandoned by a process that was killed
    /// between staging and commit. The grace period keeps in-flight uploads of another process
    /// sharing the same bucket safe. Returns how many were removed.
    pub async fn sweep_staging(&self, grace: std::time::Duration) -> Result<usize, StoreError> {
        let prefix = self.prefix.clone().join("tmp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(grace.as_secs() as i64);
        let mut stale = Vec::new();
        let mut items = self.inner.list(Some(&prefix));
        while let Some(meta) = items.next().await {
            let meta = meta?;
            if meta.last_modified.timestamp() <= cutoff {
                stale.push(meta.location);
            }
        }
        for location in &stale {
            self.inner.delete(location).await?;
        }
        let mut removed = stale.len();
        for (path, modified) in self.local_parts()? {
            if modified <= cutoff {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::Location(format!("{}: {e}", path.display()))),
                }
            }
        }
        Ok(removed)
    }

    /// Part files of unfinished local multipart uploads, with their modification times.
    fn local_parts(&self) -> Result<Vec<(std::path::PathBuf, i64)>, StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(Vec::new());
        };
        let dir = root.join(self.prefix.as_ref()).join("tmp");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::Location(format!("{}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().contains('#') {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            out.push((entry.path(), modified));
        }
        Ok(out)
    }

    /// Number of objects in the staging area (uploads in flight or abandoned).
    pub async fn staged_count(&self) -> Result<usize, StoreError> {
        let prefix = self.prefix.clone().join("tmp");
        let mut n = 0;
        let mut items = self.inner.list(Some(&prefix));
        while let Some(meta) = items.next().await {
            meta?;
            n += 1;
        }
        Ok(n + self.local_parts()?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn chunks(data: &[u8], n: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let v: Vec<Result<Bytes, String>> = data
            .chunks(n.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(v)
    }

    #[tokio::test]
    async fn sweep_removes_abandoned_staging_only() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Location(e.to_string()))?;
        let store = ContentStore::open(&dir.path().display().to_string())?;
        // A process killed after staging and before commit leaves this behind.
        let staged = store.stage(chunks(b"abandoned upload", 4), 1024).await?;
        store.put(Bytes::from_static(b"kept content")).await?;
        assert_eq!(store.staged_count().await?, 1);
        // Within the grace period nothing is touched.
        assert_eq!(
            store
                .sweep_staging(std::time::Duration::from_secs(3600))
                .await?,
            0
        );
        assert_eq!(store.staged_count().await?, 1);
        assert_eq!(store.sweep_staging(std::time::Duration::ZERO).await?, 1);
        assert_eq!(store.staged_count().await?, 0);
        assert!(
            store.commit(staged).await.is_err(),
            "the swept upload is gone"
        );
        assert_eq!(
            store.list().await?.len(),
            1,
            "committed content is untouched"
        );
        Ok(())
    }

    #[tokio::test]
    async fn stage_commit_get_and_limits() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Location(e.to_string()))?;
        let store = ContentStore::open(&dir.path().display().to_string())?;
        let data = vec![7u8; 100_000];
        let staged = store.stage(chunks(&data, 4096), 1 << 20).await?;
        assert_eq!(staged.hash, alloy_primitives::keccak256(&data));
        assert!(!store.contains(&staged.hash).await?);
        let h = store.commit(staged).await?;
        assert_eq!(store.get(&h).await?.as_ref(), &data[..]);
        assert_eq!(store.staged_count().await?, 0);
        // Too large: nothing stored, nothing left in staging.
        let err = store.stage(chunks(&data, 4096), 1000).await;
        assert!(matches!(err, Err(StoreError::TooLarge { limit: 1000 })));
        assert_eq!(store.staged_count().await?, 0);
        assert_eq!(store.list().await?, vec![h]);
        // Corruption is detected on read.
        let path = dir
            .path()
            .join("blobs")
            .join(&hex::encode(h)[..2])
            .join(hex::encode(h));
        std::fs::write(&path, b"tampered").map_err(|e| StoreError::Location(e.to_string()))?;
        assert!(matches!(
            store.get(&h).await,
            Err(StoreError::Corrupt { .. })
        ));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The store behaves like a BTreeMap from keccak-256 to bytes under puts and deletes of
        /// staged uploads (commit or discard).
        #[test]
        fn store_matches_btreemap(ops in proptest::collection::vec(
            (proptest::collection::vec(0u8..4, 0..40), any::<bool>(), 1usize..9), 1..20)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let store = ContentStore::new(Arc::new(object_store::memory::InMemory::new()), "p");
                let mut model: BTreeMap<B256, Vec<u8>> = BTreeMap::new();
                for (data, keep, chunk) in ops {
                    let staged = store.stage(chunks(&data, chunk), 1 << 20).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if keep {
                        let h = store.commit(staged).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.insert(h, data);
                    } else {
                        store.discard(staged).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
                let listed = store.list().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(listed, model.keys().copied().collect::<Vec<_>>());
                for (h, v) in &model {
                    let got = store.get(h).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(got.as_ref(), &v[..]);
                }
                prop_assert_eq!(store.staged_count().await.map_err(|e| TestCaseError::fail(e.to_string()))?, 0);
                Ok(())
            })?;
        }
    }
}
