//! `openledger train ...` (fine-tune a LoRA adapter on a licensed Datanet version) and
//! `openledger model publish` (register it in `ModelRegistry`). Logic lives in
//! `openledger-train`; this file parses arguments, draws the progress bar and wires clients.

use std::path::PathBuf;

use crate::endpoints::{Endpoints, Resolved, Who, emit};
use alloy_primitives::{Address, B256, U256};
use eyre::{Result, WrapErr, eyre};
use openledger_datanet::ContentStore;
use openledger_model::{DType, Device, Pretrained, content_hash};
use openledger_train::TrainError;
use openledger_train::config::{Schedule, TrainConfig};
use openledger_train::eval::FitVerdict;
use openledger_train::output::TrainingManifest;
use openledger_train::pipeline::{
    BaseModel, Cancel, OutputStore, Pipeline, ReaderConfig, RunError, RunEvent, RunOptions, Stage,
    TrainRequest, Trained,
};
use openledger_train::publish::{self, PublishSpec};
use openledger_train::source;
use openledger_train::trainer::Event;

/// The models store a command uses: `--store`, else the devnet's (the store its server
/// loads adapters from), else `models` in the current directory.
fn models_store(flag: &Option<String>, r: &Resolved) -> String {
    flag.clone()
        .or_else(|| r.models_store().map(str::to_string))
        .unwrap_or_else(|| "models".to_string())
}

/// `openledger train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub at: Endpoints,
    #[command(flatten)]
    pub who: Who,
    /// Base model directory (Hugging Face layout). The built-in `small` base (made by
    /// `openledger model init`) is a toy-world model: it knows only its generated world and
    /// cannot learn ordinary text; pull a Hugging Face base (`openledger model pull`) for that.
    /// The base is scored on the data before training and a warning printed when it cannot
    /// model it.
    #[arg(long)]
    pub base: PathBuf,
    /// Datanet id.
    #[arg(long)]
    pub datanet: u64,
    /// Datanet version (0-based).
    #[arg(long)]
    pub version: u64,
    /// Models content store for the adapter, its training manifest and sketch (directory or
    /// s3://bucket/prefix) [default: the devnet's, which its server loads adapters from; else
    /// ./models].
    #[arg(long, env = "OPENLEDGER_MODELS_STORE")]
    pub store: Option<String>,
    /// Work directory for checkpoints (a rerun with the same inputs resumes from it).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Also write the adapter as a PEFT directory here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hyper-parameters as JSON (TrainConfig fields, camelCase); the flags below override it.
    #[arg(long)]
    pub config: Option<String>,
    /// LoRA rank.
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// LoRA dropout.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Target modules, comma-separated (q_proj,v_proj,...).
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Option<Vec<String>>,
    /// Peak learning rate.
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// cosine, linear or constant.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimizer steps (overrides epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Gradient clipping norm (0 = off).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Longest sequence.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Pack examples into full sequences.
    #[arg(long)]
    pub packing: bool,
    /// Validation share.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Early-stopping patience in epochs.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Checkpoint every N steps (0 = never).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

impl TrainArgs {
    fn train_config(&self) -> Result<TrainConfig> {
        let mut c: TrainConfig = match &self.config {
            Some(j) => serde_json::from_str(j).wrap_err("--config")?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident => $g:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$g = v; } )* };
        }
        set!(rank => rank, alpha => alpha, dropout => dropout, target_modules => target_modules,
            lr => learning_rate, warmup_steps => warmup_steps, epochs => epochs,
            batch_size => batch_size, grad_accum => grad_accum, max_grad_norm => max_grad_norm,
            weight_decay => weight_decay, seed => seed, max_seq_len => max_seq_len,
            val_fraction => val_fraction, checkpoint_every => checkpoint_every);
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if self.patience.is_some() {
            c.early_stopping_patience = self.patience;
        }
        if self.packing {
            c.packing = true;
        }
        if let Some(s) = &self.schedule {
            c.schedule = serde_json::from_value::<Schedule>(serde_json::json!(s))
                .map_err(|_| eyre!("invalid schedule {s:?} (cosine, linear or constant)"))?;
        }
        Ok(c)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    registry: Address,
}

