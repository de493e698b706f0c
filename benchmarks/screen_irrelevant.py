"""The causal screen of the definitions of I (issue 12; protocol and selection rule in docs/screen.md).

For one data set: mine every candidate definition of I on train questions, then deactivate each
candidate's I_excl in each of its modes on dev questions against 5 random sets of the same
per-layer counts, under gold-only and noisy contexts (teacher-forced log p(gold)). Resumable:
mining reuses its per-example score files, and each finished ablation mode is a JSON file.

    python benchmarks/screen_irrelevant.py --data embedded:500 --name embedded --threads 1
    python benchmarks/screen_irrelevant.py --summarize embedded nq
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "screen"

# name -> MiningConfig changes of the candidate definitions
CANDIDATES: dict[str, dict] = {
    "gold": {"irrelevant_definition": "gold"},
    "negative": {"irrelevant_definition": "negative"},
    "negative_paired": {"irrelevant_definition": "negative", "paired": True},
    "distracted": {"irrelevant_definition": "distracted"},
}
# (candidate, mode, scale) in the order they run; written in docs/screen.md before the run
COMBOS: list[tuple[str, str, float]] = [
    ("negative_paired", "scale", 0.5),
    ("distracted", "scale", 0.5),
    ("gold", "zero", 0.0),
    ("negative_paired", "constant", 0.0),
    ("negative", "scale", 0.5),
]
GOLD_LIMIT = 0.2  # nats: |delta - random| under gold-only contexts must stay below this


def _mode_key(mode: str, scale: float) -> str:
    return f"{mode}{scale:g}" if mode == "scale" else mode


def _mine_all(model, train, data_cfg, out: Path, args) -> dict:
    from neurorit_lens.config import MiningConfig
    from neurorit_lens.neurons.mining import mine

    results, first = {}, None
    needed = {c for c, _, _ in COMBOS}
    for name, changes in CANDIDATES.items():
        if name not in needed:
            continue
        cfg = MiningConfig(method="grad_x_act", selection="topk", top_k=args.top_k, noisy_setting=args.noisy,
                           answer_means=True, normalize=True, **changes)
        d = out / f"mine_{name}"
        if first is not None and not (d / "scores" / "R").exists():
            shutil.copytree(first / "scores" / "R", d / "scores" / "R")  # R prompts are the same for all
        t0 = time.time()
        res = mine(model, train, cfg, data_cfg, out_dir=d, show_progress=True)
        res = res.reselect(normalize=False)  # raw scores select; act_scale kept for the normalised variant
        res.save(d)
        logging.info("mined %s in %.0f s: I_excl %d neurons, excluded %s", name, time.time() - t0,
                     len(res.sets["I_excl"]), res.excluded)
        results[name] = res
        first = first or d
    return results


def _combo_path(out: Path, cand: str, mode: str, scale: float) -> Path:
    return out / f"ablation_{cand}_{_mode_key(mode, scale)}.json"


def _ablate(model, dev, mined: dict, data_cfg, cand: str, mode: str, scale: float, out: Path, args) -> dict:
    """One candidate x mode against its random controls; one JSON file, skipped when it exists."""
    from neurorit_lens.ablation.measure import run_ablation
    from neurorit_lens.config import AblationConfig

    key = _mode_key(mode, scale)
    path = _combo_path(out, cand, mode, scale)
    if path.exists():
        return json.loads(path.read_text())
    sets = {cand: mined[cand].sets["I_excl"]}
    cfg = AblationConfig(sets=(cand,), mode=mode, scale=scale, n_random=5, relevant_setting="gold",
                         noisy_setting=args.noisy, measure_accuracy=False, batch_size=args.batch_size)
    means = mined[cand].answer_means if mode == "constant" else None
    t0 = time.time()
    res = run_ablation(model, dev, sets, cfg, data_cfg, means=means,
                       meta={"screen": args.name, "mode_key": key, "n_dev": len(dev)})
    d = res.to_dict()
    d["wall_s"] = time.time() - t0
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=1))
    os.replace(tmp, path)
    logging.info("ablation %s %s done in %.0f s", cand, key, d["wall_s"])
    return d


def run(args) -> None:
    import torch

    from neurorit_lens.config import DataConfig
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.models.registry import load_model

    torch.set_num_threads(args.threads)
    out = RESULTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = DataConfig(data=args.data, n_passages=5, max_prompt_tokens=512, seed=0)
    _, splits = load_splits(data_cfg)
    train, dev = splits["train"][: args.train_limit], splits["dev"][: args.dev_limit]
    logging.info("%s: %d train, %d dev questions", args.name, len(train), len(dev))
    model = load_model(args.model)
    mined = _mine_all(model, train, data_cfg, out, args)
    for cand, mode, scale in COMBOS:
        _ablate(model, dev, mined, data_cfg, cand, mode, scale, out, args)
    (out / "config.json").write_text(json.dumps({
        "data": args.data, "train": len(train), "dev": len(dev), "top_k": args.top_k, "noisy": args.noisy,
        "threads": args.threads, "model": args.model, "combos": COMBOS,
        "load_avg_end": list(os.getloadavg())}, indent=1))


def _rows(name: str) -> list[dict]:
    out, rows = RESULTS / name, []
    for cand, mode, scale in COMBOS:
        path = _combo_path(out, cand, mode, scale)
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        by_ctx = {r["context"]: r for r in d["rows"] if r["set_name"] == cand and r["metric"] == "logprob"}
        g, z = by_ctx["relevant"], by_ctx["noisy"]
        rows.append({"data": name, "candidate": cand, "mode": _mode_key(mode, scale), "n": z["n"],
                     "n_neurons": z["n_neurons"], "gold": g["diff"], "noisy": z["diff"],
                     "passes": z["diff"]["ci_low"] > 0 and abs(g["diff"]["mean"]) < GOLD_LIMIT})
    return rows


def _fmt(d: dict) -> str:
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def summarize(names: list[str]) -> None:
    rows = [r for n in names for r in _rows(n)]
    lines = ["| data | candidate | mode | neurons | n dev | Δ log p(gold), gold-only − random | "
             "Δ log p(gold), noisy − random | passes |", "|---|---|---|---:|---:|---|---|---|"]
    lines += [f"| {r['data']} | {r['candidate']} | {r['mode']} | {r['n_neurons']} | {r['n']} | {_fmt(r['gold'])} | "
              f"{_fmt(r['noisy'])} | {'yes' if r['passes'] else 'no'} |" for r in rows]
    combos = {(r["candidate"], r["mode"]) for r in rows}
    both = [c for c in combos if all(any(r["passes"] for r in rows if (r["candidate"], r["mode"]) == c
                                         and r["data"] == n) for n in names)]
    score = {c: sum(r["noisy"]["mean"] for r in rows if (r["candidate"], r["mode"]) == c) / len(names) for c in both}
    winner = max(score, key=score.get) if score else None
    verdict = (f"Winner: `{winner[0]}` × `{winner[1]}` (mean noisy effect {score[winner]:+.2f} nats over {names})."
               if winner else f"No candidate passes on all of {names}: stage 1's deactivation is off by default.")
    missing = [f"{n}: {c} × {_mode_key(m, sc)}" for n in names for c, m, sc in COMBOS
               if not _combo_path(RESULTS / n, c, m, sc).exists()]
    if missing:
        verdict += " Not run (out of time): " + "; ".join(missing) + "."
        failed = {(r["candidate"], r["mode"]) for r in rows if not r["passes"]}
        if all((c, _mode_key(m, sc)) in failed for n in names for c, m, sc in COMBOS
               if not _combo_path(RESULTS / n, c, m, sc).exists()):
            verdict += " Each of them already fails on another data set, so none could change the verdict."
    md = "\n".join(["# Causal screen of the definitions of I (dev questions)", "",
                    "Protocol and selection rule: docs/screen.md. Δ = change in teacher-forced log p(gold) "
                    "when I_excl is deactivated, minus the mean change over 5 random sets of the same "
                    "per-layer counts; mean [paired bootstrap 95% interval] over dev questions.", "",
                    *lines, "", verdict, ""])
    (RESULTS / "screen.md").write_text(md)
    (RESULTS / "screen.json").write_text(json.dumps({"rows": rows, "winner": winner, "names": names}, indent=1))
    print(md)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="embedded:500")
    p.add_argument("--name", default="embedded")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--train-limit", type=int, default=64)
    p.add_argument("--dev-limit", type=int, default=100)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--noisy", default="noise=0.8")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--summarize", nargs="+", metavar="NAME", help="only write the summary table of these runs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summarize:
        summarize(args.summarize)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
