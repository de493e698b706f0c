"""`neurorit run`: the main job, every stage of the pipeline into one run folder."""

from __future__ import annotations

import argparse

from neurorit_lens.cli.main import add_config_args, config_from_args
from neurorit_lens.config import (
    AblationConfig,
    DataConfig,
    EvalConfig,
    MiningConfig,
    RunConfig,
    TrainConfig,
)

NAME = "run"
HELP = "run the whole pipeline (eval, mine, ablate, train, eval, report) into one folder"
DESCRIPTION = (
    "Run the main job: evaluate the base model under noise, mine relevant/irrelevant-context "
    "neurons, test them causally, tune (Neuro-RIT and chosen baselines), evaluate again and "
    "write a report. Stages already done in --out are skipped, so a killed run resumes. "
    "--config FILE repeats a run from its saved config.json (other flags are then ignored, "
    "except --out when given)."
)

_SECTIONS = {"data": DataConfig, "eval": EvalConfig, "mining": MiningConfig, "ablation": AblationConfig,
             "train": TrainConfig}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a config.json from an earlier run (or written by hand)")
    add_config_args(p, RunConfig)
    for section, cls in _SECTIONS.items():
        add_config_args(p, cls, prefix=f"{section}.")


def build_config(args: argparse.Namespace) -> RunConfig:
    if args.config:
        cfg = RunConfig.load(args.config)
        return cfg.replace(out=args.out) if args.out != RunConfig().out else cfg
    sections = {name: config_from_args(args, cls, prefix=f"{name}.") for name, cls in _SECTIONS.items()}
    return config_from_args(args, RunConfig, **sections)


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.runner import run as run_pipeline

    cfg = build_config(args)
    summary = run_pipeline(cfg)
    print(f"run folder: {summary['out']}")
    return 0
