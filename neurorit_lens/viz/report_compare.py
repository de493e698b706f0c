"""Each tuned method against each control, question by question, and one sentence that reads it.

The run's methods and controls (``RunConfig.methods`` / ``controls``) answer the same test
questions, so their accuracies pair up per question (``eval_after/<method>/predictions.jsonl``).
For every setting both hold, :func:`contrasts` gives the paired difference ``method - control``
with its paired bootstrap 95% interval (:meth:`EvalResult.paired_difference`) and the exact
McNemar test of the same pairs (:meth:`EvalResult.mcnemar`). :func:`reading` turns the
contrast at the headline setting (:func:`headline_setting`: the noisiest setting that still
holds a gold passage) into one sentence:

>>> reading(Contrast("neurorit", "layers", "gold+4", "gold+4", 24, 0.5, 0.51, -0.012, (-0.052, 0.025), 3, 4, 1.0))
'neurorit and layers are level at gold+4: -1.2 points [-5.2, +2.5], n=24; the paired 95% interval includes 0.'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurorit_lens.evaluation.evaluate import EvalResult

__all__ = ["Contrast", "contrasts", "headline_setting", "reading"]


@dataclass(frozen=True)
class Contrast:
    """``method - control`` accuracy on the questions both answered under one setting."""

    method: str
    control: str
    setting: str
    label: str  # what the prompts held (eval.json's label), e.g. gold+2 for noise=0.8 with 3 passages
    n: int
    acc_method: float
    acc_control: float
    diff: float
    ci: tuple[float, float]
    only_method: int  # questions only the method got right
    only_control: int
    p_value: float  # exact McNemar


def contrasts(run_dir: str | Path, methods: Sequence[str], controls: Sequence[str], n_bootstrap: int = 1000,
              seed: int = 0) -> tuple[list[Contrast], list[str]]:
    """Every ``method - control`` contrast of the run folder, and the problems met (missing records).

    Settings follow the method's ``eval.json`` order; a method that is also a control is not
    compared with itself.
    """
    run_dir = Path(run_dir)
    loaded: dict[str, EvalResult] = {}
    problems: list[str] = []
    for m in dict.fromkeys([*methods, *controls]):
        path = run_dir / "eval_after" / m / "eval.json"
        if path.exists():
            try:
                loaded[m] = EvalResult.load(path)
            except (ValueError, OSError, TypeError) as e:
                problems.append(f"eval_after/{m}: {e}")
    out: list[Contrast] = []
    for m in methods:
        for ctl in controls:
            if m == ctl or m not in loaded or ctl not in loaded:
                continue
            a, b = loaded[m], loaded[ctl]
            for s, res in a.settings.items():
                if s not in b.settings:
                    continue
                try:
                    va, vb, ids = a.paired_values(s, s, other=b)
                    diff, ci, n = a.paired_difference(s, s, n=n_bootstrap, seed=seed, other=b)
                    test = a.mcnemar(s, s, other=b)
                except ValueError as e:
                    problems.append(f"{m} - {ctl} at {s}: {e}")
                    continue
                out.append(Contrast(m, ctl, s, res.label or s, n, sum(va) / n, sum(vb) / n, diff, ci,
                                    test.b, test.c, test.p_value))
    return out, problems


def headline_setting(settings: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The noisiest setting with gold passages: the most irrelevant passages per prompt among the
    ``gold+K`` and ``noise=R`` settings (the first on a tie); else ``gold``; else the first."""
    def irrelevant(s: str) -> float:
        v = settings[s].get("mean_n_irrelevant")
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
        tail = s.partition("+")[2] or s.partition("=")[2]
        try:
            return float(tail)
        except ValueError:
            return 0.0

    noisy = [s for s in settings if s.startswith(("gold+", "noise="))]
    if noisy:
        return max(noisy, key=lambda s: (irrelevant(s), -noisy.index(s)))
    return "gold" if "gold" in settings else next(iter(settings), None)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def reading(c: Contrast) -> str:
    """One sentence from the numbers: beats / trails when the interval excludes 0, else level."""
    lo, hi = c.ci
    where = c.setting if c.label in ("", c.setting) else f"{c.setting} (prompts held {c.label})"
    if lo > 0:
        verdict, tail = f"{c.method} beats {c.control}", ""
    elif hi < 0:
        verdict, tail = f"{c.method} trails {c.control}", ""
    else:
        verdict, tail = f"{c.method} and {c.control} are level", "; the paired 95% interval includes 0"
    return f"{verdict} at {where}: {_pts(c.diff)} points [{_pts(lo)}, {_pts(hi)}], n={c.n}{tail}."
