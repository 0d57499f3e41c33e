//! Every bad input is a clear error naming what is wrong, never a panic.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use openledger_model::{Error, LoraAdapter, LoraConfig, Pretrained, Proj, load_tokenizer};

use crate::common::*;

fn load_err(dir: &Path) -> String {
    match Pretrained::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn setup(name: &str, tmp: &Path) -> eyre::Result<(std::path::PathBuf, openledger_model::Config)> {
    let (_, cfg) = all_configs().remove(0);
    let dir = tmp.join(name);
    write_model(&dir, &cfg, 1)?;
    Ok((dir, cfg))
}

#[test]
fn bad_model_directories() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    // missing weights
    let (dir, _) = setup("missing", tmp.path())?;
    std::fs::remove_file(dir.join("model.safetensors"))?;
    let e = load_err(&dir);
    assert!(
        e.contains("missing file") && e.contains("model.safetensors"),
        "{e}"
    );
    // truncated weights
    let (dir, _) = setup("truncated", tmp.path())?;
    let bytes = std::fs::read(dir.join("model.safetensors"))?;
    for cut in [4, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(dir.join("model.safetensors"), &bytes[..cut])?;
        let e = load_err(&dir);
        assert!(
            e.contains("invalid safetensors") && e.contains("model.safetensors"),
            "cut {cut}: {e}"
        );
    }
    // wrong dtype
    let (dir, cfg) = setup("dtype", tmp.path())?;
    let mut t = random_tensors(&cfg, 1);
    let name = "model.layers.1.mlp.up_proj.weight";
    let shape = t[name].dims().to_vec();
    t.insert(name.into(), Tensor::zeros(shape, DType::U32, &Device::Cpu)?);
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    let e = load_err(&dir);
    assert!(e.contains(name) && e.contains("U32"), "{e}");
    // missing tensor
    let (dir, cfg) = setup("missing-tensor", tmp.path())?;
    let mut t = random_tensors(&cfg, 1);
    t.remove("model.layers.0.self_attn.k_proj.weight");
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("missing"),
        "{e}"
    );
    // config / weights mismatch
    let (dir, cfg) = setup("mismatch", tmp.path())?;
    let mut c2 = cfg.clone();
    c2.intermediate_size += 8;
    std::fs::write(dir.join("config.json"), serde_json::to_string(&c2)?)?;
    let e = load_err(&dir);
    assert!(
        e.contains("gate_proj.weight") && e.contains("shape") && e.contains("56"),
        "{e}"
    );
    // malformed config JSON
    let (dir, _) = setup("json", tmp.path())?;
    std::fs::write(
        dir.join("config.json"),
        "{\"model_type\": \"llama\", \"hidden_size\": ",
    )?;
    let e = load_err(&dir);
    assert!(
        e.contains("config.json") && e.contains("malformed JSON"),
        "{e}"
    );
    // malformed tokenizer and generation config
    let (dir, _) = setup("tok", tmp.path())?;
    std::fs::write(dir.join("tokenizer.json"), "{not json")?;
    let e = load_err(&dir);
    assert!(
        e.contains("tokenizer") && e.contains("tokenizer.json"),
        "{e}"
    );
    assert!(matches!(
        load_tokenizer(&tmp.path().join("nope.json")),
        Err(Error::MissingFile(_))
    ));
    let (dir, _) = setup("gen", tmp.path())?;
    std::fs::write(dir.join("generation_config.json"), "[1,")?;
    assert!(load_err(&dir).contains("generation_config.json"));
    // unsupported rope scaling
    let (dir, cfg) = setup("rope", tmp.path())?;
    let mut v = serde_json::to_value(&cfg)?;
    v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 8.0});
    std::fs::write(dir.join("config.json"), v.to_string())?;
    let e = load_err(&dir);
    assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
    // llama3 scaling without one of its fields names that field
    v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    std::fs::write(dir.join("config.json"), v.to_string())?;
    let e = load_err(&dir);
    assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");
    Ok(())
}

#[test]
fn sharded_weights_load_and_missing_shard_is_an_error() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (dir, cfg) = setup("sharded", tmp.path())?;
    let single = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
    std::fs::remove_file(dir.join("model.safetensors"))?;
    let t = random_tensors(&cfg, 1);
    let (mut s1, mut s2, mut map) = (HashMap::new(), HashMap::new(), serde_json::Map::new());
    for (i, (k, v)) in t.into_iter().enumerate() {
        let file = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), file.into());
        if i % 2 == 0 {
            s1.insert(k, v)
        } else {
            s2.insert(k, v)
        };
    }
    candle_core::safetensors::save(&s1, dir.join("model-00001-of-00002.safetensors"))?;
    candle_core::safetensors::save(&s2, dir.join("model-00002-of-00002.safetensors"))?;
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )?;
    let sharded = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu)?;
    let none = openledger_model::BatchAdapters::none(1);
    assert_eq!(
        max_abs_diff(
            &single.model.forward(&ids, &none)?,
            &sharded.model.forward(&ids, &none)?
        )?,
        0.0
    );
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors"))?;
    let e = load_err(&dir);
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
    Ok(())
}

