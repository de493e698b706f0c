"""Rescore a run folder's stored greedy predictions with the current evaluation code.

The predictions in ``RUN/eval_*/**/predictions.jsonl`` are fed back through
:func:`neurorit_lens.evaluation.evaluate.evaluate` in place of generation (the prompts are
rebuilt by the one prompt path and must match the stored ones token for token), so a run
made before a metric change can be read with the new metric without generating again.
Writes ``OUT/<eval folder>/eval.json`` and prints each table.

    python -m benchmarks.rescore_run runs/default --out runs/default_rescored
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from unittest import mock

from neurorit_lens.config import RunConfig
from neurorit_lens.data.splits import load_splits
from neurorit_lens.evaluation import evaluate as ev
from neurorit_lens.models import load_model


def _stored(path: Path) -> dict[tuple[str, int, str], str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["setting"], r["prompt_tokens"], r["id"]): r["prediction"] for r in rows}


def rescore(run_dir: Path, out: Path) -> None:
    cfg = RunConfig.load(run_dir / "config.json")
    model = load_model(cfg.model)
    test = load_splits(cfg.data)[1]["test"][: cfg.eval_limit]
    for pred_file in sorted(run_dir.glob("eval_*/**/predictions.jsonl")):
        stored = _stored(pred_file)
        by_prompt: dict[str, str] = {}
        for setting in cfg.eval.settings:
            ps = ev.build_prompts(test, setting, model.tokenizer, cfg.data, n_ctx=model.cfg.n_ctx,
                                  reserve_tokens=cfg.eval.max_new_tokens)
            for inst, prompt in zip(ps.instances, ps.prompts, strict=True):
                n_tok = len(ev.encode_for_generation(model, prompt))
                by_prompt[prompt] = stored[(setting, n_tok, inst.id)]  # KeyError: prompts changed

        def replay(model_, prompts, _table=by_prompt, **_kw):
            return [_table[p] for p in prompts]

        with mock.patch.object(ev, "generate_greedy", replay):
            res = ev.evaluate(model, test, cfg.eval, cfg.data, show_progress=False)
        dest = out / pred_file.parent.relative_to(run_dir)
        res.save(dest)
        print(f"== {pred_file.parent.relative_to(run_dir)}\n{res.table()}\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rescore(a.run_dir, a.out)
