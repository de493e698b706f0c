"""The tables of the method comparison (``neurorit compare``): accuracies, declared contrasts, gaps, cost.

With several data sets, a ``pooled`` pseudo data set holds every data set's questions of
the settings they all have (ids prefixed by the data set); its rows join the Holm family.

Input: the per-question test evaluations the harness wrote (one blob per run, data set and
setting: ``{"summary": SettingResult dict, "records": [{"id", "accuracy", "logprob", ...}]}``),
the runs (``{method: {seed: run name}}``), the training cost per run and the LR selection.
Output: ``results.json`` (every number) and ``results.md`` (the tables). Statistics come from
:mod:`neurorit_lens.experiments.comparison` (paired bootstrap, exact McNemar, Holm, minimum
detectable difference) and :mod:`neurorit_lens.statistics` (Wilson).

Contrasts added to the protocol by amendment are *exploratory*: reported with their raw
p-values, outside the Holm family of the declared ones. So is every row at a setting added by
amendment (``amended``: accuracy, contrast and gap rows carry ``"exploratory": True``; a
``pooled`` setting is exploratory when any data set got it by amendment). Each ``cross_test`` set gets its
own tables ("trained on <training sets>, tested on all of <set>"): accuracy, contrasts (a
Holm family of its own; every row exploratory when the set came by amendment) and gaps.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from neurorit_lens.experiments.comparison import (
    accuracy_contrast,
    add_holm,
    mean_difference,
    mean_interval,
    per_question_difference,
)

Key = tuple[str, str, str]  # (run, data set, setting)
Cell = tuple[str, str]  # (data set, setting)
POOLED = "pooled"  # the pseudo data set of every data set's questions together


def values(blob: Mapping[str, Any], metric: str = "accuracy") -> dict[str, float]:
    """``{question id: metric}`` of one evaluation blob (records without the metric are left out)."""
    return {r["id"]: float(r[metric]) for r in blob["records"] if r.get(metric) is not None}


def pooled_blob(blobs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One blob of the questions of several data sets (``{data set: blob}``), ids prefixed by
    their data set, with the summary recomputed from the records (Wilson from the counts)."""
    from neurorit_lens.statistics import wilson_interval

    recs = [{**r, "id": f"{d}:{r['id']}"} for d, b in blobs.items() for r in b["records"]]
    n = len(recs)
    k = int(round(sum(r["accuracy"] for r in recs)))

    def mean(key: str) -> float:
        vals = [r[key] for r in recs if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    labels = sorted({b["summary"].get("label", "") for b in blobs.values()})
    summary = {"n": n, "accuracy": k / n, "accuracy_wilson": list(wilson_interval(k, n)), "em": mean("em"),
               "f1": mean("f1"), "copy_rate": mean("copied"), "label": " / ".join(labels),
               "n_gold_cut": sum(b["summary"].get("n_gold_cut") or 0 for b in blobs.values()),
               "n_truncated": sum(b["summary"].get("n_truncated") or 0 for b in blobs.values()),
               "n_skipped": sum(b["summary"].get("n_skipped") or 0 for b in blobs.values())}
    return {"summary": summary, "records": recs}


def add_pooled(evals: dict[Key, Any], runs: Mapping[str, Mapping[int, str]], datasets: Sequence[str],
               settings: Mapping[str, Sequence[str]], name: str = POOLED) -> list[str]:
    """Add ``(run, name, setting)`` pooled blobs for the settings every data set has (and every
    data set has finished); returns those settings."""
    common = [s for s in settings[datasets[0]] if all(s in settings[d] for d in datasets)]
    for by_seed in runs.values():
        for run in by_seed.values():
            for s in common:
                if all((run, d, s) in evals for d in datasets):
                    evals[(run, name, s)] = pooled_blob({d: evals[(run, d, s)] for d in datasets})
    return common


def _tag(cell: Cell, amended: Collection[Cell]) -> dict[str, bool]:
    return {"exploratory": True} if cell in amended else {}


def accuracy_rows(runs: Mapping[str, Mapping[int, str]], evals: Mapping[Key, Any], datasets: Sequence[str],
                  settings: Mapping[str, Sequence[str]], n_bootstrap: int,
                  amended: Collection[Cell] = ()) -> list[dict[str, Any]]:
    """One row per method, seed, data set and setting: accuracy with its Wilson interval,
    EM, F1, copy rate, mean teacher-forced log p(gold) with its bootstrap interval, and
    what the prompts held."""
    rows = []
    for method, by_seed in runs.items():
        for seed, run in by_seed.items():
            for d in datasets:
                for s in settings[d]:
                    blob = evals.get((run, d, s))
                    if blob is None:
                        continue
                    sm = blob["summary"]
                    lp = values(blob, "logprob")
                    rows.append({"method": method, "seed": seed, "run": run, "dataset": d, "setting": s,
                                 "n": sm["n"], "accuracy": sm["accuracy"], "wilson": sm["accuracy_wilson"],
                                 "em": sm["em"], "f1": sm["f1"], "copy_rate": sm["copy_rate"],
                                 "logprob": mean_interval(lp, n_bootstrap) if lp else None,
                                 "label": sm.get("label", ""), "n_gold_cut": sm.get("n_gold_cut"),
                                 "n_truncated": sm.get("n_truncated"), "n_skipped": sm.get("n_skipped"),
                                 **_tag((d, s), amended)})
    return rows


def contrast_rows(contrasts: Sequence[Sequence[str]], runs: Mapping[str, Mapping[int, str]],
                  evals: Mapping[Key, Any], datasets: Sequence[str], settings: Mapping[str, Sequence[str]],
                  primary_seed: int, n_bootstrap: int, planning_discordance: float,
                  exploratory: Sequence[Sequence[str]] = (), amended: Collection[Cell] = ()) -> list[dict[str, Any]]:
    """Every contrast ``a - b`` at every data set, setting and seed both methods have. Rows
    of declared contrasts at the primary seed form the Holm family (``primary``); other
    seeds are replications, and contrasts in ``exploratory`` and rows at the (data set,
    setting) cells in ``amended`` (``"exploratory": True``) are outside the family: both
    reported unadjusted."""
    rows = []
    extra = [tuple(c) for c in exploratory]
    for a, b in contrasts:
        for seed in sorted(set(runs.get(a, {})) & set(runs.get(b, {}))):
            for d in datasets:
                for s in settings[d]:
                    ea, eb = evals.get((runs[a][seed], d, s)), evals.get((runs[b][seed], d, s))
                    if ea is None or eb is None:
                        continue
                    row = {"a": a, "b": b, "dataset": d, "setting": s, "seed": seed, "primary": seed == primary_seed,
                           **({"exploratory": True} if (a, b) in extra or (d, s) in amended else {}),
                           **accuracy_contrast(values(ea), values(eb), n_bootstrap, planning_discordance=
                                               planning_discordance)}
                    la, lb = values(ea, "logprob"), values(eb, "logprob")
                    row["logprob_diff"] = mean_difference(la, lb, n_bootstrap) if la and lb else None
                    rows.append(row)
    add_holm([r for r in rows if r["primary"] and not r.get("exploratory")])
    return rows


def gap_rows(runs: Mapping[str, Mapping[int, str]], contrasts: Sequence[Sequence[str]], evals: Mapping[Key, Any],
             datasets: Sequence[str], settings: Mapping[str, Sequence[str]], n_bootstrap: int,
             gold: str = "gold", amended: Collection[Cell] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Within-question gaps ``acc(setting) - acc(gold)`` per method (mean, bootstrap interval)
    and, per declared contrast, the paired difference of the two methods' gaps."""
    gaps: dict[tuple[str, int, str, str], dict[str, float]] = {}
    rows = []
    for method, by_seed in runs.items():
        for seed, run in by_seed.items():
            for d in datasets:
                g = evals.get((run, d, gold))
                for s in settings[d]:
                    e = evals.get((run, d, s))
                    if s == gold or g is None or e is None:
                        continue
                    gaps[(method, seed, d, s)] = per_question_difference(values(e), values(g))
                    rows.append({"method": method, "seed": seed, "dataset": d, "setting": s,
                                 **mean_interval(gaps[(method, seed, d, s)], n_bootstrap), **_tag((d, s), amended)})
    between = []
    for a, b in contrasts:
        for (m, seed, d, s), ga in gaps.items():
            gb = gaps.get((b, seed, d, s))
            if m == a and gb is not None:
                between.append({"a": a, "b": b, "seed": seed, "dataset": d, "setting": s,
                                **mean_difference(ga, gb, n_bootstrap), **_tag((d, s), amended)})
    return rows, between


def cross_tables(cross: Mapping[str, Any], contrasts: Sequence[tuple[str, ...]], exploratory: Sequence[Sequence[str]],
                 nb: int, pd: float) -> dict[str, Any]:
    """Per cross set: what it holds and its accuracy, contrast and gap rows (a Holm family of
    its own; every contrast exploratory when the set came by amendment)."""
    out = {}
    runs, seed = cross["runs"], cross["seed"]
    for name, c in cross["sets"].items():
        sets, settings = [name], {name: list(c["settings"])}
        expl = contrasts if c["exploratory"] else exploratory
        gaps, gap_between = gap_rows(runs, contrasts, c["evals"], sets, settings, nb)
        out[name] = {"label": f"trained on {', '.join(cross['train_sets'])}, tested on all of {name}",
                     "n_questions": c["n_questions"], "settings": c["settings"],
                     "skipped_settings": c["skipped_settings"], "exploratory": c["exploratory"],
                     "overlap_with_training_data": c["overlap_with_training_data"],
                     "accuracy": accuracy_rows(runs, c["evals"], sets, settings, nb),
                     "contrasts": contrast_rows(contrasts, runs, c["evals"], sets, settings, seed, nb, pd, expl),
                     "gaps": gaps, "gap_contrasts": gap_between}
    return out


def build_report(cfg: Mapping[str, Any], runs: Mapping[str, Mapping[int, str]], evals: Mapping[Key, Any],
                 costs: Mapping[str, Any], selection: Mapping[str, Any], exploratory: Sequence[Sequence[str]] = (),
                 cross: Mapping[str, Any] | None = None, settings: Mapping[str, Sequence[str]] | None = None,
                 amended: Mapping[str, Sequence[str]] | None = None,
                 skipped: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every table of the comparison as one JSON-ready dict (see module docstring).

    ``exploratory``: contrasts added by amendment; ``cross``: the cross-set evaluations
    (``{"train_sets", "seed", "runs", "sets": {name: {"evals", "settings", ...}}}``);
    ``settings``: each data set's settings (default: the configuration's); ``amended``:
    ``{data set: settings added by amendment}`` (exploratory); ``skipped``: ``{data set:
    {setting: reasons}}``, amended settings the data could not build."""
    datasets = list(cfg["datasets"])
    if settings is None:
        settings = {d: list(cfg["datasets"][d].get("settings") or cfg["settings"]) for d in datasets}
    settings = {d: list(settings[d]) for d in datasets}
    cells = {(d, s) for d, v in (amended or {}).items() for s in v}
    if len(datasets) > 1:
        evals = dict(evals)
        settings[POOLED] = add_pooled(evals, runs, datasets, settings)
        cells |= {(POOLED, s) for s in settings[POOLED] if any((d, s) in cells for d in datasets)}
        datasets.append(POOLED)
    nb, pd = cfg.get("n_bootstrap", 2000), cfg.get("planning_discordance", 0.2)
    primary = cfg["seeds"][0]
    contrasts = [tuple(c) for c in cfg["contrasts"]]
    extra = [tuple(c) for c in exploratory]
    gaps, gap_between = gap_rows(runs, contrasts, evals, datasets, settings, nb, amended=cells)
    rep = {"name": cfg["name"], "model": cfg["model"], "primary_seed": primary,
           "selection_rule": cfg["selection"]["rule"],
           "contrasts_declared": [list(c) for c in contrasts if c not in extra],
           "runs": {m: {str(s): r for s, r in by.items()} for m, by in runs.items()},
           "accuracy": accuracy_rows(runs, evals, datasets, settings, nb, cells),
           "contrasts": contrast_rows(contrasts, runs, evals, datasets, settings, primary, nb, pd, extra, cells),
           "gaps": gaps, "gap_contrasts": gap_between, "cost": dict(costs), "selection": dict(selection)}
    if extra:
        rep["contrasts_exploratory"] = [list(c) for c in extra]
    if cells:
        rep["settings_exploratory"] = {d: [s for s in settings[d] if (d, s) in cells] for d in datasets}
    if skipped:
        rep["skipped_settings"] = {d: dict(v) for d, v in skipped.items()}
    if cross:
        rep["cross"] = cross_tables(cross, contrasts, extra, nb, pd)
    return rep


# --- markdown ------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(ci: Sequence[float] | None, scale: float = 100.0, fmt: str = ".1f") -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return ""
    return f"[{scale * ci[0]:{fmt}}, {scale * ci[1]:{fmt}}]"


def _p(p: float | None) -> str:
    return "" if p is None else (f"{p:.2g}" if p < 0.01 else f"{p:.3f}")


def _accuracy_md(rows: Sequence[Mapping[str, Any]],
                 title: str = "## Accuracy (extracted answer; Wilson 95%) and teacher-forced log p(gold)") -> list[str]:
    out = [title, "",
           "| data | setting (prompts held) | method | seed | n | accuracy | EM | F1 | copy | log p(gold) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = r["logprob"]
        lps = f"{lp['mean']:.2f} {_ci(lp['ci'], 1.0, '.2f')}" if lp else "n/a"
        tag = " (exploratory)" if r.get("exploratory") else ""
        out.append(f"| {r['dataset']} | {r['setting']} ({r['label']}){tag} | {r['method']} | {r['seed']} | {r['n']} | "
                   f"{_pct(r['accuracy'])} {_ci(r['wilson'])} | {_pct(r['em'])} | {_pct(r['f1'])} | "
                   f"{_pct(r['copy_rate'])} | {lps} |")
    return out


def _contrast_md(rows: Sequence[Mapping[str, Any]], title: str = "## Declared contrasts (a - b, accuracy points; "
                 "paired bootstrap 95%; exact McNemar; Holm over the primary-seed rows)") -> list[str]:
    out = [title, "",
           "| data | setting | a - b | seed | n | diff | 95% CI | only a / only b right | p | p (Holm) | "
           "MDD obs / plan | Δ log p(gold) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = r["logprob_diff"]
        lps = f"{lp['mean']:+.2f} {_ci(lp['ci'], 1.0, '.2f')}" if lp else "n/a"
        tag = " (exploratory)" if r.get("exploratory") else ("" if r["primary"] else " (replication)")
        out.append(f"| {r['dataset']} | {r['setting']} | {r['a']} - {r['b']} | {r['seed']}{tag} | {r['n']} | "
                   f"{100 * r['diff']:+.1f} | "
                   f"{_ci(r['ci'])} | {r['only_a']} / {r['only_b']} | {_p(r['p_value'])} | {_p(r.get('p_holm'))} | "
                   f"{_pct(r['mdd_observed'])} / {_pct(r['mdd_planning'])} | {lps} |")
    return out


def _expl(row: Mapping[str, Any]) -> str:
    return " (exploratory)" if row.get("exploratory") else ""


def _gap_md(rep: Mapping[str, Any], title: str = "## Within-question gap acc(setting) - acc(gold)") -> list[str]:
    out = [title, "", "| data | setting | method | seed | n | gap | 95% CI |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['setting']}{_expl(r)} | {r['method']} | {r['seed']} | {r['n']} | "
            f"{100 * r['mean']:+.1f} | {_ci(r['ci'])} |" for r in rep["gaps"]]
    out += ["", "Gap difference between methods (gap(a) - gap(b), paired bootstrap 95%):", "",
            "| data | setting | a - b | seed | n | diff | 95% CI |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['setting']}{_expl(r)} | {r['a']} - {r['b']} | {r['seed']} | {r['n']} | "
            f"{100 * r['mean']:+.1f} | {_ci(r['ci'])} |" for r in rep["gap_contrasts"]]
    return out


def _cost_md(rep: Mapping[str, Any]) -> list[str]:
    out = ["## Per-method cost and LR selection", "",
           "| method | chosen LR | dev score per LR | trainable params | % of model | steps (per stage) | "
           "LR schedule mass | train wall s (chosen; whole grid) | train peak RSS GiB (max over seeds) | "
           "test eval wall s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for m, c in rep["cost"].items():
        sel = rep["selection"].get(m, {})
        dev = ", ".join(f"{lr}: {_pct(v)}" for lr, v in (sel.get("dev_scores") or {}).items()) or "-"
        tp = f"{c['trainable_params']:,}" if c.get("trainable_params") is not None else "0"
        frac = f"{100 * c['trainable_fraction']:.2f}" if c.get("trainable_fraction") is not None else "0"
        mass = f"{c['schedule_mass']:.2f}" if c.get("schedule_mass") is not None else "-"
        peak = f"{c['train_peak_rss_mb'] / 1024:.1f}" if c.get("train_peak_rss_mb") is not None else "-"
        out.append(f"| {m} | {sel.get('chosen', '-')} | {dev} | {tp} | {frac} | {c.get('stage_steps') or '-'} | "
                   f"{mass} | {c.get('train_wall_s', 0):.0f}; {c.get('grid_wall_s', 0):.0f} | {peak} | "
                   f"{c.get('eval_wall_s', 0):.0f} |")
    return out


def _prompted_md(rep: Mapping[str, Any]) -> list[str]:
    sel = rep["selection"].get("prompted")
    if not sel:
        return []
    out = ["", "## Prompted baseline: variants (untuned base model; chosen on dev)", "", f"Rule: {sel['rule']}.", "",
           "| variant | template | max new tokens | stop at newline | dev accuracy | chosen |",
           "|---|---|---|---|---|---|"]
    for v in sel["variants"]:
        out.append(f"| {v['name']} | {v.get('template', 'config')} | {v.get('max_new_tokens', 'config')} | "
                   f"{v.get('stop_at_newline', 'config')} | {_pct(sel['dev_scores'].get(v['name']))} | "
                   f"{'yes' if v['name'] == sel['chosen'] else ''} |")
    return out


def _cross_md(rep: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, c in (rep.get("cross") or {}).items():
        note = " (added by amendment: exploratory)" if c["exploratory"] else ""
        skipped = ", ".join(f"{s} ({r})" for s, r in c["skipped_settings"].items()) or "none"
        out += ["", f"## Cross-data-set: {c['label']}{note}", "",
                f"Every one of its {c['n_questions']} questions is a test question; none was trained or mined on "
                f"(questions also in the training data sets' train/dev/test: {c['overlap_with_training_data']}). "
                f"Settings skipped (the data cannot build them): {skipped}.", ""]
        out += _accuracy_md(c["accuracy"], f"### {name}: accuracy (Wilson 95%) and log p(gold)")
        out += [""] + _contrast_md(c["contrasts"], f"### {name}: contrasts (paired; Holm within this table)")
        out += [""] + _gap_md(c, f"### {name}: within-question gap acc(setting) - acc(gold)")
    return out


def reused_md(units: list[Mapping[str, Any]]) -> str:
    """One line naming the units copied from earlier run folders (``--reuse``)."""
    return (f"Reused from earlier run folders with the same data and evaluation ({len(units)} units, not recomputed; "
            "reused.json lists each): " + "; ".join(f"{u['kind']} {u['unit']} <- {u['from']}" for u in units
                                                     if u["kind"] != "eval")
            + f"; {sum(u['kind'] == 'eval' for u in units)} evaluation units.")


def render_markdown(rep: Mapping[str, Any]) -> str:
    """``results.md``: the accuracy, contrast, gap and cost tables of :func:`build_report`'s output."""
    head = [f"# Method comparison `{rep['name']}` ({rep['model']})", "",
            f"LR selection rule (declared before the run): {rep['selection_rule']}", "",
            "Declared contrasts: " + ", ".join(f"{a} vs {b}" for a, b in rep["contrasts_declared"]), "",
            "MDD: smallest accuracy difference detectable (McNemar, two-sided 5%, power 0.8) at the observed "
            "discordance / at the planning discordance.", ""]
    if rep.get("contrasts_exploratory"):
        head[6:6] = ["Added by amendment (exploratory, outside the Holm family): "
                     + ", ".join(f"{a} vs {b}" for a, b in rep["contrasts_exploratory"]), ""]
    if rep.get("settings_exploratory"):
        head += ["Settings added by amendment (exploratory: test only, on the runs chosen before; their rows are "
                 "outside the Holm family): " + "; ".join(f"{d}: {', '.join(v)}" for d, v in
                                                          rep["settings_exploratory"].items() if v), ""]
    if rep.get("skipped_settings"):
        head += ["Settings added by amendment that a data set cannot build (skipped): " + "; ".join(
            f"{d}: {s} ({r})" for d, v in rep["skipped_settings"].items() for s, r in v.items()), ""]
    for a in rep.get("amendments", []):
        head += [f"Amended {a['at']}: added {a['added']}", ""]
    if rep.get("reused"):
        head += [reused_md(rep["reused"]), ""]
    parts = [head, _accuracy_md(rep["accuracy"]), [""], _contrast_md(rep["contrasts"]), [""], _gap_md(rep), [""],
             _cost_md(rep), _prompted_md(rep), _cross_md(rep)]
    return "\n".join(line for part in parts for line in part) + "\n"
