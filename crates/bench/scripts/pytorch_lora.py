"""PyTorch + PEFT baseline of `openledger bench train`.

Trains the same LoRA adapter as the Rust trainer's `batched` run: the base model directory is
loaded with `transformers.LlamaForCausalLM.from_pretrained`, the initial adapter (the Rust
trainer's own A/B init, written as a PEFT directory) with `peft.PeftModel.from_pretrained`,
and the optimizer steps are read from a JSON file the Rust bench exported: per step its
learning rate, its loss denominator (target tokens of the step) and its micro-batches as the
exact token id / target / mask matrices (right-padded) the Rust trainer used.

Loss per micro-batch = sum(mask * NLL(targets)) / denom, backward, accumulate; then global-norm
clipping and `torch.optim.AdamW` with the same betas, eps and weight decay. Timed: the optimizer
steps only (tensors are built before the clock starts). Output: JSON on --out.

Usage: python pytorch_lora.py --base DIR --job steps.json --init-adapter DIR --threads N --out r.json
"""

import argparse
import json
import platform
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--init-adapter", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import peft
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import LlamaForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.job) as f:
        job = json.load(f)
    cfg = job["config"]

    model = LlamaForCausalLM.from_pretrained(a.base, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(model, a.init_adapter, is_trainable=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params,
        lr=cfg["learningRate"],
        betas=(cfg["beta1"], cfg["beta2"]),
        eps=cfg["eps"],
        weight_decay=cfg["weightDecay"],
    )
    steps = []
    for s in job["steps"]:
        micro = []
        for m in s["micro"]:
            micro.append(
                (
                    torch.tensor(m["inputs"], dtype=torch.long),
                    torch.tensor(m["targets"], dtype=torch.long),
                    torch.tensor(m["mask"], dtype=torch.float32),
                )
            )
        steps.append((s["lr"], float(s["denom"]), micro))
    tokens = sum(m["inputTokens"] for s in job["steps"] for m in s["micro"])

    losses = []
    t0 = time.perf_counter()
    for lr, denom, micro in steps:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for inputs, targets, mask in micro:
            logits = model(input_ids=inputs).logits
            b, t, v = logits.shape
            nll = F.cross_entropy(
                logits.reshape(b * t, v), targets.reshape(b * t), reduction="none"
            ).reshape(b, t)
            loss = (nll * mask).sum() / max(denom, 1.0)
            loss.backward()
            step_loss += loss.item()
        if cfg["maxGradNorm"] > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg["maxGradNorm"])
        opt.step()
        losses.append(step_loss)
    secs = time.perf_counter() - t0

    out = {
        "tokensPerSec": tokens / secs,
        "tokens": tokens,
        "steps": len(steps),
        "secs": secs,
        "losses": losses,
        "threads": torch.get_num_threads(),
        "attnImplementation": model.base_model.model.config._attn_implementation,
        "trainableParams": sum(p.numel() for p in params),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    with open(a.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
