"""The memory and time plan of docs/scale.md: Llama-3-8B on 1 and 8 GPUs of 80 GB, every method.

Closed-form model (the formulas are in docs/scale.md), checked against what
``benchmarks/bench_checkpointing.py`` measured on SmolLM2 (``benchmarks/results/checkpointing.json``):
the activation memory with and without checkpointing and the step-time ratios. Prints the
markdown tables of docs/scale.md and writes ``benchmarks/results/scale_plan.json``.

    python -m benchmarks.scale_plan
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9
LLAMA3_8B = {"name": "Llama-3-8B", "n_layers": 32, "d_model": 4096, "d_mlp": 14336, "n_heads": 32, "n_kv_heads": 8,
             "d_head": 128, "d_vocab": 128256, "gated": True}
SMOLLM2 = {"name": "SmolLM2-135M", "n_layers": 30, "d_model": 576, "d_mlp": 1536, "n_heads": 9, "n_kv_heads": 3,
           "d_head": 64, "d_vocab": 49152, "gated": True}
GPU_FLOPS = 400e12  # achieved bf16 FLOP/s assumed per 80 GB GPU (about 40% of an H100's dense peak)
GPU_MEM = 80 * GB


def shapes(m: dict[str, Any]) -> dict[str, float]:
    d, f, L, V = m["d_model"], m["d_mlp"], m["n_layers"], m["d_vocab"]
    attn = d * m["n_heads"] * m["d_head"] * 2 + d * m["n_kv_heads"] * m["d_head"] * 2
    mlp = (3 if m["gated"] else 2) * d * f
    block = attn + mlp + 2 * d
    return {"block": block, "mlp": mlp, "blocks": L * block, "embed": V * d, "unembed": V * d,
            "total": L * block + 2 * V * d + d}


def act_elems(m: dict[str, Any], T: int) -> int:
    """Elements autograd keeps per token and block (before the fitted factor kappa)."""
    return 12 * m["d_model"] + 4 * m["d_mlp"] + 2 * m["n_heads"] * T


def activations(m: dict[str, Any], tokens: int, T: int, ckpt: bool, act_bytes: float, kappa: float,
                depth: float = 1.0) -> float:
    """Bytes of activations of one micro-batch of ``tokens`` tokens (``T`` per row), backward through
    ``depth`` of the blocks: all blocks' saved tensors, or with checkpointing each block's fp32 input plus
    one block's saved tensors."""
    L = m["n_layers"] * depth
    if not ckpt:
        return tokens * L * act_elems(m, T) * act_bytes * kappa
    return tokens * L * m["d_model"] * 4 + tokens * act_elems(m, T) * act_bytes * kappa


def step_flops(m: dict[str, Any], T: int, trainable: float, depth: float, ckpt: bool) -> float:
    """FLOPs per token of a training step: forward ``2 N_blocks + 4 T d L`` (attention), input-gradient
    backward 2x the forward of the blocks it crosses (``depth``), weight gradients 2 per trainable block
    parameter, and with checkpointing one more forward of those blocks."""
    s = shapes(m)
    d_attn = m["n_heads"] * m["d_head"]
    fwd = 2 * s["blocks"] + 4 * T * d_attn * m["n_layers"]
    bwd_input = 2 * s["blocks"] * depth + 8 * T * d_attn * m["n_layers"] * depth
    bwd_weight = 2 * min(trainable, s["blocks"])
    recompute = fwd * depth if ckpt else 0.0
    return fwd + bwd_input + bwd_weight + recompute


METHODS = {  # trainable parameters (as a function of the shapes) and backward depth
    "full": (lambda s: s["total"], 1.0, "FSDP2 (8 GPUs); does not fit 1 GPU"),
    "clean": (lambda s: s["total"], 1.0, "as full"),
    "layers": (lambda s: 3 * s["mlp"], 1.0, "DDP on the trainable tensors"),
    "neurorit stage 1": (lambda s: 1000 * 3 * 4096, 1.0, "DDP on the trainable entries"),
    "neurorit stage 2": (lambda s: 3 * s["mlp"], 1.0, "DDP on the trainable tensors"),
    "random": (lambda s: 1000 * 3 * 4096, 1.0, "DDP on the trainable entries"),
}


