//! `init --shape NAME --random`: real layouts, special tokens, chat templates; a few layers of
//! the SmolLM2-135M shape load as bf16 and match the NumPy reference.

use candle_core::{DType, Device, Tensor};
use openledger_model::init::{Shape, ShapeOptions, init_shape};
use openledger_model::{BatchAdapters, ChatMessage, ChatTemplate, Pretrained, load_tokenizer};

use crate::common::{max_abs_diff, reference_logits};

#[test]
fn a_smollm2_shape_directory_loads_renders_chat_and_matches_the_reference() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("smol");
    let opts = ShapeOptions {
        layers: Some(2),
        ..ShapeOptions::new(3)
    };
    let report = init_shape(&dir, Shape::Smollm2_135m, opts)?;
    assert_eq!(report.layers, 2);
    let cfg = Shape::Smollm2_135m.config();
    // header + bf16 data: two bytes per parameter
    assert!(report.weight_bytes > 2 * report.parameters as u64);
    assert!(report.weight_bytes < 2 * report.parameters as u64 + 64 * 1024);
    let p = Pretrained::load(&dir, &Device::Cpu, DType::F32)?;
    assert_eq!(p.config.hidden_size, cfg.hidden_size);
    assert_eq!(p.config.vocab_size, 49152);
    let tok = p
        .tokenizer
        .as_ref()
        .ok_or_else(|| eyre::eyre!("no tokenizer"))?;
    assert_eq!(tok.get_vocab_size(true), 49152);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert!(!p.add_bos, "SmolLM2 does not put BOS in front");
    let ids = p.encode_chat(&[ChatMessage::new("user", "Where does Mira sell bread?")])?;
    let text = tok.decode(&ids, false).map_err(|e| eyre::eyre!("{e}"))?;
    assert!(
        text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
            && text.ends_with(
                "<|im_start|>user\nWhere does Mira sell bread?<|im_end|>\n<|im_start|>assistant\n"
            ),
        "{text}"
    );
    assert_eq!(ids[0], 1, "the template opens with <|im_start|>");
    assert_eq!(p.eos_ids(), vec![0, 2]);
    // logits of the bf16 weights against the NumPy reference (same bf16 values, in float64)
    let ids = [1u32, 17, 5, 49151, 22, 3];
    let want = reference_logits(&dir, &ids, None, tmp.path())?;
    let x = Tensor::new(&ids[..], &Device::Cpu)?.unsqueeze(0)?;
    let got = p.model.forward(&x, &BatchAdapters::none(1))?.squeeze(0)?;
    let d = max_abs_diff(&got, &want)?;
    assert!(d < 1e-4, "max abs diff {d}");
    Ok(())
}

#[test]
fn every_shape_has_its_special_tokens_and_chat_format() -> eyre::Result<()> {
    let tmp = tempfile::tempdir()?;
    for (shape, first, turn) in [
        (
            Shape::Qwen25_05b,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n",
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            Shape::Llama32_1b,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ",
            "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
    ] {
        // no weights: their embeddings alone are hundreds of MB (the layout is unit-tested by
        // parameter count)
        let dir = tmp.path().join(shape.name());
        let opts = ShapeOptions {
            weights: false,
            ..ShapeOptions::new(1)
        };
        init_shape(&dir, shape, opts)?;
        assert!(!dir.join("model.safetensors").exists());
        let cfg = openledger_model::Config::from_file(&dir.join("config.json"))?;
        assert_eq!(cfg, shape.config());
        let tok = load_tokenizer(&dir.join("tokenizer.json"))?;
        let t = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json"))?
            .ok_or_else(|| eyre::eyre!("no template"))?;
        let text = t.render(&[ChatMessage::new("user", "hi")], true)?;
        assert!(
            text.starts_with(first) && text.ends_with(turn),
            "{}: {text}",
            shape.name()
        );
        let enc = |s: &str, special: bool| -> eyre::Result<Vec<u32>> {
            Ok(tok
                .encode(s, special)
                .map_err(|e| eyre::eyre!("{e}"))?
                .get_ids()
                .to_vec())
        };
        let ids = enc(&text, false)?;
        let plain = enc("hi", true)?;
        let tc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("tokenizer_config.json"))?)?;
        match shape {
            Shape::Llama32_1b => {
                assert_eq!(tok.token_to_id("<|eot_id|>"), Some(128009));
                assert_eq!(tok.get_vocab_size(true), 128256);
                // BOS once: from the template in a chat, from the post-processor in plain text
                assert_eq!(&ids[..2], &[128000, 128006]);
                assert_eq!(plain[0], 128000);
                assert_ne!(plain[1], 128000);
                assert_eq!(tc["add_bos_token"], true);
            }
            _ => {
                assert_eq!(tok.token_to_id("<|im_end|>"), Some(151645));
                assert_eq!(tok.get_vocab_size(true), 151665);
                assert_eq!(cfg.vocab_size, 151936);
                assert_eq!(ids[0], 151644);
                assert!(!plain.contains(&151643), "no BOS for Qwen2");
                assert_eq!(tc["add_bos_token"], false);
                assert!(cfg.qkv_bias());
            }
        }
    }
    Ok(())
}
