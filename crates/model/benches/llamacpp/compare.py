"""llama.cpp on the same weights: convert a model directory made by `openledger model init`
(Llama architecture, byte-level BPE) to GGUF (f32), check llama.cpp's logits against the NumPy
reference, and measure batch-1 prefill and decode tokens/s with the same prompt as
`openledger model bench` (token i of sequence 0 = (31 i + 3) mod vocab, 64 tokens, 32 steps).

  pip install gguf==0.19.0 llama-cpp-python==0.3.36 numpy safetensors
  python compare.py MODEL_DIR OUT.json

GGUF's llama architecture rotates interleaved pairs, HF's rotates halves: q_proj and k_proj rows
are permuted when converting, as llama.cpp's own converter does.
"""
import json
import os
import sys
import time

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
import reference  # noqa: E402

THREADS = int(os.environ.get("LLAMA_THREADS", "2"))


def permute(w, heads):
    out, inp = w.shape
    return w.reshape(heads, 2, out // heads // 2, inp).swapaxes(1, 2).reshape(out, inp)


def convert(model_dir, path):
    import gguf

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // H
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
    g.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = dict(tok["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab.update(special)
    n = cfg["vocab_size"]
    tokens = [""] * n
    types = [gguf.TokenType.NORMAL] * n
    for t, i in vocab.items():
        tokens[i] = t
        if t in special:
            types[i] = gguf.TokenType.CONTROL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("default")
    g.add_token_list(tokens)
    g.add_token_types(types)
    g.add_token_merges(merges)
    g.add_bos_token_id(cfg["bos_token_id"])
    g.add_eos_token_id(1)
    g.add_add_bos_token(False)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    g.add_tensor("token_embd.weight", w["model.embed_tokens.weight"])
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            t = w[f"model.layers.{l}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                t = permute(t, H)
            elif hf == "self_attn.k_proj":
                t = permute(t, KV)
            g.add_tensor(f"blk.{l}.{gg}.weight", np.ascontiguousarray(t))
    g.add_tensor("output_norm.weight", w["model.norm.weight"])
    if "lm_head.weight" in w:
        g.add_tensor("output.weight", w["lm_head.weight"])
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    return cfg


def main(model_dir, out):
    from llama_cpp import Llama

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    path = os.path.join(os.path.dirname(os.path.abspath(out)), "model-f32.gguf")
    cfg = convert(model_dir, path)
    v = cfg["vocab_size"]
    prompt = [(i * 31 + 3) % v for i in range(64)]
    llm = Llama(model_path=path, n_ctx=256, n_batch=64, n_threads=THREADS, logits_all=True, verbose=False)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t0
    got = np.array(llm.scores[: len(prompt)])
    want = reference.logits(model_dir, np.array(prompt))
    diff = float(np.abs(got - want).max())
    steps = 32
    nxt = int(np.argmax(llm.scores[len(prompt) - 1]))
    t1 = time.perf_counter()
    for _ in range(steps):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode = time.perf_counter() - t1
    res = {"engine": "llama.cpp (llama-cpp-python 0.3.36, f32 GGUF, %d threads)" % THREADS, "batch": 1,
           "prompt_len": len(prompt), "decode_steps": steps,
           "prefill_tokens_per_s": len(prompt) / prefill, "decode_tokens_per_s": steps / decode,
           "max_abs_logit_diff_vs_numpy_reference": diff}
    json.dump(res, open(out, "w"), indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