def memory_row(m: dict[str, Any], method: str, n_gpus: int, rows: int, T: int, ckpt: bool, kappa: float) -> dict:
    s = shapes(m)
    trainable = METHODS[method][0](s)
    sharded = method in ("full", "clean") and n_gpus > 1
    w = s["total"] * 4 / (n_gpus if sharded else 1)  # fp32 master weights
    g = trainable * 4 / (n_gpus if sharded else 1)
    opt = trainable * 8 / (n_gpus if sharded else 1)
    gathered = 2 * s["block"] * 4 if sharded else 0.0  # FSDP2: the current and the prefetched block
    act = activations(m, rows * T, T, ckpt, 2, kappa)
    total = w + g + opt + gathered + act
    return {"method": method, "gpus": n_gpus, "rows_per_gpu": rows, "tokens": T, "checkpointing": ckpt,
            "weights_gb": w / GB, "grads_gb": g / GB, "adam_gb": opt / GB, "fsdp_gathered_gb": gathered / GB,
            "activations_gb": act / GB, "total_gb": total / GB, "fits": total <= 0.9 * GPU_MEM,
            "parallelism": METHODS[method][2], "trainable": trainable}


def calibrate() -> dict[str, Any]:
    """kappa_train and the time ratios from the SmolLM2 measurement (full at the same items, both modes)."""
    path = RESULTS / "checkpointing.json"
    if not path.exists():
        return {"kappa_train": 1.0, "note": "no checkpointing.json: kappa_train = 1"}
    res = json.loads(path.read_text())
    s = shapes(SMOLLM2)
    out: dict[str, Any] = {"cases": []}
    kappas = []
    for c in res["cases"]:
        T = max(c["n_tokens"])
        tokens = sum(c["n_tokens"])
        trainable = {"full": s["total"], "layers": None, "neurorit": None}[c["method"]]
        state = 0.0 if trainable is None else trainable * 16  # fp32 weights' grads + AdamW's two moments
        measured_act = (c["peak_rss_mb"] - c["rss_loaded_mb"]) * 2**20 - state
        if c["method"] != "full":
            out["cases"].append({"method": c["method"], "ckpt": c["checkpointing"], "n_items": c["n_items"],
                                 "measured_above_load_gb": (c["peak_rss_mb"] - c["rss_loaded_mb"]) * 2**20 / GB})
            continue
        pred = activations(SMOLLM2, tokens, T, c["checkpointing"], 4, 1.0)
        ratio = measured_act / pred
        if not c["checkpointing"]:
            kappas.append(ratio)
        out["cases"].append({"method": "full", "ckpt": c["checkpointing"], "n_items": c["n_items"],
                             "measured_activations_gb": measured_act / GB, "model_kappa1_gb": pred / GB,
                             "measured_over_model": ratio})
    out["kappa_train"] = sum(kappas) / len(kappas) if kappas else 1.0
    times = []
    for comp in res["comparisons"]:
        if comp["method"] != "full":
            continue
        case = next(c for c in res["cases"] if c["method"] == "full" and c["n_items"] == comp["n_items"])
        T = max(case["n_tokens"])
        pred = step_flops(SMOLLM2, T, s["total"], 1.0, True) / step_flops(SMOLLM2, T, s["total"], 1.0, False)
        times.append({"n_items": comp["n_items"], "predicted_time_ratio": pred, "measured_cpu_ratio": comp["cpu_ratio"],
                      "measured_wall_ratio": comp["time_ratio"], "measured_over_predicted": comp["cpu_ratio"] / pred})
    plain = [c for c in res["cases"] if c["method"] == "full" and not c["checkpointing"]]
    if plain:
        c = plain[0]
        f = step_flops(SMOLLM2, max(c["n_tokens"]), s["total"], 1.0, False) * sum(c["n_tokens"])
        out["cpu_flops_per_cpu_second"] = f / c["step_cpu_s"]
    out["time"] = times
    return out


