//! The training pipeline, written once for `openledger train` and the jobs service:
//!
//! ```text
//! licence on chain → load the base → config checked against it → the version's rows (its
//! manifest checked against the chain) → [base fit] → train (events, checkpoints, cancel)
//! → greedy reproduction → adapter, sketch and training manifest stored
//! ```
//!
//! [`Pipeline::run`] runs the sequence for a [`TrainRequest`], reports its progress to
//! `on_event` as [`RunEvent`]s and names the [`Stage`] of a failure in its [`RunError`]. The
//! stages the jobs service runs when a job is submitted ([`Pipeline::licence`],
//! [`Pipeline::check_version`], [`Pipeline::rows`], [`base_fit`]) are public on their own.
//!
//! Cancel ([`Cancel`]) gives up the chain and Datanet reads at once, is checked when the base
//! has loaded, and is polled by the trainer, so a run stops within one optimizer step.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::Address;
use openledger_datanet::formats::Row;
use openledger_datanet::{ContentStore, DatanetClient, Manifest};
use openledger_model::{DType, Device, Pretrained};
use tokio::sync::Notify;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::eval::{self, BaseFit, Reproduction};
use crate::output::{self, BaseModelRef, Stored, TrainingManifest};
use crate::source::{self, Reader, VersionRef};
use crate::trainer::{self, Event, TrainOutput};

/// Rows of a version scored by [`eval::base_fit`] before training.
pub const BASE_FIT_ROWS: usize = 64;
/// Prompts answered greedily by the trained adapter ([`eval::reproduction`]).
pub const REPRODUCTION_PROMPTS: usize = 16;

/// Rows of a Datanet version: `(row id, row)` in manifest order.
pub type Rows = Vec<(String, Row)>;

/// Where Datanet rows are read from (after the owner's licence is checked on chain).
#[derive(Clone, Debug)]
pub enum ReaderConfig {
    /// The Datanet API, signed reads as `signer` (`openledger train`: the user's key; the
    /// jobs service: its operator's).
    Api {
        /// Datanet API base URL.
        api: String,
        /// The reading account's key.
        signer: PrivateKeySigner,
    },
    /// The Datanet service in this process (the devnet): the same rules as its API (only
    /// backed contributions, only a Datanet's own manifest), no operator licence needed.
    /// (There is no bare-store reader: a store cannot tell who uploaded a blob, and a job
    /// owner must never read a permissioned blob through a Datanet he controls.)
    Service(openledger_datanet::DatanetService),
}

/// A base model directory (Hugging Face layout) a run starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseModel {
    /// The directory.
    pub dir: PathBuf,
    /// Its name (the directory name): [`BaseModelRef::id`].
    pub name: String,
    /// `openledger_model::content_hash` of the directory; `None`: a run hashes it once it
    /// has loaded it ([`BaseModel::at`]).
    pub hash: Option<String>,
    /// Made by `openledger model init`: knows only its generated world.
    pub toy_world: bool,
}

impl BaseModel {
    /// The base in `dir`, hashed by the run that loads it (what `openledger train` does).
    pub fn at(dir: &Path) -> Self {
        BaseModel {
            dir: dir.to_path_buf(),
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            hash: None,
            toy_world: openledger_model::init::is_toy_world(dir),
        }
    }

    /// The base in `dir` with its content hash (blocking: reads every file of it).
    pub fn hashed(dir: &Path) -> Result<Self> {
        let hash = openledger_model::content_hash(dir)?.0;
        Ok(BaseModel {
            hash: Some(hash),
            ..BaseModel::at(dir)
        })
    }

    /// Its `config.json`, without reading the weights.
    pub fn model_config(&self) -> Result<openledger_model::Config> {
        let path = self.dir.join("config.json");
        let json = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        Ok(openledger_model::Config::from_json(
            &String::from_utf8_lossy(&json),
        )?)
    }

    /// Loads it for training (CPU, f32; blocking).
    pub fn load(&self) -> Result<Pretrained> {
        Ok(Pretrained::load(&self.dir, &Device::Cpu, DType::F32)?)
    }
}

