//! The jobs service: fine-tunes submitted over HTTP, run one at a time per device from a FIFO
//! queue, state on disk (a restart resumes a running job from its last checkpoint), progress
//! as Server-Sent Events, cancel, and publication in `ModelRegistry`. Routes in [`api`].
//!
//! On disk, under `datadir`:
//!
//! ```text
//! jobs/<id>/job.json    the Job record (JSON, written by temp file + fsync + rename)
//! jobs/<id>/work/       checkpoints of the run (removed when it ends)
//! nonces.log            used request nonces until they expire (openledger_datanet::nonces)
//! ```

pub mod api;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::Address;
use alloy_sol_types::Eip712Domain;
use openledger_datanet::ContentStore;
use openledger_datanet::nonces::NonceStore;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::checkpoint::write_atomic;
use crate::config::{JobLimits, TrainConfig};
use crate::error::{Result, TrainError};
use crate::eval::{BaseFit, Reproduction};
use crate::output::{BaseModelRef, Stored};
use crate::pipeline::{
    self, BaseModel, Cancel, OutputStore, Pipeline, RunEvent, RunOptions, TrainRequest,
};
use crate::publish::Published;
use crate::trainer::{Event, Metrics};

// How the service reads rows (its operator through the Datanet API, or the Datanet service
// in this process); rows scored by the base fit at submission; prompts of the reproduction.
pub use crate::pipeline::{BASE_FIT_ROWS, REPRODUCTION_PROMPTS, ReaderConfig};

/// Configuration of [`JobService::open`].
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Chain id (for the EIP-712 domain of signed requests).
    pub chain_id: u64,
    /// DatanetRegistry address.
    pub datanet_registry: Address,
    /// ModelRegistry address.
    pub model_registry: Address,
    /// Directory of job records and checkpoints.
    pub datadir: PathBuf,
    /// Models content store location (adapters, manifests, sketches).
    pub models_store: String,
    /// Base model directories a job may name (by directory name or content hash).
    pub base_models: Vec<PathBuf>,
    /// How Datanet rows are read.
    pub reader: ReaderConfig,
    /// What one job may cost and how many may wait ([`JobLimits::default`]).
    pub limits: JobLimits,
}

/// Life cycle of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting in the queue.
    Queued,
    /// Training.
    Running,
    /// Finished; outputs stored; publishable.
    Succeeded,
    /// Stopped by an error (see `error`).
    Failed,
    /// Cancelled by its owner; never publishable.
    Cancelled,
}

impl Status {
    /// Whether the job will not change any more (except publication).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// Latest progress of a running job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Steps planned.
    pub total_steps: usize,
    /// Epoch in progress.
    pub epoch: usize,
    /// Loss of the last step.
    pub loss: f64,
    /// Training tokens per second.
    pub tokens_per_sec: f64,
    /// Estimated seconds left.
    pub eta_secs: f64,
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Stable type (`TrainError::kind`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Message.
    pub message: String,
}

/// A job record (the JSON of `GET /api/jobs/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// `job-000001`, ...
    pub id: String,
    /// The account that submitted it (signed request).
    pub owner: Address,
    /// Status.
    pub status: Status,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// Base model.
    pub base_model: BaseModelRef,
    /// Datanet id.
    pub datanet_id: u64,
    /// Datanet version.
    pub version: u64,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Latest progress.
    pub progress: Option<Progress>,
    /// Final metrics (succeeded jobs).
    pub metrics: Option<Metrics>,
    /// Stored outputs (succeeded jobs).
    pub result: Option<Stored>,
    /// Failure reason (failed jobs).
    pub error: Option<JobError>,
    /// Registration in ModelRegistry, once published.
    pub published: Option<Published>,
    /// The checkpoint step a run resumed from after a service restart (none: from scratch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<usize>,
    /// How well the base model predicts this Datanet version, measured when the job was
    /// created ([`eval::base_fit`]); `verdict: "cannot_model"` means training will not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_fit: Option<BaseFit>,
    /// Greedy answers of the trained adapter to the training prompts (succeeded jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduction: Option<Reproduction>,
}