def ig_plan(m: dict[str, Any], n_prompts: int, T: int, steps: int, n_gpus: int) -> dict[str, float]:
    """Per-layer IG of every layer: 2 m T P_block L (L + 1) FLOPs per prompt (forward + input-gradient
    backward from each layer up), plus attention; grad_x_act: one forward and backward, 4 N T."""
    s = shapes(m)
    L = m["n_layers"]
    ig = 2 * steps * T * s["block"] * L * (L + 1) * 1.15  # +15%: attention at T ~ 1k
    gxa = 4 * s["blocks"] * T * 1.15
    return {"ig_s_per_prompt": ig / GPU_FLOPS, "ig_hours": n_prompts * ig / GPU_FLOPS / n_gpus / 3600,
            "grad_x_act_s_per_prompt": gxa / GPU_FLOPS, "grad_x_act_minutes": n_prompts * gxa / GPU_FLOPS / n_gpus / 60}


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    cal = calibrate()
    kappa = cal["kappa_train"]
    s = shapes(LLAMA3_8B)
    rows = []
    for n_gpus in (1, 8):
        for method in METHODS:
            for ckpt in (False, True):
                rows.append(memory_row(LLAMA3_8B, method, n_gpus, 4, 1024, ckpt, kappa))
    time_rows = []
    for method, (fn, depth, _) in METHODS.items():
        for ckpt in (False, True):
            f = step_flops(LLAMA3_8B, 1024, fn(s), depth, ckpt)
            time_rows.append({"method": method, "checkpointing": ckpt, "gflop_per_token": f / 1e9,
                              "s_per_step_4x1024": 4 * 1024 * f / GPU_FLOPS,
                              "hours_per_1B_tokens_1gpu": 1e9 * f / GPU_FLOPS / 3600,
                              "hours_per_1B_tokens_8gpu": 1e9 * f / GPU_FLOPS / 8 / 3600})
    ig = {n: ig_plan(LLAMA3_8B, 2000, 1024, 20, n) for n in (1, 8)}
    out = {"model": LLAMA3_8B, "shapes": s, "gpu_flops_assumed": GPU_FLOPS, "calibration": cal, "memory": rows,
           "time": time_rows, "ig_mining_1000_questions": ig}
    (RESULTS / "scale_plan.json").write_text(json.dumps(out, indent=2))
    print(f"kappa_train (SmolLM2, full without checkpointing) = {kappa:.2f}")
    print(json.dumps(cal, indent=2))
    print("\n| method | GPUs | checkpointing | weights | grads | AdamW | FSDP gathered | activations | total (GB) "
          "| fits 80 GB | parallelism |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['gpus']} | {'yes' if r['checkpointing'] else 'no'} | {r['weights_gb']:.1f} | "
              f"{r['grads_gb']:.1f} | {r['adam_gb']:.1f} | {r['fsdp_gathered_gb']:.1f} | {r['activations_gb']:.1f} | "
              f"{r['total_gb']:.1f} | {'yes' if r['fits'] else 'no'} | {r['parallelism']} |")
    print("\n| method | checkpointing | GFLOP per token | s per step of 4 x 1024 tokens per GPU "
          "| h per 1B tokens, 1 GPU | h per 1B tokens, 8 GPUs |\n|---|---|---|---|---|---|")
    for r in time_rows:
        print(f"| {r['method']} | {'yes' if r['checkpointing'] else 'no'} | {r['gflop_per_token']:.1f} | "
              f"{r['s_per_step_4x1024']:.2f} | {r['hours_per_1B_tokens_1gpu']:.1f} | "
              f"{r['hours_per_1B_tokens_8gpu']:.1f} |")
    print("\nIG mining, 1,000 questions (2,000 prompts: R and I), 1,024 tokens, m = 20, every layer:")
    for n, r in ig.items():
        print(f"  {n} GPU(s): ig {r['ig_s_per_prompt']:.1f} s per prompt, {r['ig_hours']:.1f} h; grad_x_act "
              f"{r['grad_x_act_s_per_prompt'] * 1e3:.0f} ms per prompt, {r['grad_x_act_minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
