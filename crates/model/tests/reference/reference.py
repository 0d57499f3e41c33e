"""Independent NumPy reference for the Llama-family decoder and LoRA, written from the papers'
equations (RMSNorm: Zhang & Sennrich 2019; RoPE: Su et al. 2021; GQA: Ainslie et al. 2023;
SwiGLU: Shazeer 2020; LoRA: Hu et al. 2021; rsLoRA: Kalajdzievski 2023), computed in float64.

  python reference.py logits MODEL_DIR IDS OUT.safetensors [ADAPTER_DIR]
      IDS is a comma-separated token list; writes {"logits": [t, vocab] float32}.
  python reference.py make-adapter MODEL_DIR OUT_DIR SEED
      writes a PEFT-format adapter (adapter_config.json + adapter_model.safetensors) with
      random A and non-zero B for q_proj, v_proj and down_proj, rank 4, alpha 8, rsLoRA, and a
      rank_pattern giving down_proj rank 2.
"""
import json
import os
import re
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_inv(d, theta, scaling):
    # theta^(-2i/d); Llama 3.1 scaling (Meta's apply_scaling): wavelengths below
    # original/high_freq_factor kept, above original/low_freq_factor divided by factor,
    # linearly blended in between
    inv = theta ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    if (scaling or {}).get("rope_type", (scaling or {}).get("type")) != "llama3":
        return inv
    f, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    out = []
    for freq in inv:
        wavelen = 2 * np.pi / freq
        if wavelen < old / hi:
            out.append(freq)
        elif wavelen > old / lo:
            out.append(freq / f)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append((1 - smooth) * freq / f + smooth * freq)
    return np.array(out)


def rope(x, positions, inv, factor):
    # x: [heads, t, d]; pairs (i, i + d/2) rotate by angle pos * inv[i]
    d = x.shape[-1]
    ang = (positions.astype(np.float64) / factor)[:, None] * inv[None, :]
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


def load_weights(path):
    # safetensors, with bf16 tensors (numpy has no bf16) widened exactly to float32
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    kinds = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        raw = data[a:b]
        if h["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            t = bits.view(np.float32)
        else:
            t = np.frombuffer(raw, dtype=kinds[h["dtype"]])
        out[name] = t.reshape(h["shape"])
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def load_adapter(adir):
    if adir is None:
        return {}
    cfg = json.load(open(os.path.join(adir, "adapter_config.json")))
    t = load_weights(os.path.join(adir, "adapter_model.safetensors"))
    out = {}
    for name, a in t.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_(?:A\.weight|embedding_A)", name)
        if not m:
            continue
        module = m.group(1)
        b = t[name.replace("lora_A", "lora_B").replace("lora_embedding_A", "lora_embedding_B")]
        r = a.shape[0]
        alpha = cfg["lora_alpha"]
        for pat, val in (cfg.get("alpha_pattern") or {}).items():
            if re.match(rf"^(.*\.)?(?:{pat})$", module):
                alpha = val
                break
        scale = alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r
        out[module] = (a.astype(np.float64), b.astype(np.float64), scale)
    return out


def logits(model_dir, ids, adapter_dir=None):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = {k: v.astype(np.float64) for k, v in load_weights(os.path.join(model_dir, "model.safetensors")).items()}
    lora = load_adapter(adapter_dir)
    mt = cfg["model_type"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = scaling.get("factor", 1.0) if kind == "linear" else 1.0
    inv = rope_inv(D, theta, scaling)
    window = cfg.get("sliding_window") if mt == "mistral" else None
    T = len(ids)
    pos = np.arange(T)

    def linear(x, module):
        y = x @ w[module + ".weight"].T
        if module + ".bias" in w:
            y = y + w[module + ".bias"]
        if module in lora:
            a, b, s = lora[module]
            y = y + s * ((x @ a.T) @ b.T)
        return y

    x = w["model.embed_tokens.weight"][ids]
    if "model.embed_tokens" in lora:
        # PEFT's embedding LoRA: A [r, vocab], B [hidden, r]; e += s * B @ A[:, token]
        a, b, s = lora["model.embed_tokens"]
        x = x + s * (a[:, ids].T @ b.T)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        h = rms_norm(x, w[p + ".input_layernorm.weight"], eps)
        q = linear(h, p + ".self_attn.q_proj").reshape(T, H, D).transpose(1, 0, 2)
        k = linear(h, p + ".self_attn.k_proj").reshape(T, KV, D).transpose(1, 0, 2)
        v = linear(h, p + ".self_attn.v_proj").reshape(T, KV, D).transpose(1, 0, 2)
        q, k = rope(q, pos, inv, factor), rope(k, pos, inv, factor)
        heads = []
        for i in range(H):
            g = i // (H // KV)  # query head i reads key/value group g
            sc = q[i] @ k[g].T / np.sqrt(D)
            allowed = pos[None, :] <= pos[:, None]
            if window is not None:
                allowed &= (pos[:, None] - pos[None, :]) < window
            sc = np.where(allowed, sc, -np.inf)
            e = np.exp(sc - sc.max(-1, keepdims=True))
            heads.append((e / e.sum(-1, keepdims=True)) @ v[g])
        att = np.stack(heads, 1).reshape(T, H * D)
        x = x + linear(att, p + ".self_attn.o_proj")
        h = rms_norm(x, w[p + ".post_attention_layernorm.weight"], eps)
        x = x + linear(silu(linear(h, p + ".mlp.gate_proj")) * linear(h, p + ".mlp.up_proj"), p + ".mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    out = x @ head.T
    if "lm_head" in lora:
        a, b, s = lora["lm_head"]
        out = out + s * ((x @ a.T) @ b.T)
    return out


def make_adapter(model_dir, out_dir, seed):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    rng = np.random.default_rng(seed)
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    hid, inter = cfg["hidden_size"], cfg["intermediate_size"]
    dims = {"self_attn.q_proj": (H * D, hid), "self_attn.v_proj": (KV * D, hid), "mlp.down_proj": (hid, inter)}
    tensors = {}
    for l in range(cfg["num_hidden_layers"]):
        for mod, (o, i) in dims.items():
            r = 2 if mod == "mlp.down_proj" else 4
            base = f"base_model.model.model.layers.{l}.{mod}"
            tensors[base + ".lora_A.weight"] = (rng.standard_normal((r, i)) * 0.3).astype(np.float32)
            tensors[base + ".lora_B.weight"] = (rng.standard_normal((o, r)) * 0.3).astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model_dir,
        "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
        "lora_dropout": 0.05, "bias": "none", "use_rslora": True, "use_dora": False,
        "fan_in_fan_out": False, "modules_to_save": None, "rank_pattern": {"down_proj": 2},
        "alpha_pattern": {}, "inference_mode": True, "init_lora_weights": True,
        "layers_to_transform": None, "layers_pattern": None, "revision": None,
    }
    json.dump(config, open(os.path.join(out_dir, "adapter_config.json"), "w"), indent=2)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "logits":
        ids = np.array([int(t) for t in sys.argv[3].split(",")])
        out = logits(sys.argv[2], ids, sys.argv[5] if len(sys.argv) > 5 else None)
        save_file({"logits": out.astype(np.float32)}, sys.argv[4])
    elif cmd == "make-adapter":
        make_adapter(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
