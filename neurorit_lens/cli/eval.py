"""`neurorit eval`: greedy accuracy / EM / F1 per noise setting, with bootstrap intervals."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurorit_lens.cli.main import add_config_args, config_from_args
from neurorit_lens.config import DataConfig, EvalConfig

NAME = "eval"
HELP = "evaluate a model's answers under noise settings (accuracy, EM, F1, 95%% CIs)"
DESCRIPTION = (
    "Load a model and QA data, build each noise setting (closed, gold, gold+K, noise=R, "
    "irrelevant, counterfactual), answer greedily and score: accuracy (normalised gold "
    "answer contained in the output), EM and F1, with percentile-bootstrap 95%% intervals. "
    "Writes OUT/eval.json, OUT/predictions.jsonl, OUT/config.json, OUT/environment.json and "
    "prints a table."
)

log = logging.getLogger("neurorit_lens")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="model name (smollm2-135m-instruct, gemma-3-270m, tiny, ...) or local checkpoint dir")
    p.add_argument("--out", default="runs/eval", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device")
    add_config_args(p, DataConfig)
    add_config_args(p, EvalConfig, exclude=("seed",))  # one --seed (DataConfig's) seeds both


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.data import load_split
    from neurorit_lens.evaluation.evaluate import evaluate
    from neurorit_lens.io import atomic_write_json, write_run_metadata
    from neurorit_lens.models import load_model

    data_cfg = config_from_args(args, DataConfig)
    eval_cfg = config_from_args(args, EvalConfig, seed=data_cfg.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {"command": NAME, "model": args.model, "device": args.device,
                                            "data": data_cfg.to_dict(), "eval": eval_cfg.to_dict()})
    write_run_metadata(out, data_cfg.seed, command=NAME, model=args.model, device=args.device)
    examples = load_split(data_cfg)
    if not examples:
        raise ValueError(f"no examples in split {data_cfg.split!r} of {data_cfg.data!r}")
    log.info("evaluating %s on %d examples of %s, settings %s", args.model, len(examples), data_cfg.data,
             ",".join(eval_cfg.settings))
    model = load_model(args.model, device=args.device)
    res = evaluate(model, examples, eval_cfg, data_cfg, model_name=args.model, data_name=data_cfg.data)
    path = res.save(out)
    print(res.table())
    print(f"wrote {path}")
    return 0
