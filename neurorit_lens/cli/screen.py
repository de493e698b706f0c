"""`neurorit screen`: the causal screen of the definitions of I x deactivation modes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from neurorit_lens.cli.common import Flat
from neurorit_lens.experiments.screen import ScreenConfig

NAME = "screen"
HELP = "screen the definitions of I x deactivation modes against random sets of the same shape (docs/screen.md)"

log = logging.getLogger(__name__)


@dataclass
class Args:
    """For one data set: mine every candidate definition of I on train questions, then deactivate
    each candidate's I_excl in each mode of the screen (zero, scale, constant, or gates learned per
    set) on dev questions against 5 random sets of the same per-layer counts, under gold-only and
    noisy contexts. Writes RESULTS/NAME/ablation_*.json (screen 2 and 3: RESULTS/NAME/screen<k>/);
    a rerun skips every finished file. --summarize NAME,... writes only the summary tables
    (RESULTS/screen.md and screen<k>.md) of data sets already screened.
    """

    # Only write the summary tables of these data sets (comma-separated folder names under --results).
    summarize: tuple[str, ...] = ()
    # The screen: which combos, on which data, model and questions.
    screen: Flat[ScreenConfig] = field(default_factory=ScreenConfig)


def run(args: Args) -> int:
    if args.summarize:
        from neurorit_lens.experiments.screen_report import summarize

        summarize(list(args.summarize), Path(args.screen.results))
        return 0
    from neurorit_lens.experiments.screen import run_screen

    run_screen(args.screen)
    return 0
