"""The confirmatory run's report (docs/study.md, "The confirmatory run"): declared contrasts, the aim, cost.

Input: ``eval/<arm>/seed<k>/<data set>/<setting>.json`` and ``train/<arm>/seed<k>/`` of a
confirmatory folder (:mod:`neurorit_lens.experiments.confirmatory`).

- **Per seed** (:func:`seed_rows`): for each declared contrast ``a − b``, each setting, pooled
  over the data sets that have it (ids prefixed by their data set) and per data set: the paired
  accuracy difference with its paired bootstrap 95% interval, the exact McNemar p, the smallest
  difference ``n`` questions detect (McNemar, two-sided 5%, power 0.8, at the observed and at the
  planning discordance; :func:`~neurorit_lens.experiments.comparison.accuracy_contrast`), and
  Δ log p(gold) with its interval. **Holm** adjusts the McNemar p over the declared contrasts
  within one family: one seed, one scope (pooled or a data set), one setting.
- **Seeds averaged** (:func:`mean_rows`): each arm's per-question accuracy and log p(gold)
  averaged over the seeds, then the paired difference with its bootstrap interval (resampling
  questions; no McNemar, the averaged outcomes are not 0/1).
- **The aim** (:func:`aim_check`), on the seeds-averaged rows of the data set that has
  ``gold+4@bm25``: ``chosen`` beats ``layers`` and ``full`` there by at least 5 points with the
  interval's lower end above 0, and its accuracy difference at gold on the same data set is at
  least −1 point. Met or not met, per baseline and overall; each seed is checked the same way.
- **Cost** per (arm, seed) from its ``train_log.jsonl``
  (:func:`~neurorit_lens.experiments.study_report.cost_of`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurorit_lens.experiments.comparison import accuracy_contrast, add_holm, mean_difference
from neurorit_lens.experiments.report import POOLED, values
from neurorit_lens.experiments.results import _clean
from neurorit_lens.experiments.study_config import CHOSEN, StudyConfig
from neurorit_lens.experiments.study_report import cost_of, format_ci
from neurorit_lens.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["AIM", "aim_check", "build_report", "mean_rows", "seed_rows", "write_report"]

MEAN = "mean"  # the seeds-averaged rows' seed
#: docs/study.md's aim: the setting, the baselines, the margin (points as a fraction), the gold floor.
AIM = {"setting": "gold+4@bm25", "baselines": ("layers", "full"), "margin": 0.05, "gold_floor": -0.01}
Cells = Sequence[tuple[str, str]]


def load_evals(cfg: StudyConfig, out: Path) -> dict[tuple[str, int, str, str], dict[str, Any]]:
    """``{(arm, seed, data set, setting): blob}`` of every finished evaluation unit."""
    c = cfg.confirmatory
    assert c is not None
    found = {}
    for a in c.arms:
        for seed in c.seeds:
            for d in c.questions:
                for s in c.settings[d]:
                    p = out / "eval" / a / f"seed{seed}" / d / f"{s}.json"
                    if p.exists():
                        found[(a, seed, d, s)] = read_json(p)
    return found


def scopes(cfg: StudyConfig) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``(scope, setting, cells)``: pooled over the data sets at each setting they all have, then per data set."""
    c = cfg.confirmatory
    assert c is not None
    ds = list(c.questions)
    shared = [s for s in c.settings[ds[0]] if all(s in c.settings[d] for d in ds)]
    out = [(POOLED, s, [(d, s) for d in ds]) for s in shared] if len(ds) > 1 else []
    return out + [(d, s, [(d, s)]) for d in ds for s in c.settings[d]]


def _values(evals: Mapping[tuple, Any], arm: str, seed: int, cells: Cells) -> dict[str, dict[str, float]] | None:
    if any((arm, seed, d, s) not in evals for d, s in cells):
        return None
    got: dict[str, dict[str, float]] = {"logprob": {}, "accuracy": {}}
    for d, s in cells:
        for m in got:
            got[m] |= {f"{d}:{i}": v for i, v in values(evals[(arm, seed, d, s)], m).items()}
    return got


