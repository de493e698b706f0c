"""Summary tables of the causal screens (docs/screen.md): one Markdown + JSON file per screen.

The first screen's table (``screen.md``, ``screen.json``) is written exactly as before; the
second's goes to ``screen2.md`` / ``screen2.json`` with Δ greedy accuracy columns where the
rows measured it. Both apply the same selection rule (:func:`passes`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from neurorit_lens.experiments.screen import GOLD_LIMIT, RESULTS, SCREENS, combo_path, mode_key, screen_dir

INTRO = ("Protocol and selection rule: docs/screen.md. Δ = change in teacher-forced log p(gold) when I_excl is "
         "deactivated, minus the mean change over 5 random sets of the same per-layer counts; mean [paired "
         "bootstrap 95% interval] over dev questions.")
ACC_NOTE = (" Δ acc = the same for greedy accuracy (gold answer in the output, fraction of questions; "
            "`gate`: each set with its own learned gates).")


def passes(gold: dict, noisy: dict) -> bool:
    """The rule: noisy Δ − random has its 95% interval above 0 and |gold-only Δ − random| < 0.2 nats."""
    lo, g = noisy.get("ci_low"), gold.get("mean")
    return lo is not None and g is not None and lo > 0 and abs(g) < GOLD_LIMIT


def _combos_found(out: Path, screen: int) -> list[tuple[str, str, float]]:
    """The screen's declared combos, then any other combo whose file is there (``--combos``)."""
    combos = list(SCREENS[screen])
    keys = {(c, mode_key(m, s)) for c, m, s in combos}
    for path in sorted(screen_dir(out, screen).glob("ablation_*.json")):
        cand, key = path.stem[len("ablation_"):].rsplit("_", 1)
        if (cand, key) not in keys:
            combos.append((cand, "scale", float(key[5:])) if key.startswith("scale") else (cand, key, 0.0))
            keys.add((cand, key))
    return combos


def _row(name: str, path: Path, cand: str, key: str) -> dict | None:
    d = json.loads(path.read_text())
    if d.get("empty"):
        return None
    by = {(r["context"], r["metric"]): r for r in d["rows"] if r["set_name"] == cand}
    g, z = by[("relevant", "logprob")], by[("noisy", "logprob")]
    row = {"data": name, "candidate": cand, "mode": key, "n": z["n"], "n_neurons": z["n_neurons"],
           "gold": g["diff"], "noisy": z["diff"], "passes": passes(g["diff"], z["diff"])}
    if ("noisy", "accuracy") in by:
        row["acc_gold"], row["acc_noisy"] = by[("relevant", "accuracy")]["diff"], by[("noisy", "accuracy")]["diff"]
        row["n_acc"] = by[("noisy", "accuracy")]["n"]
    return row


def rows_of(name: str, screen: int = 1, results: Path | None = None) -> tuple[list[dict], list[str]]:
    """The finished rows of one data set's screen, and the combos whose I_excl was empty."""
    out, rows, empty = (results or RESULTS) / name, [], []
    for cand, mode, scale in _combos_found(out, screen):
        path = combo_path(out, cand, mode, scale, screen)
        if path.exists():
            r = _row(name, path, cand, mode_key(mode, scale))
            if r is None:
                empty.append(f"{name}: {cand} × {mode_key(mode, scale)}")
            else:
                rows.append(r)
    return rows, empty


def _fmt(d: dict | None) -> str:
    if not d or d.get("mean") is None or (isinstance(d["mean"], float) and math.isnan(d["mean"])):
        return "—"
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def _table(rows: list[dict]) -> list[str]:
    acc = any("acc_noisy" in r for r in rows)
    head = ("| data | candidate | mode | neurons | n dev | Δ log p(gold), gold-only − random | "
            "Δ log p(gold), noisy − random |")
    sep = "|---|---|---|---:|---:|---|---|"
    if acc:
        head += " Δ acc, gold-only − random | Δ acc, noisy − random |"
        sep += "---|---|"
    lines = [head + " passes |", sep + "---|"]
    for r in rows:
        cells = f"| {r['data']} | {r['candidate']} | {r['mode']} | {r['n_neurons']} | {r['n']} | {_fmt(r['gold'])} | " \
                f"{_fmt(r['noisy'])} |"
        if acc:
            cells += f" {_fmt(r.get('acc_gold'))} | {_fmt(r.get('acc_noisy'))} |"
        lines.append(cells + f" {'yes' if r['passes'] else 'no'} |")
    return lines


def _verdict(rows: list[dict], names: list[str], missing: list[tuple[str, tuple[str, str]]]) -> tuple[str, object]:
    combos = {(r["candidate"], r["mode"]) for r in rows}
    both = [c for c in combos if all(any(r["passes"] for r in rows if (r["candidate"], r["mode"]) == c
                                         and r["data"] == n) for n in names)]
    score = {c: sum(r["noisy"]["mean"] for r in rows if (r["candidate"], r["mode"]) == c) / len(names) for c in both}
    winner = max(score, key=score.get) if score else None
    verdict = (f"Winner: `{winner[0]}` × `{winner[1]}` (mean noisy effect {score[winner]:+.2f} nats over {names})."
               if winner else f"No candidate passes on all of {names}: stage 1's deactivation is off by default.")
    if missing:
        verdict += " Not run (out of time): " + "; ".join(f"{n}: {c} × {k}" for n, (c, k) in missing) + "."
        failed = {(r["candidate"], r["mode"]) for r in rows if not r["passes"]}
        if all(ck in failed for _, ck in missing):
            verdict += " Each of them already fails on another data set, so none could change the verdict."
    return verdict, winner


def summarize_screen(names: list[str], screen: int = 1, results: Path | None = None) -> str:
    """Write ``screen.md``/``screen.json`` (screen 1) or ``screen<k>.md``/``.json``; return the Markdown."""
    root = results or RESULTS
    got = [rows_of(n, screen, root) for n in names]
    rows = [r for rs, _ in got for r in rs]
    empty = [e for _, es in got for e in es]
    missing = [(n, (c, mode_key(m, s))) for n in names for c, m, s in SCREENS[screen]
               if not combo_path(root / n, c, m, s, screen).exists()]
    verdict, winner = _verdict(rows, names, missing)
    if empty:
        verdict += " Empty I_excl (nothing to deactivate): " + "; ".join(empty) + "."
    title = ("# Causal screen of the definitions of I (dev questions)" if screen == 1
             else f"# Causal screen {screen} of the definitions of I (dev questions)")
    intro = INTRO + (ACC_NOTE if any("acc_noisy" in r for r in rows) else "")
    md = "\n".join([title, "", intro, "", *_table(rows), "", verdict, ""])
    stem = "screen" if screen == 1 else f"screen{screen}"
    (root / f"{stem}.md").write_text(md)
    (root / f"{stem}.json").write_text(json.dumps({"rows": rows, "winner": winner, "names": names}, indent=1))
    return md


def summarize(names: list[str], results: Path | None = None) -> None:
    """Both screens' tables, printed one after the other (a screen with no file yet is skipped)."""
    root = results or RESULTS
    for screen in sorted(SCREENS):
        if screen == 1 or any(any(True for _ in screen_dir(root / n, screen).glob("ablation_*.json")) for n in names):
            print(summarize_screen(names, screen, root))
