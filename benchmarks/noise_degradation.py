"""The noise-degradation table: accuracy under closed / gold / gold+4 / irrelevant contexts.

The motivating measurement on real data: NQ-open (the lost-in-the-middle
oracle file: one gold passage per question; irrelevant passages are other questions' gold
passages that do not contain the answer, mined by the data loader) and RGB (``en_fact``:
positives and negatives). Greedy decoding, 16 new tokens, accuracy = normalised gold
answer contained in the output, with percentile-bootstrap 95% intervals, and the
``gold - gold+4`` gap with a paired bootstrap interval.

Results are written after every (dataset, setting) into
``<out>/noise_degradation/<dataset>/eval.json`` (+ ``predictions.jsonl``), and a run that is
killed resumes: settings already saved with the same configuration are not redone. The
summary goes to ``<out>/noise_degradation.{json,md}``.

    python -m benchmarks.noise_degradation --limit 10          # smoke run
    python -m benchmarks.noise_degradation                     # full: 200 NQ-open + 100 RGB
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from neurorit_lens.config import DataConfig, EvalConfig
from neurorit_lens.data import load_split
from neurorit_lens.evaluation.evaluate import EvalResult, evaluate
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.models import load_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {
    "nq-open": ("lost_in_the_middle/nq-open-oracle.jsonl.gz", 200),
    "rgb": ("rgb/en_fact.json", 100),
}
log = logging.getLogger("noise_degradation")


def _same_config(saved: EvalResult, model: str, data_cfg: DataConfig, eval_cfg: EvalConfig) -> bool:
    c = saved.config or {}
    ev = dict(c.get("eval", {}))
    ev.pop("settings", None)
    want = eval_cfg.to_dict()
    want.pop("settings", None)
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}
    dat = {k: list(v) if isinstance(v, tuple) else v for k, v in data_cfg.to_dict().items()}
    return saved.model == model and c.get("data") == dat and ev == want


def run_dataset(model, model_name: str, name: str, data_cfg: DataConfig, eval_cfg: EvalConfig, out: Path) -> EvalResult:
    """Evaluate one dataset setting by setting, saving after each one; resume from ``out``."""
    result = None
    if (out / "eval.json").exists():
        saved = EvalResult.load(out)
        if _same_config(saved, model_name, data_cfg, eval_cfg):
            result = saved
            log.info("%s: resuming, done: %s", name, ", ".join(saved.settings))
        else:
            log.warning("%s: %s holds another configuration; starting over", name, out)
    examples = load_split(data_cfg)
    if not examples:
        raise ValueError(f"{name}: no examples loaded from {data_cfg.data}")
    for setting in eval_cfg.settings:
        if result is not None and setting in result.settings:
            continue
        t0 = time.perf_counter()
        part = evaluate(model, examples, eval_cfg.replace(settings=(setting,)), data_cfg, model_name=model_name,
                        data_name=data_cfg.data)
        part.config = {**part.config, "eval": {**part.config["eval"], "settings": list(eval_cfg.settings)}}
        result = part if result is None else result.merge(part)
        result.save(out)
        s = result.settings[setting]
        print(f"{name} {setting}: n={s.n} accuracy={s.accuracy:.3f} [{s.accuracy_ci[0]:.3f}, {s.accuracy_ci[1]:.3f}]"
              f" ({time.perf_counter() - t0:.0f}s)", flush=True)
    assert result is not None
    return result


def _fmt(s) -> str:
    if s is None or s.n == 0:
        return "n/a"
    return f"{s.accuracy:.3f} [{s.accuracy_ci[0]:.3f}, {s.accuracy_ci[1]:.3f}] (n={s.n})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--datasets", default="nq-open,rgb")
    ap.add_argument("--limit", type=int, default=None, help="questions per dataset (default: 200 NQ-open, 100 RGB)")
    ap.add_argument("--settings", default="closed,gold,gold+4,irrelevant")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--max-prompt-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in names:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}; choose from {sorted(DATASETS)}")
    eval_cfg = EvalConfig(settings=args.settings, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          n_bootstrap=args.n_bootstrap, seed=args.seed)
    out_root = Path(args.out)
    model = load_model(args.model)
    results: dict[str, EvalResult] = {}
    for d in names:
        rel, default_limit = DATASETS[d]
        path = Path(args.data_root) / rel
        if not path.exists():
            raise FileNotFoundError(f"{d}: {path} not found (set --data-root to the shared data folder)")
        data_cfg = DataConfig(data=str(path), split="all", limit=args.limit or default_limit, seed=args.seed,
                              max_prompt_tokens=args.max_prompt_tokens)
        results[d] = run_dataset(model, args.model, d, data_cfg, eval_cfg, out_root / "noise_degradation" / d)

    summary = {
        "benchmark": "noise degradation (greedy, accuracy = gold answer contained in output, bootstrap 95% CI)",
        "model": args.model,
        "command": "python -m benchmarks.noise_degradation " + " ".join(argv if argv is not None else sys.argv[1:]),
        "datasets": {d: r.to_dict() for d, r in results.items()},
        "gaps": {},
        "environment": environment_info(args.seed),
    }
    md = ["# Noise degradation", "",
          f"Model `{args.model}`, greedy, {args.max_new_tokens} new tokens, accuracy = normalised gold answer "
          "contained in the normalised output; [95% percentile-bootstrap CI].", "",
          "| setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for s in eval_cfg.settings:
        md.append(f"| {s} | " + " | ".join(_fmt(results[d].settings.get(s)) for d in names) + " |")
    md.append("")
    for d, r in results.items():
        for a, b in (("gold", "gold+4"), ("gold", "closed"), ("gold", "irrelevant")):
            if a in r.settings and b in r.settings and r.settings[a].n and r.settings[b].n:
                diff, (lo, hi), n = r.paired_difference(a, b, n=args.n_bootstrap, seed=args.seed)
                summary["gaps"].setdefault(d, {})[f"{a} - {b}"] = {"diff": diff, "ci": [lo, hi], "n": n}
                md.append(f"- {d}: accuracy({a}) - accuracy({b}) = {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired, n={n})")
    md += ["", f"Reproduce: `{summary['command'].strip()}`", ""]
    atomic_write_json(out_root / "noise_degradation.json", summary)
    atomic_write_text(out_root / "noise_degradation.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