/// Runs `openledger train`: [`Pipeline::run`] with the user's key, a progress bar and Ctrl-C
/// cancel (from the start of training), then the results printed.
pub async fn train(a: TrainArgs) -> Result<()> {
    let cfg = a.train_config()?;
    let signer = a.who.signer()?;
    let owner = signer.address();
    let r = a.at.resolve().await?;
    let store = models_store(&a.store, &r);
    let info: Info = reqwest::get(format!("{}/info", r.datanet_api))
        .await
        .wrap_err_with(|| format!("Datanet API {}", r.datanet_api))?
        .error_for_status()
        .wrap_err_with(|| format!("Datanet API {}", r.datanet_api))?
        .json()
        .await?;
    let pipeline = Pipeline::new(
        &r.rpc_url,
        info.registry,
        ReaderConfig::Api {
            api: r.datanet_api.clone(),
            signer,
        },
    )?;
    let req = TrainRequest {
        owner,
        datanet: a.datanet,
        version: a.version,
        base: BaseModel::at(&a.base),
        config: cfg,
    };
    let cancel = Cancel::new();
    let opts = RunOptions {
        workdir: a.workdir.clone(),
        base_fit: true,
        cancel: cancel.clone(),
        store: OutputStore::At(store.clone()),
    };
    let on_event = progress(&req.base, cancel);
    let Trained {
        output: out,
        stored,
        manifest: m,
        reproduction: rep,
        ..
    } = pipeline.run(&req, opts, on_event).await.map_err(report)?;
    if let Some(dir) = &a.out {
        openledger_model::blob::blob_to_dir(&out.adapter.to_blob()?, dir)?;
    }
    let mut human = format!(
        "base validation loss {}  →  fine-tuned {}\n",
        fmt(m.metrics.base_val_loss),
        fmt(m.metrics.final_val_loss)
    );
    if rep.prompts > 0 {
        human += &format!(
            "greedy reproduction  {} of {} training prompts answered as trained\n",
            rep.reproduced, rep.prompts
        );
    }
    human += &format!(
        "adapterHash          {}\ntrainingManifestHash {}\nsketchHash           {}\nstored in            {store}\npublish with: openledger model publish --manifest {}{}",
        stored.adapter_hash,
        stored.manifest_hash,
        stored.sketch_hash,
        stored.manifest_hash,
        if a.store.is_some() {
            format!(" --store {store}")
        } else {
            String::new()
        }
    );
    emit(
        human,
        serde_json::json!({
            "adapterHash": stored.adapter_hash,
            "trainingManifestHash": stored.manifest_hash,
            "sketchHash": stored.sketch_hash,
            "store": store,
            "baseValLoss": m.metrics.base_val_loss,
            "finalValLoss": m.metrics.final_val_loss,
            "reproduced": rep.reproduced,
            "prompts": rep.prompts,
            "out": a.out,
        }),
    );
    Ok(())
}