fn adapter_err(dir: &Path, cfg: &openledger_model::Config) -> String {
    match LoraAdapter::load(dir, cfg, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("adapter {} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_adapters_name_the_problem() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, cfg) = all_configs().remove(0);
    let good = tmp.path().join("good");
    random_adapter(&cfg, LoraConfig::new(4, 8.0, &[Proj::Q, Proj::V]), 3)?.save(&good)?;
    assert!(LoraAdapter::load(&good, &cfg, &Device::Cpu, DType::F32).is_ok());
    let patch =
        |name: &str, f: &dyn Fn(&mut serde_json::Value)| -> eyre::Result<std::path::PathBuf> {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d)?;
            std::fs::copy(
                good.join("adapter_model.safetensors"),
                d.join("adapter_model.safetensors"),
            )?;
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(good.join("adapter_config.json"))?)?;
            f(&mut v);
            std::fs::write(d.join("adapter_config.json"), v.to_string())?;
            Ok(d)
        };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("use_dora", serde_json::json!(true), "use_dora"),
        (
            "modules_to_save",
            serde_json::json!(["lm_head"]),
            "modules_to_save",
        ),
        ("fan_in_fan_out", serde_json::json!(true), "fan_in_fan_out"),
        ("bias", serde_json::json!("all"), "bias"),
        (
            "target_modules",
            serde_json::json!(["q_proj", "wte"]),
            "\"wte\" names no supported module",
        ),
        (
            "target_modules",
            serde_json::json!("model\\.nothing\\..*"),
            "matches no supported module",
        ),
        (
            "layers_to_transform",
            serde_json::json!([0]),
            "layers_to_transform",
        ),
        ("peft_type", serde_json::json!("IA3"), "peft_type"),
    ];
    for (i, (key, val, want)) in cases.into_iter().enumerate() {
        let d = patch(&format!("c{i}"), &|v| v[key] = val.clone())?;
        let e = adapter_err(&d, &cfg);
        assert!(e.contains(want), "{key}: {e}");
    }
    // a target that the tensors do not cover
    let d = patch("uncovered", &|v| {
        v["target_modules"] = serde_json::json!(["q_proj", "v_proj", "k_proj"])
    })?;
    let e = adapter_err(&d, &cfg);
    assert!(
        e.contains("k_proj.lora_A.weight") && e.contains("missing"),
        "{e}"
    );
    // malformed JSON and missing files
    let d = patch("json", &|_| {})?;
    std::fs::write(d.join("adapter_config.json"), "{\"r\": 4,")?;
    assert!(adapter_err(&d, &cfg).contains("malformed JSON"));
    let d = patch("nofile", &|_| {})?;
    std::fs::remove_file(d.join("adapter_model.safetensors"))?;
    assert!(adapter_err(&d, &cfg).contains("missing file"));
    // an adapter made for a model with a different hidden size
    let mut other = cfg.clone();
    other.hidden_size = 48;
    other.num_attention_heads = 4;
    other.num_key_value_heads = Some(4);
    let od = tmp.path().join("other");
    random_adapter(&other, LoraConfig::new(4, 8.0, &[Proj::Q]), 4)?.save(&od)?;
    let e = adapter_err(&od, &cfg);
    assert!(
        e.contains("hidden_size") && e.contains("different base model"),
        "{e}"
    );
    // an adapter for more layers than the model has
    let mut deeper = cfg.clone();
    deeper.num_hidden_layers = 3;
    let dd = tmp.path().join("deeper");
    random_adapter(&deeper, LoraConfig::new(4, 8.0, &[Proj::Q]), 5)?.save(&dd)?;
    assert!(adapter_err(&dd, &cfg).contains("layer 2"));
    Ok(())
}

#[test]
fn out_of_range_token_is_an_error() -> eyre::Result<()> {
    let (_, cfg) = all_configs().remove(0);
    let m = openledger_model::random_model(&cfg, 1, &Device::Cpu, DType::F32)?;
    let ids = Tensor::new(&[[1u32, 999]], &Device::Cpu)?;
    let e = m
        .forward(&ids, &openledger_model::BatchAdapters::none(1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("999") && e.contains("vocab_size"), "{e}");
    let e = m.forward(
        &Tensor::new(&[[1u32]], &Device::Cpu)?,
        &openledger_model::BatchAdapters::none(2),
    );
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    Ok(())
}