/// The stop signal of a run (cheap to clone): the trainer polls its flag between
/// micro-batches, the async stages (licence check, reading rows) race [`Cancel::fired`].
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// A signal not fired yet.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Stops the run: within one optimizer step, or at once while it reads.
    pub fn fire(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`Cancel::fire`] was called.
    pub fn is_fired(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// The flag the trainer polls.
    pub fn flag(&self) -> &AtomicBool {
        &self.0.flag
    }

    /// Resolves once the run is cancelled.
    pub async fn fired(&self) {
        loop {
            // Registered before the flag is read, so a `fire` in between is not missed.
            let notified = self.0.notify.notified();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }

    /// `work`, given up with [`TrainError::Cancelled`] as soon as the run is cancelled, and
    /// not started at all when it already is. The signal is polled first: a fired signal wins
    /// even when `work` could finish in the same poll.
    async fn race<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        if self.is_fired() {
            return Err(TrainError::Cancelled);
        }
        tokio::select! {
            biased;
            _ = self.fired() => Err(TrainError::Cancelled),
            r = work => r,
        }
    }
}

/// What to train: who asks, on which Datanet version, from which base, how.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    /// The account whose licence is checked.
    pub owner: Address,
    /// Datanet id.
    pub datanet: u64,
    /// Datanet version (0-based).
    pub version: u64,
    /// The base model.
    pub base: BaseModel,
    /// Hyper-parameters.
    pub config: TrainConfig,
}

/// Where a run stores its outputs.
#[derive(Clone, Debug)]
pub enum OutputStore {
    /// A store already open (the jobs service opens its store once).
    Open(ContentStore),
    /// A location (directory or `s3://bucket/prefix`), opened when training has finished
    /// (`openledger train`: nothing is created before a run has trained).
    At(String),
}

/// How a run goes: checkpoints, the base fit, the stop signal, the output store.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Checkpoints go here every `checkpointEvery` steps, and a matching checkpoint found
    /// here is resumed.
    pub workdir: Option<PathBuf>,
    /// Score the base on the rows before training ([`RunEvent::BaseFit`]); the jobs service
    /// scores it when the job is submitted instead.
    pub base_fit: bool,
    /// The stop signal.
    pub cancel: Cancel,
    /// Where the adapter, sketch and training manifest go.
    pub store: OutputStore,
}

/// A step of the pipeline, in order (where a [`RunError`] happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The licence and the version's on-chain record ([`source::check_access`]).
    Licence,
    /// Loading the base model.
    LoadBase,
    /// The hyper-parameters against the base ([`TrainConfig::validate`]).
    Validate,
    /// The version's rows, its manifest checked against the chain ([`source::read_rows`]).
    ReadRows,
    /// Hashing a base given without its hash.
    HashBase,
    /// Scoring the base on the rows ([`eval::base_fit`]).
    BaseFit,
    /// The training loop.
    Train,
    /// Greedy answers of the trained adapter ([`eval::reproduction`]).
    Reproduce,
    /// Opening the output store ([`OutputStore::At`]).
    OpenStore,
    /// Storing the adapter, the sketch and the training manifest ([`output::store`]).
    Store,
}

/// A failed run: the error and the stage it happened in. It displays (and chains its
/// sources) as the error itself.
#[derive(Debug)]
pub struct RunError {
    /// Where it failed.
    pub stage: Stage,
    /// Why (its `kind()` is the error's stable type).
    pub error: TrainError,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<RunError> for TrainError {
    fn from(e: RunError) -> Self {
        e.error
    }
}

/// Attaches the stage to an error.
trait At<T> {
    fn at(self, stage: Stage) -> std::result::Result<T, RunError>;
}

impl<T> At<T> for Result<T> {
    fn at(self, stage: Stage) -> std::result::Result<T, RunError> {
        self.map_err(|error| RunError { stage, error })
    }
}

/// What a run reports while it goes, in this order.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// The licence passed: the version as committed on chain.
    Licensed(VersionRef),
    /// The rows were read and checked; the base they will train is `base`.
    RowsRead {
        /// The version.
        version: VersionRef,
        /// How many rows it has.
        rows: usize,
        /// The base model (with its hash).
        base: BaseModelRef,
    },
    /// How well the base predicts the rows (only with [`RunOptions::base_fit`]).
    BaseFit(BaseFit),
    /// The training loop starts (on the training thread).
    TrainingStarted,
    /// The work directory held a checkpoint of these inputs (same base, rows and config) and
    /// the run goes on from it (before any [`RunEvent::Train`] progress). `finished`: that run
    /// had already ended (all `total_steps`, or stopped early), so nothing is trained and the
    /// result is the earlier run's (reproduction is measured and the outputs stored again, to
    /// the same content hashes).
    Resumed {
        /// The checkpoint's step.
        step: usize,
        /// Steps planned.
        total_steps: usize,
        /// Whether nothing is left to train.
        finished: bool,
    },
    /// An event of the training loop.
    Train(Event),
    /// The training loop returned (finished, failed or cancelled).
    TrainingEnded,
}