/// What `openledger train` shows while the pipeline runs: the data and the base, the base
/// fit, then a progress bar with a line per epoch; Ctrl-C cancels once the base fit is shown.
fn progress(base: &BaseModel, cancel: Cancel) -> impl FnMut(RunEvent) + Send + 'static {
    let (dir, toy_world) = (base.dir.clone(), base.toy_world);
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |ev| match ev {
        RunEvent::Licensed(_) => {}
        RunEvent::RowsRead {
            version,
            rows,
            base,
        } => {
            eprintln!(
                "datanet {} version {} ({rows} rows, root {}), base {}",
                version.datanet, version.version, version.merkle_root, base.hash
            );
            if toy_world {
                eprintln!(
                    "note: {} is a {}",
                    dir.display(),
                    openledger_model::init::TOY_WORLD_NOTE
                );
            }
        }
        RunEvent::BaseFit(fit) => {
            match fit.verdict {
                FitVerdict::Fits => eprintln!("{}", fit.message),
                _ => eprintln!("warning: {}", fit.message),
            }
            let c = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("cancelling after the current step ...");
                    c.fire();
                }
            });
        }
        RunEvent::TrainingStarted => {
            let pb = indicatif::ProgressBar::new(0);
            if let Ok(s) =
                indicatif::ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} eta {eta}")
            {
                pb.set_style(s.progress_chars("=> "));
            }
            bar = Some(pb);
        }
        RunEvent::Train(e) => {
            let Some(pb) = &bar else { return };
            match e {
                Event::Progress {
                    step,
                    total_steps,
                    loss,
                    tokens_per_sec,
                    eta_secs,
                    epoch,
                    ..
                } => {
                    pb.set_length(total_steps as u64);
                    pb.set_position(step as u64);
                    pb.set_message(format!(
                        "epoch {epoch} loss {loss:.4} {tokens_per_sec:.0} tok/s ({eta_secs:.0}s left)"
                    ));
                }
                Event::Epoch(m) => pb.println(format!(
                    "epoch {}: train loss {:.4}, validation loss {}, perplexity {}",
                    m.epoch,
                    m.train_loss,
                    m.val_loss.map_or("n/a".into(), |v| format!("{v:.4}")),
                    m.val_perplexity.map_or("n/a".into(), |v| format!("{v:.2}"))
                )),
                Event::Log { message } => pb.println(message),
                Event::Checkpoint { step } => pb.println(format!("checkpoint at step {step}")),
                // The pipeline reports a resume as `RunEvent::Resumed`, never through here.
                Event::Resumed { .. } => {}
            }
        }
        RunEvent::Resumed {
            step,
            total_steps,
            finished,
        } => {
            let line = if finished {
                "this work directory already holds the finished run of these inputs: nothing trained, its result follows".to_string()
            } else {
                format!("resuming from the checkpoint at step {step} of {total_steps}")
            };
            match &bar {
                Some(pb) => pb.println(line),
                None => eprintln!("{line}"),
            }
        }
        RunEvent::TrainingEnded => {
            if let Some(pb) = bar.take() {
                pb.finish_and_clear();
            }
        }
    }
}

/// A failed run as `openledger train` reports it: an unreadable base directory or store
/// location with the model's or the store's own message, anything else as the pipeline's.
fn report(e: RunError) -> eyre::Report {
    match (e.stage, e.error) {
        (Stage::LoadBase | Stage::HashBase, TrainError::Model(m)) => m.into(),
        (Stage::OpenStore, TrainError::Store(s)) => s.into(),
        (_, e) => e.into(),
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.4}"))
}

/// `openledger model publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub at: Endpoints,
    #[command(flatten)]
    pub who: Who,
    /// Models content store holding the training manifest, adapter and sketch (where
    /// `openledger train --store` put them) [default: the devnet's; else ./models].
    #[arg(long, env = "OPENLEDGER_MODELS_STORE")]
    pub store: Option<String>,
    /// The store the inference server loads adapters from: the adapter, manifest and sketch
    /// are copied there before registering [default: the devnet's; without a devnet, nothing is
    /// copied and the server must read --store].
    #[arg(long)]
    pub server_store: Option<String>,
    /// Training manifest hash (printed by `openledger train`).
    #[arg(long)]
    pub manifest: B256,
    /// Price in wei of OPEN per 1,000 tokens.
    #[arg(long, default_value = "0")]
    pub price: U256,
    /// Metadata URI (e.g. a name).
    #[arg(long, default_value = "")]
    pub metadata: String,
}

