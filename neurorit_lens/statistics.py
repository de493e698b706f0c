"""Statistics shared by every stage: the one bootstrap, and the tests that compare two methods.

Every interval in the project (evaluation accuracies, the gap between two settings,
ablation effects and their difference from random controls) comes from here:

- :func:`bootstrap_ci`: resample the per-example values with replacement ``n`` times
  (``numpy.random.default_rng(seed)``, one vectorised draw), take each resample's mean,
  and return the ``alpha/2`` and ``1 - alpha/2`` quantiles of those means.
- :func:`paired_bootstrap_ci`: the same interval for the mean of ``a - b`` over paired
  examples (both values of an example stay together in a resample), with the mean.
- :func:`wilson_interval`: the Wilson score interval of a proportion (never the
  degenerate ``[0, 0]`` of a percentile bootstrap at 0%).
- :func:`mcnemar_exact`: the exact two-sided McNemar test of paired 0/1 outcomes (a
  binomial test on the discordant pairs).
- :func:`holm`: Holm's step-down adjustment of p-values (family-wise error rate).
- :func:`min_detectable_difference`: the smallest paired difference in proportions
  that ``n`` questions detect with the McNemar test (normal approximation, Connor 1987).

>>> bootstrap_ci([1.0, 1.0, 1.0])
(1.0, 1.0)
>>> paired_bootstrap_ci([1.0, 0.0], [0.0, 0.0], n=0)
(0.5, (0.5, 0.5))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

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


def _z(q: float) -> float:
    return NormalDist().inv_cdf(q)


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``.

    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the
    ``1 - alpha/2`` normal quantile. ``(nan, nan)`` for ``n = 0``.

    >>> [round(x, 4) for x in wilson_interval(0, 16)]
    [0.0, 0.1936]
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (float("nan"), float("nan"))
    z = _z(1 - alpha / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact 0 / 1 at the ends
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


@dataclass(frozen=True)
class McNemar:
    """An exact McNemar test: ``b`` pairs with only ``a`` correct, ``c`` with only ``b``."""

    b: int
    c: int
    p_value: float

    @property
    def n_discordant(self) -> int:
        return self.b + self.c


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> McNemar:
    """Exact two-sided McNemar test of paired 0/1 outcomes ``a`` and ``b``.

    Under the null each of the ``n = b + c`` discordant pairs favours either side with
    probability 1/2, so ``p = min(1, 2 * P(Binomial(n, 1/2) <= min(b, c)))`` (``1`` when
    there is no discordant pair).

    >>> mcnemar_exact([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]).p_value
    0.0625

    Raises:
        ValueError: different lengths, or values other than 0 and 1.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes must have the same length, got {x.size} and {y.size}")
    if not (np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()):
        raise ValueError("McNemar's test needs 0/1 outcomes")
    nb, nc = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    n = nb + nc
    if n == 0:
        return McNemar(nb, nc, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(nb, nc) + 1))
    return McNemar(nb, nc, min(1.0, 2 * tail / 2**n))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order.

    With the p-values sorted ascending, ``p_(i)`` (``i = 1..m``) becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted value is
    ``<= alpha`` controls the family-wise error rate at ``alpha``.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = [float(v) for v in p_values]
    if any(not 0 <= v <= 1 for v in p):
        raise ValueError(f"p-values must be in [0, 1], got {p}")
    m = len(p)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def min_detectable_difference(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest paired difference of two proportions that ``n`` questions detect.

    ``discordance`` is the share ``psi`` of questions on which the two methods disagree.
    Connor's (1987) normal approximation of McNemar's test gives the power at a difference
    ``delta`` through ``sqrt(n) delta = z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - delta^2)``;
    this solves it for ``delta`` by bisection on ``(0, psi]``. Approximate for small ``n psi``
    (few discordant pairs), where the exact test is more conservative.

    >>> round(min_detectable_difference(200, 0.2), 4)
    0.0881
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1], got {discordance}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    za, zb = _z(1 - alpha / 2), _z(power)

    def gap(d: float) -> float:  # increasing in d
        return math.sqrt(n) * d - za * math.sqrt(discordance) - zb * math.sqrt(max(discordance - d * d, 0.0))

    lo, hi = 0.0, discordance
    if gap(hi) < 0:
        return float("nan")  # not even delta = psi is detectable
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return hi
