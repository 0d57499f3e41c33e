//! The engine: one dedicated OS thread that owns the [`Scheduler`], the base model and every
//! running sequence, and runs one forward pass per step over all of them, whatever their
//! adapters. Requests arrive through a channel from cloneable [`EngineHandle`]s; tokens go
//! back through each request's own channel. A request whose receiver is gone (the client
//! disconnected) is removed before the next step, which frees its slot at once.

use alloy_primitives::B256;
use openledger_model::profile::{self, Phase};
use openledger_model::{
    BatchAdapters, FinishReason, LoraAdapter, Model, SamplingParams, SeqStep, Sequence,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ServeError;
use crate::metrics::{Metrics, inc};
use crate::scheduler::{BatchItem, Scheduler, SchedulerConfig, SeqId, Work};

/// What the engine tells a request.
#[derive(Clone, Debug)]
pub enum Event {
    /// A token was produced; `text` is the newly visible text (may be empty).
    Token {
        /// Token id.
        id: u32,
        /// Text delta.
        text: String,
    },
    /// The request finished.
    Done(Finished),
    /// The request failed inside the engine.
    Failed(String),
}

/// The end of a request.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Why it stopped.
    pub reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Completion tokens (a stop token included).
    pub completion: Vec<u32>,
    /// Completion text (cut before a stop string).
    pub text: String,
}

/// A slot in the server: taken before a request is accepted, released when it ends.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request for the engine.
pub struct Job {
    /// Unique id.
    pub id: SeqId,
    /// Scheduler key of the adapter (fairness): the adapter hash, ZERO for the base.
    pub key: B256,
    /// The adapter, pinned for the request's life.
    pub adapter: Option<Arc<LoraAdapter>>,
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// Sampling.
    pub params: SamplingParams,
    /// Where events go.
    pub events: UnboundedSender<Event>,
    /// Arrival time (for time to first token).
    pub arrived: Instant,
    /// The request's slot.
    pub permit: Permit,
}

enum Command {
    Submit(Box<Job>),
    Shutdown,
}

/// A cloneable way to reach the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    inflight: Arc<AtomicUsize>,
    limit: usize,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("inflight", &self.inflight.load(Ordering::Relaxed))
            .field("limit", &self.limit)
            .finish()
    }
}

impl EngineHandle {
    /// Takes a slot, or refuses with 429 when `max_running + max_waiting` are taken.
    pub fn reserve(&self) -> Result<Permit, ServeError> {
        let n = self.inflight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(self.inflight.clone());
        if n >= self.limit {
            return Err(ServeError::Overloaded(n));
        }
        Ok(permit)
    }

    /// Requests holding a slot.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// A fresh sequence id.
    pub fn next_id(&self) -> SeqId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a job to the engine thread.
    pub fn submit(&self, job: Job) -> Result<(), ServeError> {
        self.tx
            .send(Command::Submit(Box::new(job)))
            .map_err(|_| ServeError::ShuttingDown)
    }

    /// Asks the engine thread to stop (requests in flight fail).
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

struct Active {
    job: Job,
    seq: Sequence,
    last_token: Option<Instant>,
}

/// What the engine computes with.
pub struct EngineParts {
    /// The base model.
    pub model: Arc<Model>,
    /// Its tokenizer (text deltas and stop strings need it).
    pub tokenizer: Option<Tokenizer>,
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
}

/// Starts the engine thread.
pub fn spawn(parts: EngineParts) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let limit = parts.scheduler.max_running + parts.scheduler.max_waiting;
    let handle = EngineHandle {
        tx,
        inflight: Arc::new(AtomicUsize::new(0)),
        limit,
        next_id: Arc::new(AtomicU64::new(1)),
    };
    let thread = std::thread::Builder::new()
        .name("openlora-engine".into())
        .spawn(move || run(parts, rx))?;
    Ok((handle, thread))
}

