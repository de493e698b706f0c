"""The one bootstrap (neurorit_lens/statistics.py) against naive loops, normal theory and coverage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from neurorit_lens.ablation.result import Effect
from neurorit_lens.statistics import bootstrap_ci, paired_bootstrap_ci


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


# ---------------------------------------------------------------- comparison tests

from itertools import product  # noqa: E402
from statistics import NormalDist  # noqa: E402

from neurorit_lens.statistics import (  # noqa: E402
    holm,
    mcnemar_exact,
    min_detectable_difference,
    wilson_interval,
)


def brute_binomial_p(b, c):
    """Two-sided exact binomial p by enumerating all 2^n sign patterns of the discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    hits = sum(1 for signs in product((0, 1), repeat=n) if min(sum(signs), n - sum(signs)) <= k)
    return min(1.0, hits / 2**n)


@pytest.mark.parametrize("b,c", [(0, 0), (5, 0), (3, 4), (7, 2), (1, 9), (6, 6)])
def test_mcnemar_against_enumeration(b, c):
    a = [1] * b + [0] * c + [1, 1, 0]  # two concordant kinds too
    x = [0] * b + [1] * c + [1, 1, 0]
    res = mcnemar_exact(a, x)
    assert (res.b, res.c, res.n_discordant) == (b, c, b + c)
    ref = brute_binomial_p(b, c)
    assert res.p_value == pytest.approx(ref, abs=1e-12)
    # hand values: 5 vs 0 -> 2/32; symmetric in (a, b)
    assert mcnemar_exact(x, a).p_value == res.p_value
    assert mcnemar_exact([1] * 5, [0] * 5).p_value == 0.0625
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5], [1])
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact([1, 0], [1])


def test_wilson_against_closed_form_and_coverage():
    # hand values (Wilson 1927 / Newcombe 1998 table: 0/10 -> [0, 0.2775], 81/263 -> [0.2553, 0.3662])
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(81, 263)
    assert (lo, hi) == (pytest.approx(0.2553, abs=1e-4), pytest.approx(0.3662, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0 and all(v != v for v in wilson_interval(0, 0))
    # the interval is exactly the set of p whose score test accepts: |k - np| <= z sqrt(np(1-p))
    z = NormalDist().inv_cdf(0.975)
    for k, n in [(3, 16), (50, 200), (1, 7)]:
        lo, hi = wilson_interval(k, n)
        for p in (lo, hi):
            assert abs(k - n * p) == pytest.approx(z * np.sqrt(n * p * (1 - p)), rel=1e-9)
    # coverage near 95% by simulation
    rng = np.random.default_rng(0)
    ks = rng.binomial(200, 0.3, size=4000)
    cover = np.mean([lo <= 0.3 <= hi for lo, hi in (wilson_interval(int(k), 200) for k in ks)])
    assert 0.93 <= cover <= 0.97
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_holm_against_definition():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == [] and holm([0.2]) == [0.2]
    rng = random.Random(0)
    for _ in range(50):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 6))]
        m = len(p)
        order = sorted(range(m), key=lambda i: p[i])
        # reference: the step-down procedure, rejecting at each alpha on a grid
        for alpha in (0.01, 0.05, 0.1, 0.3):
            reject = set()
            for r, i in enumerate(order):
                if p[i] <= alpha / (m - r):
                    reject.add(i)
                else:
                    break
            assert {i for i, q in enumerate(holm(p)) if q <= alpha} == reject
    with pytest.raises(ValueError):
        holm([1.5])


def exact_mcnemar_power(n, p10, p01, alpha=0.05):
    """Power of the exact McNemar test by enumeration over (discordant count, split)."""
    from math import comb

    psi = p10 + p01
    power = 0.0
    for d in range(n + 1):
        pd = comb(n, d) * psi**d * (1 - psi) ** (n - d)
        if pd < 1e-12:
            continue
        for b in range(d + 1):
            if brute_binomial_p_fast(b, d - b) <= alpha:
                power += pd * comb(d, b) * (p10 / psi) ** b * (p01 / psi) ** (d - b)
    return power


def brute_binomial_p_fast(b, c):
    from math import comb

    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


@pytest.mark.parametrize("n,psi", [(200, 0.2), (200, 0.4), (500, 0.1)])
def test_min_detectable_difference(n, psi):
    d = min_detectable_difference(n, psi)
    # closed form of Connor's equation (the quadratic after squaring)
    za, zb = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.8)
    A = za * np.sqrt(psi)
    ref = (A * np.sqrt(n) + np.sqrt(A * A * n - (n + zb * zb) * (A * A - zb * zb * psi))) / (n + zb * zb)
    assert d == pytest.approx(ref, rel=1e-9)
    # and the exact McNemar test has about 80% power at that difference
    pw = exact_mcnemar_power(n, (psi + d) / 2, (psi - d) / 2)
    assert 0.72 <= pw <= 0.86
    assert min_detectable_difference(4 * n, psi) < d  # more questions, smaller difference
    with pytest.raises(ValueError):
        min_detectable_difference(0, 0.2)
