//! Helpers: tiny random checkpoints on disk and the NumPy reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use openledger_model::{Config, LoraAdapter, LoraConfig, Proj, random_weights};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

pub const LLAMA: &str = r#"{"model_type":"llama","hidden_size":32,"intermediate_size":48,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":61,
  "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":64,
  "rope_scaling":{"type":"linear","factor":2.0},"tie_word_embeddings":false,
  "bos_token_id":1,"eos_token_id":2}"#;
pub const MISTRAL: &str = r#"{"model_type":"mistral","hidden_size":32,"intermediate_size":40,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":57,
  "rms_norm_eps":1e-5,"rope_theta":1000.0,"max_position_embeddings":64,"sliding_window":4,
  "tie_word_embeddings":false,"bos_token_id":1,"eos_token_id":2}"#;
pub const QWEN2: &str = r#"{"model_type":"qwen2","hidden_size":32,"intermediate_size":56,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":53,
  "rms_norm_eps":1e-6,"rope_theta":1000000.0,"max_position_embeddings":64,
  "tie_word_embeddings":true,"use_sliding_window":false,"bos_token_id":1,"eos_token_id":[2,3]}"#;

/// Llama 3.x: GQA, tied embeddings, `llama3` rope scaling whose three bands (kept, blended,
/// scaled) all fall inside this head's eight frequencies.
pub const LLAMA3: &str = r#"{"model_type":"llama","hidden_size":32,"intermediate_size":48,
  "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":59,
  "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":256,
  "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
  "high_freq_factor":4.0,"original_max_position_embeddings":64},"tie_word_embeddings":true,
  "bos_token_id":1,"eos_token_id":[2,3]}"#;

pub fn all_configs() -> Vec<(&'static str, Config)> {
    [
        ("llama", LLAMA),
        ("mistral", MISTRAL),
        ("qwen2", QWEN2),
        ("llama3", LLAMA3),
    ]
    .into_iter()
    .map(|(n, j)| {
        (
            n,
            Config::from_json(j).unwrap_or_else(|e| panic!("{n}: {e}")),
        )
    })
    .collect()
}

pub fn rand_vec(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // sum of uniforms: roughly normal, plenty for tests
            let s: f32 = (0..4)
                .map(|_| (rng.next_u32() as f32 / u32::MAX as f32) - 0.5)
                .sum();
            s * std * 1.7
        })
        .collect()
}

/// Random weights with non-trivial norms and biases, as a tensor map.
pub fn random_tensors(cfg: &Config, seed: u64) -> HashMap<String, Tensor> {
    let mut map = HashMap::new();
    for (i, (name, shape, data)) in random_weights(cfg, seed, 0.15).into_iter().enumerate() {
        let data = if name.ends_with("norm.weight") {
            data.iter()
                .enumerate()
                .map(|(j, _)| 1.0 + 0.2 * ((j + i) as f32 * 0.37).sin())
                .collect()
        } else if name.ends_with(".bias") {
            data.iter()
                .enumerate()
                .map(|(j, _)| 0.1 * ((j + 3 * i) as f32 * 0.71).sin())
                .collect()
        } else {
            data
        };
        let t = Tensor::from_vec(data, shape, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        map.insert(name, t);
    }
    map
}

/// Writes `config.json` + `model.safetensors` with random weights.
pub fn write_model(dir: &Path, cfg: &Config, seed: u64) -> eyre::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(cfg)?)?;
    candle_core::safetensors::save(&random_tensors(cfg, seed), dir.join("model.safetensors"))?;
    Ok(())
}

/// A random adapter (non-zero B) on the given projections.
pub fn random_adapter(cfg: &Config, lcfg: LoraConfig, seed: u64) -> eyre::Result<LoraAdapter> {
    let mut tensors = HashMap::new();
    let mut s = seed;
    for l in 0..cfg.num_hidden_layers {
        for p in Proj::ALL {
            if !lcfg.targets(l, p) {
                continue;
            }
            let (out, inp) = p.dims(cfg);
            let r = lcfg.rank(l, p);
            s += 2;
            let a = Tensor::from_vec(rand_vec(s, r * inp, 0.3), (r, inp), &Device::Cpu)?;
            let b = Tensor::from_vec(rand_vec(s + 1, out * r, 0.3), (out, r), &Device::Cpu)?;
            let base = format!("base_model.model.{}", p.path(l));
            tensors.insert(format!("{base}.lora_A.weight"), a);
            tensors.insert(format!("{base}.lora_B.weight"), b);
        }
    }
    Ok(LoraAdapter::from_tensors(
        lcfg,
        cfg,
        tensors,
        &Device::Cpu,
        DType::F32,
    )?)
}

pub fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/reference.py")
}

/// Runs the NumPy reference; a missing python3/numpy/safetensors FAILS the test.
pub fn python(args: &[&str]) {
    let out = Command::new("python3")
        .arg(reference_script())
        .args(args)
        .output();
    let hint = "numeric parity tests need python3 with numpy and safetensors: \
                pip install -r crates/model/tests/reference/requirements.txt";
    match out {
        Err(e) => panic!("cannot run python3 ({e}); {hint}"),
        Ok(o) if !o.status.success() => {
            panic!(
                "reference.py failed: {}\n{hint}",
                String::from_utf8_lossy(&o.stderr)
            )
        }
        Ok(_) => {}
    }
}

/// Logits [t, vocab] from the NumPy reference.
pub fn reference_logits(
    model: &Path,
    ids: &[u32],
    adapter: Option<&Path>,
    tmp: &Path,
) -> eyre::Result<Tensor> {
    let ids_s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let out = tmp.join(format!(
        "ref-{}.safetensors",
        rand_vec(ids.len() as u64, 1, 1.0)[0].to_bits()
    ));
    let mut args = vec!["logits", path_str(model), &ids_s.join(",")]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.push(out.to_string_lossy().into_owned());
    if let Some(a) = adapter {
        args.push(a.to_string_lossy().into_owned());
    }
    python(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut map = openledger_model::load_safetensors(&out, &Device::Cpu)?;
    map.remove("logits")
        .ok_or_else(|| eyre::eyre!("no logits in reference output"))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> eyre::Result<f32> {
    let a = a.to_dtype(DType::F32)?.flatten_all()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?;
    eyre::ensure!(
        a.dims() == b.dims(),
        "shape {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    Ok((a - b)?.abs()?.max(0)?.to_scalar::<f32>()?)
}
