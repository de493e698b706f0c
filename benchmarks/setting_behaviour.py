"""What the models answer where accuracy says little: the counterfactual and irrelevant settings.

Reads the test evaluations of a comparison run folder (``benchmarks/compare_methods.py``) and
the same test questions (rebuilt from its configuration, so the passages are the ones the
prompts held):

- **counterfactual** (the gold passage plus one that states another answer): per run, how
  many extracted answers are right, how many name the counterfactual passage's answer
  instead (wrong, and the normalised answer occurs in the normalised counterfactual passage),
  and how many are something else; and accuracy by the gold passage's position.
- **irrelevant** (no gold passage): per run, how many replies abstain in words ("unknown",
  "not mentioned", "cannot", ...; a regular expression, printed with the table), so that a
  model which answers every question with some entity is told apart from one that declines.

    python -m benchmarks.setting_behaviour --config benchmarks/configs/cpu_main_amend2.json --out runs/compare/cpu_main

Prints a markdown report and writes it with its JSON beside the comparison's results
(``benchmarks/results/<name>/setting_behaviour.{md,json}``); trains and evaluates nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from neurorit_lens.data.schema import Label
from neurorit_lens.data.text import normalize_answer
from neurorit_lens.io import atomic_write_json, atomic_write_text, read_json

ABSTAIN = re.compile(r"\b(unknown|not (mentioned|provided|stated|given|in)|no (answer|information)|cannot|can't|"
                     r"don't know|unanswerable|none)\b", re.IGNORECASE)


def counterfactual_counts(records: list[dict[str, Any]], examples: dict[str, Any]) -> dict[str, Any]:
    """Right / counterfactual's answer / other, and accuracy by gold position, over ``records``."""
    right = cf = 0
    by_pos: dict[int, list[float]] = {}
    for r in records:
        ex = examples[r["id"]]
        pred = normalize_answer(r["extracted"] or "")
        cf_text = [normalize_answer(p.text) for p in ex.passages if p.label == Label.COUNTERFACTUAL]
        if r["accuracy"]:
            right += 1
        elif pred and any(pred in t for t in cf_text):
            cf += 1
        by_pos.setdefault(r["gold_positions"][0] if r["gold_positions"] else -1, []).append(float(r["accuracy"]))
    n = len(records)
    return {"n": n, "right": right, "counterfactual": cf, "other": n - right - cf,
            "accuracy_by_gold_position": {str(k): {"n": len(v), "accuracy": sum(v) / len(v)}
                                          for k, v in sorted(by_pos.items())}}


def abstain_count(records: list[dict[str, Any]]) -> dict[str, int]:
    return {"n": len(records), "abstain": sum(bool(ABSTAIN.search(r["prediction"] or "")) for r in records),
            "empty": sum(not (r["extracted"] or "").strip() for r in records)}


def collect(out: Path, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"counterfactual": {run: {dataset: counts}}, "irrelevant": {...}}`` over every test unit."""
    res: dict[str, Any] = {"counterfactual": {}, "irrelevant": {}}
    for path in sorted((out / "eval").rglob("test/*/*.json")):
        setting, dataset = path.stem, path.parent.name
        if setting not in res or dataset not in examples:
            continue
        run = str(path.parent.parent.parent.relative_to(out / "eval"))
        records = read_json(path)["records"]
        counts = (counterfactual_counts(records, examples[dataset]) if setting == "counterfactual"
                  else abstain_count(records))
        res[setting].setdefault(run, {})[dataset] = counts
    return res


def render(res: dict[str, Any], name: str) -> str:
    lines = [f"# Counterfactual and irrelevant settings: what the models answer (`{name}`)", ""]
    if res["counterfactual"]:
        lines += ["## counterfactual (gold passage + one stating another answer)", "",
                  "| run | data | n | right | counterfactual's answer | other | accuracy by gold position |",
                  "|---|---|---|---|---|---|---|"]
        for run, by in res["counterfactual"].items():
            for d, c in by.items():
                pos = ", ".join(f"{k}: {100 * v['accuracy']:.1f}% of {v['n']}"
                                for k, v in c["accuracy_by_gold_position"].items())
                counts = f"{c['n']} | {c['right']} | {c['counterfactual']} | {c['other']}"
                lines.append(f"| {run} | {d} | {counts} | {pos} |")
        lines.append("")
    if res["irrelevant"]:
        lines += ["## irrelevant (no gold passage)", "", f"Abstaining reply: `{ABSTAIN.pattern}` (case-insensitive).",
                  "", "| run | data | n | abstaining replies | empty answers |", "|---|---|---|---|---|"]
        for run, by in res["irrelevant"].items():
            for d, c in by.items():
                lines.append(f"| {run} | {d} | {c['n']} | {c['abstain']} | {c['empty']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the comparison's configuration (its test questions)")
    p.add_argument("--out", required=True, help="the comparison's run folder")
    p.add_argument("--results", default=None, help="where setting_behaviour.{md,json} go "
                   "(default benchmarks/results/<name>)")
    args = p.parse_args(argv)
    from neurorit_lens.experiments.harness import Harness, load_config

    cfg = load_config(args.config)
    out = Path(args.out)
    if not (out / "eval").is_dir():
        p.error(f"{out} has no eval/ folder: not a comparison run folder")
    results = Path(args.results) if args.results else Path(__file__).resolve().parent / "results" / cfg["name"]
    h = Harness(cfg, out, progress=False, amend=True)
    h.load_data()
    examples = {d: {ex.id: ex for ex in splits["test"]} for d, splits in h.examples.items()}
    res = collect(out, examples)
    text = render(res, cfg["name"])
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / "setting_behaviour.json", res)
    atomic_write_text(results / "setting_behaviour.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
