"""The causal screens of the definitions of I (protocols and selection rule in docs/screen.md).

For one data set: mine every candidate definition of I on train questions, then deactivate each
candidate's I_excl in each of its modes on dev questions against 5 random sets of the same
per-layer counts, under gold-only and noisy contexts (teacher-forced log p(gold); greedy accuracy
in the second screen). Resumable: mining reuses its per-example score files, each finished
ablation mode is a JSON file, and each set's learned gates (mode ``gate``) are a file.

The first screen (``--screen 1``, the default) writes ``<results>/<name>/ablation_*.json``; the
second (``--screen 2``) writes ``<results>/<name>/screen2/ablation_*.json``, so neither touches the
other's files. A candidate that only changes the selection (sign consistency, normalised scores)
reuses its base candidate's mining folder.

    python benchmarks/screen_irrelevant.py --data embedded:500 --name embedded --threads 1
    python benchmarks/screen_irrelevant.py --screen 2 --data embedded:500 --name embedded --threads 1
    python benchmarks/screen_irrelevant.py --summarize embedded nq
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).resolve().parent / "results" / "screen"

# name -> how the candidate's sets are made: {"mine": MiningConfig changes} (its own mining folder)
# or {"base": candidate, "select": selection changes} (the base's scores, selected again)
CANDIDATES: dict[str, dict] = {
    "gold": {"mine": {"irrelevant_definition": "gold"}},
    "negative": {"mine": {"irrelevant_definition": "negative"}},
    "negative_paired": {"mine": {"irrelevant_definition": "negative", "paired": True}},
    "distracted": {"mine": {"irrelevant_definition": "distracted"}},
    "contrast": {"mine": {"irrelevant_definition": "contrast"}},
    "negative_paired_sign0.7": {"base": "negative_paired", "select": {"sign_consistency": 0.7}},
    "negative_paired_norm": {"base": "negative_paired", "select": {"normalize": True}},
}
# (candidate, mode, scale) of each screen, in the order they run; written in docs/screen.md before the run
SCREENS: dict[int, list[tuple[str, str, float]]] = {
    1: [
        ("negative_paired", "scale", 0.5),
        ("distracted", "scale", 0.5),
        ("gold", "zero", 0.0),
        ("negative_paired", "constant", 0.0),
        ("negative", "scale", 0.5),
    ],
    2: [
        ("negative_paired_sign0.7", "scale", 0.5),
        ("negative_paired_norm", "scale", 0.5),
        ("contrast", "scale", 0.5),
        ("negative_paired", "gate", 0.0),
        ("contrast", "gate", 0.0),
    ],
    # the format-tuned checkpoint: run with --model <clean checkpoint> --data embedded:1000
    3: [
        ("negative_paired", "scale", 0.5),
        ("contrast", "scale", 0.5),
        ("negative_paired_norm", "scale", 0.5),
    ],
}
COMBOS = SCREENS[1]  # the first screen's list (kept under its old name)
MODES = ("zero", "mean", "scale", "constant", "gate", "gate01")  # gate01: learned gates clamped to [0, 1]
GOLD_LIMIT = 0.2  # nats: |delta - random| under gold-only contexts must stay below this


def _mode_key(mode: str, scale: float) -> str:
    return f"{mode}{scale:g}" if mode == "scale" else mode


def parse_combo(spec: str) -> tuple[str, str, float]:
    """``candidate:mode`` (``negative_paired:scale0.5``, ``contrast:gate``) -> ``(candidate, mode, scale)``."""
    cand, sep, key = spec.strip().partition(":")
    if not sep or cand not in CANDIDATES:
        raise ValueError(f"bad combo {spec!r}: need candidate:mode with a candidate of {sorted(CANDIDATES)}")
    if key.startswith("scale"):
        try:
            return cand, "scale", float(key[len("scale"):])
        except ValueError as e:
            raise ValueError(f"bad combo {spec!r}: scale needs a number, e.g. scale0.5") from e
    if key not in MODES:
        raise ValueError(f"bad combo {spec!r}: mode must be one of {MODES} (scale as scale<factor>)")
    return cand, key, 0.0


def base_of(cand: str) -> str:
    """The candidate whose mining folder ``cand`` uses."""
    return CANDIDATES[cand].get("base", cand)


def _mine_all(model, train, data_cfg, out: Path, args, combos) -> dict:
    """Mine every base candidate the combos need (resumed from score files); results by base name."""
    from neurorit_lens.config import MiningConfig
    from neurorit_lens.neurons.mining import mine

    results, first = {}, None
    needed = {base_of(c) for c, _, _ in combos}
    for name, spec in CANDIDATES.items():
        if name not in needed:
            continue
        cfg = MiningConfig(method="grad_x_act", selection="topk", top_k=args.top_k, noisy_setting=args.noisy,
                           answer_means=True, normalize=True, **spec["mine"])
        d = out / f"mine_{name}"
        if first is None:
            first = next((p for p in sorted(out.glob("mine_*")) if (p / "scores" / "R").is_dir()), None)
        if first is not None and first != d and not (d / "scores" / "R").exists():
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


def candidate_result(mined: dict, cand: str):
    """The :class:`MiningResult` of ``cand``: its base's, selected again with the candidate's changes."""
    res = mined[base_of(cand)]
    return res.reselect(**CANDIDATES[cand]["select"]) if "select" in CANDIDATES[cand] else res


def _screen_dir(out: Path, screen: int) -> Path:
    return out if screen == 1 else out / f"screen{screen}"


def _combo_path(out: Path, cand: str, mode: str, scale: float, screen: int = 1) -> Path:
    return _screen_dir(out, screen) / f"ablation_{cand}_{_mode_key(mode, scale)}.json"


def _write_json(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=1))
    os.replace(tmp, path)


def _ablate(model, dev, mined: dict, data_cfg, cand: str, mode: str, scale: float, out: Path, args,
            screen: int = 1, gate_items=None) -> dict:
    """One candidate x mode against its random controls; one JSON file, skipped when it exists."""
    from neurorit_lens.ablation.measure import run_ablation
    from neurorit_lens.config import AblationConfig

    key = _mode_key(mode, scale)
    path = _combo_path(out, cand, mode, scale, screen)
    if path.exists():
        return json.loads(path.read_text())
    res = candidate_result(mined, cand)
    sets = {cand: res.sets["I_excl"]}
    meta = {"screen": args.name, "screen_no": screen, "candidate": cand, "mode_key": key, "n_dev": len(dev),
            "selection": res.config.to_dict()}
    if not sets[cand]:
        logging.warning("%s: I_excl is empty, nothing to ablate", cand)
        _write_json(path, {"rows": [], "empty": True, "meta": meta})
        return json.loads(path.read_text())
    cfg = AblationConfig(sets=(cand,), mode="scale" if mode.startswith("gate") else mode, scale=scale, n_random=5,
                         relevant_setting="gold", noisy_setting=args.noisy, measure_accuracy=args.accuracy,
                         accuracy_limit=args.accuracy_limit, batch_size=args.batch_size)
    t0 = time.time()
    if mode.startswith("gate"):
        from benchmarks.screen_gate import run_gate_ablation

        gs = dataclasses.replace(args.gate, clamp=mode == "gate01")
        result = run_gate_ablation(model, dev, sets, cfg, data_cfg, gate_items(), gs,
                                   _screen_dir(out, screen) / f"{'gates' if mode == 'gate' else 'gates01'}_{cand}",
                                   meta, logging.info)
    else:
        means = res.answer_means if mode == "constant" else None
        result = run_ablation(model, dev, sets, cfg, data_cfg, means=means, meta=meta)
    d = result.to_dict()
    d["wall_s"] = time.time() - t0
    _write_json(path, d)
    logging.info("ablation %s %s done in %.0f s", cand, key, d["wall_s"])
    return d


def _combos(args) -> list[tuple[str, str, float]]:
    return [parse_combo(c) for c in args.combos.split(",")] if args.combos else SCREENS[args.screen]


def run(args) -> None:
    import torch

    from neurorit_lens.config import DataConfig
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.models.registry import load_model

    torch.set_num_threads(args.threads)
    out = args.results / args.name
    out.mkdir(parents=True, exist_ok=True)
    combos = _combos(args)
    data_cfg = DataConfig(data=args.data, n_passages=5, max_prompt_tokens=512, seed=0)
    _, splits = load_splits(data_cfg)
    train, dev = splits["train"][: args.train_limit], splits["dev"][: args.dev_limit]
    logging.info("%s: %d train, %d dev questions; screen %d: %s", args.name, len(train), len(dev), args.screen,
                 [f"{c}:{_mode_key(m, s)}" for c, m, s in combos])
    model = load_model(args.model)
    mined = _mine_all(model, train, data_cfg, out, args, combos)
    items: list = []

    def gate_items() -> list:
        if not items:
            from benchmarks.screen_gate import gate_train_items

            items.extend(gate_train_items(model, train, data_cfg, seed=args.gate.seed))
        return items

    for cand, mode, scale in combos:
        _ablate(model, dev, mined, data_cfg, cand, mode, scale, out, args, args.screen, gate_items)
    _write_json(_screen_dir(out, args.screen) / "config.json", {
        "data": args.data, "train": len(train), "dev": len(dev), "top_k": args.top_k, "noisy": args.noisy,
        "threads": args.threads, "model": args.model, "combos": combos, "accuracy": args.accuracy,
        "accuracy_limit": args.accuracy_limit, "gate": asdict(args.gate), "load_avg_end": list(os.getloadavg())})


def main(argv: list[str] | None = None) -> None:
    from benchmarks.screen_gate import GateSettings
    from benchmarks.screen_summary import summarize

    g = GateSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--screen", type=int, choices=sorted(SCREENS), default=1, help="which screen's combos to run")
    p.add_argument("--combos", default="", help="run these candidate:mode combos instead (comma-separated, "
                   "e.g. negative_paired:scale0.5,contrast:gate); files go to --screen's folder")
    p.add_argument("--results", type=Path, default=RESULTS, help="root of the results folders")
    p.add_argument("--data", default="embedded:500")
    p.add_argument("--name", default="embedded")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--train-limit", type=int, default=64)
    p.add_argument("--dev-limit", type=int, default=100)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--noisy", default="noise=0.8")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure Δ greedy accuracy (default: off in screen 1, on in screen 2)")
    p.add_argument("--accuracy-limit", type=int, default=None, help="accuracy on the first N dev questions only")
    p.add_argument("--gate-steps", type=int, default=g.steps, help="gate training steps per set")
    p.add_argument("--gate-lr", type=float, default=g.lr, help="gate learning rate (constant, AdamW)")
    p.add_argument("--gate-penalty", type=float, default=g.penalty, help="L1 coefficient on the mean |gate|")
    p.add_argument("--gate-batch-size", type=int, default=g.batch_size, help="gate training items per step")
    p.add_argument("--summarize", nargs="+", metavar="NAME", help="only write the summary tables of these runs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summarize:
        summarize(args.summarize, args.results)
        return
    args.accuracy = args.screen >= 2 if args.accuracy is None else args.accuracy
    args.gate = GateSettings(args.gate_steps, args.gate_lr, args.gate_penalty, args.gate_batch_size)
    run(args)


if __name__ == "__main__":
    sys.exit(main())
