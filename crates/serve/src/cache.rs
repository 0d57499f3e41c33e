//! The adapter cache: object store → local disk → RAM, each tier with a byte budget and LRU
//! eviction; an adapter in use is pinned.
//!
//! An adapter is named by the keccak-256 of its blob ([`openledger_model::blob`]), so a cached
//! generation is immutable: a lookup returns an `Arc<LoraAdapter>` that the request keeps for
//! its whole life. Eviction drops only the cache's own reference, so it never changes work in
//! flight, and an entry whose `Arc` is held elsewhere (pinned) is never chosen for eviction.
//! Hashes are verified when a blob enters the local disk tier, not on every load into RAM:
//! the store verifies on read, a local blob is hashed on insertion, and a file found on disk
//! at open is hashed at its first load (a corrupt one is deleted and refetched).
//!
//! ```text
//! <disk_dir>/<64 hex>.blob   one adapter blob per file, named by its keccak-256
//! <disk_dir>/tmp-<random>    a blob being written (renamed into place when complete)
//! ```

use alloy_primitives::{B256, keccak256};
use openledger_datanet::{ContentStore, StoreError};
use openledger_model::{Config, DType, Device, LoraAdapter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::error::ServeError;
use crate::metrics::{Metrics, TierCounters, inc};

/// Cache sizes and location.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Directory of the disk tier.
    pub disk_dir: PathBuf,
    /// Byte budget of the disk tier.
    pub disk_budget: u64,
    /// Byte budget of the RAM tier (adapter tensors).
    pub ram_budget: u64,
}

struct Entry<V> {
    value: V,
    size: u64,
    last: u64,
}

/// Entries with sizes and last-use ticks.
struct Lru<V> {
    entries: HashMap<B256, Entry<V>>,
    tick: u64,
    bytes: u64,
}

impl<V> Lru<V> {
    fn new() -> Self {
        Lru {
            entries: HashMap::new(),
            tick: 0,
            bytes: 0,
        }
    }

    fn touch(&mut self, k: &B256) -> Option<&V> {
        self.tick += 1;
        let t = self.tick;
        self.entries.get_mut(k).map(|e| {
            e.last = t;
            &e.value
        })
    }

    fn insert(&mut self, k: B256, value: V, size: u64) {
        self.tick += 1;
        if let Some(old) = self.entries.insert(
            k,
            Entry {
                value,
                size,
                last: self.tick,
            },
        ) {
            self.bytes -= old.size;
        }
        self.bytes += size;
    }

    fn remove(&mut self, k: &B256) -> Option<Entry<V>> {
        let e = self.entries.remove(k)?;
        self.bytes -= e.size;
        Some(e)
    }

    /// Least recently used entry for which `evictable` holds, other than `keep`.
    fn victim(&self, keep: &B256, evictable: impl Fn(&V) -> bool) -> Option<B256> {
        self.entries
            .iter()
            .filter(|(k, e)| *k != keep && evictable(&e.value))
            .min_by_key(|(_, e)| e.last)
            .map(|(k, _)| *k)
    }
}

/// Where a lookup was served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Already resident.
    Ram,
    /// Read from the local disk cache.
    Disk,
    /// Fetched from the object store.
    Store,
}

/// The three-tier adapter cache for one base model.
pub struct AdapterCache {
    store: Option<ContentStore>,
    cfg: CacheConfig,
    model: Config,
    device: Device,
    dtype: DType,
    ram: Mutex<Lru<Arc<LoraAdapter>>>,
    /// Blobs on disk, each with whether this process has verified its hash.
    disk: Mutex<Lru<bool>>,
    loading: Mutex<HashMap<B256, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AdapterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterCache")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn blob_path(dir: &Path, hash: &B256) -> PathBuf {
    dir.join(format!("{}.blob", hex::encode(hash)))
}

/// Bytes an adapter takes in RAM: its tensors and the serving layout of the per-row kernel.
pub fn adapter_bytes(a: &LoraAdapter) -> u64 {
    a.resident_bytes() as u64
}

