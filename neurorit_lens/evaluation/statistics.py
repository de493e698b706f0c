"""The one bootstrap: percentile intervals of a mean, and of a paired difference.

Every interval in the project (evaluation accuracies, the gap between two settings,
ablation effects and their difference from random controls) comes from here:

- :func:`bootstrap_ci`: resample the per-example values with replacement ``n`` times
  (``numpy.random.default_rng(seed)``, one vectorised draw), take each resample's mean,
  and return the ``alpha/2`` and ``1 - alpha/2`` quantiles of those means.
- :func:`paired_bootstrap_ci`: the same interval for the mean of ``a - b`` over paired
  examples (both values of an example stay together in a resample), with the mean.

>>> bootstrap_ci([1.0, 1.0, 1.0])
(1.0, 1.0)
>>> paired_bootstrap_ci([1.0, 0.0], [0.0, 0.0], n=0)
(0.5, (0.5, 0.5))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` interval of the mean of ``values``.

    Args:
        values: per-example scores (e.g. 0/1 accuracies, log-prob effects).
        n: number of bootstrap resamples; 0 gives the degenerate interval (mean, mean).
        seed: RNG seed.
        alpha: 1 - coverage (0.05 for a 95% interval).

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` for empty ``values``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if v.size == 0:
        return (float("nan"), float("nan"))
    if n == 0:
        m = float(v.mean())
        return (m, m)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n, v.size))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, tuple[float, float]]:
    """Mean of ``a - b`` over paired examples and its percentile bootstrap interval.

    Resampling the per-example differences keeps each pair together, so the interval
    reflects the paired design (e.g. the same questions under two settings, or an ablated
    set against the mean of its random controls on the same examples).

    Returns:
        ``(mean difference, (lo, hi))``; NaNs for no pairs.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values must have the same length, got {x.size} and {y.size}")
    d = x - y
    mean = float(d.mean()) if d.size else float("nan")
    return mean, bootstrap_ci(d, n=n, seed=seed, alpha=alpha)
