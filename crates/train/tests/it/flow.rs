//! The acceptance flow on the demo Datanets with the `small` base model: licence, bad input,
//! quality (validation loss, reproduction rate), outputs in the store, determinism.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use alloy_primitives::U256;
use eyre::{Result, eyre};
use openledger_datanet::ContentStore;
use openledger_model::{DType, Device, LoraAdapter, Pretrained, content_hash};
use openledger_train::config::TrainConfig;
use openledger_train::output::{self, BaseModelRef};
use openledger_train::publish::{self, PublishSpec};
use openledger_train::source::{self, Reader};
use openledger_train::{TrainError, eval, trainer};

use crate::common::{World, client, small_model};

/// The demo fine-tune of this test, kept explicit (not `TrainConfig::default()`) so the quality
/// bars below stay pinned to the measured setting the README's figures come from (2026-11-24):
/// rank 8, alpha 16, lr 5e-3, where the recommended recipe (the defaults) is rank 16, alpha 32,
/// lr 2e-3 — in the recipe sweep both clear these bars (64 and 76 of 94 prompts over three
/// seeds). Also its own: a larger validation share (0.15) so the loss comparison has enough
/// held-out rows, `maxSeqLen` 96 (every demo row fits), seed 3, no checkpoints and small
/// sketches (this test measures quality, not resume or attribution).
pub fn quality_config() -> TrainConfig {
    TrainConfig {
        rank: 8,
        alpha: 16.0,
        learning_rate: 5e-3,
        warmup_steps: 5,
        epochs: 50,
        batch_size: 4,
        val_fraction: 0.15,
        max_seq_len: 96,
        seed: 3,
        checkpoint_every: 0,
        sketch_dim: 64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licence_and_bad_input_are_refused_before_reading() -> Result<()> {
    let w = World::start(1, 4).await?;
    let p = source::provider(&w.devnet.rpc_url())?;
    let reg = w.registry()?;
    let stranger = w.devnet.accounts[9].address;
    // Permissioned Datanet, no licence → NotLicensed (403) from chain state alone.
    let e = source::check_access(&p, reg, stranger, w.permissioned, 0).await;
    assert!(matches!(e, Err(TrainError::NotLicensed { .. })), "{e:?}");
    assert_eq!(e.err().map(|e| e.status()), Some(403));
    // The owner and a licence holder may; a public Datanet is open to anyone.
    let owner = w.devnet.accounts[4].address;
    source::check_access(&p, reg, owner, w.permissioned, 0).await?;
    client(&w.devnet, &w.api, 9)
        .await?
        .buy_licence(w.permissioned)
        .await?;
    source::check_access(&p, reg, stranger, w.permissioned, 0).await?;
    source::check_access(&p, reg, stranger, w.public, 0).await?;
    // Unknown Datanet / version.
    let e = source::check_access(&p, reg, stranger, 999, 0).await;
    assert!(matches!(e, Err(TrainError::DatanetNotFound(999))), "{e:?}");
    let e = source::check_access(&p, reg, stranger, w.public, 7).await;
    assert!(
        matches!(e, Err(TrainError::VersionNotFound { version: 7, .. })),
        "{e:?}"
    );
    assert_eq!(e.err().map(|e| e.status()), Some(404));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fine_tune_beats_the_base_model_and_reproduces_answers() -> Result<()> {
    let dir = small_model()?;
    let w = World::start(2, 12).await?;
    let p = source::provider(&w.devnet.rpc_url())?;
    let v =
        source::check_access(&p, w.registry()?, w.devnet.accounts[0].address, w.public, 0).await?;
    let rows = source::read_rows(&p, &Reader::Api(client(&w.devnet, &w.api, 0).await?), &v).await?;
    assert_eq!(rows.len(), 72);
    let base = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
    let hash = content_hash(&dir)?.0;
    let cfg = quality_config();
    let never = AtomicBool::new(false);
    let t0 = std::time::Instant::now();
    let out = trainer::train(&base, &hash, &rows, &cfg, None, &never, &mut |_| {})?;
    let secs = t0.elapsed().as_secs_f64();
    let m = &out.metrics;
    let (b, f) = (
        m.base_val_loss.ok_or_else(|| eyre!("no base val loss"))?,
        m.final_val_loss.ok_or_else(|| eyre!("no final val loss"))?,
    );
    let adapter = Arc::new(out.adapter.clone());
    let train_rows: Vec<_> = rows
        .iter()
        .filter(|(id, _)| out.train_rows.contains(id))
        .cloned()
        .collect();
    let rep = eval::reproduction(&base, Some(adapter.clone()), &train_rows, 64)?;
    let rep_base = eval::reproduction(&base, None, &train_rows, 64)?;
    println!(
        "validation loss: base {b:.4} (ppl {:.1}) → fine-tuned {f:.4} (ppl {:.1}); {} steps, {} tokens in {secs:.1}s; \
         greedy reproduction {}/{} = {:.0}% (base model {}/{})",
        b.exp(),
        f.exp(),
        m.steps,
        m.tokens,
        rep.reproduced,
        rep.prompts,
        rep.rate() * 100.0,
        rep_base.reproduced,
        rep_base.prompts
    );
    assert!(
        f < 0.6 * b,
        "validation loss {f} not well below the base model's {b}"
    );
    // The demo facts are new to the base model (it reproduces almost none), and the adapter
    // reproduces most of them.
    assert!(
        rep.rate() > 0.5,
        "greedy reproduction {}/{} is not most",
        rep.reproduced,
        rep.prompts
    );
    assert!(
        rep_base.reproduced * 4 < rep.reproduced,
        "{rep_base:?} vs {rep:?}"
    );
    assert_eq!(out.sketch.len(), out.train_rows.len());

    // Outputs in the store: the adapter blob hash is the manifest's adapterHash and loads back.
    let store_dir = tempfile::tempdir()?;
    let store = ContentStore::open(&store_dir.path().display().to_string())?;
    let base_ref = BaseModelRef {
        id: "small".into(),
        hash: hash.clone(),
    };
    let (stored, manifest) = output::store(&store, &out, base_ref.clone(), &v, &cfg).await?;
    assert_eq!(stored.adapter_hash, manifest.adapter_hash);
    let blob = store.get(&stored.adapter_hash).await?;
    let back = LoraAdapter::from_blob(&blob, &base.config, &Device::Cpu, DType::F32)?;
    assert_eq!(back.to_blob()?, blob.to_vec());
    let mbytes = store.get(&stored.manifest_hash).await?;
    let mj: serde_json::Value = serde_json::from_slice(&mbytes)?;
    assert_eq!(
        mj["data"][0]["merkleRoot"],
        serde_json::json!(v.merkle_root)
    );
    assert_eq!(mj["baseModel"]["hash"], serde_json::json!(hash));
    assert_eq!(
        mj["rows"]["train"].as_array().map(Vec::len),
        Some(out.train_rows.len())
    );
    let sk =
        openledger_train::sketch::SketchSet::from_bytes(&store.get(&stored.sketch_hash).await?)?;
    assert_eq!(sk.header.rows, out.train_rows);

    // Publish: a stranger without a licence is refused by the contract; the Datanet's owner
    // registers; the same adapter twice is a conflict.
    let spec = PublishSpec {
        base_model_id: "small".into(),
        base_model_hash: publish::base_hash_bytes(&hash)?,
        adapter_hash: stored.adapter_hash,
        training_manifest_hash: stored.manifest_hash,
        trained_on: vec![(w.public, 0)],
        price_per_1k_tokens: U256::from(1000u64),
        metadata_uri: "demo fine-tune".into(),
    };
    let (rpc, reg) = (w.devnet.rpc_url(), w.model_registry()?);
    let e = publish::publish(&rpc, w.devnet.accounts[9].signer.clone(), reg, &spec).await;
    assert!(matches!(e, Err(TrainError::NotLicensed { .. })), "{e:?}");
    let p = publish::publish(&rpc, w.devnet.accounts[0].signer.clone(), reg, &spec).await?;
    assert!(p.model_id >= 1);
    let e = publish::publish(&rpc, w.devnet.accounts[0].signer.clone(), reg, &spec).await;
    assert!(matches!(e, Err(TrainError::Conflict(_))), "{e:?}");
    Ok(())
}