/// The stop signal of a running job ([`pipeline::Cancel`]) and who fired it.
#[derive(Default)]
struct JobCancel {
    stop: Cancel,
    /// Set when the owner cancelled (not the service shutting down).
    by_owner: AtomicBool,
}

/// How long [`JobService::shutdown`] waits for the running job to reach the end of its step.
pub const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct Inner {
    cfg: JobsConfig,
    pub(crate) pipeline: Pipeline,
    store: ContentStore,
    pub(crate) bases: Vec<BaseModel>,
    jobs: Mutex<BTreeMap<String, Job>>,
    cancels: Mutex<BTreeMap<String, Arc<JobCancel>>>,
    stopping: AtomicBool,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Used nonces of signed requests (`<datadir>/nonces.log`), kept across restarts until
    /// their signatures expire.
    nonces: NonceStore,
    events: broadcast::Sender<(String, serde_json::Value)>,
    wake: Notify,
    domain: Eip712Domain,
}

/// The jobs service (cheap to clone).
#[derive(Clone)]
pub struct JobService {
    pub(crate) inner: Arc<Inner>,
}

/// The EIP-712 domain of signed job requests: `{name: "OpenLedger Jobs", version: "1",
/// chainId, verifyingContract: ModelRegistry}` with the `DatanetRequest` message of
/// `openledger_datanet::auth`.
pub fn domain(chain_id: u64, model_registry: Address) -> Eip712Domain {
    openledger_protocol::eip712::jobs_domain(chain_id, model_registry)
}

fn now() -> u64 {
    openledger_datanet::auth::now()
}

fn job_dir(datadir: &Path, id: &str) -> PathBuf {
    datadir.join("jobs").join(id)
}