def _averaged(evals: Mapping[tuple, Any], arm: str, seeds: Sequence[int], cells: Cells
              ) -> dict[str, dict[str, float]] | None:
    per = [_values(evals, arm, s, cells) for s in seeds]
    if any(p is None for p in per):
        return None
    got: dict[str, dict[str, float]] = {}
    for m in ("logprob", "accuracy"):
        ids = [i for i in per[0][m] if all(i in p[m] for p in per)]  # type: ignore[index]
        got[m] = {i: float(np.mean([p[m][i] for p in per])) for i in ids}  # type: ignore[index]
    return got


def seed_rows(cfg: StudyConfig, evals: Mapping[tuple, Any]) -> list[dict[str, Any]]:
    """Per seed, scope, setting and declared contrast (module docstring), Holm within each family."""
    c = cfg.confirmatory
    assert c is not None
    rows = []
    for seed in c.seeds:
        for scope, setting, cells in scopes(cfg):
            family = []
            for a, b in c.contrasts:
                va, vb = _values(evals, a, seed, cells), _values(evals, b, seed, cells)
                if va is None or vb is None:
                    continue
                row: dict[str, Any] = {"a": a, "b": b, "seed": seed, "scope": scope, "setting": setting,
                                       "holm_family": f"seed {seed}, {scope}, {setting}: {len(c.contrasts)} contrasts"}
                if va["accuracy"] and vb["accuracy"]:
                    acc = accuracy_contrast(va["accuracy"], vb["accuracy"], n_bootstrap=cfg.n_bootstrap)
                    row["accuracy"] = {k: acc[k] for k in ("n", "acc_a", "acc_b", "diff", "ci", "only_a", "only_b",
                                                           "p_value", "discordance", "mdd_observed", "mdd_planning")}
                    row["p_value"] = acc["p_value"]
                    family.append(row)
                if va["logprob"] and vb["logprob"]:
                    row["logprob"] = mean_difference(va["logprob"], vb["logprob"], n_bootstrap=cfg.n_bootstrap)
                row["n"] = (row.get("accuracy") or row.get("logprob") or {"n": 0})["n"]
                rows.append(row)
            # Holm over the declared contrasts: an unfinished one counts at p = 1 until it is in
            n_missing = len(c.contrasts) - len(family)
            if family:
                padded = family + [{"p_value": 1.0} for _ in range(n_missing)]
                add_holm(padded)
    return rows


def mean_rows(cfg: StudyConfig, evals: Mapping[tuple, Any]) -> list[dict[str, Any]]:
    """Seeds averaged per question, per scope, setting and declared contrast (module docstring)."""
    c = cfg.confirmatory
    assert c is not None
    rows = []
    for scope, setting, cells in scopes(cfg):
        for a, b in c.contrasts:
            va, vb = _averaged(evals, a, c.seeds, cells), _averaged(evals, b, c.seeds, cells)
            if va is None or vb is None:
                continue
            row: dict[str, Any] = {"a": a, "b": b, "seed": MEAN, "scope": scope, "setting": setting}
            for m in ("accuracy", "logprob"):
                if va[m] and vb[m]:
                    row[m] = mean_difference(va[m], vb[m], n_bootstrap=cfg.n_bootstrap)
            if "accuracy" in row:
                row["accuracy"]["diff"] = row["accuracy"]["mean"]
            row["n"] = (row.get("accuracy") or row.get("logprob") or {"n": 0})["n"]
            rows.append(row)
    return rows


def _find(rows: Sequence[Mapping[str, Any]], a: str, b: str, seed: Any, scope: str, setting: str
          ) -> Mapping[str, Any] | None:
    want = (a, b, seed, scope, setting)
    return next((r for r in rows if (r["a"], r["b"], r["seed"], r["scope"], r["setting"]) == want
                 and "accuracy" in r), None)


