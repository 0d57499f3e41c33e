//! Adapters on `embed_tokens` and `lm_head` (PEFT's `lora_embedding_A/B` and a LoRA on the
//! output head): PEFT file layout, the NumPy reference alone and merged, the same logits
//! batched beside other adapters, and training that moves a token's probability.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use openledger_model::{
    BatchAdapters, KvCache, LoraAdapter, LoraConfig, Pretrained, Proj, SeqStep, TargetModules,
};

use crate::common::*;

const IDS: [u32; 7] = [1, 17, 5, 9, 22, 3, 40];

/// An adapter on q, v, the embedding and the head with every tensor random (non-zero).
fn vocab_adapter(cfg: &openledger_model::Config, seed: u64) -> eyre::Result<LoraAdapter> {
    let mut lc = LoraConfig::new(4, 8.0, &[Proj::Q, Proj::V]);
    lc.target_modules = TargetModules::List(
        ["q_proj", "v_proj", "embed_tokens", "lm_head"]
            .map(String::from)
            .to_vec(),
    );
    lc.rank_pattern.insert("embed_tokens".into(), 3);
    let a = LoraAdapter::trainable(
        lc.clone(),
        cfg,
        &VarMap::new(),
        &Device::Cpu,
        DType::F32,
        seed,
    )?;
    let mut t = a.named_tensors();
    for (i, (_, v)) in t.iter_mut().enumerate() {
        let n = v.elem_count();
        *v = Tensor::from_vec(
            rand_vec(seed * 100 + i as u64, n, 0.3),
            v.shape(),
            &Device::Cpu,
        )?;
    }
    Ok(LoraAdapter::from_tensors(
        lc,
        cfg,
        t,
        &Device::Cpu,
        DType::F32,
    )?)
}

fn logits(p: &Pretrained, ba: &BatchAdapters) -> eyre::Result<Tensor> {
    let ids = Tensor::new(&IDS[..], &Device::Cpu)?.unsqueeze(0)?;
    Ok(p.model.forward(&ids, ba)?.squeeze(0)?)
}

#[test]
fn embedding_and_head_adapters_round_trip_peft_and_match_numpy() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    // untied (llama) and tied (llama3-style) heads
    for (name, cfg) in all_configs()
        .into_iter()
        .filter(|(n, _)| *n == "llama" || *n == "llama3")
    {
        let dir = tmp.path().join(name);
        write_model(&dir, &cfg, 31)?;
        let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
        let adapter = vocab_adapter(&cfg, 5)?;
        let adir = tmp.path().join(format!("{name}-adapter"));
        adapter.save(&adir)?;
        // PEFT's names and shapes
        let saved = openledger_model::load_safetensors(
            &adir.join("adapter_model.safetensors"),
            &Device::Cpu,
        )?;
        let dims = |k: &str| saved.get(k).map(|t| t.dims().to_vec());
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        assert_eq!(
            dims("base_model.model.model.embed_tokens.lora_embedding_A"),
            Some(vec![3, v])
        );
        assert_eq!(
            dims("base_model.model.model.embed_tokens.lora_embedding_B"),
            Some(vec![h, 3])
        );
        assert_eq!(
            dims("base_model.model.lm_head.lora_A.weight"),
            Some(vec![4, h])
        );
        assert_eq!(
            dims("base_model.model.lm_head.lora_B.weight"),
            Some(vec![v, 4])
        );
        let loaded = Arc::new(LoraAdapter::load(&adir, &cfg, &Device::Cpu, DType::F32)?);
        assert_eq!(loaded.num_parameters(), adapter.num_parameters());
        let want = reference_logits(&dir, &IDS, Some(&adir), tmp.path())?;
        let base = reference_logits(&dir, &IDS, None, tmp.path())?;
        assert!(
            max_abs_diff(&want, &base)? > 0.05,
            "{name}: no visible effect"
        );
        // alone
        let alone = logits(&p, &BatchAdapters::uniform(loaded.clone(), 1))?;
        let d = max_abs_diff(&alone, &want)?;
        assert!(d <= 1e-4, "{name}: alone diff {d}");
        // merged into the weights
        let merged = Pretrained {
            model: p.model.merged(&loaded)?,
            ..p.clone()
        };
        let d = max_abs_diff(&logits(&merged, &BatchAdapters::none(1))?, &want)?;
        assert!(d <= 1e-4, "{name}: merged diff {d}");
        // the base model is untouched by the merge
        let d = max_abs_diff(&logits(&p, &BatchAdapters::none(1))?, &base)?;
        assert!(d <= 1e-4, "{name}: base diff {d}");
    }
    Ok(())
}

