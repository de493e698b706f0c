"""How few IG steps are enough, and what per-layer IG costs against its floor.

On short gold-only prompts, per-layer Integrated Gradients (``method="ig"``, midpoint rule) is
run with m = 64 (the reference) and with smaller m on the same examples and layers. For each
m the neuron sets are selected with the mining defaults (threshold 0.2, frequency 0.5) and
with ``topk`` (k = 40), and compared with the sets of m = 64 (Jaccard), per layer and overall.
The cost per example is timed for each m and for the floor: m = 1, one forward from each
attributed layer up and one backward, with the prefix below it cached once (exactly the
work per IG step, so ``cost(m) / (m * cost(1))`` says how close to the floor IG runs).

Resumable: each (example, m) score is a file under ``--out``; a rerun computes only what is
missing. Wall and CPU seconds are both recorded, with the torch thread count and load.

    python -m benchmarks.ig_steps --n 16 --layers 0,5,10,15,20,25,29      # SmolLM2, ~1 h on 1 core
    python -m benchmarks.ig_steps --model tiny --n 4 --steps 1,2,4,8       # smoke run
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def _cells(ns) -> set[tuple[int, int]]:
    return {(int(layer), int(i)) for layer, idx in ns.to_dict().items() for i in idx}


def _read_cached(path: Path, layers: list[int]) -> tuple[dict, "torch.Tensor"] | None:
    """(timing, scores) of a cached score file holding every requested layer, or ``None``.

    Files written before the ``layers`` metadata existed count as covering the layers whose
    rows are non-zero. One read gives the timing and the scores.
    """
    from safetensors import safe_open

    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        scores = f.get_tensor("scores")
    if "layers" in meta:
        if not set(layers) <= {int(x) for x in meta["layers"].split(",")}:
            return None
    elif not bool((scores[layers].abs().sum(-1) > 0).all()):
        return None
    return {k: float(v) for k, v in meta.items() if k != "layers"}, scores


def _score_all(model, batch_of, n: int, steps: list[int], layers: list[int], out: Path, chunk: int,
               positions: str = "all") -> dict:
    """Per-example IG scores for every m (cached files), and the time each one took."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from neurorit_lens.neurons.attribution import attribute

    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, list] = {str(m): [] for m in steps}
    scores: dict[int, list] = {m: [] for m in steps}
    tag = "" if positions == "all" else f"_{positions}"
    for i in tqdm(range(n), desc="examples"):
        batch = batch_of(i)
        for m in steps:
            path = out / f"ex{i:03d}_m{m}{tag}.safetensors"
            cached = _read_cached(path, layers)
            if cached is None:
                c0, w0 = time.process_time(), time.perf_counter()
                s = attribute(model, batch, method="ig", steps=m, alpha_chunk=min(chunk, m), layers=layers,
                              positions=positions)
                meta = {"wall_s": str(time.perf_counter() - w0), "cpu_s": str(time.process_time() - c0),
                        "n_tokens": str(int(batch.tokens.shape[1])), "layers": ",".join(map(str, layers))}
                save_file({"scores": s[0].contiguous()}, str(path), metadata=meta)
                cached = {k: float(v) for k, v in meta.items() if k != "layers"}, s[0]
            timing[str(m)].append(cached[0])
            only = torch.zeros_like(cached[1])
            only[layers] = cached[1][layers]
            scores[m].append(only)
    return {"timing": timing, "scores": {m: torch.stack(v) for m, v in scores.items()}}


def _compare(scores: dict, steps: list[int], layers: list[int], ref: int, top_k: int) -> dict:
    from neurorit_lens.neurons.selection import select

    out = {}
    for rule, kw in (("threshold", {}), ("topk", {"top_k": top_k})):
        ref_sets = _cells(select(scores[ref], rule=rule, **kw))
        rows = {}
        for m in steps:
            cells = _cells(select(scores[m], rule=rule, **kw))
            per_layer = {la: _jaccard({c for c in cells if c[0] == la}, {c for c in ref_sets if c[0] == la})
                         for la in layers}
            rows[str(m)] = {"jaccard": _jaccard(cells, ref_sets), "size": len(cells), "ref_size": len(ref_sets),
                            "jaccard_per_layer": per_layer}
        out[rule] = rows
    return out


def _smallest_m(agreement: dict, steps: list[int]) -> int | None:
    """The smallest m such that it and every larger m reach threshold-set Jaccard 0.9 (``steps`` descending)."""
    ok = None
    for m in steps:
        if agreement["threshold"][str(m)]["jaccard"] < 0.9:
            break
        ok = m
    return ok


def _rel_errors(scores: dict, steps: list[int], layers: list[int], ref: int) -> dict:
    """Median over examples of ||s_m - s_ref|| / ||s_ref|| per layer: where IG has settled."""
    out = {}
    for m in steps:
        d = (scores[m] - scores[ref]).norm(dim=-1) / scores[ref].norm(dim=-1).clamp(min=1e-12)
        out[str(m)] = {str(la): float(d[:, la].median()) for la in layers}
    return out