def aim_check(cfg: StudyConfig, rows: Sequence[Mapping[str, Any]], seed: Any = MEAN) -> dict[str, Any]:
    """docs/study.md's aim on the rows of ``seed`` (``"mean"``: seeds averaged): ``met`` is True, False,
    or ``None`` while a row it reads is missing."""
    c = cfg.confirmatory
    assert c is not None
    scope = next((d for d in c.questions if AIM["setting"] in c.settings[d]), None)
    checks, missing = {}, []
    for b in AIM["baselines"]:
        if (CHOSEN, b) not in c.contrasts or scope is None:
            missing.append(f"{CHOSEN} − {b} at {AIM['setting']} is not declared")
            continue
        noisy, gold = (_find(rows, CHOSEN, b, seed, scope, s) for s in (AIM["setting"], "gold"))
        if noisy is None or gold is None:
            missing.append(f"{CHOSEN} − {b} at {scope} {AIM['setting']} and gold (seed {seed}) not evaluated yet")
            continue
        n_acc, g_acc = noisy["accuracy"], gold["accuracy"]
        beats = n_acc["diff"] >= AIM["margin"] and n_acc["ci"][0] > 0
        keeps = g_acc["diff"] >= AIM["gold_floor"]
        checks[b] = {"diff": n_acc["diff"], "ci": n_acc["ci"], "beats": bool(beats), "gold_diff": g_acc["diff"],
                     "gold_ci": g_acc["ci"], "keeps_gold": bool(keeps), "met": bool(beats and keeps)}
    met = None if missing else all(v["met"] for v in checks.values())
    return {"seed": seed, "scope": scope, "setting": AIM["setting"], "checks": checks, "missing": missing,
            "met": met, "rule": f"at {scope} {AIM['setting']}, {CHOSEN} − each of {list(AIM['baselines'])} >= "
                                f"{100 * AIM['margin']:g} points with its paired 95% interval above 0, and at {scope} "
                                f"gold >= {100 * AIM['gold_floor']:g} point"}


def build_report(cfg: StudyConfig, out: Path) -> dict[str, Any]:
    c = cfg.confirmatory
    assert c is not None
    evals = load_evals(cfg, out)
    per_seed, mean = seed_rows(cfg, evals), mean_rows(cfg, evals)
    rows = mean + per_seed
    cost = {f"{a}/seed{s}": k for a in c.arms for s in c.seeds
            if (k := cost_of(out / "train" / a / f"seed{s}")) is not None}
    fresh = read_json(out / "fresh.json") if (out / "fresh.json").exists() else {}
    return {"name": cfg.name, "n_bootstrap": cfg.n_bootstrap, "seeds": list(c.seeds), "arms": list(c.arms),
            "lrs": c.lrs, "contrasts": [list(p) for p in c.contrasts],
            "fresh": {d: {k: v for k, v in b.items() if k != "ids"} for d, b in fresh.items()},
            "accuracy": {f"{a}|{s}|{d}|{st}": blob["summary"].get("accuracy")
                         for (a, s, d, st), blob in evals.items()},
            "rows": rows, "aim": aim_check(cfg, rows), "aim_per_seed": [aim_check(cfg, rows, s) for s in c.seeds],
            "cost": cost}


def write_report(cfg: StudyConfig, out: Path) -> dict[str, Any]:
    """``report_confirmatory.json`` and ``report_confirmatory.md``."""
    rep = _clean(build_report(cfg, out))
    atomic_write_json(out / "report_confirmatory.json", rep)
    atomic_write_text(out / "report_confirmatory.md", render_markdown(rep))
    return rep