/// A finished run.
pub struct Trained {
    /// The version trained on.
    pub version: VersionRef,
    /// The base model.
    pub base: BaseModelRef,
    /// The base fit, when [`RunOptions::base_fit`] asked for it.
    pub base_fit: Option<BaseFit>,
    /// The adapter, sketches, metrics and rows used.
    pub output: TrainOutput,
    /// Greedy answers of the adapter to the training prompts.
    pub reproduction: Reproduction,
    /// Hashes of what was stored.
    pub stored: Stored,
    /// The stored training manifest.
    pub manifest: TrainingManifest,
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TrainError::Conflict(format!("{what} task: {e}")))?
}

/// Scores `base` on up to [`BASE_FIT_ROWS`] of `rows` (loads the base; runs on the blocking
/// pool).
pub async fn base_fit(base: &BaseModel, rows: Rows) -> Result<BaseFit> {
    let base = base.clone();
    blocking("base fit", move || {
        eval::base_fit(&base.load()?, &rows, BASE_FIT_ROWS)
    })
    .await
}

/// The chain and the Datanet a run reads from (cheap to clone).
#[derive(Clone)]
pub struct Pipeline {
    provider: DynProvider,
    rpc_url: String,
    datanet_registry: Address,
    reader: ReaderConfig,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("rpc_url", &self.rpc_url)
            .field("datanet_registry", &self.datanet_registry)
            .field("reader", &self.reader)
            .finish()
    }
}

impl Pipeline {
    /// A pipeline on the chain at `rpc_url` (a read-only provider) and its
    /// `DatanetRegistry`, reading rows as `reader` says.
    pub fn new(rpc_url: &str, datanet_registry: Address, reader: ReaderConfig) -> Result<Self> {
        Ok(Pipeline {
            provider: source::provider(rpc_url)?,
            rpc_url: rpc_url.to_string(),
            datanet_registry,
            reader,
        })
    }

    /// The read-only provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Connects the row reader (the Datanet API client signs in per connection).
    async fn reader(&self) -> Result<Reader> {
        Ok(match &self.reader {
            ReaderConfig::Api { api, signer } => {
                Reader::Api(DatanetClient::connect(&self.rpc_url, api, signer.clone()).await?)
            }
            ReaderConfig::Service(svc) => Reader::Service(svc.clone()),
        })
    }

    /// Stage [`Stage::Licence`]: `owner` may use the Datanet, and its version exists and is
    /// not empty on chain. Nothing is read from the Datanet before this passes.
    pub async fn licence(&self, owner: Address, datanet: u64, version: u64) -> Result<VersionRef> {
        source::check_access(
            &self.provider,
            self.datanet_registry,
            owner,
            datanet,
            version,
        )
        .await
    }

    /// The version's manifest checked against the chain, every contribution backed, and at
    /// least one row listed ([`source::check_version`]); no content is read.
    pub async fn check_version(&self, v: &VersionRef) -> Result<Manifest> {
        source::check_version(&self.provider, &self.reader().await?, v).await
    }

    /// Stage [`Stage::ReadRows`]: the rows of a licensed version ([`source::read_rows`]).
    pub async fn rows(&self, v: &VersionRef) -> Result<Rows> {
        source::read_rows(&self.provider, &self.reader().await?, v).await
    }

