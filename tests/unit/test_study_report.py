"""The component study's report: contrast statistics against a naive paired bootstrap, the cost table
against a hand-written train_log, and each branch of the declared rule on hand-made numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neurorit_lens.experiments.report import POOLED
from neurorit_lens.experiments.study_config import load_study_config
from neurorit_lens.experiments.study_report import contrast_rows, cost_from_log, cost_of, render_markdown
from neurorit_lens.experiments.study_rule import apply_rule

ROOT = Path(__file__).resolve().parents[2]
CFG = load_study_config(ROOT / "benchmarks" / "configs" / "study_dev.json")


def _blob(ids, logprob, acc) -> dict:
    return {"summary": {"accuracy": float(np.mean(acc))},
            "records": [{"id": i, "logprob": float(lp), "accuracy": float(a)} for i, lp, a in zip(ids, logprob, acc,
                                                                                                   strict=True)]}


def _naive_ci(d: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap of the mean, one resample at a time."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, d.size, size=(n_boot, d.size))
    means = []
    for row in draws:
        total = 0.0
        for j in row:
            total += d[j]
        means.append(total / d.size)
    lo, hi = np.quantile(np.array(means), [0.025, 0.975])
    return float(lo), float(hi)


def test_contrast_rows_match_a_naive_paired_bootstrap():
    rng = np.random.default_rng(3)
    evals, raw = {}, {}
    for d, n in (("embedded", 7), ("nq", 5)):
        ids = [f"q{i}" for i in range(n)]
        for s in CFG.settings[d]:
            for arm in ("fair", "layers_matched"):
                lp, acc = rng.normal(-2, 1.5, n), rng.integers(0, 2, n)
                evals[(arm, d, s)] = _blob(ids, lp, acc)
                raw[(arm, d, s)] = (lp, acc)
    rows = contrast_rows(CFG, evals)
    primary = [r for r in rows if r["contrast"] == "neuron guidance, compute matched"]
    assert {(r["scope"], r["setting"]) for r in primary} == {
        (POOLED, "gold"), (POOLED, "gold+4"), ("embedded", "gold"), ("embedded", "gold+4"), ("nq", "gold"),
        ("nq", "gold+4"), ("nq", "gold+4@bm25")}  # gold+4@bm25 exists on nq only: no pooled row
    row = next(r for r in primary if r["scope"] == POOLED and r["setting"] == "gold+4")
    d = np.concatenate([raw[("fair", ds, "gold+4")][0] - raw[("layers_matched", ds, "gold+4")][0]
                        for ds in ("embedded", "nq")])
    acc = np.concatenate([raw[("fair", ds, "gold+4")][1] - raw[("layers_matched", ds, "gold+4")][1]
                          for ds in ("embedded", "nq")]).astype(float)
    assert row["n"] == 12 and row["logprob"]["mean"] == pytest.approx(d.mean())
    assert row["logprob"]["ci"] == pytest.approx(_naive_ci(d, CFG.n_bootstrap))
    assert row["logprob"]["half_width"] == pytest.approx((row["logprob"]["ci"][1] - row["logprob"]["ci"][0]) / 2)
    assert row["logprob"]["under_powered"]  # 12 questions: far wider than +-0.2 nats
    assert row["accuracy"]["diff"] == pytest.approx(acc.mean())
    assert row["accuracy"]["ci"] == pytest.approx(_naive_ci(acc, CFG.n_bootstrap))
    assert (row["accuracy"]["only_a"], row["accuracy"]["only_b"]) == (int((acc > 0).sum()), int((acc < 0).sum()))
    nq = next(r for r in primary if r["scope"] == "nq" and r["setting"] == "gold+4@bm25")
    d_nq = raw[("fair", "nq", "gold+4@bm25")][0] - raw[("layers_matched", "nq", "gold+4@bm25")][0]
    assert nq["logprob"]["mean"] == pytest.approx(d_nq.mean()) and nq["n"] == 5
    assert nq["logprob"]["ci"] == pytest.approx(_naive_ci(d_nq, CFG.n_bootstrap))
    # an arm not evaluated yet gives no row; a contrast with the same value everywhere is not under-powered
    assert not [r for r in rows if r["b"] == "gxa"]
    same = contrast_rows(CFG, {**evals, **{("gxa", d, s): b for (a, d, s), b in evals.items() if a == "fair"}})
    flat = next(r for r in same if r["b"] == "gxa" and r["scope"] == POOLED and r["setting"] == "gold")
    assert flat["logprob"]["mean"] == 0 and not flat["logprob"]["under_powered"]


def _step(step: int, stage: str, lr: float, items: list[int]) -> dict:
    return {"step": step, "loss": 1.0, "lr": lr, "grad_norm": 0.5, "n_tokens": 4, "stage": stage, "dev_loss": None,
            "dev_answer_logprob": None, "items": items}


def test_cost_table_reads_the_train_log(tmp_path):
    steps = [_step(1, "stage1", 1e-4, [0, 1]), _step(2, "stage1", 2e-4, [2, 3]), _step(3, "stage2", 3e-4, [4, 5]),
             _step(4, "stage2", 1e-4, [1, 6]), _step(5, "stage2", 5e-5, [0, 2])]
    c = cost_from_log(steps, n_items=7)
    assert (c["steps"], c["items_read"], c["distinct_items"]) == (5, 10, 7)
    assert c["repeats_before_all_seen"] == 1  # item 1 again at step 4, while item 6 was still unread
    assert c["lr_mass"] == pytest.approx(1e-4 + 2e-4 + 3e-4 + 1e-4 + 5e-5)
    assert c["lr_mass_stage2"] == pytest.approx(3e-4 + 1e-4 + 5e-5)
    assert c["stages"]["stage1"] == {"steps": 2, "lr_mass": pytest.approx(3e-4)}
    layers = cost_from_log([_step(1, "layers", 1e-4, [0, 1]), _step(2, "layers", 2e-4, [2, 3])], n_items=4)
    assert layers["lr_mass_stage2"] == pytest.approx(3e-4) and layers["repeats_before_all_seen"] == 0
    d = tmp_path / "train" / "fair"
    d.mkdir(parents=True)
    assert cost_of(d) is None  # unfinished: no train.json
    (d / "train_log.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (d / "train.json").write_text(json.dumps({"n_train_items": 7, "trainable_params": 1234, "wall_s": 12.5,
                                              "trainable_fraction": 0.01, "target_layers": [3]}))
    full = cost_of(d)
    assert full["trainable_params"] == 1234 and full["wall_s"] == 12.5 and full["repeats_before_all_seen"] == 1
    assert full["lr_mass"] == pytest.approx(c["lr_mass"])


# --- the declared rule -------------------------------------------------------------------------
def _row(a: str, b: str, scope: str, setting: str, mean: float, lo: float, hi: float) -> dict:
    return {"contrast": f"{a}-{b}", "a": a, "b": b, "scope": scope, "setting": setting, "n": 300,
            "logprob": {"n": 300, "mean": mean, "ci": [lo, hi], "half_width": (hi - lo) / 2,
                        "under_powered": False}}


NULL = (0.0, -0.1, 0.1)
GOOD = (0.3, 0.1, 0.5)


def _rows(est=NULL, zero=(NULL, NULL), contrast=(NULL, NULL), bm25=(NULL, NULL)) -> list[dict]:
    return [_row("fair", "gxa", POOLED, "gold+4", *est),
            _row("zero", "fair", POOLED, "gold+4", *zero[0]), _row("zero", "fair", POOLED, "gold", *zero[1]),
            _row("contrast", "fair", POOLED, "gold+4", *contrast[0]),
            _row("contrast", "fair", POOLED, "gold", *contrast[1]),
            _row("bm25", "fair", "nq", "gold+4@bm25", *bm25[0]), _row("bm25", "fair", POOLED, "gold", *bm25[1])]


def test_rule_nothing_helps_keeps_fair():
    r = apply_rule(CFG, _rows())
    ch = r["chosen"]
    assert r["complete"] and ch["sets"] == "ig" and ch["deactivation_arm"] is None and ch["i_excl_from"] is None
    assert ch["train_distractors"] == "random" and ch["train_overrides"] == CFG.fair_neurorit
    assert ch["train_config"]["stage_schedule"] == "stage1_extra" and ch["train_config"]["deactivation"] == "none"
    assert any("as it stands" in s for s in r["reasons"])


def test_rule_estimator_switches_only_on_an_interval_below_zero():
    assert apply_rule(CFG, _rows(est=(-0.3, -0.5, -0.1)))["chosen"]["sets"] == "grad_x_act"
    assert apply_rule(CFG, _rows(est=(-0.3, -0.6, 0.01)))["chosen"]["sets"] == "ig"
    assert apply_rule(CFG, _rows(est=GOOD))["chosen"]["sets"] == "ig"  # IG better: IG stays


def test_rule_deactivation_that_helps_and_the_larger_of_two():
    zero_only = apply_rule(CFG, _rows(zero=(GOOD, NULL)))["chosen"]
    assert zero_only["deactivation_arm"] == "zero" and zero_only["train_overrides"]["deactivation"] == "zero"
    assert zero_only["i_excl_from"] is None
    both = apply_rule(CFG, _rows(zero=(GOOD, NULL), contrast=((0.4, 0.2, 0.6), NULL)))
    ch = both["chosen"]
    assert ch["deactivation_arm"] == "contrast" and ch["i_excl_from"] == "contrast"
    assert (ch["train_overrides"]["deactivation"], ch["train_overrides"]["deactivation_scale"]) == ("scale", 0.5)
    assert any("larger mean" in s for s in both["reasons"]) and not any("combination" in s for s in both["reasons"])
    # an interval above 0 at gold+4 that costs more than 0.2 nats at gold does not help
    costly = apply_rule(CFG, _rows(zero=(GOOD, (-0.25, -0.4, -0.1))))
    assert costly["chosen"]["deactivation_arm"] is None and not costly["components"]["deactivation:zero"]["helps"]
    assert apply_rule(CFG, _rows(zero=(GOOD, (-0.19, -0.4, 0.0))))["chosen"]["deactivation_arm"] == "zero"


def test_rule_bm25_reads_nq_gold4_bm25_and_applies_to_every_arm():
    r = apply_rule(CFG, _rows(bm25=(GOOD, NULL), zero=(GOOD, NULL)))
    assert r["chosen"]["train_distractors"] == "bm25" and r["chosen"]["deactivation_arm"] == "zero"
    assert any("baselines included" in s for s in r["reasons"]) and any("combination" in s for s in r["reasons"])
    assert apply_rule(CFG, _rows(bm25=((0.3, -0.01, 0.6), NULL)))["chosen"]["train_distractors"] == "random"


def test_rule_waits_for_every_row_it_reads():
    rows = [r for r in _rows() if not (r["a"] == "bm25" and r["setting"] == "gold+4@bm25")]
    r = apply_rule(CFG, rows)
    assert not r["complete"] and r["chosen"] is None
    assert r["missing"] == ["`bm25` − `fair` at nq gold+4@bm25 is not evaluated yet"]


def test_markdown_renders_a_report():
    rep = {"name": "study_dev", "n_bootstrap": 2000, "target_halfwidth_nats": 0.2, "train_limit": 300,
           "dev_limit": 150, "n_questions": {"embedded": 150, "nq": 150},
           "contrasts": [{**_row("fair", "gxa", POOLED, "gold+4", *GOOD), "contrast": "estimator"},
                         {**_row("fair", "gxa", "nq", "gold+4", -0.1, -0.5, 0.3), "contrast": "estimator"}],
           "cost": {"fair": {**cost_from_log([_step(1, "stage1", 1e-4, [0, 1])], 2), "trainable_params": 10,
                             "wall_s": 3.0}},
           "stability": {"ig": {"jaccard": {"R_excl": 0.5, "I_excl": None}}},
           "rule": apply_rule(CFG, _rows(zero=(GOOD, NULL)))}
    md = render_markdown(rep)
    assert "| estimator | `fair` − `gxa` | 300 | +0.30 [+0.10, +0.50] | ±0.20 |" in md
    assert "| estimator | nq | gold+4 | 300 | -0.10 [-0.50, +0.30] |" in md
    assert "| fair | 1 | 2 | 2 | 0 | 0.0001 | 0 | 10 | 3 |" in md and "Confirmatory configuration" in md
