//! The training-recipe sweep (`openledger_bench::recipe`): prints a table, writes JSON.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=1 cargo run --release -p openledger-bench \
//!     --example recipe -- --out bench-out/recipe.json
//! # --epochs N (50) --batch N (4) --lrs 1e-3,2e-3,5e-3,1e-2 --ranks 8,16 --seeds 0,1,2
//! # --base DIR (default: the cached `small` base of `openledger devnet --demo`, made if absent)
//! ```

use std::path::PathBuf;

use eyre::{Result, WrapErr, bail, eyre};
use openledger_bench::recipe::{self, Sweep};
use openledger_model::{DType, Device, Pretrained, content_hash};

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| eyre!("{flag}: {x:?} is not a number"))
        })
        .collect()
}

fn main() -> Result<()> {
    let mut out = PathBuf::from("bench-out/recipe.json");
    let mut base: Option<PathBuf> = None;
    let mut sweep = Sweep::standard(50, 4);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| eyre!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = value()?.into(),
            "--base" => base = Some(value()?.into()),
            "--epochs" => sweep.base.epochs = value()?.parse().wrap_err("--epochs")?,
            "--batch" => sweep.base.batch_size = value()?.parse().wrap_err("--batch")?,
            "--lrs" => sweep.learning_rates = list("--lrs", &value()?)?,
            "--ranks" => sweep.ranks = list("--ranks", &value()?)?,
            "--seeds" => sweep.seeds = list("--seeds", &value()?)?,
            other => bail!("unknown argument {other:?} (see the example's header)"),
        }
    }
    let dir = match base {
        Some(d) => d,
        None => {
            eprintln!("base: the `small` model of the demo (made once, cached) ...");
            recipe::small_base()?
        }
    };
    let model = Pretrained::load(&dir, &Device::Cpu, DType::F32)
        .wrap_err_with(|| format!("base model {}", dir.display()))?;
    let hash = content_hash(&dir)?.0;
    let rows = recipe::demo_rows()?;
    let runs = sweep.learning_rates.len() * sweep.ranks.len() * sweep.seeds.len();
    eprintln!(
        "{} rows, {runs} runs of {} epochs at batch {}",
        rows.len(),
        sweep.base.epochs,
        sweep.base.batch_size
    );
    let t0 = std::time::Instant::now();
    let report = recipe::run(&model, &hash, &rows, &sweep, |line| eprintln!("{line}"))?;
    let secs = t0.elapsed().as_secs_f64();
    print!("{}", recipe::table(&report));
    let env: serde_json::Map<String, serde_json::Value> =
        ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?.into())))
            .collect();
    let json = serde_json::json!({
        "unixTime": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        "base": dir, "baseHash": hash, "env": env, "totalSecs": secs,
        "profile": if cfg!(debug_assertions) { "dev (opt-level 3 for the measured crates)" } else { "release" },
        "report": report,
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&json)?)
        .wrap_err_with(|| format!("writing {}", out.display()))?;
    eprintln!("{:.0} s in all; wrote {}", secs, out.display());
    Ok(())
}
