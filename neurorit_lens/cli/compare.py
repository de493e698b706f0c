"""`neurorit compare CONFIG --out DIR`: the declared, paired, resumable comparison of methods."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from neurorit_lens.cli.common import Progress

NAME = "compare"
HELP = "compare training methods on held-out questions: declared protocol, dev choices, paired tests, resumable"


@dataclass
class Args:
    """Run the comparison that CONFIG (JSON or TOML) declares in the run folder DIR: the base model,
    each trained method's learning rate (and TrainConfig variants) chosen on dev, test evaluations
    with per-question records, extra seeds, and results.json / results.md with paired contrasts.
    DIR/protocol.json records CONFIG before anything runs; a rerun skips every finished unit and
    refuses a changed CONFIG (except what --amend may add). docs/evaluation.md describes the keys.
    """

    # The comparison's configuration (.json or .toml).
    config: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CONFIG")]
    # The run folder (created; a folder made by an earlier run or version is resumed).
    out: Annotated[str, tyro.conf.arg(metavar="DIR")]
    # Print the units and their sizes as JSON, load no model, run nothing, and exit.
    plan: bool = False
    # Write results.json/md from the units finished so far; train, evaluate and load nothing.
    report: bool = False
    # In an existing run folder, ADD prompted variants, the prompted method, cross_test sets,
    # contrasts naming a new method and settings appended to a settings list (recorded in
    # protocol.json; nothing done is redone; any other change is refused).
    amend: bool = False
    # An earlier run folder with the same model, data, splits, prompts, mining and evaluation: its
    # finished trainings with an identical TrainConfig and their evaluations are copied.
    reuse: Annotated[list[str], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="DIR")] = field(default_factory=list)
    # Worker mode: only these methods' units (comma-separated), so that several processes share DIR.
    methods: Annotated[tuple[str, ...] | None, tyro.conf.arg(metavar="M[,M...]")] = None
    device: str | None = None  # Torch device (none = the configuration's).
    # Also write results.json/md here (none = DIR only).
    results: str | None = None
    progress: Progress = True


def run(args: Args) -> int:
    from neurorit_lens.experiments.harness import compare

    if args.plan and args.report:
        raise ValueError("--plan and --report exclude each other")
    got = compare(args.config, args.out, plan=args.plan, report=args.report, amend=args.amend,
                  reuse=list(args.reuse), methods=list(args.methods) if args.methods is not None else None,
                  device=args.device, results=args.results, progress=args.progress)
    if args.plan:
        print(json.dumps(got, indent=2))
    else:
        print(f"wrote {Path(args.out) / 'results.md'}")
    return 0
