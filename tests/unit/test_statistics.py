"""The one bootstrap (evaluation/statistics.py) against naive loops, normal theory and coverage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from neurorit_lens.ablation.result import Effect
from neurorit_lens.evaluation.statistics import bootstrap_ci, paired_bootstrap_ci


def naive_bootstrap(values, n, seed, alpha):
    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    idx = rng.integers(0, len(v), size=(n, len(v)))
    means = []
    for b in range(n):
        s = 0.0
        for j in idx[b]:
            s += v[j]
        means.append(s / len(v))
    means.sort()
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_bootstrap_matches_naive_loop(alpha):
    vals = np.random.default_rng(1).integers(0, 2, size=37).astype(float)
    lo, hi = bootstrap_ci(vals, n=300, seed=7, alpha=alpha)
    assert (lo, hi) == pytest.approx(naive_bootstrap(vals, 300, 7, alpha))
    assert lo <= vals.mean() <= hi


def test_bootstrap_coverage_and_edges():
    # a 95% interval of a Bernoulli(0.3) mean covers 0.3 in most of 200 repeats
    rng = np.random.default_rng(0)
    covered = 0
    for r in range(200):
        v = (rng.random(100) < 0.3).astype(float)
        lo, hi = bootstrap_ci(v, n=400, seed=r)
        covered += lo <= 0.3 <= hi
    assert covered / 200 > 0.88
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], n=0) == (0.5, 0.5)
    lo, hi = bootstrap_ci([])
    assert lo != lo and hi != hi
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0], alpha=1.5)
    with pytest.raises(ValueError, match="n must"):
        bootstrap_ci([1.0], n=-1)


def test_bootstrap_ci_matches_naive_percentile_bootstrap_and_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=200)
    lo, hi = bootstrap_ci(x, n=4000, seed=1)
    # naive, independent RNG: resample one at a time with Python's random
    r = random.Random(5)
    means = sorted(sum(x[r.randrange(len(x))] for _ in range(len(x))) / len(x) for _ in range(2000))
    nlo, nhi = means[int(0.025 * 2000)], means[int(0.975 * 2000) - 1]
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert abs(lo - nlo) < 0.25 * se and abs(hi - nhi) < 0.25 * se
    assert abs(lo - (x.mean() - 1.96 * se)) < 0.2 * se and abs(hi - (x.mean() + 1.96 * se)) < 0.2 * se
    e = Effect.of(x, 1000, 0)
    assert e.ci_low < e.mean < e.ci_high and e.n == 200 and e.excludes_zero()
    assert Effect.of([], 100, 0).n == 0
    p = Effect.paired(x, x - 1.0, 1000, 0)  # a - b == 1 for every pair: a degenerate interval at 1
    assert (p.mean, p.n) == (pytest.approx(1.0), 200) and p.ci_low == pytest.approx(1.0) == p.ci_high


def test_paired_bootstrap_resamples_pairs_together():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 5.0, size=60)
    b = a - 0.5 + rng.normal(0.0, 0.1, size=60)  # strongly paired: a - b is about 0.5
    mean, (lo, hi) = paired_bootstrap_ci(a, b, n=500, seed=2)
    # independent reference: the naive loop on the per-pair differences
    assert mean == pytest.approx(float(np.mean(a - b)))
    assert (lo, hi) == pytest.approx(naive_bootstrap(a - b, 500, 2, 0.05))
    assert 0.45 < lo < mean < hi < 0.55  # unpaired resampling would give an interval ~50x wider
    m, (lo, hi) = paired_bootstrap_ci([], [])
    assert m != m and lo != lo and hi != hi
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_ci([1.0, 2.0], [1.0])
