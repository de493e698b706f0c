"""Cost per example of the I definitions: ``negative`` against ``contrast`` (and ``distracted``).

For ``--n`` embedded questions, the noisy prompt (``--noisy-setting``) and the gold-only
prompt (``gold``) are built with the one prompt path; then, per attribution ``--methods``,
each definition's I scoring is timed one example at a time, as mining runs it:

- ``negative``: :func:`~neurorit_lens.neurons.attribution.attribute` on the noisy prompt
  (``paired`` adds nothing here: it reuses the R scores mining computes anyway);
- ``distracted``: two such calls (gold and wrong answer), so twice ``negative``;
- ``contrast``: :func:`~neurorit_lens.neurons.contrast.contrast_attribute` (one gold-only
  forward, one noisy forward, then per layer the passes on the shared suffix only).

The median seconds per example and the ratio to ``negative`` with the same method are written.

    python -m benchmarks.bench_definition_cost --model tiny --n 6
    python -m benchmarks.bench_definition_cost --model smollm2-135m-instruct --n 4 --methods grad_x_act,ig

Writes ``<out>/definition_cost_<model>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.config import DataConfig
from neurorit_lens.data import answer_continuation, embedded_examples
from neurorit_lens.data.build import build_prompts
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.models import load_model
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.contrast import contrast_attribute, shared_suffix
from neurorit_lens.objective import tokenize_with_answers

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="model name for load_model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=6, help="embedded questions timed")
    p.add_argument("--methods", default="grad_x_act,ig", help="attribution methods, comma-separated")
    p.add_argument("--steps", type=int, default=20, help="IG steps")
    p.add_argument("--alpha-chunk", type=int, default=5, help="IG steps per pass")
    p.add_argument("--noisy-setting", default="noise=0.8")
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=str(RESULTS), help="folder for definition_cost_<model>.{json,md}")
    return p.parse_args(argv)


def _pairs(model, n: int, noisy_setting: str, max_tokens: int) -> list[tuple[Any, Any]]:
    """(noisy batch, gold-only batch) per question, teacher-forced with the gold answer."""
    data = DataConfig(max_prompt_tokens=max_tokens)
    exs = embedded_examples()[:n]
    noisy = build_prompts(exs, noisy_setting, model.tokenizer, data, n_ctx=model.cfg.n_ctx)
    gold = build_prompts(exs, "gold", model.tokenizer, data, n_ctx=model.cfg.n_ctx)
    gold_of = dict(zip(gold.ids, gold.prompts, strict=True))
    out = []
    for i, p, inst in zip(noisy.ids, noisy.prompts, noisy.instances, strict=True):
        ans = answer_continuation(inst.example.answer, noisy.template)
        out.append((tokenize_with_answers(model, [p], [ans]), tokenize_with_answers(model, [gold_of[i]], [ans])))
    return out


def _time(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


def measure(model, pairs, methods: list[str], steps: int, chunk: int) -> dict[str, Any]:
    """Median seconds per example of each (definition, method), examples round-robin."""
    kw = dict(steps=steps, alpha_chunk=chunk)
    times: dict[str, list[float]] = {}
    for noisy, gold in pairs:
        for m in methods:
            times.setdefault(f"negative/{m}", []).append(_time(attribute, model, noisy, m, **kw))
            times.setdefault(f"contrast/{m}", []).append(_time(contrast_attribute, model, noisy, gold, m, **kw))
    med = {k: statistics.median(v) for k, v in times.items()}
    for m in methods:
        med[f"distracted/{m}"] = 2 * med[f"negative/{m}"]
    ratio = {k: v / med[f"negative/{k.split('/')[1]}"] for k, v in med.items()}
    lengths = [int(n.lengths[0]) for n, _ in pairs]
    suffix = [int(shared_suffix(n, g)[0]) for n, g in pairs]
    return {"seconds_per_example": med, "vs_negative": ratio, "noisy_tokens": lengths, "shared_suffix": suffix}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    pairs = _pairs(model, args.n, args.noisy_setting, args.max_prompt_tokens)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    res = measure(model, pairs, methods, args.steps, args.alpha_chunk)
    res.update({"model": args.model, "n_examples": len(pairs), "steps": args.steps, "alpha_chunk": args.alpha_chunk,
                "noisy_setting": args.noisy_setting, "threads": torch.get_num_threads(),
                "load_average": os.getloadavg()[0], "environment": environment_info(0)})
    lines = [f"Cost per example of the I definitions on `{args.model}` ({len(pairs)} embedded questions, "
             f"{args.noisy_setting}, noisy prompts {min(res['noisy_tokens'])}-{max(res['noisy_tokens'])} tokens, "
             f"shared suffix {min(res['shared_suffix'])}-{max(res['shared_suffix'])} tokens; IG m={args.steps}, "
             f"{args.alpha_chunk} per pass; {res['threads']} threads, load {res['load_average']:.1f}).", "",
             "| definition / method | s per example | vs negative |", "|---|---|---|"]
    for k in sorted(res["seconds_per_example"]):
        lines.append(f"| {k} | {res['seconds_per_example'][k]:.4f} | {res['vs_negative'][k]:.2f}x |")
    out = Path(args.out)
    name = Path(args.model).name.replace("/", "_")
    atomic_write_json(out / f"definition_cost_{name}.json", res)
    atomic_write_text(out / f"definition_cost_{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
