//! `init` (tiny preset): trains, writes a loadable HF directory, is deterministic, and `info`
//! identifies it by a content hash.

use std::sync::OnceLock;

use candle_core::{DType, Device};
use openledger_model::init::{InitOptions, InitReport, Preset, init};
use openledger_model::{ChatMessage, Pretrained, info};

/// One tiny model shared by the tests of this binary (trained once).
pub fn tiny_model() -> &'static (tempfile::TempDir, InitReport) {
    static TINY: OnceLock<(tempfile::TempDir, InitReport)> = OnceLock::new();
    TINY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let report = init(dir.path(), &InitOptions::preset(Preset::Tiny, 7), |_| {}).unwrap();
        (dir, report)
    })
}

#[test]
fn tiny_init_trains_and_writes_a_loadable_directory() -> eyre::Result<()> {
    let (dir, report) = tiny_model();
    let first = report.loss_curve.first().map(|x| x.1).unwrap_or(0.0);
    let last = report.loss_curve.last().map(|x| x.1).unwrap_or(f32::MAX);
    assert!(last < first * 0.8, "loss did not fall: {first} -> {last}");
    assert!(
        report.eval_perplexity.is_finite()
            && report.eval_perplexity < report.options.vocab_size as f32
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let p = Pretrained::load(dir.path(), &Device::Cpu, DType::F32)?;
    assert_eq!(p.eos_ids(), vec![1]);
    let tmpl = p
        .chat_template
        .as_ref()
        .ok_or_else(|| eyre::eyre!("no chat template"))?;
    let text = tmpl.render(
        &[ChatMessage::new("user", "Who is the baker of Ashford?")],
        true,
    )?;
    assert_eq!(
        text,
        "<|user|>\nWho is the baker of Ashford?\n<|assistant|>\n"
    );
    let tok = p
        .tokenizer
        .as_ref()
        .ok_or_else(|| eyre::eyre!("no tokenizer"))?;
    let enc = tok
        .encode(text.as_str(), false)
        .map_err(|e| eyre::eyre!("{e}"))?;
    assert_eq!(enc.get_ids()[0], 4, "<|user|> is a single special token");
    assert_eq!(
        tok.decode(enc.get_ids(), false)
            .map_err(|e| eyre::eyre!("{e}"))?,
        text
    );
    let chat = p.encode_chat(&[ChatMessage::new("user", "Who is the baker of Ashford?")])?;
    assert_eq!(chat[0], 0, "BOS first");
    assert_eq!(&chat[1..], enc.get_ids());
    let sp = p.default_sampling();
    assert_eq!(sp.stop_token_ids, vec![1]);
    assert_eq!(
        (sp.temperature, sp.top_p, sp.max_new_tokens),
        (0.8, Some(0.95), 64)
    );
    // bf16 loads and stays close to f32
    let pb = Pretrained::load(dir.path(), &Device::Cpu, DType::BF16)?;
    let ids = candle_core::Tensor::new(enc.get_ids(), &Device::Cpu)?.unsqueeze(0)?;
    let a = p
        .model
        .forward(&ids, &openledger_model::BatchAdapters::none(1))?;
    let b = pb
        .model
        .forward(&ids, &openledger_model::BatchAdapters::none(1))?;
    let d = crate::common::max_abs_diff(&a, &b)?;
    assert!(d < 0.5, "bf16 vs f32 logits differ by {d}");
    Ok(())
}

#[test]
fn init_is_deterministic_and_hash_identifies_content() -> eyre::Result<()> {
    let (dir, _) = tiny_model();
    let again = tempfile::tempdir()?;
    init(again.path(), &InitOptions::preset(Preset::Tiny, 7), |_| {})?;
    let a = info(dir.path())?;
    let b = info(again.path())?;
    assert_eq!(a.files, b.files);
    assert_eq!(a.content_hash, b.content_hash);
    assert!(a.content_hash.starts_with("sha256:") && a.content_hash.len() == 71);
    assert_eq!(a.parameters, a.config.num_parameters());
    // any change of content changes the hash
    std::fs::write(again.path().join("extra.txt"), "x")?;
    assert_ne!(info(again.path())?.content_hash, a.content_hash);
    Ok(())
}