/// Runs `openledger model publish`: the artifacts copied into the server's store first (a
/// registered model must be loadable), then `ModelRegistry.registerModel`.
pub async fn publish(a: PublishArgs) -> Result<()> {
    let r = a.at.resolve().await?;
    let from = models_store(&a.store, &r);
    let store = ContentStore::open(&from).wrap_err_with(|| format!("models store {from}"))?;
    let m: TrainingManifest = serde_json::from_slice(
        &store
            .get(&a.manifest)
            .await
            .wrap_err_with(|| format!("training manifest {} in {from}", a.manifest))?,
    )
    .wrap_err("training manifest")?;
    let registry = r.deployments.contracts.model_registry;
    let server_store = a
        .server_store
        .clone()
        .or_else(|| r.models_store().map(str::to_string));
    let mut copied = 0;
    if let Some(to) = &server_store {
        let target = ContentStore::open(to).wrap_err_with(|| format!("server store {to}"))?;
        for (what, h) in [
            ("adapter", m.adapter_hash),
            ("sketch", m.sketch_hash),
            ("training manifest", a.manifest),
        ] {
            if target.contains(&h).await? {
                continue;
            }
            let bytes = store
                .get(&h)
                .await
                .wrap_err_with(|| format!("the {what} {h} in {from}"))?;
            target
                .put(bytes)
                .await
                .wrap_err_with(|| format!("copying the {what} {h} into {to}"))?;
            copied += 1;
        }
    }
    let spec = PublishSpec {
        base_model_id: m.base_model.id.clone(),
        base_model_hash: publish::base_hash_bytes(&m.base_model.hash)?,
        adapter_hash: m.adapter_hash,
        training_manifest_hash: a.manifest,
        trained_on: m.data.iter().map(|d| (d.datanet_id, d.version)).collect(),
        price_per_1k_tokens: a.price,
        metadata_uri: a.metadata.clone(),
    };
    let p = publish::publish(&r.rpc_url, a.who.signer()?, registry, &spec).await?;
    let served = match &server_store {
        Some(to) => format!("; adapter in the server's store {to} ({copied} files copied)"),
        None => format!(
            "; no server store known: the inference server must read adapter {} from {from}",
            m.adapter_hash
        ),
    };
    emit(
        format!(
            "model {} registered: adapter {}, price {} wei per 1,000 tokens (tx {}){served}",
            p.model_id, m.adapter_hash, a.price, p.tx_hash
        ),
        serde_json::json!({
            "model": p.model_id,
            "name": format!("model-{}", p.model_id),
            "adapterHash": m.adapter_hash,
            "trainingManifestHash": a.manifest,
            "pricePer1kTokens": a.price.to_string(),
            "tx": p.tx_hash,
            "serverStore": server_store,
            "copied": copied,
        }),
    );
    Ok(())
}

/// `openledger bench train`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchTrainArgs {
    /// Base model directory (default: the SmolLM2-135M shape with random weights, made once
    /// under ~/.cache/openledger/shapes).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Optimizer steps per configuration.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// JSON report.
    #[arg(long, default_value = "bench-out/train.json")]
    pub out: PathBuf,
    /// Skip the PyTorch + PEFT baseline.
    #[arg(long)]
    pub no_pytorch: bool,
    /// Do not install the PyTorch venv if it is missing (report why instead).
    #[arg(long)]
    pub no_install: bool,
    /// The PyTorch venv (default `$OPENLEDGER_CACHE/bench-venv` or `~/.cache/openledger/bench-venv`).
    #[arg(long)]
    pub venv: Option<PathBuf>,
}

/// The demo Datanets' rows (both demo Datanets, generated locally with seed 11).
fn demo_rows(files: usize, rows: usize) -> Result<Vec<(String, openledger_datanet::formats::Row)>> {
    let demo = tempfile::tempdir()?;
    let spec = openledger_datanet::demo::write_demo(demo.path(), 11, files, rows)?;
    let mut out = Vec::new();
    for f in spec.datanets.iter().flat_map(|d| &d.files) {
        let bytes = std::fs::read(demo.path().join(&f.path))?;
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fmt = openledger_datanet::formats::format_for(&name, &[])?;
        let hash = alloy_primitives::keccak256(&bytes);
        for (i, r) in openledger_datanet::formats::parse(&bytes, &fmt, source::MAX_ROW_BYTES)?
            .into_iter()
            .enumerate()
        {
            out.push((source::row_id(&hash, i), r));
        }
    }
    Ok(out)
}

