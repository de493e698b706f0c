"""`neurorit run`: the main job, every stage of the pipeline into one run folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import tyro

from neurorit_lens.cli.common import Common, config_of
from neurorit_lens.config import RunConfig

NAME = "run"
HELP = "run the whole pipeline (eval, mine, ablate, train, eval, report) into one folder"


@dataclass
class Args(RunConfig, Common):
    """Run the main job: evaluate the base model under noise, mine relevant/irrelevant-context
    neurons, test them causally, tune (Neuro-RIT and chosen baselines), evaluate again and
    write a report. Stages already done in --out are skipped, so a killed run resumes.
    --config FILE repeats a run from its saved config.json (other flags are then ignored,
    except --out when given). Section flags are spelled --data.n-passages, --eval.settings,
    --mining.threshold, --ablation.mode, --train.steps, ...

    Each stage takes its own split and limit: the evaluations the test split (--eval-limit),
    mining and training the train split (--mine-limit, --train-limit), the causal test the dev
    split (--ablate-limit); --data.split and --data.limit are not used.
    """

    _config_class = RunConfig  # config_of(args) -> the RunConfig without --config or Common's extras
    # --seed and --device are RunConfig's own fields (saved in config.json); --progress and --threads Common's.

    # A config.json from an earlier run (or written by hand) to repeat.
    config: Annotated[str | None, tyro.conf.arg(metavar="FILE")] = None


def build_config(args: Args) -> RunConfig:
    """The run's config: ``--config`` FILE (with ``--out`` when given) or the flags."""
    if args.config:
        cfg = RunConfig.load(args.config)
        return cfg.replace(out=args.out) if args.out != RunConfig().out else cfg
    return config_of(args)


def run(args: Args) -> int:
    from neurorit_lens.runner import run as run_pipeline

    cfg = build_config(args)
    summary = run_pipeline(cfg, progress=args.progress)
    print(f"run folder: {summary['out']}")
    return 0
