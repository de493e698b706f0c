"""`neurorit study CONFIG --out DIR`: the component study on dev (docs/study.md), resumable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from neurorit_lens.cli.common import Progress

NAME = "study"
HELP = "the component study on dev: one training per arm from shared mining, paired contrasts, the declared rule"


@dataclass
class Args:
    """Run the component study CONFIG declares (JSON or TOML; docs/study.md) in the folder DIR: pool
    each arm's neuron sets from the mining folders under --mining (written by
    `bash benchmarks/study_mine.sh`), train every arm, score each on the dev questions (accuracy
    and teacher-forced log p(gold) per question), then write DIR/report.json, report.md and, once
    the declared rule can be applied, chosen.json. DIR/protocol.json records CONFIG first; a rerun
    skips every finished unit, resumes an interrupted training from its checkpoints and refuses a
    changed CONFIG. With --confirmatory --chosen DEV/chosen.json: the configuration's confirmatory run
    (the chosen configuration against the baselines, every seed, on fresh questions) in DIR,
    report_confirmatory.json/md.
    """

    # The study's configuration (.json or .toml).
    config: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CONFIG")]
    # The run folder (created; an earlier run's folder is resumed).
    out: Annotated[str, tyro.conf.arg(metavar="DIR")]
    # The mining folders, <set>/<data set>/ (benchmarks/study_mine.sh writes them).
    mining: str = "runs/study/mining"
    # Worker mode: only these arms' units (comma-separated), so that several processes share DIR.
    arms: Annotated[tuple[str, ...] | None, tyro.conf.arg(metavar="A[,A...]")] = None
    # Print the units, what is done and what each arm still needs (mining folders) as JSON; load and run nothing.
    plan: bool = False
    # Write report.json/md (and chosen.json) from the units finished so far; train and evaluate nothing.
    report: bool = False
    # Train questions per data set instead of the configuration's (smoke runs; recorded in protocol.json).
    train_limit: int | None = None
    # Dev questions per data set instead of the configuration's (smoke runs; recorded in protocol.json).
    dev_limit: int | None = None
    # Run the configuration's confirmatory block (fresh questions, the chosen configuration against the baselines).
    confirmatory: bool = False
    # The dev run's chosen.json (--confirmatory): refused when it was chosen under another configuration.
    chosen: Annotated[str | None, tyro.conf.arg(metavar="PATH")] = None
    device: str | None = None  # Torch device (none = the configuration's).
    progress: Progress = True


def run(args: Args) -> int:
    from neurorit_lens.experiments.confirmatory import confirm
    from neurorit_lens.experiments.study import study

    if args.plan and args.report:
        raise ValueError("--plan and --report exclude each other")
    if args.confirmatory:
        if args.chosen is None:
            raise ValueError("--confirmatory needs --chosen DEV/chosen.json (the dev run's choice)")
        if args.arms is not None or args.train_limit is not None or args.dev_limit is not None:
            raise ValueError("--arms, --train-limit and --dev-limit are for the dev run; the confirmatory run "
                             "trains every declared arm on the declared questions")
        got = confirm(args.config, args.out, args.chosen, mining=args.mining, plan=args.plan, report=args.report,
                      device=args.device, progress=args.progress)
    elif args.chosen is not None:
        raise ValueError("--chosen is read by --confirmatory only")
    else:
        got = study(args.config, args.out, mining=args.mining, plan=args.plan, report=args.report,
                    arms=list(args.arms) if args.arms is not None else None, device=args.device,
                    train_limit=args.train_limit, dev_limit=args.dev_limit, progress=args.progress)
    if args.plan:
        print(json.dumps(got, indent=2))
    else:
        print(f"wrote {Path(args.out) / ('report_confirmatory.md' if args.confirmatory else 'report.md')}")
    return 0
