"""The component study's report: declared contrasts, cost per arm, and the declared rule (docs/study.md).

Input: the study folder's per-question dev evaluations (``eval/<arm>/<data set>/<setting>.json``)
and each arm's ``train/<arm>/train_log.jsonl`` and ``train.json``.

- :func:`contrast_rows`: for each declared contrast ``a - b``, the mean per-question
  difference of teacher-forced log p(gold) with its paired percentile bootstrap 95% interval
  (:func:`~neurorit_lens.experiments.comparison.mean_difference`) and the accuracy difference
  with its paired interval and exact McNemar p
  (:func:`~neurorit_lens.experiments.comparison.accuracy_contrast`): pooled over every data
  set (ids prefixed by their data set) at the settings they all have, and per data set at
  each of its settings (secondary rows). Each log-prob row states its realised half-width
  (half the interval's length) and ``under_powered`` when it exceeds ``target_halfwidth_nats``:
  such a contrast is reported as under-powered, not as a null.
- :func:`cost_of`: what an arm's training did, read from its log (not from the configuration):
  optimizer steps, distinct items read, items read a second time while some item was still
  unread (0 when no item is seen twice before every item was seen once), the learning-rate
  schedule mass (the sum of the per-step learning rates) overall, per stage and for stage 2
  (the stage that trains the target layers: ``stage2``, or ``layers`` for the layers arms),
  trainable parameters and wall time.
- :func:`apply_rule` (:mod:`neurorit_lens.experiments.study_rule`): the declared rule
  applied to the numbers; ``chosen.json`` holds the confirmatory configuration and the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neurorit_lens.experiments.comparison import accuracy_contrast, mean_difference
from neurorit_lens.experiments.report import POOLED, values
from neurorit_lens.experiments.results import _clean
from neurorit_lens.experiments.study_config import StudyConfig
from neurorit_lens.experiments.study_rule import GOLD_FLOOR, apply_rule
from neurorit_lens.io import atomic_write_json, atomic_write_text, fingerprint, read_json

__all__ = ["POOLED", "STAGE2_NAMES", "contrast_row", "contrast_rows", "cost_from_log", "cost_of", "format_ci",
           "load_evals", "render_markdown", "write_report"]

STAGE2_NAMES = ("stage2", "layers")  # the stage that trains the target layers


def load_evals(cfg: StudyConfig, out: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``{(arm, data set, setting): blob}`` of every finished evaluation unit."""
    found = {}
    for arm in cfg.arm_specs:
        for d in cfg.datasets:
            for s in cfg.settings[d]:
                p = out / "eval" / arm / d / f"{s}.json"
                if p.exists():
                    found[(arm, d, s)] = read_json(p)
    return found


def contrast_row(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]], n_bootstrap: int,
                 target: float) -> dict[str, Any]:
    """One row: ``a`` and ``b`` are ``{"logprob": {id: value}, "accuracy": {id: value}}`` of the same questions."""
    row: dict[str, Any] = {}
    if a["logprob"] and b["logprob"]:
        md = mean_difference(a["logprob"], b["logprob"], n_bootstrap=n_bootstrap)
        half = (md["ci"][1] - md["ci"][0]) / 2
        row["logprob"] = {**md, "half_width": half, "under_powered": bool(half > target)}
    if a["accuracy"] and b["accuracy"]:
        acc = accuracy_contrast(a["accuracy"], b["accuracy"], n_bootstrap=n_bootstrap)
        row["accuracy"] = {k: acc[k] for k in ("n", "acc_a", "acc_b", "diff", "ci", "only_a", "only_b", "p_value")}
    row["n"] = (row.get("logprob") or row.get("accuracy") or {"n": 0})["n"]
    return row


def _arm_values(evals: Mapping[tuple[str, str, str], Any], arm: str, cells: Sequence[tuple[str, str]]
                ) -> dict[str, dict[str, float]] | None:
    """Per metric, ``{"<data set>:<id>": value}`` over ``cells``; ``None`` when a cell is not evaluated yet."""
    if any((arm, d, s) not in evals for d, s in cells):
        return None
    out: dict[str, dict[str, float]] = {"logprob": {}, "accuracy": {}}
    for d, s in cells:
        for metric in out:
            out[metric] |= {f"{d}:{i}": v for i, v in values(evals[(arm, d, s)], metric).items()}
    return out


