"""The results table: every training method in one harness, on four real QA sets.

One run, resumable (each step is skipped when its output exists):

1. load NQ-open (built distractors), RGB, NoiserBench Bamboogle and the embedded fictional
   set; split each by question (train/dev/test, seeded);
2. mine neurons on a mixed train pool (``--mine-method``, default grad_x_act);
3. train every method on the same mixed train pool, same steps, same LR grid;
4. evaluate every model (plus the untuned RALM) on each data set's held-out test questions
   under gold / noise=0.4 / noise=0.8 / irrelevant;
5. write ``OUT/results.md`` and ``OUT/results.json`` (accuracy with 95% bootstrap intervals,
   trainable parameters, fraction, wall time, seeds).

CPU (2 cores) default sizes are small on purpose; ``--gpu-config`` prints a larger one.

    python -m benchmarks.results_table --out runs/table
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import sys
import time
from pathlib import Path

import torch

from neurorit_lens.config import DataConfig, EvalConfig, MiningConfig, TrainConfig
from neurorit_lens.data import load_examples, split_examples
from neurorit_lens.evaluation.evaluate import evaluate
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info, read_json
from neurorit_lens.models import load_model
from neurorit_lens.neurons.mining import mine
from neurorit_lens.neurons.output import MiningOutput
from neurorit_lens.training.methods import train

log = logging.getLogger("results_table")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = {
    "nq": (SHARED / "lost_in_the_middle" / "nq-open-oracle.jsonl.gz", "dpr"),
    "rgb": (SHARED / "rgb" / "en_fact.json", "rgb"),
    "bamboogle": (SHARED / "noiserbench" / "bamboogle.json", "noiserbench"),
    "embedded": ("embedded", "embedded"),
}
METHODS = ("ralm", "neurorit", "full", "layers", "stage1", "random")
GPU_CONFIG = ("--per-dataset-train 400 --test-limit 200 --mine-limit 200 --steps 400 --batch-size 8 "
              "--lr-grid 1e-5,3e-5,1e-4,3e-4 --n-passages 5 --max-prompt-tokens 512 --device cuda")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--out", default="runs/table")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--settings", default="gold,noise=0.4,noise=0.8,irrelevant")
    p.add_argument("--per-dataset-train", type=int, default=40, help="train questions per data set")
    p.add_argument("--dev-per-dataset", type=int, default=6)
    p.add_argument("--test-limit", type=int, default=20, help="test questions per data set")
    p.add_argument("--mine-limit", type=int, default=32)
    p.add_argument("--mine-method", default="grad_x_act")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="selection threshold t (the library default 0.2 kept only 14 R_excl / 2 I_excl neurons "
                        "on 24 SmolLM2 examples, too few to train)")
    p.add_argument("--frequency", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-grid", default="", help="comma-separated LRs searched on dev for every method")
    p.add_argument("--n-passages", type=int, default=3)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--gpu-config", action="store_true", help="print the larger GPU configuration and exit")
    p.add_argument("--render-only", action="store_true", help="rewrite results.md/json from what OUT holds")
    return p.parse_args(argv)


def load_splits(names: list[str], seed: int) -> dict[str, dict[str, list]]:
    out = {}
    for name in names:
        src, fmt = DATASETS[name]
        if src != "embedded" and not Path(src).exists():
            raise FileNotFoundError(f"{src}: data set {name!r} not found (expected ../shared/data beside the repo)")
        loaded = load_examples(str(src), format=fmt, distractors="random", n_distractors=10, seed=seed)
        out[name] = split_examples(loaded.examples, (0.6, 0.2, 0.2), seed=seed)
        log.info("%s: %s", name, {k: len(v) for k, v in out[name].items()})
    return out


def mixed(splits: dict[str, dict[str, list]], split: str, per: int, seed: int) -> list:
    pool = [ex for name in splits for ex in splits[name][split][:per]]
    random.Random(seed).shuffle(pool)
    return pool


def fmt_acc(s: dict) -> str:
    if not s or not s.get("n"):
        return "n/a"
    lo, hi = s["accuracy_ci"]
    return f"{100 * s['accuracy']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def write_table(out: Path, args, names: list[str], methods: list[str], settings: list[str]) -> str:
    """Render ``results.md`` (one table per data set, plus cost per method) and ``results.json``."""
    blob = {"config": vars(args), "environment": environment_info(args.seed), "results": {}}
    cost = ["| method | trainable params | fraction | target layers | LR | steps | train wall (s) |",
            "|---|---|---|---|---|---|---|"]
    for m in methods:
        tj = out / "train" / m / "train.json"
        t = read_json(tj) if tj.exists() else {}
        blob["results"][m] = {"train": {k: t.get(k) for k in (
            "trainable_params", "trainable_fraction", "wall_s", "lr", "steps", "target_layers", "seed")}}
        if m == "ralm":
            cost.append("| ralm (no tuning) | 0 | 0% | - | - | 0 | 0 |")
        elif t:
            cost.append(f"| {m} | {t['trainable_params']:,} | {100 * t['trainable_fraction']:.2f}% | "
                        f"{t.get('target_layers') or '-'} | {t['lr']:g} | {t['steps']} | {t['wall_s']:.0f} |")
        else:
            cost.append(f"| {m} | not run | | | | | |")
        for d in names:
            ej = out / "eval" / m / d / "eval.json"
            blob["results"][m][d] = read_json(ej)["settings"] if ej.exists() else {}
    parts = ["\n".join(cost)]
    for d in names:
        n = max((blob["results"][m][d].get(s, {}).get("n") or 0) for m in methods for s in settings)
        rows = [f"**{d}** (accuracy %, 95% bootstrap CI; up to {n} test questions per setting)", "",
                "| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        for m in methods:
            rows.append(f"| {m} | " + " | ".join(fmt_acc(blob["results"][m][d].get(s, {})) for s in settings) + " |")
        parts.append("\n".join(rows))
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(out / "results.md", text)
    atomic_write_json(out / "results.json", blob)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.gpu_config:
        print(f"python -m benchmarks.results_table {GPU_CONFIG} --out runs/table_gpu")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only and (out / "config.json").exists():
        saved = read_json(out / "config.json")
        args = argparse.Namespace(**{**saved, "render_only": True})
    else:
        atomic_write_json(out / "config.json", vars(args))
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [m for m in methods if m not in METHODS] + [n for n in names if n not in DATASETS]
    if unknown:
        raise SystemExit(f"unknown method(s)/data set(s): {unknown}")
    if args.render_only:
        print(write_table(out, args, names, methods, settings))
        return 0
    data_cfg = DataConfig(n_passages=args.n_passages, max_prompt_tokens=args.max_prompt_tokens, seed=args.seed)
    eval_cfg = EvalConfig(settings=tuple(settings), max_new_tokens=16, batch_size=8, seed=args.seed)
    splits = load_splits(names, args.seed)
    train_pool = mixed(splits, "train", args.per_dataset_train, args.seed)
    dev_pool = mixed(splits, "dev", args.dev_per_dataset, args.seed)
    base = load_model(args.model, device=args.device)

    mdir = out / "mining"
    if not (mdir / "neurons.json").exists():
        t0 = time.perf_counter()
        res = mine(base, train_pool[: args.mine_limit], MiningConfig(method=args.mine_method, threshold=args.threshold,
                                                                frequency=args.frequency), data_cfg,
                   out_dir=str(mdir))
        res.save(mdir)
        log.info("mining took %.0f s", time.perf_counter() - t0)
    mined = MiningOutput.load(mdir, base)
    sets, layer_mass = mined.sets, mined.layer_mass
    log.info("sets: %s", {k: len(v) for k, v in sets.items()})

    lr_grid = tuple(float(x) for x in args.lr_grid.split(",") if x.strip())
    for m in methods:
        if m == "ralm":
            model = base
        else:
            tdir = out / "train" / m
            if (tdir / "model" / "neurorit_model.json").exists():
                model = load_model(str(tdir / "model"), device=args.device)
            else:
                tcfg = TrainConfig(method=m, steps=args.steps, lr=args.lr, lr_grid=lr_grid, batch_size=args.batch_size,
                                   warmup_steps=max(1, args.steps // 10), eval_every=max(1, args.steps // 2),
                                   checkpoint_every=10, seed=args.seed,
                                   deactivation="zero")  # the mode the README's table was measured with
                model = copy.deepcopy(base)
                train(model, train_pool, dev_pool, sets, layer_mass, tcfg, data_cfg, str(tdir),
                      base_model=args.model)
        for d in names:
            edir = out / "eval" / m / d
            if (edir / "eval.json").exists():
                continue
            res = evaluate(model, splits[d]["test"][: args.test_limit], eval_cfg, data_cfg,
                           model_name=f"{args.model}+{m}", data_name=d)
            res.save(edir)
            log.info("%s on %s:\n%s", m, d, res.table())
        if model is not base:
            del model
        print(write_table(out, args, names, methods, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