fn run(parts: EngineParts, rx: mpsc::Receiver<Command>) {
    // Admission is decided by the handles' permits (max_running + max_waiting); a request
    // that holds one is never refused here, even before the scheduler admits others.
    let mut sched = Scheduler::new(SchedulerConfig {
        max_waiting: parts.scheduler.max_running + parts.scheduler.max_waiting,
        ..parts.scheduler.clone()
    });
    let mut active: HashMap<SeqId, Active> = HashMap::new();
    let m = parts.metrics.clone();
    loop {
        if sched.is_idle() {
            match rx.recv() {
                Ok(c) => {
                    if !accept(c, &parts, &mut sched, &mut active) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        while let Ok(c) = rx.try_recv() {
            if !accept(c, &parts, &mut sched, &mut active) {
                for (_, a) in active.drain() {
                    let _ = a
                        .job
                        .events
                        .send(Event::Failed("server shutting down".into()));
                }
                return;
            }
        }
        let timer = profile::time(Phase::Engine);
        let gone: Vec<SeqId> = active
            .iter()
            .filter(|(_, a)| a.job.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            sched.remove(id);
            active.remove(&id);
            inc(&m.requests_cancelled);
            tracing::debug!(target: "serve::engine", id, "client gone; slot freed");
        }
        let batch = sched.next_batch(parts.scheduler.max_batch_tokens);
        m.queue_depth
            .store(sched.waiting() as u64, Ordering::Relaxed);
        m.running.store(sched.running() as u64, Ordering::Relaxed);
        if batch.is_empty() {
            continue;
        }
        let mut items: Vec<(BatchItem, Active)> = batch
            .into_iter()
            .filter_map(|it| active.remove(&it.id).map(|a| (it, a)))
            .collect();
        drop(timer);
        let res =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&parts, &mut items)));
        let _t = profile::time(Phase::Engine);
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("the engine step panicked (a bug)".to_string()),
        };
        for (it, a) in items {
            if let Some(e) = &err {
                tracing::warn!(target: "serve::engine", id = it.id, error = %e, "step failed");
                let _ = a.job.events.send(Event::Failed(e.clone()));
                sched.remove(it.id);
            } else if let Some(reason) = a.seq.finish.clone() {
                let _ = a.job.events.send(Event::Done(Finished {
                    reason,
                    prompt_tokens: a.job.prompt.len(),
                    completion: a.seq.generated().to_vec(),
                    text: a.seq.text().to_string(),
                }));
                sched.remove(it.id);
            } else {
                active.insert(it.id, a);
            }
        }
    }
}

/// Handles one command; false on shutdown.
fn accept(
    c: Command,
    parts: &EngineParts,
    sched: &mut Scheduler,
    active: &mut HashMap<SeqId, Active>,
) -> bool {
    let job = match c {
        Command::Submit(job) => job,
        Command::Shutdown => return false,
    };
    let seq = match Sequence::new(&parts.model, &job.prompt, &job.params, None) {
        Ok(s) => s,
        Err(e) => {
            let _ = job.events.send(Event::Failed(e.to_string()));
            return true;
        }
    };
    if let Err(e) = sched.push(job.id, job.key, job.prompt.len()) {
        let _ = job.events.send(Event::Failed(e.to_string()));
        return true;
    }
    active.insert(
        job.id,
        Active {
            job: *job,
            seq,
            last_token: None,
        },
    );
    true
}

/// One forward pass over every item of the batch, then sampling for the items that end a
/// prompt or decode.
fn step(parts: &EngineParts, items: &mut [(BatchItem, Active)]) -> Result<(), String> {
    let e = |e: openledger_model::Error| e.to_string();
    let timer = profile::time(Phase::Engine);
    let m = &parts.metrics;
    let mut adapters: Vec<Arc<LoraAdapter>> = Vec::new();
    let mut index: HashMap<B256, usize> = HashMap::new();
    let mut per_seq = Vec::with_capacity(items.len());
    let mut tokens: Vec<Vec<u32>> = Vec::with_capacity(items.len());
    for (it, a) in items.iter() {
        per_seq.push(a.job.adapter.as_ref().map(|ad| {
            *index.entry(a.job.key).or_insert_with(|| {
                adapters.push(ad.clone());
                adapters.len() - 1
            })
        }));
        tokens.push(match it.work {
            Work::Prefill { start, len, .. } => a.job.prompt[start..start + len].to_vec(),
            Work::Decode => a.seq.generated().last().copied().into_iter().collect(),
        });
    }
    let n_tokens: usize = tokens.iter().map(Vec::len).sum();
    m.batch_size.observe(items.len() as f64);
    m.adapters_per_batch.observe(adapters.len() as f64);
    m.batch_tokens.observe(n_tokens as f64);
    let ba = BatchAdapters::new(adapters, per_seq).map_err(e)?;
    drop(timer);
    let logits = {
        let mut steps: Vec<SeqStep> = items
            .iter_mut()
            .zip(&tokens)
            .map(|((_, a), t)| SeqStep {
                tokens: t,
                cache: &mut a.seq.cache,
            })
            .collect();
        let logits = parts.model.forward_step(&mut steps, &ba).map_err(e)?;
        let _t = profile::time(Phase::Sample);
        logits
            .to_dtype(openledger_model::DType::F32)
            .and_then(|l| l.to_vec2::<f32>())
            .map_err(|err| e(err.into()))?
    };
    let _t = profile::time(Phase::Sample);
    let max_pos = parts.model.config().max_position_embeddings;
    let now = Instant::now();
    for (((it, a), row), fed) in items.iter_mut().zip(&logits).zip(&tokens) {
        if let Work::Prefill { last, .. } = it.work {
            m.tokens_in.fetch_add(fed.len() as u64, Ordering::Relaxed);
            if !last {
                continue;
            }
        }
        let out = a
            .seq
            .accept(row, parts.tokenizer.as_ref(), max_pos)
            .map_err(e)?;
        inc(&m.tokens_out);
        match a.last_token {
            None => m.ttft.observe((now - a.job.arrived).as_secs_f64()),
            Some(t) => m.itl.observe((now - t).as_secs_f64()),
        }
        a.last_token = Some(now);
        let _ = a.job.events.send(Event::Token {
            id: out.id,
            text: out.text_delta,
        });
    }
    Ok(())
}
