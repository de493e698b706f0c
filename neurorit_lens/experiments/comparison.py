"""Paired comparisons of two methods on the same questions (the method comparison's contrasts).

Every function takes per-question values keyed by example id (``{id: value}``, one dict
per method or per setting) and pairs them over the ids both hold, in the first dict's
order. All intervals and tests come from :mod:`neurorit_lens.statistics`:

- :func:`accuracy_contrast`: accuracy of ``a`` minus ``b`` with a paired bootstrap 95%
  interval, the exact McNemar test of the 0/1 outcomes, the observed discordance (share of
  questions on which the two disagree), and the smallest difference the ``n`` pairs detect
  (:func:`~neurorit_lens.statistics.min_detectable_difference`) at the observed
  discordance and at a planning discordance.
- :func:`per_question_difference`: values of ``a`` minus ``b`` per question.
  ``per_question_difference(noisy, gold)`` is the within-question gap
  ``acc(noisy) - acc(gold)`` of one method; two methods' gaps are compared with
  :func:`mean_difference` (paired bootstrap over the questions both gaps cover).
- :func:`mean_difference`: the mean of ``a - b`` with its paired bootstrap interval (any
  per-question value: gaps, teacher-forced log p(gold)).
- :func:`add_holm`: Holm-adjusted p-values over a declared family of contrasts.

>>> r = accuracy_contrast({"q1": 1.0, "q2": 1.0, "q3": 0.0}, {"q1": 0.0, "q2": 1.0, "q3": 0.0}, n_bootstrap=0)
>>> (r["n"], r["diff"], r["only_a"], r["only_b"], r["p_value"])
(3, 0.3333333333333333, 1, 0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from neurorit_lens.statistics import (
    bootstrap_ci,
    holm,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap_ci,
)

__all__ = ["accuracy_contrast", "add_holm", "mean_difference", "mean_interval", "pair", "per_question_difference"]

#: Discordance assumed when planning the sample size (share of questions two methods disagree on).
PLANNING_DISCORDANCE = 0.2


def pair(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ids both ``a`` and ``b`` hold (in ``a``'s order) and their values.

    Raises:
        ValueError: no id in common.
    """
    ids = [i for i in a if i in b]
    if not ids:
        raise ValueError(f"no question in common ({len(a)} and {len(b)} questions)")
    return ids, np.array([a[i] for i in ids], dtype=np.float64), np.array([b[i] for i in ids], dtype=np.float64)


def accuracy_contrast(
    a: Mapping[str, float],
    b: Mapping[str, float],
    n_bootstrap: int = 2000,
    seed: int = 0,
    planning_discordance: float = PLANNING_DISCORDANCE,
) -> dict[str, Any]:
    """Paired accuracy difference ``a - b`` over the questions both answered (0/1 values).

    Returns:
        ``{"n", "acc_a", "acc_b", "diff", "ci", "only_a", "only_b", "p_value", "discordance",
        "mdd_observed", "mdd_planning"}``: ``only_a`` questions only ``a`` got right
        (McNemar's ``b``), ``only_b`` only ``b`` (its ``c``); ``p_value`` the exact McNemar
        p; ``mdd_*`` the smallest difference detectable
        (two-sided 5%, power 0.8) at the observed and at the planning discordance (NaN when
        the observed discordance is 0).
    """
    ids, x, y = pair(a, b)
    diff, ci = paired_bootstrap_ci(x, y, n=n_bootstrap, seed=seed)
    test = mcnemar_exact(x, y)
    n = len(ids)
    disc = test.n_discordant / n
    return {"n": n, "acc_a": float(x.mean()), "acc_b": float(y.mean()), "diff": diff, "ci": list(ci),
            "only_a": test.b, "only_b": test.c, "p_value": test.p_value, "discordance": disc,
            "mdd_observed": min_detectable_difference(n, disc) if disc > 0 else float("nan"),
            "mdd_planning": min_detectable_difference(n, planning_discordance)}


def per_question_difference(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """``{id: a[id] - b[id]}`` over the ids both hold (the within-question gap for
    ``a`` = a noisy setting's accuracies and ``b`` = the gold setting's, of one method)."""
    ids, x, y = pair(a, b)
    return {i: float(d) for i, d in zip(ids, x - y, strict=True)}


def mean_interval(values: Mapping[str, float] | Sequence[float], n_bootstrap: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    """``{"n", "mean", "ci"}``: the mean of the values and its percentile bootstrap 95% interval."""
    v = np.array(list(values.values()) if isinstance(values, Mapping) else list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return {"n": int(v.size), "mean": float(v.mean()), "ci": list(bootstrap_ci(v, n=n_bootstrap, seed=seed))}


def mean_difference(a: Mapping[str, float], b: Mapping[str, float], n_bootstrap: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """``{"n", "mean", "ci"}``: the mean of ``a - b`` over the paired questions, paired bootstrap 95% interval."""
    ids, x, y = pair(a, b)
    mean, ci = paired_bootstrap_ci(x, y, n=n_bootstrap, seed=seed)
    return {"n": len(ids), "mean": mean, "ci": list(ci)}


def add_holm(rows: list[dict[str, Any]], key: str = "p_value", out: str = "p_holm") -> list[dict[str, Any]]:
    """Set ``row[out]`` to the Holm-adjusted ``row[key]`` over all ``rows`` (one family), in place."""
    for row, p in zip(rows, holm([r[key] for r in rows]), strict=True):
        row[out] = p
    return rows
