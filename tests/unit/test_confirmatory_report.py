"""The confirmatory report's statistics: McNemar and Holm against naive references, Holm within each
declared family, the seeds-averaged rows and the aim applied mechanically (met / not met)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from neurorit_lens.experiments.confirmatory_report import aim_check, mean_rows, seed_rows
from neurorit_lens.experiments.study_config import StudyConfig
from neurorit_lens.statistics import holm, mcnemar_exact

ROOT = Path(__file__).resolve().parents[2]


def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test at p = 1/2: the sum of the probabilities no larger than P(k)."""
    try:
        from scipy.stats import binomtest
    except ImportError:
        pk = math.comb(n, k) / 2**n
        return min(1.0, sum(math.comb(n, i) / 2**n for i in range(n + 1) if math.comb(n, i) / 2**n <= pk * (1 + 1e-9)))
    return float(binomtest(k, n, 0.5).pvalue)


@pytest.mark.parametrize(("b", "c"), [(5, 0), (7, 3), (12, 12), (1, 9), (0, 0), (20, 8)])
def test_mcnemar_matches_the_binomial_test_of_the_discordant_pairs(b, c):
    a = [1] * b + [0] * c + [1] * 4 + [0] * 3
    y = [0] * b + [1] * c + [1] * 4 + [0] * 3
    got = mcnemar_exact(a, y)
    assert (got.b, got.c) == (b, c)
    assert got.p_value == pytest.approx(_binom_two_sided(b, b + c) if b + c else 1.0, rel=1e-9)


def _holm_naive(p: list[float], alpha: float) -> list[bool]:
    """Holm's procedure as a sequence of rejections: reject the i-th smallest while p_(i) <= alpha / (m - i)."""
    order, rejected = sorted(range(len(p)), key=lambda i: p[i]), [False] * len(p)
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        rejected[i] = True
    return rejected


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03], [0.001, 0.2, 0.02, 0.5], [0.04, 0.04, 0.04], [0.5]])
def test_holm_adjusted_p_rejects_what_the_step_down_procedure_rejects(p):
    adjusted = holm(p)
    for alpha in (0.01, 0.03, 0.05, 0.1, 0.13):
        assert [a <= alpha for a in adjusted] == _holm_naive(p, alpha)


def _cfg() -> StudyConfig:
    return StudyConfig.from_dict(json.loads((ROOT / "benchmarks/configs/study_dev.json").read_text()))


def _blob(acc: list[int], lp: list[float]) -> dict:
    return {"records": [{"id": f"q{i}", "accuracy": float(a), "logprob": x} for i, (a, x) in
                        enumerate(zip(acc, lp, strict=True))], "summary": {"accuracy": float(np.mean(acc))}}


def _evals(chosen_nq_bm25: list[int], chosen_nq_gold: list[int], n: int = 40) -> dict:
    """Every (arm, seed, data set, setting) of the shipped block; the baselines get 20 of 40 right."""
    c = _cfg().confirmatory
    base = [1] * (n // 2) + [0] * (n // 2)
    ev = {}
    for a in c.arms:
        for s in c.seeds:
            for d in c.questions:
                for st in c.settings[d]:
                    acc = base
                    if a == "chosen" and d == "nq":
                        acc = chosen_nq_bm25 if st == "gold+4@bm25" else chosen_nq_gold if st == "gold" else base
                    ev[(a, s, d, st)] = _blob(acc, [float(-x) for x in acc])
    return ev


def test_holm_runs_within_each_family_of_the_declared_contrasts():
    cfg = _cfg()
    rows = seed_rows(cfg, _evals([1] * 30 + [0] * 10, [1] * 20 + [0] * 20))
    fam = [r for r in rows if (r["seed"], r["scope"], r["setting"]) == (0, "nq", "gold+4@bm25")]
    assert [(r["a"], r["b"]) for r in fam] == [("chosen", "layers"), ("chosen", "full"), ("chosen", "clean")]
    assert [r["p_holm"] for r in fam] == pytest.approx(holm([r["accuracy"]["p_value"] for r in fam]))
    assert fam[0]["accuracy"]["only_a"] == 10 and fam[0]["accuracy"]["only_b"] == 0
    assert fam[0]["accuracy"]["mdd_planning"] > 0 and fam[0]["holm_family"].startswith("seed 0, nq, gold+4@bm25")
    pooled = next(r for r in rows if (r["seed"], r["scope"], r["setting"]) == (1, "pooled", "gold+4"))
    assert pooled["n"] == 80  # both data sets' questions, ids prefixed by the data set


def test_the_aim_is_met_or_not_met_mechanically():
    cfg = _cfg()
    rows = mean_rows(cfg, _evals([1] * 30 + [0] * 10, [1] * 20 + [0] * 20))  # +25 points at bm25, 0 at gold
    aim = aim_check(cfg, rows)
    assert aim["met"] is True and aim["scope"] == "nq" and set(aim["checks"]) == {"layers", "full"}
    assert aim["checks"]["layers"]["diff"] == pytest.approx(0.25) and aim["checks"]["layers"]["ci"][0] > 0
    # 2.5 points better (one question): below the declared 5
    small = aim_check(cfg, mean_rows(cfg, _evals([1] * 21 + [0] * 19, [1] * 20 + [0] * 20)))
    assert small["met"] is False and small["checks"]["layers"]["diff"] == pytest.approx(0.025)
    # +25 at bm25 but 2.5 points lost at gold
    lost = aim_check(cfg, mean_rows(cfg, _evals([1] * 30 + [0] * 10, [1] * 19 + [0] * 21)))
    assert lost["met"] is False and lost["checks"]["full"]["beats"] and not lost["checks"]["full"]["keeps_gold"]
    # per seed, from the per-seed rows
    assert aim_check(cfg, seed_rows(cfg, _evals([1] * 30 + [0] * 10, [1] * 20 + [0] * 20)), seed=1)["met"] is True
    assert aim_check(cfg, [])["met"] is None


def test_the_seeds_average_pairs_per_question():
    cfg = _cfg()
    ev = _evals([1] * 30 + [0] * 10, [1] * 20 + [0] * 20)
    for d, st in [("nq", "gold+4@bm25")]:
        ev[("chosen", 1, d, st)] = _blob([1] * 20 + [0] * 20, [0.0] * 40)  # seed 1: no gain
    row = next(r for r in mean_rows(cfg, ev) if (r["b"], r["scope"], r["setting"]) == ("layers", "nq", "gold+4@bm25"))
    assert row["accuracy"]["diff"] == pytest.approx(0.125) and row["n"] == 40

