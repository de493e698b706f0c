"""Agreement study: how well do the cheap estimators reproduce per-layer IG?

Mines the same examples three times with :func:`neurorit_lens.neurons.mining.mine` (resumable,
per-example scores under ``OUT/<method>/``):

* ``ig`` (per layer, the paper's method) on the chosen ``--layers`` only (it costs a full
  m-step IG per layer),
* ``ig_joint`` (all layers gated together, m steps) and ``grad_x_act`` (one backward) on
  every layer, as they are used in practice,

then compares them with ``ig`` on the chosen layers, per example and condition (R: gold
passage, I: irrelevant passages):

* Spearman rank correlation over the neurons of each chosen layer (mean over examples),
* top-k overlap ``|top_k(method) & top_k(ig)| / k`` per layer (k = 10, 50),
* Jaccard overlap of the selected sets (R, I, R_excl, I_excl, shared) when every method's
  scores are restricted to the chosen layers and selected with the same rule.

Run (SmolLM2 on real NQ-open prompts; the lead's long run)::

    python -m benchmarks.agreement --model smollm2-135m-instruct \
        --data ../shared/data/lost_in_the_middle/nq-open-oracle.jsonl.gz --limit 20 \
        --layers 3,10,17,24,29 --max-prompt-tokens 256 --out benchmarks/results/agreement

Writes ``OUT/agreement.json`` and ``OUT/agreement.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import get_args

import torch

from neurorit_lens.config import AttributionMethod, DataConfig, MiningConfig
from neurorit_lens.neuron_sets import exclusive_sets
from neurorit_lens.neurons.selection import select

ROOT = Path(__file__).resolve().parents[1]

METHODS = get_args(AttributionMethod)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two vectors (average ranks for ties)."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        v = v.double()
        order = torch.argsort(v, stable=True)
        r = torch.empty_like(v)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        # average ranks of ties
        uniq, inv = torch.unique(v, return_inverse=True)
        if len(uniq) < len(v):
            sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, r)
            cnt = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones_like(r))
            r = (sums / cnt)[inv]
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denom) if denom > 0 else float("nan")


def topk_overlap(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    k = min(k, len(x))
    a = set(torch.topk(x, k).indices.tolist())
    b = set(torch.topk(y, k).indices.tolist())
    return len(a & b) / k


def jaccard(a, b) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if (sa | sb) else float("nan")


def _mean(xs):
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def compare(results: dict, layers: list[int], cfg: MiningConfig) -> dict:
    """Per-layer rank agreement and selected-set overlap of each method against ``ig``."""
    out: dict = {"per_method": {}}
    ref = results["ig"]
    for m in ("ig_joint", "grad_x_act"):
        res = results[m]
        entry: dict = {"spearman": {}, "top10": {}, "top50": {}, "sets_jaccard": {}}
        for cond in ("R", "I"):
            ids_ref = ref.ids_R if cond == "R" else ref.ids_I
            ids_m = res.ids_R if cond == "R" else res.ids_I
            common = [i for i in ids_ref if i in set(ids_m)]
            sr = ref.scores(cond)[[ids_ref.index(i) for i in common]]
            sm = res.scores(cond)[[ids_m.index(i) for i in common]]
            for layer in layers:
                key = f"{cond}/L{layer}"
                entry["spearman"][key] = _mean([spearman(sm[e, layer], sr[e, layer]) for e in range(len(common))])
                entry["top10"][key] = _mean([topk_overlap(sm[e, layer], sr[e, layer], 10) for e in range(len(common))])
                entry["top50"][key] = _mean([topk_overlap(sm[e, layer], sr[e, layer], 50) for e in range(len(common))])
        # selected sets with every method restricted to the chosen layers
        sets = {}
        for name, r in (("ig", ref), (m, res)):
            restricted = {}
            for cond in ("R", "I"):
                s = r.scores(cond).clone()
                keep = torch.zeros(s.shape[1], dtype=torch.bool)
                keep[layers] = True
                s[:, ~keep] = 0
                restricted[cond] = select(s, cfg.selection, cfg.threshold, cfg.frequency, cfg.top_k) if len(s) else None
            sets[name] = exclusive_sets(restricted["R"], restricted["I"]) if all(restricted.values()) else None
        if sets["ig"] and sets[m]:
            for set_name in ("R", "I", "R_excl", "I_excl", "shared"):
                entry["sets_jaccard"][set_name] = {"jaccard": jaccard(sets["ig"][set_name], sets[m][set_name]),
                                                   "n_ig": len(sets["ig"][set_name]), f"n_{m}": len(sets[m][set_name])}
        entry["spearman_mean"] = _mean(list(entry["spearman"].values()))
        entry["top10_mean"] = _mean(list(entry["top10"].values()))
        entry["top50_mean"] = _mean(list(entry["top50"].values()))
        out["per_method"][m] = entry
    return out


def render_md(summary: dict) -> str:
    lines = ["# Agreement of cheap estimators with per-layer IG", "",
             f"Model {summary['model']}, data {summary['data']}, {summary['n_examples']} examples "
             f"(R {summary['n']['R']}, I {summary['n']['I']}), layers {summary['layers']}, {summary['steps']} steps; "
             f"seconds per method: {summary['seconds']}.", "",
             "| method | mean Spearman | mean top-10 overlap | mean top-50 overlap | "
             "Jaccard R | Jaccard I | Jaccard R_excl | Jaccard I_excl |", "|---|---|---|---|---|---|---|---|"]
    for m, e in summary["agreement"]["per_method"].items():
        j = {k: v["jaccard"] for k, v in e["sets_jaccard"].items()}
        lines.append(f"| {m} | {e['spearman_mean']:.3f} | {e['top10_mean']:.3f} | {e['top50_mean']:.3f} | "
                     + " | ".join(f"{j.get(k, float('nan')):.3f}" for k in ("R", "I", "R_excl", "I_excl")) + " |")
    lines += ["", "Per condition and layer (Spearman):", ""]
    for m, e in summary["agreement"]["per_method"].items():
        lines.append(f"- {m}: " + ", ".join(f"{k} {v:.3f}" for k, v in e["spearman"].items()))
    lines += ["", f"Reproduce: `{summary['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="agreement of ig_joint and grad_x_act with per-layer ig")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/lost_in_the_middle/nq-open-oracle.jsonl.gz"))
    ap.add_argument("--split", default="all")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--layers", default="3,15,27", help="comma-separated layers for per-layer ig")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--alpha-chunk", type=int, default=5)
    ap.add_argument("--n-passages", type=int, default=2)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--frequency", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/agreement"))
    args = ap.parse_args(argv)

    from neurorit_lens.data import load_split
    from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
    from neurorit_lens.models import load_model
    from neurorit_lens.neurons.mining import mine

    layers = [int(x) for x in args.layers.split(",") if x.strip()]
    data_cfg = DataConfig(data=args.data, split=args.split, limit=args.limit, n_passages=args.n_passages,
                          max_prompt_tokens=args.max_prompt_tokens)
    # fp32 for every estimator (auto would run ig and ig_joint in bf16, grad_x_act in fp32)
    base = MiningConfig(steps=args.steps, alpha_chunk=args.alpha_chunk, threshold=args.threshold,
                        frequency=args.frequency, precision="fp32")
    examples = load_split(data_cfg)
    model = load_model(args.model, device=args.device)
    bad = [x for x in layers if not 0 <= x < model.cfg.n_layers]
    if bad:
        raise SystemExit(f"layers {bad} out of range for {model.cfg.n_layers} layers")
    out = Path(args.out)
    results, seconds = {}, {}
    for m in METHODS:
        cfg = dataclasses.replace(base, method=m, layers=tuple(layers) if m == "ig" else None)
        t = time.time()
        results[m] = mine(model, examples, cfg, data_cfg, out_dir=out / m, model_name=args.model)
        seconds[m] = round(time.time() - t, 1)
        print(f"{m}: {seconds[m]} s ({results[m].info['n_computed']} attributed, rest resumed)", flush=True)
    summary = {
        "model": args.model, "data": args.data, "n_examples": len(examples),
        "n": {"R": len(results["ig"].ids_R), "I": len(results["ig"].ids_I)},
        "layers": layers, "steps": args.steps, "seconds": seconds,
        "agreement": compare(results, layers, base),
        "environment": environment_info(0),
        "command": "python -m benchmarks.agreement " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_json(out / "agreement.json", summary)
    atomic_write_text(out / "agreement.md", render_md(summary))
    print(render_md(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
