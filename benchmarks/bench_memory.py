"""Peak memory and time per example of neuron attribution vs model size; extrapolation to 8B.

How the implementation keeps IG within one GPU (``neurorit_lens.neurons.attribution``):
bf16 weights (``load_model(..., dtype="bf16")``); per-layer IG starts each pass at the
layer from a cached ``resid_pre`` (``start_at_layer``), so only layers ``l..L-1`` hold
activations for backward; alphas go in chunks of ``alpha_chunk`` rows; parameters are
frozen (no weight gradients); the unembedding is applied only at answer positions; the
cached residuals and the scores can live on CPU (``offload_scores``).

Measured here (CPU, float32, one process per model): resident memory after loading, the
peak resident memory during attribution (``VmHWM`` from ``/proc/self/status``, reset with
``/proc/self/clear_refs`` before each run), and wall time, for ``grad_x_act`` (all layers)
and per-layer ``ig`` of layer 0 (the most expensive layer: the pass runs through every
block) with ``alpha_chunk`` 1 and 4.

Model of the peak (bytes), for rows = alpha_chunk * batch, T tokens, dtype size b:

    M = W + rows * T * b * (L - l) * (12 d + 4 f + 2 h T) * kappa + rows * n_ans * V * 4 * 3
    W = n_params * b

(per block and token, autograd keeps ~12 d_model-sized tensors (norms, q/k/v, z, attn out,
residuals), ~4 d_mlp-sized ones (pre, gate, activation, post) and the attention scores and
pattern, 2 h T). kappa is fitted on the largest measured model and reported; the formula
with that kappa is then evaluated for an 8B Llama-3-shaped model in bf16. Time per example
is extrapolated by FLOPs: a pass from layer l costs ~ 2 (forward) + 2 (input-gradient
backward, no weight gradients) FLOPs per block parameter per row-token:

    FLOPs(IG, all layers) = 4 * m * T * P_block * sum_l (L - l) = 2 m T P_block L (L + 1)

Usage (about 3-4 minutes here; real models need their checkpoints)::

    nice -n 10 python -m benchmarks.bench_memory --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from neurorit_lens.memory import reset_peak, status_kb

ROOT = Path(__file__).resolve().parents[1]

LLAMA3_8B = {"name": "llama-3-8b (shape)", "n_layers": 32, "d_model": 4096, "d_mlp": 14336, "n_heads": 32,
             "d_vocab": 128256, "n_params": 8.03e9}


def act_elems_per_token_layer(d: int, f: int, h: int, T: int) -> int:
    return 12 * d + 4 * f + 2 * h * T


def predict_peak_bytes(dims: dict, T: int, rows: int, layers_after: int, bytes_per: int, n_ans: int,
                       kappa: float = 1.0, weights: bool = True) -> float:
    """The memory model of the module docstring."""
    W = dims["n_params"] * bytes_per if weights else 0.0
    acts = rows * T * bytes_per * layers_after * act_elems_per_token_layer(dims["d_model"], dims["d_mlp"],
                                                                         dims["n_heads"], T) * kappa
    logits = rows * n_ans * dims["d_vocab"] * 4 * 3
    return W + acts + logits


def ig_flops(dims: dict, T: int, steps: int) -> float:
    L = dims["n_layers"]
    p_block = dims.get("p_block") or (dims["n_params"] - 2 * dims["d_vocab"] * dims["d_model"]) / L
    return 2 * steps * T * p_block * L * (L + 1)


# --- worker: one model, several attribution runs ------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from neurorit_lens.models import load_model, tiny_model
    from neurorit_lens.neurons.attribution import attribute
    from neurorit_lens.objective import tokenize_with_answers

    rss0 = status_kb("VmRSS")
    t0 = time.perf_counter()
    tiny = args.model == "tiny"
    model = tiny_model(n_layers=4, d_model=128, d_mlp=512, n_heads=4) if tiny else load_model(args.model)
    load_s = time.perf_counter() - t0
    rss_loaded = status_kb("VmRSS")
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    p_block = sum(p.numel() for p in model.blocks[0].parameters())
    passage = ("The river Quell flows north through the valley of Brindle, where the Sorrel Spire stands. "
               "Trains run on time every day and the weather is mild in spring. ") * 40
    ids = model.tokenizer.encode(passage, add_special_tokens=False)[: args.tokens - 12]
    prompt = model.tokenizer.decode(ids) + "\nQuestion: Where does the river flow? Answer:"
    batch = tokenize_with_answers(model, [prompt], [" north"])
    T = int(batch.tokens.shape[1])
    n_ans = int(batch.answer_mask.sum())
    runs = []
    plan = [("grad_x_act", None, 1, 1), ("ig", [0], args.steps, 1), ("ig", [0], args.steps, args.steps)]
    for method, layers, steps, chunk in plan:  # ascending expected memory (allocator reuse)
        ok = reset_peak()
        base = status_kb("VmRSS")
        t1 = time.perf_counter()
        scores = attribute(model, batch, method=method, steps=steps, alpha_chunk=chunk, layers=layers, offload=True)
        dt = time.perf_counter() - t1
        peak = status_kb("VmHWM")
        del scores
        runs.append({"method": method, "layers": layers, "steps": steps, "alpha_chunk": chunk, "seconds": dt,
                     "peak_rss_mb": peak / 1024, "rss_before_mb": base / 1024,
                     "activation_peak_mb": (peak - base) / 1024, "peak_reset": ok})
    dims = {"name": args.model, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "d_mlp": cfg.d_mlp,
            "n_heads": cfg.n_heads, "d_vocab": cfg.d_vocab, "n_params": n_params, "p_block": p_block}
    Path(args.result).write_text(json.dumps({
        "model": args.model, "dims": dims, "tokens": T, "n_answer_tokens": n_ans, "threads": args.threads,
        "load_s": load_s, "rss_start_mb": rss0 / 1024, "rss_loaded_mb": rss_loaded / 1024,
        "weights_mb": n_params * 4 / 2**20, "runs": runs}))


def run_model(name: str, args: argparse.Namespace, tmp: Path) -> dict | None:
    result = tmp / f"{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--worker", "--model", name, "--result", str(result),
           "--tokens", str(args.tokens), "--steps", str(args.steps), "--threads", str(args.threads)]
    load = os.getloadavg()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if r.returncode != 0:
        print(f"{name}: skipped ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")
        return None
    out = json.loads(result.read_text())
    out["loadavg_before"] = list(load)
    print(f"{name}: " + ", ".join(f"{x['method']}{x['layers'] or ''} c={x['alpha_chunk']}: {x['seconds']:.2f} s, "
                                  f"+{x['activation_peak_mb']:.0f} MB" for x in out["runs"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--models", default="tiny,smollm2-135m-instruct,gemma-3-270m")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-tflops", type=float, default=400.0,
                    help="sustained bf16 TFLOP/s assumed for the 8B time estimate (H100: ~40%% of 989 peak)")
    ap.add_argument("--render-only", action="store_true", help="rewrite memory.md from memory.json (no runs)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info, read_json

    if args.render_only:
        results = read_json(Path(args.out) / "memory.json")["measurements"]
        args.tokens, args.steps = results[0]["tokens"], results[0]["runs"][-1]["steps"]
    else:
        with tempfile.TemporaryDirectory() as td:
            results = [r for r in (run_model(m, args, Path(td)) for m in args.models.split(",")) if r]
    if not results:
        raise SystemExit("no model could be measured")
    # fit kappa on the largest measured model (ig layer 0 with the largest chunk)
    big = max(results, key=lambda r: r["dims"]["n_params"])
    for r in results:
        for x in r["runs"]:
            rows = x["alpha_chunk"]
            x["predicted_activation_mb_kappa1"] = predict_peak_bytes(
                r["dims"], r["tokens"], rows, r["dims"]["n_layers"], 4, r["n_answer_tokens"], 1.0, False) / 2**20
            flops = (4 * x["steps"] * r["tokens"] * r["dims"]["p_block"] * r["dims"]["n_layers"]
                     if x["method"] == "ig" else 4 * r["tokens"] * r["dims"]["p_block"] * r["dims"]["n_layers"])
            x["gflops"] = flops / 1e9
            x["gflop_per_s"] = flops / 1e9 / x["seconds"]
    ref = big["runs"][-1]
    kappa = ref["activation_peak_mb"] / ref["predicted_activation_mb_kappa1"]
    cpu_rate = ref["gflop_per_s"]
    d8 = {**LLAMA3_8B, "p_block": (LLAMA3_8B["n_params"] - 2 * LLAMA3_8B["d_vocab"] * LLAMA3_8B["d_model"]) / 32}
    proj = []
    for T in (512, 1024, 2048):
        for c in (1, 2, 5, 10, 20):
            m = predict_peak_bytes(d8, T, c, 32, 2, 8, kappa, True)
            proj.append({"tokens": T, "alpha_chunk": c, "peak_gb": m / 1e9, "fits_80gb": m < 80e9 * 0.95})
    t8 = {T: ig_flops(d8, T, 20) / (args.gpu_tflops * 1e12) for T in (512, 1024, 2048)}
    result = {"measurements": results, "kappa": kappa,
              "kappa_fitted_on": f"{big['model']} ig layer 0 c={ref['alpha_chunk']}",
              "cpu_gflop_per_s": cpu_rate,
              "llama3_8b": {"dims": d8, "weights_gb_bf16": d8["n_params"] * 2 / 1e9, "peak_memory": proj,
                            "ig_s_per_example_m20": t8, "gpu_tflops_assumed": args.gpu_tflops},
              "environment": environment_info(0)}
    out = Path(args.out)
    atomic_write_json(out / "memory.json", result)
    L = ["# Attribution memory and time vs model size, and the 8B extrapolation", "",
         f"CPU, float32, {args.threads} threads, one prompt of ~{args.tokens} tokens, IG with m = {args.steps}; "
         "peak = VmHWM during the call minus resident memory before it (weights excluded). Shared 2-core machine "
         "(load average in memory.json). Command: `nice -n 10 python -m benchmarks.bench_memory`.", "",
         "| model | params | weights (MB) | run | time (s) | activation peak (MB) | model, kappa=1 (MB) |",
         "|---|---|---|---|---|---|---|"]
    for r in results:
        for x in r["runs"]:
            run = f"{x['method']} {'L0' if x['layers'] else 'all layers'} c={x['alpha_chunk']}"
            L.append(f"| {r['model']} | {r['dims']['n_params'] / 1e6:.1f}M | {r['weights_mb']:.0f} | {run} | "
                     f"{x['seconds']:.2f} | {x['activation_peak_mb']:.0f} | "
                     f"{x['predicted_activation_mb_kappa1']:.0f} |")
    L += ["", f"Fitted kappa = {kappa:.2f} (measured / modelled activation memory, {result['kappa_fitted_on']}).", "",
          "## Llama-3-8B shape in bf16 on one 80 GB GPU (per-layer IG, layer 0 = worst case, batch 1)", "",
          f"Weights {d8['n_params'] * 2 / 1e9:.1f} GB. Peak = W + rows * T * 2 B * 32 * (12 d + 4 f + 2 h T) * kappa "
          "+ logits at answer positions.", "",
          "| tokens | alpha_chunk | peak (GB) | fits 80 GB |", "|---|---|---|---|"]
    for p in proj:
        L.append(f"| {p['tokens']} | {p['alpha_chunk']} | {p['peak_gb']:.1f} | {'yes' if p['fits_80gb'] else 'no'} |")
    L += ["", f"Time per example, full per-layer IG over all 32 layers, m = 20: FLOPs = 2 m T P_block L (L+1); at "
          f"{args.gpu_tflops:.0f} TFLOP/s sustained (assumed, H100 bf16): "
          + ", ".join(f"T={T}: {s:.0f} s" for T, s in t8.items()) + ". Measured CPU rate on the largest model here: "
          f"{cpu_rate:.1f} GFLOP/s.", "",
          "## Reading the numbers", "",
          "- The runs of one model share a process and go in order grad_x_act, ig c=1, ig c=chunk. Freed memory "
          "stays with the allocator, so a run that needs less than an earlier one shows little or no growth (ig "
          "c=1 after grad_x_act). The first run of each process also pays one-time buffers. The largest run "
          "(ig c=chunk) is the reliable one, and kappa is fitted on it.",
          "- kappa ~ 2 means autograd keeps about twice the tensors the simple count allows for (float32 "
          "attention scores, rotary and norm intermediates, the gate path). With that kappa, mining an 8B "
          "model on one 80 GB GPU fits with `--alpha-chunk 2` up to ~1k-token prompts and `--alpha-chunk 1` "
          "up to ~2k tokens. The default `alpha_chunk=5` needs ~130 GB at 1k tokens: lower it for 8B. The "
          "T^2 attention term dominates long prompts (TransformerLens materialises the pattern).",
          "- Time grows with the number of alpha chunks, not alphas (c=4 is 2-3x faster than c=1 at equal m).",
          "- Scores are offloaded to CPU per example (`offload_scores`); the cached residuals of the chosen "
          "layers, L * T * d * 2 B = 0.27 GB at 8B/1k tokens, can be offloaded the same way.", ""]
    atomic_write_text(out / "memory.md", "\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    main()
