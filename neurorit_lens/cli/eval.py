"""`neurorit eval`: greedy accuracy / EM / F1 per noise setting, with bootstrap intervals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from neurorit_lens.cli.common import (
    DEFAULT_MODEL,
    Common,
    Flat,
    ModelName,
    OutDir,
    config_of,
    load_examples,
    load_model,
    without,
    write_config,
)
from neurorit_lens.config import DataConfig, EvalConfig

NAME = "eval"
HELP = "evaluate a model's answers under noise settings (accuracy, EM, F1, 95% CIs)"
DataFlags = without(DataConfig, "seed")  # one --seed (Common's) seeds both sections
EvalFlags = without(EvalConfig, "seed")

log = logging.getLogger("neurorit_lens")


@dataclass
class Args(Common):
    """Load a model and QA data, build each noise setting (closed, gold, gold+K, noise=R,
    irrelevant, counterfactual, retrieved), answer greedily, extract the answer (first line, first
    sentence, at most five words more than the longest gold answer) and score the extract:
    accuracy (a normalised gold answer contained in it) with a Wilson 95% interval, EM and F1 with
    percentile-bootstrap 95% intervals; accuracy on the whole output (accuracy_raw) and the
    passage-copy rate are reported beside them. Writes OUT/eval.json, OUT/predictions.jsonl,
    OUT/config.json, OUT/environment.json and prints a table.
    """

    model: ModelName = DEFAULT_MODEL
    out: OutDir = "runs/eval"
    # Which QA data, how it is split, and how prompts are built.
    data: Flat[DataFlags] = field(default_factory=DataFlags)
    # Greedy generation and the metrics per noise setting.
    eval: Flat[EvalFlags] = field(default_factory=EvalFlags)


def run(args: Args) -> int:
    from neurorit_lens.evaluation.evaluate import evaluate

    data_cfg = config_of(args.data, seed=args.seed)
    eval_cfg = config_of(args.eval, seed=args.seed)
    out = Path(args.out)
    write_config(out, NAME, data_cfg.seed, {"model": args.model, "device": args.device,
                                            "data": data_cfg.to_dict(), "eval": eval_cfg.to_dict()})
    examples = load_examples(data_cfg)
    log.info("evaluating %s on %d examples of %s, settings %s", args.model, len(examples), data_cfg.data,
             ",".join(eval_cfg.settings))
    model = load_model(args.model, args.device)
    res = evaluate(model, examples, eval_cfg, data_cfg, show_progress=args.progress, model_name=args.model,
                   data_name=data_cfg.data)
    path = res.save(out)
    print(res.table())
    print(f"wrote {path}")
    return 0
