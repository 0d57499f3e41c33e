"""llama.cpp on the same weights: convert a Llama-architecture model directory (made by
`openledger model init`, including `--shape smollm2-135m --random`; f32 or bf16 safetensors,
byte-level BPE) to GGUF in f32 and Q8_0, check llama.cpp's logits against the NumPy reference,
and measure batch-1 prefill and decode tokens/s with the prompt `openledger model bench` uses
(token i = (31 i + 3) mod vocab, 64 tokens, 32 greedy steps).

  pip install gguf==0.19.0 llama-cpp-python==0.3.36 numpy safetensors
  python compare.py MODEL_DIR OUT.json [--types f32,q8_0] [--repeat N]

The GGUF files are written once next to OUT.json and reused. GGUF's llama architecture rotates
interleaved pairs, HF's rotates halves: q_proj and k_proj rows are permuted when converting, as
llama.cpp's own converter does. `openledger model bench --llamacpp PYTHON` runs this once per
repeat, interleaved with its own runs, and reports the ratios.
"""
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
import reference  # noqa: E402

THREADS = int(os.environ.get("LLAMA_THREADS", "2"))


def permute(w, heads):
    out, inp = w.shape
    return w.reshape(heads, 2, out // heads // 2, inp).swapaxes(1, 2).reshape(out, inp)


def convert(model_dir, path, qtype):
    import gguf

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    w = reference.load_weights(os.path.join(model_dir, "model.safetensors"))
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    g = gguf.GGUFWriter(path, "llama")
    g.add_context_length(cfg["max_position_embeddings"])
    g.add_embedding_length(cfg["hidden_size"])
    g.add_block_count(cfg["num_hidden_layers"])
    g.add_feed_forward_length(cfg["intermediate_size"])
    g.add_head_count(H)
    g.add_head_count_kv(KV)
    g.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    g.add_rope_freq_base(cfg["rope_theta"])
    g.add_rope_dimension_count(hd)
    q8 = qtype == "q8_0"
    g.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
    vocab = dict(tok["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab.update(special)
    n = cfg["vocab_size"]
    tokens = [f"<|unused_{i}|>" for i in range(n)]
    types = [gguf.TokenType.UNUSED] * n
    for t, i in vocab.items():
        if i < n:
            tokens[i] = t
            types[i] = gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("default")
    g.add_token_list(tokens)
    g.add_token_types(types)
    g.add_token_merges(merges)
    g.add_bos_token_id(cfg.get("bos_token_id") or 0)
    eos = cfg.get("eos_token_id")
    g.add_eos_token_id(eos[0] if isinstance(eos, list) else (eos if eos is not None else 1))
    g.add_add_bos_token(False)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}

    def add(name, t):
        t = np.ascontiguousarray(t, dtype=np.float32)
        if q8 and t.ndim == 2:
            # the quantized bytes' shape tells the writer the tensor's shape
            g.add_tensor(name, gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            g.add_tensor(name, t)

    add("token_embd.weight", w["model.embed_tokens.weight"])
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            t = w[f"model.layers.{l}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                t = permute(t, H)
            elif hf == "self_attn.k_proj":
                t = permute(t, KV)
            add(f"blk.{l}.{gg}.weight", t)
    add("output_norm.weight", w["model.norm.weight"])
    if "lm_head.weight" in w:
        add("output.weight", w["lm_head.weight"])
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    return cfg


def measure(llm, prompt, steps):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t0
    first = np.array(llm.scores[: len(prompt)])
    nxt = int(np.argmax(llm.scores[len(prompt) - 1]))
    t1 = time.perf_counter()
    for _ in range(steps):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode = time.perf_counter() - t1
    return len(prompt) / prefill, steps / decode, first


def main(model_dir, out, types, repeat):
    from llama_cpp import Llama
    import llama_cpp

    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    v = cfg["vocab_size"]
    prompt = [(i * 31 + 3) % v for i in range(64)]
    want = None
    results = []
    for qtype in types:
        path = os.path.join(folder, f"model-{qtype}.gguf")
        stamp = os.path.getmtime(os.path.join(model_dir, "model.safetensors"))
        if not os.path.exists(path) or os.path.getmtime(path) < stamp:
            convert(model_dir, path + ".tmp", qtype)
            os.replace(path + ".tmp", path)
        llm = Llama(model_path=path, n_ctx=256, n_batch=64, n_threads=THREADS, logits_all=True,
                    verbose=False)
        measure(llm, prompt[:8], 2)  # warm: the GGUF is memory-mapped, pages fault in on first use
        runs = [measure(llm, prompt, 32) for _ in range(repeat)]
        if want is None:
            want = reference.logits(model_dir, np.array(prompt))
        diff = float(np.abs(runs[0][2] - want).max())
        results.append({
            "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, {qtype} GGUF, {THREADS} threads)",
            "weights": qtype, "batch": 1, "prompt_len": len(prompt), "decode_steps": 32,
            "prefill_tokens_per_s": [r[0] for r in runs], "decode_tokens_per_s": [r[1] for r in runs],
            "max_abs_logit_diff_vs_numpy_reference": diff,
        })
        del llm
    json.dump(results, open(out, "w"), indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    args = sys.argv[1:]
    types, repeat = ["f32"], 1
    if "--types" in args:
        i = args.index("--types")
        types = args[i + 1].split(",")
        del args[i:i + 2]
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i:i + 2]
    main(args[0], args[1], types, repeat)