impl JobService {
    /// Opens the service: reads job records (a job found `running` is queued again and resumes
    /// from its checkpoint), hashes the base models, starts the worker.
    pub async fn open(cfg: JobsConfig) -> Result<Self> {
        let pipeline = Pipeline::new(&cfg.rpc_url, cfg.datanet_registry, cfg.reader.clone())?;
        let store = ContentStore::open(&cfg.models_store)?;
        let mut bases = Vec::new();
        for dir in &cfg.base_models {
            let d = dir.clone();
            bases.push(
                tokio::task::spawn_blocking(move || BaseModel::hashed(&d))
                    .await
                    .map_err(|e| TrainError::Conflict(e.to_string()))??,
            );
        }
        let mut jobs = BTreeMap::new();
        let root = cfg.datadir.join("jobs");
        std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
        for entry in std::fs::read_dir(&root).map_err(|e| TrainError::io(&root, e))? {
            let path = entry
                .map_err(|e| TrainError::io(&root, e))?
                .path()
                .join("job.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mut job: Job = serde_json::from_slice(&bytes)
                .map_err(|e| TrainError::corrupt(&path.display().to_string(), e))?;
            if job.status == Status::Running {
                job.status = Status::Queued;
            }
            jobs.insert(job.id.clone(), job);
        }
        let nonces = NonceStore::open(cfg.datadir.join("nonces.log"), now())?;
        let (events, _) = broadcast::channel(1024);
        let domain = domain(cfg.chain_id, cfg.model_registry);
        let svc = JobService {
            inner: Arc::new(Inner {
                cfg,
                pipeline,
                store,
                bases,
                jobs: Mutex::new(jobs),
                cancels: Mutex::new(BTreeMap::new()),
                stopping: AtomicBool::new(false),
                worker: Mutex::new(None),
                nonces,
                events,
                wake: Notify::new(),
                domain,
            }),
        };
        let worker = svc.clone();
        let handle = tokio::spawn(async move { worker.run_queue().await });
        *svc.inner.worker.lock() = Some(handle);
        Ok(svc)
    }

    /// Stops the worker: a running job stops within one training step (or while its data is
    /// read) and stays `running` on disk with its checkpoints, so the next [`JobService::open`]
    /// resumes it; queued jobs stay queued. Waits up to [`SHUTDOWN_WAIT`] for the worker.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for c in self.inner.cancels.lock().values() {
            c.stop.fire();
        }
        self.inner.wake.notify_one();
        let worker = self.inner.worker.lock().take();
        if let Some(w) = worker
            && tokio::time::timeout(SHUTDOWN_WAIT, w).await.is_err()
        {
            tracing::warn!(target: "train::jobs", "the running job did not stop in time");
        }
    }

    /// 429 `too_many_jobs` if `owner` (or the service) already has as many queued or running
    /// jobs as [`JobLimits`] allow.
    fn check_capacity(&self, jobs: &BTreeMap<String, Job>, owner: Address) -> Result<()> {
        let limits = &self.inner.cfg.limits;
        let active: Vec<&Job> = jobs.values().filter(|j| !j.status.is_terminal()).collect();
        let mine = active.iter().filter(|j| j.owner == owner).count();
        // The running job's estimate of the time it has left, within [1 s, 1 h].
        let retry_after_secs = active
            .iter()
            .find_map(|j| j.progress.as_ref().filter(|_| j.status == Status::Running))
            .map(|p| p.eta_secs.clamp(1.0, 3600.0) as u64)
            .unwrap_or(60);
        let reason = if mine >= limits.max_active_per_owner {
            format!(
                "{owner} has {mine} queued or running jobs, the cap per owner is {}",
                limits.max_active_per_owner
            )
        } else if active.len() >= limits.max_active {
            format!(
                "the service has {} queued or running jobs, its cap is {}",
                active.len(),
                limits.max_active
            )
        } else {
            return Ok(());
        };
        Err(TrainError::TooManyJobs {
            reason,
            retry_after_secs,
        })
    }

    /// A job by id.
    pub fn job(&self, id: &str) -> Option<Job> {
        self.inner.jobs.lock().get(id).cloned()
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        self.inner.jobs.lock().values().cloned().collect()
    }

    fn base(&self, name_or_hash: &str) -> Result<&BaseModel> {
        self.inner
            .bases
            .iter()
            .find(|b| b.hash.as_deref() == Some(name_or_hash) || b.name == name_or_hash)
            .ok_or_else(|| TrainError::BaseModelNotFound(name_or_hash.to_string()))
    }

    fn save(&self, job: &Job) -> Result<()> {
        let dir = job_dir(&self.inner.cfg.datadir, &job.id);
        let bytes = serde_json::to_vec_pretty(job).map_err(|e| TrainError::corrupt("job", e))?;
        write_atomic(&dir.join("job.json"), &bytes)
    }

    fn emit(&self, id: &str, v: serde_json::Value) {
        let _ = self.inner.events.send((id.to_string(), v));
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) -> Result<Job> {
        let job = {
            let mut jobs = self.inner.jobs.lock();
            let job = jobs
                .get_mut(id)
                .ok_or_else(|| TrainError::JobNotFound(id.into()))?;
            f(job);
            job.updated_at = now();
            job.clone()
        };
        self.save(&job)?;
        Ok(job)
    }

    /// Validates and queues a job for `owner` (licence and version checked on chain now).
    pub async fn submit(
        &self,
        owner: Address,
        base_model: &str,
        datanet: u64,
        version: u64,
        config: TrainConfig,
    ) -> Result<Job> {
        self.check_capacity(&self.inner.jobs.lock(), owner)?;
        let base = self.base(base_model)?;
        config.validate(&base.model_config()?)?;
        // Caps that do not depend on the data, before anything is read.
        self.inner.cfg.limits.check(&config, 0)?;
        let p = &self.inner.pipeline;
        let v = p.licence(owner, datanet, version).await?;
        // The manifest is checked against the chain, every contribution must be readable
        // through that Datanet, and an empty version is refused now, not when the job starts.
        let manifest = p.check_version(&v).await?;
        let rows: u64 = manifest
            .contributions
            .iter()
            .map(|e| e.row_count)
            .fold(0, u64::saturating_add);
        self.inner.cfg.limits.check(&config, rows)?;
        // How well the base predicts this data, before anything is queued: a warning in the
        // job (never a refusal; see the crate README).
        let fit = pipeline::base_fit(base, p.rows(&v).await?).await?;
        let job = {
            let mut jobs = self.inner.jobs.lock();
            self.check_capacity(&jobs, owner)?;
            let next = jobs
                .keys()
                .filter_map(|k| k.strip_prefix("job-")?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            let t = now();
            let job = Job {
                id: format!("job-{next:06}"),
                owner,
                status: Status::Queued,
                created_at: t,
                updated_at: t,
                base_model: BaseModelRef {
                    id: base.name.clone(),
                    // The service's bases are hashed when it opens (`BaseModel::hashed`).
                    hash: base.hash.clone().unwrap_or_default(),
                },
                datanet_id: datanet,
                version,
                config,
                progress: None,
                metrics: None,
                result: None,
                error: None,
                published: None,
                resumed_from: None,
                base_fit: Some(fit),
                reproduction: None,
            };
            jobs.insert(job.id.clone(), job.clone());
            job
        };
        self.save(&job)?;
        self.emit(&job.id, serde_json::json!({"type": "status", "job": job}));
        self.inner.wake.notify_one();
        Ok(job)
    }

    /// Cancels a queued or running job of `caller`. A queued job is cancelled at once; a
    /// running one stops within one training step (its status turns `cancelled` then).
    pub fn cancel(&self, id: &str, caller: Address) -> Result<Job> {
        let job = {
            let mut jobs = self.inner.jobs.lock();
            let job = jobs
                .get_mut(id)
                .ok_or_else(|| TrainError::JobNotFound(id.into()))?;
            if job.owner != caller {
                return Err(TrainError::Forbidden(format!("{caller} does not own {id}")));
            }
            match job.status {
                Status::Queued => {
                    job.status = Status::Cancelled;
                    job.updated_at = now();
                }
                Status::Running => {}
                s => {
                    return Err(TrainError::Conflict(
                        format!("{id} is already {s:?}").to_lowercase(),
                    ));
                }
            }
            job.clone()
        };
        if job.status == Status::Cancelled {
            self.save(&job)?;
            self.emit(id, serde_json::json!({"type": "cancelled", "job": job}));
        } else if let Some(c) = self.inner.cancels.lock().get(id) {
            c.by_owner.store(true, Ordering::SeqCst);
            c.stop.fire();
        }
        Ok(job)
    }

    /// The oldest queued job, switched to `running` with its stop signal registered, in one
    /// step under the jobs lock (so a cancel sees either a queued job or a stop signal).
    fn start_next(&self) -> Option<(Job, Arc<JobCancel>)> {
        let mut jobs = self.inner.jobs.lock();
        if self.inner.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let job = jobs.values_mut().find(|j| j.status == Status::Queued)?;
        job.status = Status::Running;
        job.updated_at = now();
        let cancel = Arc::new(JobCancel::default());
        self.inner
            .cancels
            .lock()
            .insert(job.id.clone(), cancel.clone());
        // A shutdown that fired the signals before this one was registered.
        if self.inner.stopping.load(Ordering::SeqCst) {
            cancel.stop.fire();
        }
        Some((job.clone(), cancel))
    }

    async fn run_queue(&self) {
        loop {
            let notified = self.inner.wake.notified();
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            match self.start_next() {
                Some((job, cancel)) => self.run_job(job, cancel).await,
                None => notified.await,
            }
        }
    }

    async fn run_job(&self, job: Job, cancel: Arc<JobCancel>) {
        let id = job.id.as_str();
        let result = match self.save(&job) {
            Ok(()) => {
                self.emit(id, serde_json::json!({"type": "status", "job": job}));
                self.train_job(&job, &cancel.stop).await
            }
            Err(e) => Err(e),
        };
        self.inner.cancels.lock().remove(id);
        if matches!(result, Err(TrainError::Cancelled))
            && !cancel.by_owner.load(Ordering::SeqCst)
            && self.inner.stopping.load(Ordering::SeqCst)
        {
            // Stopped by a shutdown: the record stays `running` and the checkpoints stay, so
            // the next open resumes the job.
            tracing::info!(target: "train::jobs", job = id, "stopped for shutdown; resumes at the next start");
            return;
        }
        // Checkpoints go before the job is marked over, so a terminal job never has any (a
        // crash in between resumes a finished job from scratch: the same outputs again).
        let _ = std::fs::remove_dir_all(job_dir(&self.inner.cfg.datadir, id).join("work"));
        let (status, extra) = match result {
            Ok((stored, metrics, reproduction)) => {
                let r = self.update(id, |j| {
                    j.status = Status::Succeeded;
                    j.result = Some(stored);
                    j.metrics = Some(metrics);
                    j.reproduction = Some(reproduction);
                });
                (r, "done")
            }
            Err(TrainError::Cancelled) => (
                self.update(id, |j| j.status = Status::Cancelled),
                "cancelled",
            ),
            Err(e) => {
                let err = JobError {
                    kind: e.kind().into(),
                    message: e.to_string(),
                };
                tracing::warn!(target: "train::jobs", job = id, error = %e, "job failed");
                (
                    self.update(id, |j| {
                        j.status = Status::Failed;
                        j.error = Some(err);
                    }),
                    "failed",
                )
            }
        };
        if let Ok(job) = status {
            self.emit(id, serde_json::json!({"type": extra, "job": job}));
        }
    }

    /// Runs the job through the [`Pipeline`]: licence and data again (checked at submission;
    /// a restart may come much later), training from its checkpoints, reproduction, outputs
    /// stored. Trainer events update `progress` (and `resumedFrom`), save the record at each
    /// checkpoint, and go out as SSE events.
    async fn train_job(
        &self,
        job: &Job,
        cancel: &Cancel,
    ) -> Result<(Stored, Metrics, Reproduction)> {
        let id = job.id.as_str();
        let req = TrainRequest {
            owner: job.owner,
            datanet: job.datanet_id,
            version: job.version,
            // The base the job was submitted for, under the name it was submitted with.
            base: BaseModel {
                name: job.base_model.id.clone(),
                hash: Some(job.base_model.hash.clone()),
                ..self.base(&job.base_model.hash)?.clone()
            },
            config: job.config.clone(),
        };
        let opts = RunOptions {
            workdir: Some(job_dir(&self.inner.cfg.datadir, id).join("work")),
            base_fit: false,
            cancel: cancel.clone(),
            store: OutputStore::Open(self.inner.store.clone()),
        };
        let (svc, jid) = (self.clone(), id.to_string());
        let mut first_step = true;
        let trained = self
            .inner
            .pipeline
            .run(&req, opts, move |ev| {
                let RunEvent::Train(e) = ev else {
                    return;
                };
                if let Event::Progress {
                    step,
                    total_steps,
                    epoch,
                    loss,
                    tokens_per_sec,
                    eta_secs,
                    ..
                } = &e
                {
                    let p = Progress {
                        step: *step,
                        total_steps: *total_steps,
                        epoch: *epoch,
                        loss: *loss,
                        tokens_per_sec: *tokens_per_sec,
                        eta_secs: *eta_secs,
                    };
                    if let Some(j) = svc.inner.jobs.lock().get_mut(&jid) {
                        j.progress = Some(p);
                        // A run starts at step 1 unless it resumed from a checkpoint.
                        if std::mem::take(&mut first_step) && *step > 1 {
                            j.resumed_from = Some(*step - 1);
                        }
                    }
                }
                if let Event::Checkpoint { .. } = &e
                    && let Some(j) = svc.job(&jid)
                {
                    let _ = svc.save(&j);
                }
                svc.emit(&jid, serde_json::to_value(&e).unwrap_or_default());
            })
            .await?;
        Ok((
            trained.stored,
            trained.manifest.metrics,
            trained.reproduction,
        ))
    }
}