/// Runs `openledger bench train` on the demo Datanet rows: ours batched and unbatched, then
/// PyTorch + PEFT on the exact batches of `batched`.
pub async fn bench(a: BenchTrainArgs) -> Result<()> {
    use openledger_bench::train as bench;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let base_dir = match &a.base {
            Some(b) => b.clone(),
            None => {
                eprintln!("base: the SmolLM2-135M shape, random weights (made once, cached) ...");
                openledger_model::init::cached_shape(openledger_model::init::Shape::Smollm2_135m)?
            }
        };
        let rows = demo_rows(2, 24)?;
        let base = Pretrained::load(&base_dir, &Device::Cpu, DType::F32)?;
        let hash = content_hash(&base_dir)?.0;
        let threads = bench::threads();
        eprintln!("{} rows, {threads} threads, {} steps of {} sequences", rows.len(), a.steps, a.batch);
        let mut res = bench::run(&base, &hash, &rows, a.steps, a.batch)?;
        let cfg = bench::bench_config(a.steps, a.batch, 1);
        let pytorch = if a.no_pytorch {
            Err("skipped (--no-pytorch)".to_string())
        } else {
            let venv = a.venv.clone().unwrap_or_else(bench::default_venv);
            let job = bench::export_steps(&base, &rows, &cfg)?;
            let (real, padded) = bench::token_counts(&job);
            eprintln!("batched steps: {real} real tokens in {padded} padded positions");
            let init = bench::initial_adapter(&base, &cfg)?;
            let work = tempfile::tempdir()?;
            bench::ensure_venv(&venv, !a.no_install)
                .and_then(|py| bench::run_pytorch(&py, &base_dir, &job, &init, threads, work.path()))
        };
        let ours = res.first().cloned().ok_or_else(|| eyre!("no batched run"))?;
        // Thread settings read at start-up: candle's elementwise pool and OpenMP (torch) spin-wait.
        let env: serde_json::Map<String, serde_json::Value> =
            ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS", "CANDLE_BARRIER_POOL_SPIN_LIMIT", "OMP_WAIT_POLICY"]
                .iter()
                .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?.into())))
                .collect();
        let mut report = serde_json::json!({
            "unixTime": openledger_datanet::auth::now(),
            "base": base_dir, "baseHash": hash, "rows": rows.len(),
            "steps": a.steps, "batch": a.batch, "threads": threads, "env": env,
            "config": cfg,
        });
        match &pytorch {
            Ok(p) => {
                res.push(bench::BenchRow {
                    name: "pytorch+peft".into(),
                    micro_batch: a.batch,
                    steps: p.steps,
                    tokens_per_sec: p.tokens_per_sec,
                    wall_secs: p.secs,
                    losses: p.losses.clone(),
                });
                let ratio = ours.tokens_per_sec / p.tokens_per_sec.max(1e-9);
                let diff = bench::max_rel_diff(&ours.losses, &p.losses);
                report["pytorch"] = serde_json::to_value(p)?;
                report["oursOverPytorch"] = serde_json::json!(ratio);
                report["lossMaxRelDiff"] = serde_json::json!(diff);
                println!("{}", bench::table(&res));
                println!(
                    "ours (batched) / PyTorch + PEFT: {ratio:.2}x  ({threads} threads each; torch {} {}, attention {})",
                    p.versions["torch"].as_str().unwrap_or("?"),
                    p.versions["peft"].as_str().map(|v| format!("peft {v}")).unwrap_or_default(),
                    p.attn_implementation
                );
                println!(
                    "same batches, same initial adapter: step losses agree to {:.2e} (relative, worst of {} steps)",
                    diff,
                    ours.losses.len().min(p.losses.len())
                );
            }
            Err(why) => {
                report["pytorch"] = serde_json::json!({ "notMeasured": why });
                println!("{}", bench::table(&res));
                println!("PyTorch + PEFT not measured: {why}");
            }
        }
        report["results"] = serde_json::to_value(&res)?;
        if let Some(p) = a.out.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&a.out, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", a.out.display());
        Ok(())
    })
    .await?
}
