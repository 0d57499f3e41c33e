//! The training pipeline as `openledger train` drives it (`ReaderConfig::Api` with the
//! user's key, a base given by directory and hashed by the run, the store opened by
//! location, the base fit on): the stages in order, the outputs stored once training is done,
//! and a failure named by its stage with nothing created in the store's place.

use std::path::Path;
use std::sync::Arc;

use eyre::{Result, eyre};
use openledger_datanet::ContentStore;
use openledger_model::content_hash;
use openledger_train::TrainError;
use openledger_train::config::TrainConfig;
use openledger_train::pipeline::{
    BaseModel, Cancel, OutputStore, Pipeline, ReaderConfig, RunError, RunEvent, RunOptions, Stage,
    TrainRequest,
};
use openledger_train::trainer::Event;
use parking_lot::Mutex;

use crate::common::{World, small_model};

fn short_config() -> TrainConfig {
    TrainConfig {
        rank: 4,
        alpha: 8.0,
        max_steps: Some(3),
        batch_size: 4,
        max_seq_len: 64,
        checkpoint_every: 0,
        sketch_dim: 16,
        ..Default::default()
    }
}

fn pipeline(w: &World, account: usize) -> Result<Pipeline> {
    Ok(Pipeline::new(
        &w.devnet.rpc_url(),
        w.registry()?,
        ReaderConfig::Api {
            api: w.api.clone(),
            signer: w.devnet.accounts[account].signer.clone(),
        },
    )?)
}

fn options(store: &Path, cancel: Cancel) -> RunOptions {
    RunOptions {
        workdir: None,
        base_fit: true,
        cancel,
        store: OutputStore::At(store.display().to_string()),
    }
}