def pooled_settings(cfg: StudyConfig) -> list[str]:
    """The settings every data set has, in the first data set's order."""
    first = cfg.settings[next(iter(cfg.datasets))]
    return [s for s in first if all(s in cfg.settings[d] for d in cfg.datasets)]


def contrast_rows(cfg: StudyConfig, evals: Mapping[tuple[str, str, str], Any]) -> list[dict[str, Any]]:
    """Every declared contrast's rows: pooled at the shared settings, then per data set and setting."""
    rows = []
    scopes = [(POOLED, s, [(d, s) for d in cfg.datasets]) for s in pooled_settings(cfg)]
    scopes += [(d, s, [(d, s)]) for d in cfg.datasets for s in cfg.settings[d]]
    for c in cfg.contrasts:
        for scope, setting, cells in scopes:
            a, b = _arm_values(evals, c.a, cells), _arm_values(evals, c.b, cells)
            if a is None or b is None:
                continue
            rows.append({"contrast": c.name, "a": c.a, "b": c.b, "scope": scope, "setting": setting,
                         **contrast_row(a, b, cfg.n_bootstrap, cfg.target_halfwidth_nats)})
    return rows


def cost_from_log(steps: Sequence[Mapping[str, Any]], n_items: int | None) -> dict[str, Any]:
    """Steps, items and learning-rate mass of one training, from its ``train_log.jsonl`` lines.

    ``n_items``: training items the run had (``train.json``); an item read again while fewer
    than ``n_items`` distinct items were read counts in ``repeats_before_all_seen``.
    """
    seen: set[int] = set()
    early = 0
    for st in steps:
        for i in st["items"]:
            if i in seen and (n_items is None or len(seen) < n_items):
                early += 1
            seen.add(i)
    stages: dict[str, dict[str, float]] = {}
    for st in steps:
        s = stages.setdefault(st.get("stage") or "", {"steps": 0, "lr_mass": 0.0})
        s["steps"] += 1
        s["lr_mass"] += float(st["lr"])
    return {"steps": len(steps), "items_read": sum(len(st["items"]) for st in steps), "distinct_items": len(seen),
            "repeats_before_all_seen": early, "lr_mass": sum(float(st["lr"]) for st in steps),
            "lr_mass_stage2": sum(float(st["lr"]) for st in steps if st.get("stage") in STAGE2_NAMES),
            "stages": stages}


def cost_of(train_dir: Path) -> dict[str, Any] | None:
    """:func:`cost_from_log` of a finished training, with its parameters and wall time (``None`` while unfinished)."""
    from neurorit_lens.training.checkpoint import TRAIN_LOG, read_train_log

    if not (train_dir / "train.json").exists() or not (train_dir / TRAIN_LOG).exists():
        return None
    t = read_json(train_dir / "train.json")
    steps = [o.to_dict() for o in read_train_log(train_dir / TRAIN_LOG)]
    return {**cost_from_log(steps, t.get("n_train_items")), "n_train_items": t.get("n_train_items"),
            "trainable_params": t.get("trainable_params"), "trainable_fraction": t.get("trainable_fraction"),
            "target_layers": t.get("target_layers"), "n_deactivated": t.get("n_deactivated"),
            "n_trained_neurons": t.get("n_trained_neurons"), "wall_s": t.get("wall_s"),
            "peak_rss_mb": t.get("peak_rss_mb")}


def arm_scores(blob: Mapping[str, Any]) -> dict[str, Any]:
    """One evaluation unit's n, accuracy with its Wilson interval, and mean log p(gold) over its questions."""
    lps = [r["logprob"] for r in blob["records"] if r.get("logprob") is not None]
    summary = blob["summary"]
    return {"n": len(blob["records"]), "accuracy": summary.get("accuracy"),
            "accuracy_wilson": summary.get("accuracy_wilson"), "mean_logprob": sum(lps) / len(lps) if lps else None}