/// Parses and checks a blob against the base model and makes its serving layout (CPU work;
/// call off the async runtime).
pub fn parse_adapter(
    blob: &[u8],
    name: &str,
    model: &Config,
    device: &Device,
    dtype: DType,
) -> Result<LoraAdapter, ServeError> {
    let refused = |e: openledger_model::Error| ServeError::AdapterRefused {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let mut adapter = LoraAdapter::from_blob(blob, model, device, dtype).map_err(refused)?;
    // the serving copy is made here, on the loading thread, not in the engine
    adapter.prepare_serving().map_err(refused)?;
    Ok(adapter)
}

fn set_gauges(c: &TierCounters, bytes: u64, entries: usize) {
    c.bytes.store(bytes, Ordering::Relaxed);
    c.entries.store(entries as u64, Ordering::Relaxed);
}

impl AdapterCache {
    /// Opens the disk tier (indexing what it already holds, oldest first) for base `model`.
    pub fn open(
        cfg: CacheConfig,
        store: Option<ContentStore>,
        model: Config,
        device: Device,
        dtype: DType,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        let io = |e: std::io::Error| {
            ServeError::Internal(format!("adapter cache {}: {e}", cfg.disk_dir.display()))
        };
        std::fs::create_dir_all(&cfg.disk_dir).map_err(io)?;
        let mut found = Vec::new();
        for ent in std::fs::read_dir(&cfg.disk_dir).map_err(io)? {
            let ent = ent.map_err(io)?;
            let name = ent.file_name().to_string_lossy().to_string();
            if name.starts_with("tmp-") {
                let _ = std::fs::remove_file(ent.path());
                continue;
            }
            let Some(h) = name.strip_suffix(".blob") else {
                continue;
            };
            let Ok(hash) = h.parse::<B256>() else {
                continue;
            };
            let meta = ent.metadata().map_err(io)?;
            found.push((meta.modified().ok(), hash, meta.len()));
        }
        found.sort();
        let mut disk = Lru::new();
        for (_, hash, size) in found {
            disk.insert(hash, false, size); // not verified yet
        }
        set_gauges(&metrics.disk, disk.bytes, disk.entries.len());
        Ok(AdapterCache {
            store,
            cfg,
            model,
            device,
            dtype,
            ram: Mutex::new(Lru::new()),
            disk: Mutex::new(disk),
            loading: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The metrics this cache updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The base model's configuration.
    pub fn model_config(&self) -> &Config {
        &self.model
    }

    /// Device and dtype adapters are loaded onto.
    pub fn placement(&self) -> (Device, DType) {
        (self.device.clone(), self.dtype)
    }

    /// The resident adapter, if any (counts a RAM hit or miss).
    pub fn resident(&self, hash: &B256) -> Option<Arc<LoraAdapter>> {
        let hit = self.ram.lock().touch(hash).cloned();
        inc(if hit.is_some() {
            &self.metrics.ram.hits
        } else {
            &self.metrics.ram.misses
        });
        hit
    }

    /// Resident adapters (hash, bytes, pinned).
    pub fn resident_list(&self) -> Vec<(B256, u64, bool)> {
        self.ram
            .lock()
            .entries
            .iter()
            .map(|(k, e)| (*k, e.size, Arc::strong_count(&e.value) > 1))
            .collect()
    }

    /// Where the disk tier keeps (or would keep) the blob of `hash`.
    pub fn disk_path(&self, hash: &B256) -> PathBuf {
        blob_path(&self.cfg.disk_dir, hash)
    }

    /// Whether the disk tier holds `hash`.
    pub fn on_disk(&self, hash: &B256) -> bool {
        self.disk.lock().entries.contains_key(hash)
    }

    /// The adapter named `hash`, loaded through the tiers; `name` is how errors refer to it.
    /// Concurrent lookups of one hash share one load.
    pub async fn get(
        &self,
        hash: B256,
        name: &str,
    ) -> Result<(Arc<LoraAdapter>, Tier), ServeError> {
        if let Some(a) = self.resident(&hash) {
            return Ok((a, Tier::Ram));
        }
        let lock = self.loading.lock().entry(hash).or_default().clone();
        let _guard = lock.lock().await;
        let out = match self.load(hash, name).await {
            Ok((Loaded::Resident(a), tier)) => Ok((a, tier)),
            Ok((Loaded::Parsed(a), tier)) => Ok((self.admit(hash, *a), tier)),
            Err(e) => Err(e),
        };
        self.loading.lock().remove(&hash);
        out
    }

    /// Runs every check of a load of `hash` (the path of [`AdapterCache::get`]: the tiers, the
    /// hash, the parse against the base model) without putting the adapter in RAM, so a check
    /// does not evict adapters in use; a blob fetched from the store does enter the disk tier.
    /// Without a store, a blob in no tier is `ModelNotFound`; with one, `AdapterMissing`.
    pub async fn verify(&self, hash: B256, name: &str) -> Result<Tier, ServeError> {
        if self.ram.lock().entries.contains_key(&hash) {
            return Ok(Tier::Ram);
        }
        let lock = self.loading.lock().entry(hash).or_default().clone();
        let _guard = lock.lock().await;
        let out = self.load(hash, name).await.map(|(_, tier)| tier);
        self.loading.lock().remove(&hash);
        out
    }

    async fn load(&self, hash: B256, name: &str) -> Result<(Loaded, Tier), ServeError> {
        if let Some(a) = self.ram.lock().touch(&hash).cloned() {
            return Ok((Loaded::Resident(a), Tier::Ram));
        }
        let started = Instant::now();
        let on_disk = self.disk.lock().touch(&hash).copied();
        if let Some(verified) = on_disk {
            let path = blob_path(&self.cfg.disk_dir, &hash);
            let (model, dev, dt, nm) = (
                self.model.clone(),
                self.device.clone(),
                self.dtype,
                name.to_string(),
            );
            let check = (!verified).then_some(hash);
            let res =
                tokio::task::spawn_blocking(move || load_file(&path, check, &nm, &model, &dev, dt))
                    .await
                    .map_err(|e| ServeError::Internal(e.to_string()))?;
            match res {
                Ok(a) => {
                    if let Some(v) = self.disk.lock().entries.get_mut(&hash) {
                        v.value = true;
                    }
                    inc(&self.metrics.disk.hits);
                    self.metrics
                        .load_disk
                        .observe(started.elapsed().as_secs_f64());
                    return Ok((Loaded::Parsed(Box::new(a)), Tier::Disk));
                }
                Err(LoadFile::Corrupt(actual)) => {
                    tracing::warn!(target: "serve::cache", %hash, %actual, "disk cache entry corrupt; refetching");
                    self.drop_disk(&hash);
                }
                Err(LoadFile::Missing) => self.drop_disk(&hash),
                Err(LoadFile::Refused(e)) => return Err(e),
            }
        }
        inc(&self.metrics.disk.misses);
        let Some(store) = &self.store else {
            inc(&self.metrics.store.misses);
            return Err(ServeError::ModelNotFound(name.to_string()));
        };
        let bytes = match store.get(&hash).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                inc(&self.metrics.store.misses);
                return Err(ServeError::AdapterMissing {
                    name: name.to_string(),
                    hash,
                });
            }
            Err(StoreError::Corrupt { expected, actual }) => {
                return Err(ServeError::HashMismatch {
                    name: name.to_string(),
                    expected,
                    actual,
                });
            }
            Err(e) => {
                return Err(ServeError::StoreUnavailable {
                    name: name.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        inc(&self.metrics.store.hits);
        let (model, dev, dt, nm) = (
            self.model.clone(),
            self.device.clone(),
            self.dtype,
            name.to_string(),
        );
        let blob = bytes.clone();
        let a = tokio::task::spawn_blocking(move || parse_adapter(&blob, &nm, &model, &dev, dt))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??;
        self.write_disk(hash, &bytes).await;
        self.metrics
            .load_store
            .observe(started.elapsed().as_secs_f64());
        Ok((Loaded::Parsed(Box::new(a)), Tier::Store))
    }

    /// Adds a blob that did not come from the store (a local adapter directory), checking it
    /// against the base model and, if given, against the hash it should have.
    pub async fn insert_blob(
        &self,
        blob: Vec<u8>,
        name: &str,
        expected: Option<B256>,
    ) -> Result<(B256, Arc<LoraAdapter>), ServeError> {
        let hash = keccak256(&blob);
        if let Some(expected) = expected
            && expected != hash
        {
            return Err(ServeError::HashMismatch {
                name: name.to_string(),
                expected,
                actual: hash,
            });
        }
        let (model, dev, dt, nm) = (
            self.model.clone(),
            self.device.clone(),
            self.dtype,
            name.to_string(),
        );
        let (a, blob) = tokio::task::spawn_blocking(move || {
            parse_adapter(&blob, &nm, &model, &dev, dt).map(|a| (a, blob))
        })
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))??;
        self.write_disk(hash, &blob).await;
        Ok((hash, self.admit(hash, a)))
    }

    /// Puts a parsed adapter into RAM and evicts unpinned LRU entries over the budget.
    fn admit(&self, hash: B256, a: LoraAdapter) -> Arc<LoraAdapter> {
        let size = adapter_bytes(&a);
        let a = Arc::new(a);
        let mut ram = self.ram.lock();
        ram.insert(hash, a.clone(), size);
        while ram.bytes > self.cfg.ram_budget {
            let Some(v) = ram.victim(&hash, |v| Arc::strong_count(v) == 1) else {
                break; // everything else is pinned by requests in flight
            };
            ram.remove(&v);
            inc(&self.metrics.ram.evictions);
        }
        set_gauges(&self.metrics.ram, ram.bytes, ram.entries.len());
        a
    }

    /// Drops a RAM entry (the `Arc`s held by requests in flight stay valid).
    pub fn evict_ram(&self, hash: &B256) -> bool {
        let mut ram = self.ram.lock();
        let out = ram.remove(hash).is_some();
        set_gauges(&self.metrics.ram, ram.bytes, ram.entries.len());
        out
    }

    fn drop_disk(&self, hash: &B256) {
        let mut disk = self.disk.lock();
        disk.remove(hash);
        let _ = std::fs::remove_file(blob_path(&self.cfg.disk_dir, hash));
        set_gauges(&self.metrics.disk, disk.bytes, disk.entries.len());
    }

    /// Writes a blob into the disk tier (temp file + rename) and evicts LRU files over the
    /// budget. A failure only costs a later refetch, so it is logged, not returned.
    async fn write_disk(&self, hash: B256, blob: &[u8]) {
        if self.on_disk(&hash) {
            return;
        }
        let dir = self.cfg.disk_dir.clone();
        let data = blob.to_vec();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = dir.join(format!("tmp-{:032x}", rand::random::<u128>()));
            std::fs::write(&tmp, &data)?;
            std::fs::rename(&tmp, blob_path(&dir, &hash))
        })
        .await;
        if !matches!(res, Ok(Ok(()))) {
            tracing::warn!(target: "serve::cache", %hash, "could not write the disk cache");
            return;
        }
        let mut evict = Vec::new();
        {
            let mut disk = self.disk.lock();
            // its hash was checked on the way in (store read or local insertion)
            disk.insert(hash, true, blob.len() as u64);
            while disk.bytes > self.cfg.disk_budget {
                let Some(v) = disk.victim(&hash, |_| true) else {
                    break;
                };
                disk.remove(&v);
                evict.push(v);
            }
            set_gauges(&self.metrics.disk, disk.bytes, disk.entries.len());
        }
        for v in evict {
            inc(&self.metrics.disk.evictions);
            let _ = std::fs::remove_file(blob_path(&self.cfg.disk_dir, &v));
        }
    }
}

/// What a load found: the adapter already resident, or one parsed from a blob.
enum Loaded {
    Resident(Arc<LoraAdapter>),
    Parsed(Box<LoraAdapter>),
}

enum LoadFile {
    Missing,
    Corrupt(B256),
    Refused(ServeError),
}

/// Reads a disk-tier blob and parses it (the cold-load path), verifying its hash when `check`
/// names one (a file this process has not verified yet).
fn load_file(
    path: &Path,
    check: Option<B256>,
    name: &str,
    model: &Config,
    device: &Device,
    dtype: DType,
) -> Result<LoraAdapter, LoadFile> {
    let bytes = std::fs::read(path).map_err(|_| LoadFile::Missing)?;
    let Some(hash) = check else {
        return parse_adapter(&bytes, name, model, device, dtype).map_err(LoadFile::Refused);
    };
    // Hashing is the larger half of a cold load (keccak over every byte); it runs on a second
    // thread while this one parses, and a parsed adapter is only returned once its hash holds.
    let (actual, parsed) = std::thread::scope(|s| {
        let hasher = s.spawn(|| keccak256(&bytes));
        let parsed = parse_adapter(&bytes, name, model, device, dtype);
        (hasher.join(), parsed)
    });
    let actual = actual.unwrap_or_else(|_| keccak256(&bytes));
    if actual != hash {
        return Err(LoadFile::Corrupt(actual));
    }
    parsed.map_err(LoadFile::Refused)
}

/// Time of each stage of a cold load of the blob at `path`, run one after another on this
/// thread (read, keccak-256, parse into tensors), in seconds: what the overlap above hides.
pub fn cold_load_stages(
    path: &Path,
    model: &Config,
    device: &Device,
    dtype: DType,
) -> Result<[f64; 3], ServeError> {
    let t = Instant::now();
    let bytes = std::fs::read(path).map_err(|e| ServeError::Internal(e.to_string()))?;
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::hint::black_box(keccak256(&bytes));
    let hash = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::hint::black_box(parse_adapter(&bytes, "bench", model, device, dtype)?);
    Ok([read, hash, t.elapsed().as_secs_f64()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_hashed_once_on_entry_and_a_file_found_at_open_at_first_load() {
        let cfg = openledger_model::Config::from_json(
            r#"{"model_type":"llama","hidden_size":16,"intermediate_size":24,
            "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#,
        )
        .expect("config");
        let lc = openledger_model::LoraConfig::new(2, 4.0, &[openledger_model::Proj::Q]);
        let vm = candle_nn::VarMap::new();
        let a =
            LoraAdapter::trainable(lc, &cfg, &vm, &Device::Cpu, DType::F32, 1).expect("adapter");
        let blob = a.to_blob().expect("blob");
        let tmp = tempfile::tempdir().expect("tmp");
        let open = || {
            AdapterCache::open(
                CacheConfig {
                    disk_dir: tmp.path().to_path_buf(),
                    disk_budget: u64::MAX,
                    ram_budget: u64::MAX,
                },
                None,
                cfg.clone(),
                Device::Cpu,
                DType::F32,
                Arc::new(Metrics::default()),
            )
            .expect("cache")
        };
        let c = open();
        let (hash, _) = c
            .insert_blob(blob.clone(), "a", None)
            .await
            .expect("insert");
        assert_eq!(
            c.disk.lock().entries.get(&hash).map(|e| e.value),
            Some(true)
        );
        // a blob changed on disk behind the cache's back, but still a valid adapter
        let mut other = blob.clone();
        let b = LoraAdapter::trainable(
            openledger_model::LoraConfig::new(2, 4.0, &[openledger_model::Proj::Q]),
            &cfg,
            &candle_nn::VarMap::new(),
            &Device::Cpu,
            DType::F32,
            2,
        )
        .expect("adapter");
        other.clone_from(&b.to_blob().expect("blob"));
        std::fs::write(c.disk_path(&hash), &other).expect("write");
        // this process verified it on entry: a load into RAM reads it without re-hashing
        assert!(c.evict_ram(&hash));
        assert!(c.get(hash, "a").await.is_ok());
        // a new process (a cache opened on the directory) hashes it at its first load,
        // finds the mismatch, drops the file, and has no store to refetch from
        let c2 = open();
        assert_eq!(
            c2.disk.lock().entries.get(&hash).map(|e| e.value),
            Some(false)
        );
        assert!(matches!(
            c2.get(hash, "a").await,
            Err(ServeError::ModelNotFound(_))
        ));
        assert!(!c2.disk_path(&hash).exists());
    }

    #[test]
    fn lru_evicts_oldest_evictable() {
        let mut l: Lru<u32> = Lru::new();
        let k = |i: u8| B256::repeat_byte(i);
        l.insert(k(1), 1, 10);
        l.insert(k(2), 2, 10);
        l.insert(k(3), 3, 10);
        l.touch(&k(1));
        assert_eq!(l.victim(&k(3), |_| true), Some(k(2)));
        assert_eq!(
            l.victim(&k(3), |v| *v != 2),
            Some(k(1)),
            "pinned entry skipped"
        );
        assert_eq!(l.victim(&k(3), |_| false), None);
        l.remove(&k(2));
        assert_eq!(l.bytes, 20);
    }
}
