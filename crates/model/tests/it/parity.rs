//! Logits of our model vs the independent NumPy reference (f32, max abs diff ≤ 1e-4).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use openledger_model::{
    BatchAdapters, KvCache, LoraAdapter, LoraConfig, Pretrained, Proj, SeqStep, TargetModules,
};

use crate::common::*;

const TOL: f32 = 1e-4;
const IDS: [u32; 9] = [1, 17, 5, 9, 22, 3, 40, 8, 11];

fn rust_logits(p: &Pretrained, adapter: Option<Arc<LoraAdapter>>) -> eyre::Result<Tensor> {
    let ids = Tensor::new(&IDS[..], &Device::Cpu)?.unsqueeze(0)?;
    let ba = match adapter {
        Some(a) => BatchAdapters::uniform(a, 1),
        None => BatchAdapters::none(1),
    };
    Ok(p.model.forward(&ids, &ba)?.squeeze(0)?)
}

#[test]
fn base_models_match_numpy_reference() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    for (name, cfg) in all_configs() {
        let dir = tmp.path().join(name);
        write_model(&dir, &cfg, 11)?;
        let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
        let want = reference_logits(&dir, &IDS, None, tmp.path())?;
        let got = rust_logits(&p, None)?;
        let d = max_abs_diff(&got, &want)?;
        let scale = want.abs()?.max(1)?.max(0)?.to_scalar::<f32>()?;
        assert!(
            scale > 0.1,
            "{name}: logits too small to be a meaningful test ({scale})"
        );
        assert!(d <= TOL, "{name}: max abs diff {d}");
        if name == "llama3" {
            // the scaling is visible: the same weights without it give other logits
            let plain = tmp.path().join("llama3-unscaled");
            let mut v = serde_json::to_value(&cfg)?;
            v["rope_scaling"] = serde_json::Value::Null;
            std::fs::create_dir_all(&plain)?;
            std::fs::write(plain.join("config.json"), v.to_string())?;
            std::fs::copy(
                dir.join("model.safetensors"),
                plain.join("model.safetensors"),
            )?;
            let other = reference_logits(&plain, &IDS, None, tmp.path())?;
            assert!(
                max_abs_diff(&other, &want)? > 0.01,
                "llama3 scaling has no effect"
            );
        }
        // KV-cached decoding, one token at a time, gives the same last-position logits
        let mut cache = KvCache::new(&cfg);
        let mut last = None;
        for (i, t) in IDS.iter().enumerate() {
            let l = p.model.forward_step(
                &mut [SeqStep {
                    tokens: &[*t],
                    cache: &mut cache,
                }],
                &BatchAdapters::none(1),
            )?;
            let d = max_abs_diff(&l.squeeze(0)?, &want.get(i)?)?;
            assert!(d <= TOL, "{name}: cached step {i} diff {d}");
            last = Some(l);
        }
        assert!(last.is_some());
    }
    Ok(())
}

#[test]
fn lora_unmerged_and_merged_match_numpy_reference() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    for (i, (name, cfg)) in all_configs().into_iter().enumerate() {
        let dir = tmp.path().join(name);
        write_model(&dir, &cfg, 21)?;
        let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
        // exercise all-linear, a regex and a list; rsLoRA on one
        let mut lcfg = LoraConfig::new(4, 8.0, &Proj::ALL);
        match i {
            0 => lcfg.target_modules = TargetModules::Pattern("all-linear".into()),
            1 => {
                lcfg.target_modules = TargetModules::Pattern(r".*\.(q_proj|o_proj|up_proj)".into());
                lcfg.use_rslora = true;
            }
            _ => {
                lcfg.rank_pattern.insert("gate_proj".into(), 2);
                lcfg.alpha_pattern.insert("v_proj".into(), 3.0);
            }
        }
        let adapter = Arc::new(random_adapter(&cfg, lcfg, 100 + i as u64)?);
        let adir = tmp.path().join(format!("{name}-adapter"));
        adapter.save(&adir)?;
        let want = reference_logits(&dir, &IDS, Some(&adir), tmp.path())?;
        let base = reference_logits(&dir, &IDS, None, tmp.path())?;
        assert!(
            max_abs_diff(&want, &base)? > 0.05,
            "{name}: adapter has no visible effect"
        );
        let unmerged = rust_logits(&p, Some(adapter.clone()))?;
        let d = max_abs_diff(&unmerged, &want)?;
        assert!(d <= TOL, "{name}: unmerged diff {d}");
        let merged = Pretrained {
            model: p.model.merged(&adapter)?,
            ..p.clone()
        };
        let d = max_abs_diff(&rust_logits(&merged, None)?, &want)?;
        assert!(d <= TOL, "{name}: merged diff {d}");
    }
    Ok(())
}

#[test]
fn peft_adapter_written_by_python_loads_and_matches() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, cfg) = all_configs().remove(1);
    let dir = tmp.path().join("m");
    write_model(&dir, &cfg, 5)?;
    let adir = tmp.path().join("peft");
    python(&["make-adapter", path_str(&dir), path_str(&adir), "7"]);
    let adapter = LoraAdapter::load(&adir, &cfg, &Device::Cpu, DType::F32)?;
    assert!(adapter.config().use_rslora);
    assert_eq!(
        adapter.pair(1, Proj::Down).map(|p| p.a.dims().to_vec()),
        Some(vec![2, cfg.intermediate_size])
    );
    assert!(adapter.pair(0, Proj::K).is_none());
    let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
    let want = reference_logits(&dir, &IDS, Some(&adir), tmp.path())?;
    let d = max_abs_diff(&rust_logits(&p, Some(Arc::new(adapter)))?, &want)?;
    assert!(d <= TOL, "python-written PEFT adapter diff {d}");
    Ok(())
}