def build_report(cfg: StudyConfig, out: Path) -> dict[str, Any]:
    """Every number of the report (JSON-ready)."""
    evals = load_evals(cfg, out)
    rows = contrast_rows(cfg, evals)
    costs = {a: c for a in cfg.arm_specs if (c := cost_of(out / "train" / a)) is not None}
    stability = {}
    for p in sorted((out / "sets").glob("*/stability.json")):
        stability |= read_json(p)
    n_questions = {d: max((len(b["records"]) for (_, dd, _), b in evals.items() if dd == d), default=None)
                   for d in cfg.datasets}
    return {"name": cfg.name, "n_bootstrap": cfg.n_bootstrap, "target_halfwidth_nats": cfg.target_halfwidth_nats,
            "train_limit": cfg.train_limit, "dev_limit": cfg.dev_limit, "n_questions": n_questions,
            "arms": {a: {"evaluated": sorted(f"{d}/{s}" for (x, d, s) in evals if x == a),
                         "trained": a in costs} for a in cfg.arm_specs},
            "accuracy": {f"{a}|{d}|{s}": blob["summary"].get("accuracy") for (a, d, s), blob in evals.items()},
            "scores": {f"{a}|{d}|{s}": arm_scores(blob) for (a, d, s), blob in evals.items()},
            "contrasts": rows, "cost": costs, "stability": stability, "rule": apply_rule(cfg, rows)}


def write_report(cfg: StudyConfig, out: Path) -> dict[str, Any]:
    """``report.json``, ``report.md`` and, once the rule's contrasts are all in, ``chosen.json``."""
    rep = _clean(build_report(cfg, out))
    atomic_write_json(out / "report.json", rep)
    atomic_write_text(out / "report.md", render_markdown(rep))
    if rep["rule"]["complete"]:  # the protocol fingerprint lets the confirmatory run refuse another config's choice
        atomic_write_json(out / "chosen.json", {**rep["rule"]["chosen"], "protocol": fingerprint(cfg.declared)})
    return rep


# --- markdown ---------------------------------------------------------------------------------
def format_ci(d: Mapping[str, Any] | None, key: str = "mean", scale: float = 1.0, digits: int = 2) -> str:
    """``+m [+lo, +hi]`` of a statistic with its interval (``-`` when it is missing or NaN)."""
    if not d or d.get(key) is None or (isinstance(d[key], float) and math.isnan(d[key])):
        return "-"
    lo, hi = d["ci"]
    return f"{scale * d[key]:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def _hw(d: Mapping[str, Any] | None) -> str:
    if not d or d.get("half_width") is None:
        return "-"
    return f"±{d['half_width']:.2f}" + (" under-powered" if d["under_powered"] else "")


def _row(rows: Sequence[Mapping[str, Any]], name: str, scope: str, setting: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["contrast"] == name and r["scope"] == scope and r["setting"] == setting), None)