# --- markdown ---------------------------------------------------------------------------------
def _p(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _pts(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _aim_line(aim: Mapping[str, Any]) -> str:
    verdict = {True: "**met**", False: "**not met**", None: "not evaluable yet"}[aim["met"]]
    parts = [f"`{CHOSEN}` − `{b}`: {100 * v['diff']:+.1f} points [{100 * v['ci'][0]:+.1f}, {100 * v['ci'][1]:+.1f}]"
             f" ({'beats' if v['beats'] else 'does not beat'} by >= 5 with interval above 0), gold "
             f"{100 * v['gold_diff']:+.1f} ({'within' if v['keeps_gold'] else 'beyond'} −1 point)"
             for b, v in aim["checks"].items()]
    return f"seed {aim['seed']}: {verdict}" + ("; " + "; ".join(parts) if parts else "") + \
        ("; missing: " + "; ".join(aim["missing"]) if aim["missing"] else "")


def render_markdown(rep: Mapping[str, Any]) -> str:
    rows = rep["rows"]
    lines = [f"# Confirmatory run of `{rep['name']}` (fresh questions)", "",
             "Protocol: docs/study.md, \"The confirmatory run\". Δ = arm a − arm b per question, paired; intervals: "
             f"percentile bootstrap over questions, {rep['n_bootstrap']} resamples, 95%. Seeds {rep['seeds']}; "
             f"baseline LRs {rep['lrs']}.", "", "## Fresh questions (overlap with what earlier runs saw)", "",
             "| data set | n | overlap counts |", "|---|---:|---|"]
    for d, b in rep["fresh"].items():
        lines.append(f"| {d} | {b['n']} | " + "; ".join(f"{s}: {n}" for s, n in b["overlap"].items()) + " |")
    aim = rep["aim"]
    lines += ["", "## The aim", "", f"Rule: {aim['rule']} (seeds averaged per question).", "",
              f"- {_aim_line(aim)}"] + [f"- {_aim_line(a)}" for a in rep["aim_per_seed"]]
    lines += ["", "## Seeds averaged per question", "",
              "| a − b | scope | setting | n | Δ acc (points) | Δ log p(gold) |", "|---|---|---|---:|---|---|"]
    for r in rows:
        if r["seed"] == MEAN:
            lines.append(f"| `{r['a']}` − `{r['b']}` | {r['scope']} | {r['setting']} | {r['n']} | "
                         f"{format_ci(r.get('accuracy'), 'diff', 100, 1)} | {format_ci(r.get('logprob'))} |")
    lines += ["", "## Per seed", "",
              "McNemar: exact, two-sided. Holm: over the declared contrasts within one family (one seed, one scope, "
              "one setting). MDD: the smallest accuracy difference n questions detect (McNemar, two-sided 5%, "
              "power 0.8) at the observed discordance / at discordance 0.2.", "",
              "| seed | a − b | scope | setting | n | Δ acc (points) | McNemar p | Holm p | MDD (points) | "
              "Δ log p(gold) |", "|---:|---|---|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        if r["seed"] == MEAN:
            continue
        acc = r.get("accuracy") or {}
        lines.append(f"| {r['seed']} | `{r['a']}` − `{r['b']}` | {r['scope']} | {r['setting']} | {r['n']} | "
                     f"{format_ci(acc, 'diff', 100, 1)} | {_p(acc.get('p_value'))} | {_p(r.get('p_holm'))} | "
                     f"{_pts(acc.get('mdd_observed'))} / {_pts(acc.get('mdd_planning'))} | "
                     f"{format_ci(r.get('logprob'))} |")
    lines += ["", "## Cost per training (read from each train_log.jsonl and train.json)", "",
              "| arm / seed | steps | items read | distinct items | LR mass | LR mass stage 2 | trainable params | "
              "wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, c in rep["cost"].items():
        wall = f"{c['wall_s']:.0f}" if c.get("wall_s") is not None else "-"
        lines.append(f"| {key} | {c['steps']} | {c['items_read']} | {c['distinct_items']} | {c['lr_mass']:.4g} | "
                     f"{c['lr_mass_stage2']:.4g} | {c['trainable_params']} | {wall} |")
    return "\n".join(lines) + "\n"