def run(args) -> dict:
    import torch

    from neurorit_lens.config import DataConfig
    from neurorit_lens.data.build import build_prompts
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.models.registry import load_model
    from neurorit_lens.objective import tokenize_with_answers

    torch.set_num_threads(args.threads)
    steps = sorted({int(x) for x in args.steps.split(",")} | {1}, reverse=True)
    model = load_model(args.model)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(model.cfg.n_layers))
    data_cfg = DataConfig(data=args.data, n_passages=1, max_prompt_tokens=args.max_prompt_tokens, seed=0)
    _, splits = load_splits(data_cfg)
    ps = build_prompts(splits["train"][: args.n], "gold", model.tokenizer, data_cfg, n_ctx=model.cfg.n_ctx)
    n = len(ps.prompts)
    if n == 0:
        raise ValueError(f"no prompt fits {args.max_prompt_tokens} tokens ({ps.skipped_reasons}); "
                         "raise --max-prompt-tokens")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = _score_all(model, lambda i: tokenize_with_answers(model, [ps.prompts[i]], [ps.continuations[i]]),
                     n, steps, layers, out / "scores", args.alpha_chunk, args.positions)
    ref = max(steps)
    mean = {m: {k: sum(t[k] for t in v) / len(v) for k in ("wall_s", "cpu_s")} for m, v in res["timing"].items()}
    floor = mean["1"]
    report = {
        "model": args.model, "data": args.data, "n_examples": n, "layers": layers, "steps": steps,
        "prompt_tokens": [int(t) for t in ps.n_tokens], "threads": args.threads, "alpha_chunk": args.alpha_chunk,
        "positions": args.positions,
        "load_avg_end": list(os.getloadavg()), "cost_per_example": mean,
        "cost_vs_floor": {m: mean[m]["cpu_s"] / (int(m) * floor["cpu_s"]) for m in mean},
        "agreement_with_m": ref, "agreement": _compare(res["scores"], steps, layers, ref, args.top_k),
        "rel_error_per_layer": _rel_errors(res["scores"], steps, layers, ref),
    }
    if args.set_layers:
        keep = [int(x) for x in args.set_layers.split(",")]
        if not set(keep) <= set(layers):
            raise ValueError(f"--set-layers {keep} must be among --layers {layers}")
        drop = [la for la in layers if la not in keep]
        only = {m: s.clone().index_fill_(1, torch.tensor(drop, dtype=torch.long), 0.0) if drop else s
                for m, s in res["scores"].items()}
        report["set_layers"] = keep
        report["agreement_set_layers"] = _compare(only, steps, keep, ref, args.top_k)
    report["smallest_m_jaccard_0.9"] = _smallest_m(report["agreement"], steps)
    if "agreement_set_layers" in report:
        report["smallest_m_jaccard_0.9_set_layers"] = _smallest_m(report["agreement_set_layers"], steps)
    (out / "ig_steps.json").write_text(json.dumps(report, indent=1))
    _write_md(report, out / "ig_steps.md")
    return report


def _write_md(r: dict, path: Path) -> None:
    lines = [f"# IG steps study: {r['model']}, {r['n_examples']} gold-only prompts "
             f"({min(r['prompt_tokens'])}-{max(r['prompt_tokens'])} tokens), layers {r['layers']}", "",
             f"{r['threads']} torch thread(s), alpha chunk {r['alpha_chunk']}, positions "
             f"{r.get('positions', 'all')}, load at end {r['load_avg_end']}.", "",
             f"| m | CPU s / example | wall s / example | CPU vs m x floor | Jaccard vs m={r['agreement_with_m']} "
             "(threshold) | Jaccard (topk 40) | set size (threshold) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for m in r["steps"]:
        c, a = r["cost_per_example"][str(m)], r["agreement"]
        lines.append(f"| {m} | {c['cpu_s']:.1f} | {c['wall_s']:.1f} | {r['cost_vs_floor'][str(m)]:.2f} | "
                     f"{a['threshold'][str(m)]['jaccard']:.3f} | {a['topk'][str(m)]['jaccard']:.3f} | "
                     f"{a['threshold'][str(m)]['size']} |")
    if "rel_error_per_layer" in r:
        lines += ["", f"Median relative error of a layer's scores against m = {r['agreement_with_m']}:", "",
                  "| m | " + " | ".join(f"layer {la}" for la in r["layers"]) + " |",
                  "|---:|" + "---:|" * len(r["layers"])]
        lines += [f"| {m} | " + " | ".join(f"{r['rel_error_per_layer'][str(m)][str(la)]:.4f}" for la in r["layers"])
                  + " |" for m in r["steps"]]
    if "agreement_set_layers" in r:
        a = r["agreement_set_layers"]
        lines += ["", f"Sets selected from layers {r['set_layers']} only (the others left out of the selection):",
                  "", "| m | Jaccard (threshold) | Jaccard (topk 40) | set size (threshold) |", "|---:|---:|---:|---:|"]
        lines += [f"| {m} | {a['threshold'][str(m)]['jaccard']:.3f} | {a['topk'][str(m)]['jaccard']:.3f} | "
                  f"{a['threshold'][str(m)]['size']} |" for m in r["steps"]]
    if "smallest_m_jaccard_0.9_set_layers" in r:
        lines += ["", f"Smallest m with Jaccard >= 0.9, sets from layers {r['set_layers']}: "
                  f"{r['smallest_m_jaccard_0.9_set_layers']}."]
    lines += ["", f"Smallest m with Jaccard >= 0.9 (threshold sets): {r['smallest_m_jaccard_0.9']}.",
              "Floor = m = 1: one forward from each attributed layer up plus one backward, prefix cached.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default="embedded:500")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", default="4,8,16,32,64")
    p.add_argument("--layers", default="0,5,10,15,20,25,29")
    p.add_argument("--max-prompt-tokens", type=int, default=192)
    p.add_argument("--alpha-chunk", type=int, default=8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set-layers", default=None,
                   help="also report the agreement of sets selected from these attributed layers only")
    p.add_argument("--positions", default="all", choices=["all", "skip_first"],
                   help="attributed positions (skip_first: every one but the attention-sink token)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ig_steps"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(json.dumps({k: v for k, v in run(args).items() if k != "agreement"}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
