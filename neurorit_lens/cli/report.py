"""`neurorit report RUN_DIR`: (re)write report.html and report.md of a run folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from neurorit_lens.cli.common import load_model

NAME = "report"
HELP = "write RUN_DIR/report.html (self-contained) and report.md from a run folder"

log = logging.getLogger(__name__)


@dataclass
class Args:
    """Regenerate the report of a run folder from what it holds (an incomplete run gets a report
    that lists what is missing). Saved neuron views (RUN_DIR/views/) are embedded; --views N
    computes views for N dev examples first, which loads the model and the data named in
    RUN_DIR/config.json.
    """

    # The run folder, as written by `neurorit run`.
    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    # Compute neuron views for N dev examples first (loads the model).
    views: Annotated[int, tyro.conf.arg(metavar="N")] = 0
    k: int = 5  # Neurons per set shown in each view.
    model: str | None = None  # Model for --views (none = the model in the run's config.json).
    device: str | None = None  # Torch device for --views (none = the device in the run's config.json).


def _model_and_examples(run_dir: Path, args: Args):
    from neurorit_lens.config import RunConfig
    from neurorit_lens.data import load_examples, split_examples

    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: --views needs the run's config.json (model and data)")
    cfg = RunConfig.load(cfg_path)
    model = load_model(args.model or cfg.model, args.device or cfg.device)
    d = cfg.data
    loaded = load_examples(d.data, format=d.format, strict=d.strict)
    splits = split_examples(loaded.examples, d.split_fractions, seed=d.seed)
    examples = splits.get("dev") or splits.get("test") or loaded.examples
    return model, examples


def run(args: Args) -> int:
    from neurorit_lens.viz.report import write_report

    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is not a run folder")
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    if args.views < 0 or args.k < 1:
        raise ValueError("--views must be >= 0 and --k >= 1")
    model = examples = None
    if args.views:
        model, examples = _model_and_examples(run_dir, args)
    html, md = write_report(run_dir, model=model, examples=examples, n_views=args.views, k=args.k)
    print(f"report: {html}\n        {md}")
    return 0