    /// Runs the whole pipeline for `req` (see the module docs), reporting to `on_event`
    /// (called on the caller's task, and on the training thread from
    /// [`RunEvent::TrainingStarted`] to [`RunEvent::TrainingEnded`]).
    pub async fn run<F>(
        &self,
        req: &TrainRequest,
        opts: RunOptions,
        mut on_event: F,
    ) -> std::result::Result<Trained, RunError>
    where
        F: FnMut(RunEvent) + Send + 'static,
    {
        let RunOptions {
            workdir,
            base_fit,
            cancel,
            store,
        } = opts;
        // Licence first: nothing is read before this passes.
        let version = cancel
            .race(self.licence(req.owner, req.datanet, req.version))
            .await
            .at(Stage::Licence)?;
        on_event(RunEvent::Licensed(version.clone()));
        let b = req.base.clone();
        let base = blocking("base model", move || b.load())
            .await
            .at(Stage::LoadBase)?;
        if cancel.is_fired() {
            return Err(TrainError::Cancelled).at(Stage::LoadBase);
        }
        req.config.validate(&base.config).at(Stage::Validate)?;
        let rows = cancel.race(self.rows(&version)).await.at(Stage::ReadRows)?;
        let hash = match &req.base.hash {
            Some(h) => h.clone(),
            None => {
                let dir = req.base.dir.clone();
                blocking("base hash", move || {
                    Ok(openledger_model::content_hash(&dir)?.0)
                })
                .await
                .at(Stage::HashBase)?
            }
        };
        let base_ref = BaseModelRef {
            id: req.base.name.clone(),
            hash,
        };
        on_event(RunEvent::RowsRead {
            version: version.clone(),
            rows: rows.len(),
            base: base_ref.clone(),
        });
        let (base, rows) = (Arc::new(base), Arc::new(rows));
        let fit = if base_fit {
            let (b, r) = (base.clone(), rows.clone());
            let fit = blocking("base fit", move || eval::base_fit(&b, &r, BASE_FIT_ROWS))
                .await
                .at(Stage::BaseFit)?;
            on_event(RunEvent::BaseFit(fit.clone()));
            Some(fit)
        } else {
            None
        };
        let (cfg, hash) = (req.config.clone(), base_ref.hash.clone());
        let (output, reproduction) = tokio::task::spawn_blocking(move || {
            on_event(RunEvent::TrainingStarted);
            let out = trainer::train(
                &base,
                &hash,
                &rows,
                &cfg,
                workdir.as_deref(),
                cancel.flag(),
                &mut |e| match e {
                    Event::Resumed {
                        step,
                        total_steps,
                        finished,
                    } => on_event(RunEvent::Resumed {
                        step,
                        total_steps,
                        finished,
                    }),
                    e => on_event(RunEvent::Train(e)),
                },
            );
            on_event(RunEvent::TrainingEnded);
            let out = out.at(Stage::Train)?;
            let adapter = Some(Arc::new(out.adapter.clone()));
            let r = eval::reproduction(&base, adapter, &rows, REPRODUCTION_PROMPTS)
                .at(Stage::Reproduce)?;
            Ok((out, r))
        })
        .await
        .map_err(|e| TrainError::Conflict(format!("training task: {e}")))
        .at(Stage::Train)??;
        let store = match store {
            OutputStore::Open(s) => s,
            OutputStore::At(location) => ContentStore::open(&location)
                .map_err(TrainError::from)
                .at(Stage::OpenStore)?,
        };
        let (stored, manifest) =
            output::store(&store, &output, base_ref.clone(), &version, &req.config)
                .await
                .at(Stage::Store)?;
        Ok(Trained {
            version,
            base: base_ref,
            base_fit: fit,
            output,
            reproduction,
            stored,
            manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fired_cancel_gives_up_pending_work_and_spares_finished_work() {
        let cancel = Cancel::new();
        assert_eq!(cancel.race(async { Ok(7) }).await.ok(), Some(7));
        let clone = cancel.clone();
        clone.fire();
        assert!(cancel.is_fired() && cancel.flag().load(Ordering::SeqCst));
        let r = cancel.race(std::future::pending::<Result<()>>()).await;
        assert!(matches!(r, Err(TrainError::Cancelled)), "{r:?}");
    }

    #[test]
    fn a_run_error_reads_as_its_error_and_names_the_field() {
        let e = RunError {
            stage: Stage::Validate,
            error: TrainError::field("rank", "must be at least 1"),
        };
        assert_eq!(e.to_string(), "invalid rank: must be at least 1");
        let inner = TrainError::from(e);
        assert_eq!(inner.field_name(), Some("rank"));
    }

    #[test]
    fn a_base_given_by_directory_is_named_after_it_and_not_hashed() {
        let b = BaseModel::at(Path::new("/models/SmolLM2-135M"));
        assert_eq!(b.name, "SmolLM2-135M");
        assert_eq!(b.hash, None);
        assert!(!b.toy_world);
    }
}