/// A short name per event, trainer events collapsed to `train`.
fn name(ev: &RunEvent) -> &'static str {
    match ev {
        RunEvent::Licensed(_) => "licensed",
        RunEvent::RowsRead { .. } => "rows",
        RunEvent::BaseFit(_) => "fit",
        RunEvent::TrainingStarted => "started",
        RunEvent::Resumed { .. } => "resumed",
        RunEvent::Train(_) => "train",
        RunEvent::TrainingEnded => "ended",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_its_stages_in_order_and_stores_the_outputs() -> Result<()> {
    let dir = small_model()?;
    let w = World::start(1, 4).await?;
    let tmp = tempfile::tempdir()?;
    let store_at = tmp.path().join("models");
    let req = TrainRequest {
        owner: w.devnet.accounts[0].address,
        datanet: w.public,
        version: 0,
        base: BaseModel::at(&dir),
        config: short_config(),
    };
    assert_eq!(
        req.base.hash, None,
        "BaseModel::at leaves hashing to the run"
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let trained = pipeline(&w, 0)?
        .run(&req, options(&store_at, Cancel::new()), move |ev| {
            seen.lock().push(ev)
        })
        .await?;
    let events = std::mem::take(&mut *events.lock());

    // Stages in order; every trainer event between the start and the end of training.
    let mut names: Vec<&str> = events.iter().map(name).collect();
    names.dedup();
    assert_eq!(
        names,
        ["licensed", "rows", "fit", "started", "train", "ended"],
        "{events:?}"
    );
    let steps = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Train(Event::Progress { .. })))
        .count();
    assert_eq!(steps, 3, "one progress event per optimizer step");

    // The run hashed the base after loading it and recorded it by directory name.
    let hash = content_hash(&dir)?.0;
    let rows = events.iter().find_map(|e| match e {
        RunEvent::RowsRead {
            version,
            rows,
            base,
        } => Some((version.clone(), *rows, base.clone())),
        _ => None,
    });
    let (version, rows, base) = rows.ok_or_else(|| eyre!("no rows event"))?;
    assert_eq!(base.hash, hash);
    assert_eq!(
        Some(base.id.as_str()),
        dir.file_name().and_then(|n| n.to_str())
    );
    assert_eq!(version, trained.version);
    assert_eq!(rows, 12, "3 contributors × 1 file × 4 rows");
    assert_eq!(trained.base, base);
    assert_eq!(trained.manifest.base_model, base);
    assert!(
        trained.base_fit.is_some(),
        "base_fit asked for, none returned"
    );
    assert_eq!(trained.output.metrics.steps, 3);
    assert!(trained.reproduction.prompts <= 16);

    // The outputs are in the store opened at the location, under the hashes returned.
    let store = ContentStore::open(&store_at.display().to_string())?;
    assert_eq!(
        store.get(&trained.stored.adapter_hash).await?.to_vec(),
        trained.output.adapter.to_blob()?
    );
    let m: serde_json::Value =
        serde_json::from_slice(&store.get(&trained.stored.manifest_hash).await?)?;
    assert_eq!(m["baseModel"]["hash"], serde_json::json!(hash));
    assert_eq!(
        m["adapterHash"],
        serde_json::json!(trained.stored.adapter_hash)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_names_its_stage_and_creates_no_store() -> Result<()> {
    let dir = small_model()?;
    let w = &World::start(1, 2).await?;
    let tmp = tempfile::tempdir()?;
    let store_at = tmp.path().join("models");
    let request = |account: usize, datanet: u64, base: &Path, config: TrainConfig| TrainRequest {
        owner: w.devnet.accounts[account].address,
        datanet,
        version: 0,
        base: BaseModel::at(base),
        config,
    };
    let run = |account: usize, req: TrainRequest, cancel: Cancel| {
        let opts = options(&store_at, cancel);
        async move {
            let events = Arc::new(Mutex::new(Vec::new()));
            let seen = events.clone();
            let r = pipeline(w, account)?
                .run(&req, opts, move |ev| seen.lock().push(name(&ev)))
                .await;
            let events = std::mem::take(&mut *events.lock());
            match r {
                Ok(_) => Err(eyre!("the run succeeded")),
                Err(e) => Ok::<(RunError, Vec<&str>), eyre::Report>((e, events)),
            }
        }
    };

    // No licence for the permissioned Datanet: refused at the licence, nothing reported.
    let (e, events) = run(
        9,
        request(9, w.permissioned, &dir, short_config()),
        Cancel::new(),
    )
    .await?;
    assert_eq!(e.stage, Stage::Licence);
    assert!(matches!(e.error, TrainError::NotLicensed { .. }), "{e:?}");
    assert!(events.is_empty(), "{events:?}");

    // A base directory that is not there: the model's own error, after the licence.
    let (e, events) = run(
        0,
        request(0, w.public, &tmp.path().join("no-base"), short_config()),
        Cancel::new(),
    )
    .await?;
    assert_eq!(e.stage, Stage::LoadBase);
    assert!(matches!(e.error, TrainError::Model(_)), "{e:?}");
    assert_eq!(events, ["licensed"]);

    // Hyper-parameters the base cannot take: refused before any row is read.
    let bad = TrainConfig {
        target_modules: vec!["no_such_proj".into()],
        ..short_config()
    };
    let (e, events) = run(0, request(0, w.public, &dir, bad), Cancel::new()).await?;
    assert_eq!(e.stage, Stage::Validate);
    assert_eq!(e.error.kind(), "invalid_field");
    assert_eq!(events, ["licensed"]);

    // Cancelled before it starts: given up at the licence check.
    let cancel = Cancel::new();
    cancel.fire();
    let (e, events) = run(0, request(0, w.public, &dir, short_config()), cancel).await?;
    assert_eq!(e.stage, Stage::Licence);
    assert!(matches!(e.error, TrainError::Cancelled), "{e:?}");
    assert!(events.is_empty(), "{events:?}");

    // The error reads as the pipeline's own error, and converts back to it.
    let (e, _) = run(
        9,
        request(9, w.permissioned, &dir, short_config()),
        Cancel::new(),
    )
    .await?;
    let text = e.to_string();
    let inner = TrainError::from(e);
    assert_eq!(text, inner.to_string());
    assert_eq!(inner.kind(), "not_licensed");

    // None of these runs trained, so none opened (created) the store.
    assert!(!store_at.exists(), "{} was created", store_at.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_in_the_same_workdir_says_it_resumed_and_whether_anything_was_left() -> Result<()> {
    let dir = small_model()?;
    let w = World::start(1, 4).await?;
    let tmp = tempfile::tempdir()?;
    let store_at = tmp.path().join("models");
    let req = TrainRequest {
        owner: w.devnet.accounts[0].address,
        datanet: w.public,
        version: 0,
        base: BaseModel::at(&dir),
        config: TrainConfig {
            max_steps: Some(4),
            checkpoint_every: 2,
            ..short_config()
        },
    };
    let p = pipeline(&w, 0)?;
    // One run: its events, and its adapter hash (or the error).
    let run = |workdir: &Path, cancel_at_checkpoint: Option<usize>| {
        let cancel = Cancel::new();
        let opts = RunOptions {
            workdir: Some(workdir.to_path_buf()),
            base_fit: false,
            cancel: cancel.clone(),
            store: OutputStore::At(store_at.display().to_string()),
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let (p, req) = (p.clone(), req.clone());
        async move {
            let r = p
                .run(&req, opts, move |ev| {
                    if let RunEvent::Train(Event::Checkpoint { step }) = &ev
                        && Some(*step) == cancel_at_checkpoint
                    {
                        cancel.fire();
                    }
                    seen.lock().push(ev)
                })
                .await;
            let events = std::mem::take(&mut *events.lock());
            (r.map(|t| t.stored.adapter_hash), events)
        }
    };
    let resumed = |events: &[RunEvent]| -> Vec<(usize, usize, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Resumed {
                    step,
                    total_steps,
                    finished,
                } => Some((*step, *total_steps, *finished)),
                _ => None,
            })
            .collect()
    };
    let steps = |events: &[RunEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, RunEvent::Train(Event::Progress { .. })))
            .count()
    };

    // A fresh workdir: trained from scratch, no resume reported.
    let first = tmp.path().join("first");
    let (hash, events) = run(&first, None).await;
    let hash = hash?;
    assert_eq!(resumed(&events), [], "{events:?}");
    assert_eq!(steps(&events), 4);

    // The same inputs in the same workdir: the finished run is reported, nothing trains, and
    // its result comes back.
    let (again, events) = run(&first, None).await;
    assert_eq!(resumed(&events), [(4, 4, true)], "{events:?}");
    assert_eq!(steps(&events), 0, "{events:?}");
    assert_eq!(again?, hash);
    let mut names: Vec<&str> = events.iter().map(name).collect();
    names.dedup();
    assert_eq!(
        names,
        ["licensed", "rows", "started", "resumed", "train", "ended"],
        "the resume is reported after the start, before any training event"
    );

    // A run stopped after its checkpoint at step 2, rerun: resumed at 2 of 4, not finished;
    // it trains the 2 steps left and ends with the same adapter.
    let second = tmp.path().join("second");
    let (r, events) = run(&second, Some(2)).await;
    assert!(
        matches!(&r, Err(e) if matches!(e.error, TrainError::Cancelled)),
        "{r:?}"
    );
    assert_eq!(resumed(&events), []);
    let (r, events) = run(&second, None).await;
    assert_eq!(resumed(&events), [(2, 4, false)], "{events:?}");
    assert_eq!(steps(&events), 2);
    assert_eq!(r?, hash);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_run_that_stopped_early_trains_nothing_more() -> Result<()> {
    let dir = small_model()?;
    let w = World::start(1, 4).await?;
    let tmp = tempfile::tempdir()?;
    // Every epoch after the first counts as no improvement: the run stops after epoch 1,
    // with a checkpoint at that very step.
    let req = TrainRequest {
        owner: w.devnet.accounts[0].address,
        datanet: w.public,
        version: 0,
        base: BaseModel::at(&dir),
        config: TrainConfig {
            max_steps: None,
            epochs: 5,
            early_stopping_patience: Some(1),
            early_stopping_min_delta: 10.0,
            checkpoint_every: 1,
            ..short_config()
        },
    };
    let p = pipeline(&w, 0)?;
    let workdir = tmp.path().join("work");
    let run = || {
        let opts = RunOptions {
            workdir: Some(workdir.clone()),
            base_fit: false,
            cancel: Cancel::new(),
            store: OutputStore::At(tmp.path().join("models").display().to_string()),
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let (p, req) = (p.clone(), req.clone());
        async move {
            let t = p.run(&req, opts, move |ev| seen.lock().push(ev)).await?;
            let events = std::mem::take(&mut *events.lock());
            Ok::<_, eyre::Report>((t, events))
        }
    };
    let (first, _) = run().await?;
    let m = &first.output.metrics;
    assert!(m.stopped_early, "{m:?}");
    assert_eq!(m.epochs.len(), 2, "stopped after epoch 1: {m:?}");

    let (again, events) = run().await?;
    let resumed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Resumed { step, finished, .. } => Some((*step, *finished)),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, [(m.steps, true)], "{events:?}");
    let trained = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Train(Event::Progress { .. })))
        .count();
    assert_eq!(trained, 0, "a finished early stop trained on when resumed");
    assert_eq!(again.output.metrics, first.output.metrics);
    assert_eq!(again.stored.adapter_hash, first.stored.adapter_hash);
    Ok(())
}