def render_markdown(rep: Mapping[str, Any]) -> str:
    """``report.md``: contrasts (pooled, then per data set), scores and cost per arm, stability, the rule."""
    rows = rep["contrasts"]
    lines = [f"# Component study `{rep['name']}` (dev questions)", "",
             "Protocol: docs/study.md. Δ = arm a − arm b per question, paired; intervals: percentile bootstrap, "
             f"{rep['n_bootstrap']} resamples, 95%. log p(gold): teacher-forced, summed over the answer tokens. "
             f"A log-prob contrast whose half-width exceeds ±{rep['target_halfwidth_nats']:g} nats is under-powered "
             "(not a null).", "",
             "Dev questions scored per data set: " + ", ".join(f"{d} {n}" for d, n in rep["n_questions"].items())
             + f" (train limit {rep['train_limit']}, dev limit "
             f"{rep['dev_limit']}).", "", "## Declared contrasts, pooled over the data sets", "",
             "| contrast | a − b | n | Δ log p(gold \\| gold+4) | half-width | Δ log p(gold \\| gold) | "
             "Δ acc gold+4 (points) | Δ acc gold (points) |", "|---|---|---:|---|---|---|---|---|"]
    names = list(dict.fromkeys(r["contrast"] for r in rows))
    for name in names:
        noisy, gold = _row(rows, name, POOLED, "gold+4"), _row(rows, name, POOLED, "gold")
        first = noisy or gold
        if first is None:
            continue
        lines.append(f"| {name} | `{first['a']}` − `{first['b']}` | {first['n']} | "
                     f"{format_ci((noisy or {}).get('logprob'))} | {_hw((noisy or {}).get('logprob'))} | "
                     f"{format_ci((gold or {}).get('logprob'))} | "
                     f"{format_ci((noisy or {}).get('accuracy'), 'diff', 100, 1)} | "
                     f"{format_ci((gold or {}).get('accuracy'), 'diff', 100, 1)} |")
    lines += ["", "## Per data set (secondary rows)", "",
              "| contrast | data set | setting | n | Δ log p(gold) | half-width | Δ acc (points) | McNemar p |",
              "|---|---|---|---:|---|---|---|---:|"]
    for r in rows:
        if r["scope"] == POOLED:
            continue
        acc = r.get("accuracy") or {}
        p = f"{acc['p_value']:.3g}" if acc.get("p_value") is not None else "-"
        lines.append(f"| {r['contrast']} | {r['scope']} | {r['setting']} | {r['n']} | {format_ci(r.get('logprob'))} | "
                     f"{_hw(r.get('logprob'))} | {format_ci(acc, 'diff', 100, 1)} | {p} |")
    lines += ["", "## Scores per arm", "",
              "| arm | data set | setting | n | accuracy % [Wilson 95%] | mean log p(gold) |",
              "|---|---|---|---:|---|---:|"]
    for key, sc in rep.get("scores", {}).items():
        arm, d, setting = key.split("|")
        w = sc.get("accuracy_wilson") or [None, None]
        acc = "-" if sc.get("accuracy") is None else f"{100 * sc['accuracy']:.1f}" + (
            f" [{100 * w[0]:.1f}, {100 * w[1]:.1f}]" if None not in w else "")
        lines.append(f"| {arm} | {d} | {setting} | {sc['n']} | {acc} | {_num(sc.get('mean_logprob'))} |")
    lines += ["", "## Cost per arm (read from each arm's train_log.jsonl and train.json)", "",
              "LR mass: the sum of the per-step learning rates; stage 2: the steps that train the target layers. "
              "Wall time: the training call that finished the run (its last stretch, when it was resumed).", "",
              "| arm | steps | items read | distinct items | re-read before all read | LR mass | LR mass stage 2 | "
              "trainable params | wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, c in rep["cost"].items():
        wall = f"{c['wall_s']:.0f}" if c.get("wall_s") is not None else "-"
        lines.append(f"| {arm} | {c['steps']} | {c['items_read']} | {c['distinct_items']} | "
                     f"{c['repeats_before_all_seen']} | {c['lr_mass']:.4g} | {c['lr_mass_stage2']:.4g} | "
                     f"{c['trainable_params']} | {wall} |")
    if rep.get("stability"):
        lines += ["", "## Split-half stability of the pooled sets (Jaccard, even vs odd questions)", "",
                  "| set | R_excl | I_excl |", "|---|---:|---:|"]
        for name, st in rep["stability"].items():
            j = st["jaccard"]
            lines.append(f"| {name} | {_num(j.get('R_excl'))} | {_num(j.get('I_excl'))} |")
    rule = rep["rule"]
    lines += ["", "## The declared rule", "", f"A component helps when its pooled Δ log p(gold | gold+4) has a 95% "
              f"interval above 0 and its pooled Δ log p(gold | gold) is above {GOLD_FLOOR:g} nats.", ""]
    lines += [f"- {r}" for r in rule["reasons"]]
    if rule["complete"]:
        ch = rule["chosen"]
        lines += ["", f"**Confirmatory configuration** (`chosen.json`): `{ch['base_arm']}` with sets `{ch['sets']}`"
                  f"{', I_excl from `' + ch['i_excl_from'] + '`' if ch.get('i_excl_from') else ''}, "
                  f"{ch['train_distractors']} training distractors, TrainConfig overrides "
                  f"`{ch['train_overrides']}`."]
    else:
        lines += ["", "The rule is not applied yet: " + "; ".join(rule["missing"]) + "."]
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"
