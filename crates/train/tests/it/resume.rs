//! Crash and resume: a child process (this test binary re-executed) trains with checkpoints and
//! is killed with SIGKILL mid-run; the run resumed from its last checkpoint ends with an
//! adapter bit-identical to an uninterrupted run. Also: same inputs + seed → same adapter, and a
//! cancelled run produces nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use eyre::{Result, eyre};
use openledger_datanet::formats::Row;
use openledger_model::{DType, Device, Pretrained};
use openledger_train::config::TrainConfig;
use openledger_train::{TrainError, checkpoint, trainer};

use crate::common::small_model;

const CHILD_ENV: &str = "OPENLEDGER_TRAIN_TEST_CHILD";

fn rows() -> Vec<(String, Row)> {
    (0..24)
        .map(|i| {
            let row = if i % 2 == 0 {
                Row::Pair {
                    prompt: format!("Tell me about item {i}."),
                    completion: format!(
                        "Item {i} is a {} thing near the {} river.",
                        ["red", "blue", "green"][i % 3],
                        ["north", "south"][i % 2]
                    ),
                }
            } else {
                Row::Text {
                    text: format!("The harbour keeps {i} boats and {} nets in winter.", i * 3),
                }
            };
            (format!("0x{:064x}:{i}", 7), row)
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        max_steps: Some(16),
        batch_size: 4,
        grad_accum: 2,
        learning_rate: 5e-3,
        warmup_steps: 3,
        val_fraction: 0.2,
        checkpoint_every: 2,
        sketch_dim: 16,
        max_seq_len: 64,
        seed: 5,
        ..Default::default()
    }
}

fn run(
    dir: &Path,
    workdir: Option<&Path>,
    cancel: &AtomicBool,
    stop_at: Option<usize>,
) -> Result<Vec<u8>> {
    let base = Pretrained::load(dir, &Device::Cpu, DType::F32)?;
    let out = trainer::train(
        &base,
        "sha256:test",
        &rows(),
        &config(),
        workdir,
        cancel,
        &mut |e| {
            if let (Some(s), trainer::Event::Checkpoint { step }) = (stop_at, &e)
                && *step >= s
            {
                cancel.store(true, Ordering::Relaxed);
            }
        },
    )?;
    Ok(out.adapter.to_blob()?)
}

/// Runs only when re-executed by `killed_process_resumes_bit_identically` (trains forever-ish
/// until killed).
#[test]
fn child_process_trainer() -> Result<()> {
    let Ok(workdir) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let never = AtomicBool::new(false);
    run(&small_model()?, Some(Path::new(&workdir)), &never, None)?;
    Ok(())
}

#[test]
fn killed_process_resumes_bit_identically() -> Result<()> {
    let dir = small_model()?;
    let never = AtomicBool::new(false);
    let reference = run(&dir, None, &never, None)?;
    assert_eq!(
        reference,
        run(&dir, None, &never, None)?,
        "same inputs + seed → same adapter"
    );

    let work = tempfile::tempdir()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["resume::child_process_trainer", "--exact", "--nocapture"])
        .env(CHILD_ENV, work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let ckpt = work.path().join(checkpoint::FILE);
    let t0 = std::time::Instant::now();
    while !ckpt.exists() {
        if t0.elapsed().as_secs() > 300 {
            let _ = child.kill();
            return Err(eyre!("the child wrote no checkpoint in 300 s"));
        }
        if let Some(status) = child.try_wait()? {
            return Err(eyre!("the child exited before a checkpoint: {status}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    let resumed = run(&dir, Some(work.path()), &never, None)?;
    assert_eq!(
        resumed, reference,
        "resumed adapter differs from the uninterrupted one"
    );

    // Cancel mid-run (after the checkpoint at step 4): no output, then resume to the same end.
    let work2 = tempfile::tempdir()?;
    let cancel = AtomicBool::new(false);
    match run(&dir, Some(work2.path()), &cancel, Some(4)) {
        Err(e) => assert!(
            matches!(e.downcast_ref::<TrainError>(), Some(TrainError::Cancelled)),
            "{e}"
        ),
        Ok(_) => return Err(eyre!("a cancelled run returned an adapter")),
    }
    assert_eq!(run(&dir, Some(work2.path()), &never, None)?, reference);
    Ok(())
}