#[test]
fn embedding_and_head_adapters_batch_with_other_adapters() -> eyre::Result<()> {
    let (_, cfg) = all_configs().remove(3); // tied head
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("m");
    write_model(&dir, &cfg, 8)?;
    let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
    let mut vocab = vocab_adapter(&cfg, 9)?;
    let mut plain = random_adapter(&cfg, LoraConfig::new(2, 4.0, &[Proj::Q, Proj::Up]), 3)?;
    vocab.prepare_serving()?;
    plain.prepare_serving()?;
    let (vocab, plain) = (Arc::new(vocab), Arc::new(plain));
    let prompts: [&[u32]; 3] = [&IDS[..5], &IDS[2..], &IDS[1..4]];
    let choice = [Some(0), Some(1), None];
    // each sequence alone: prefill, then two decode steps
    let mut alone = Vec::new();
    for (prompt, c) in prompts.iter().zip(choice) {
        let ba = match c {
            Some(0) => BatchAdapters::uniform(vocab.clone(), 1),
            Some(_) => BatchAdapters::uniform(plain.clone(), 1),
            None => BatchAdapters::none(1),
        };
        let mut cache = KvCache::new(&cfg);
        let mut out = Vec::new();
        for toks in [*prompt, &[7][..], &[11][..]] {
            out.push(p.model.forward_step(
                &mut [SeqStep {
                    tokens: toks,
                    cache: &mut cache,
                }],
                &ba,
            )?);
        }
        alone.push(out);
    }
    // all three together, every step mixing the adapters (and a base row)
    let ba = BatchAdapters::new(vec![vocab.clone(), plain.clone()], choice.to_vec())?;
    let mut caches: Vec<KvCache> = (0..3).map(|_| KvCache::new(&cfg)).collect();
    for step in 0..3usize {
        let toks: Vec<&[u32]> = match step {
            0 => prompts.to_vec(),
            1 => vec![&[7][..]; 3],
            _ => vec![&[11][..]; 3],
        };
        let mut steps: Vec<SeqStep> = toks
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, c)| SeqStep {
                tokens: t,
                cache: c,
            })
            .collect();
        let got = p.model.forward_step(&mut steps, &ba)?;
        for (s, seq) in alone.iter().enumerate() {
            let d = max_abs_diff(&got.get(s)?, &seq[step].squeeze(0)?)?;
            assert!(d <= 1e-4, "step {step} seq {s}: batched vs alone {d}");
        }
    }
    Ok(())
}

#[test]
fn an_embedding_and_head_adapter_trains() -> eyre::Result<()> {
    let (_, cfg) = all_configs().remove(3);
    let model = openledger_model::random_model(&cfg, 4, &Device::Cpu, DType::F32)?;
    let varmap = VarMap::new();
    let mut lc = LoraConfig::new(4, 8.0, &[]);
    lc.target_modules = TargetModules::List(vec!["embed_tokens".into(), "lm_head".into()]);
    let adapter = Arc::new(LoraAdapter::trainable(
        lc,
        &cfg,
        &varmap,
        &Device::Cpu,
        DType::F32,
        2,
    )?);
    assert_eq!(varmap.all_vars().len(), 4);
    // teach "after 5 comes 58" (a token the random base gives no special weight)
    let x = Tensor::new(&[[5u32, 58, 5, 58]], &Device::Cpu)?;
    let y = Tensor::new(&[58u32, 5, 58, 5], &Device::Cpu)?;
    let loss = |m: &openledger_model::Model| -> eyre::Result<Tensor> {
        let l = m
            .forward(&x, &BatchAdapters::uniform(adapter.clone(), 1))?
            .squeeze(0)?;
        Ok(candle_nn::loss::cross_entropy(&l, &y)?)
    };
    let first = loss(&model)?.to_scalar::<f32>()?;
    let mut opt = candle_nn::AdamW::new_lr(varmap.all_vars(), 0.05)?;
    for _ in 0..30 {
        opt.backward_step(&loss(&model)?)?;
    }
    let last = loss(&model)?.to_scalar::<f32>()?;
    assert!(last < first * 0.5, "loss {first} -> {last}");
    Ok(())
}
