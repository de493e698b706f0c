"""bf16 autocast against fp32 on SmolLM2, in one run: speed, attribution agreement, training curves.

``precision="bf16"`` (:mod:`neurorit_lens.precision`) runs the matrix products of forward
passes in bfloat16 with fp32 master weights and fp32 sums. This measures, in one process,
each part at both precisions, fp32 first then bf16 on the same inputs:

- **training step** of every method (``neurorit``'s two stages, ``stage1``, ``layers``,
  ``full``, ``random``, ``clean``) on ``--train-items`` noisy-context items of the embedded set
  (prompts cut to ``--train-tokens``): the second step of a 2-step fit, weights restored after
  each run;
- **attribution** of 4 gold-context prompts: ``grad_x_act`` over every layer (mining's
  default) and per-layer ``ig`` with ``--ig-steps`` points on ``--ig-layers``; agreement = the
  relative error ``|s_bf16 - s_fp32| / |s_fp32|`` (Frobenius, per prompt) and the Jaccard index
  of each prompt's selected neurons (mining's threshold rule, 0.2 x max) and of the set
  selected over the 4 prompts (frequency 0.5);
- **greedy generation** of 8 prompts (gold + 2 distractors, 32 new tokens): time and the
  share of identical outputs;
- **training curves**: ``neurorit`` and ``full`` for ``--curve-steps`` steps from the same
  start at both precisions, their losses per step and the dev answer log-prob every 8 steps.

Wall and CPU time are reported (a shared machine; CPU time is less sensitive to other jobs).

    python -m benchmarks.bench_bf16                       # SmolLM2, ~15 min on 2 free cores
    python -m benchmarks.bench_bf16 --tiny                # a random model, seconds

Writes ``benchmarks/results/bf16.{json,md}`` (``bf16_tiny`` with ``--tiny``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_checkpointing import load
from benchmarks.bench_checkpointing import sets_for as neuron_sets
from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.data import answer_continuation, build_instances, embedded_examples, render_prompts
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.models.generation import generate_greedy
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.selection import select
from neurorit_lens.neurons.sets import NeuronSet
from neurorit_lens.objective import tokenize_with_answers
from neurorit_lens.precision import autocast
from neurorit_lens.training.items import build_train_items
from neurorit_lens.training.methods import run_plan
from neurorit_lens.training.plans import plan_method
from neurorit_lens.training.trainer import Trainer, tokenize_items

RESULTS = Path(__file__).resolve().parent / "results"
NEURONS = RESULTS / "neurons_table_mining.json"
PRECISIONS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-items", type=int, default=2, help="items per training step")
    p.add_argument("--train-tokens", type=int, default=256, help="prompt token budget of the training items")
    p.add_argument("--ig-steps", type=int, default=8, help="IG integration points")
    p.add_argument("--ig-layers", default="20,24,28", help="layers of the per-layer IG (comma-separated)")
    p.add_argument("--curve-steps", type=int, default=32, help="steps of each training curve")
    p.add_argument("--methods", default="neurorit,stage1,layers,full,random,clean",
                   help="methods whose training step is timed (comma-separated)")
    p.add_argument("--curve-methods", default="neurorit,full", help="methods with a training curve")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="a random 4-layer model from a config (no checkpoint)")
    p.add_argument("--out", default=str(RESULTS), help="folder for bf16.{json,md}")
    return p.parse_args(argv)


class Clock:
    """``with Clock() as c: work()`` then ``c.wall``, ``c.cpu`` (seconds)."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def rendered(model: Any, exs: list, setting: str, n_passages: int, budget: int) -> tuple[list[str], list[str]]:
    data = DataConfig(n_passages=n_passages, max_prompt_tokens=min(budget, model.cfg.n_ctx - 48))
    built = build_instances(exs, setting, data.n_passages, data.seed)
    rp = render_prompts(built.instances, model.tokenizer, data.template, data.max_prompt_tokens)
    return rp.prompts, [answer_continuation(i.example.answer, rp.template) for i in rp.instances]


def train_steps(model: Any, args: argparse.Namespace, sets: dict, mass: Any, items: list) -> dict[str, Any]:
    """Second-step time of every method's stages at both precisions (weights restored after each)."""
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for method in args.methods.split(","):
        for precision in PRECISIONS:
            cfg = TrainConfig(method=method, steps=2, batch_size=args.train_items, lr=3e-4, warmup_steps=0,
                              seed=0, deactivation="zero", precision=precision,
                              n_target_layers=2 if args.tiny else None)
            plan = plan_method(model, method, sets, mass, cfg)
            for st in plan.stages:
                stamps: list[tuple[float, float]] = []
                Trainer(model, items, cfg, hooks=plan.hooks(st.deactivate), param_masks=st.masks, steps=2,
                        resume=False, progress=False,
                        callbacks=[lambda _o, s=stamps: s.append((time.perf_counter(), time.process_time()))]).fit()
                model.load_state_dict(snapshot)
                name = f"{method} {st.name}" if method == "neurorit" else method
                row = out.setdefault(name, {})
                row[precision] = {"wall_s": stamps[1][0] - stamps[0][0], "cpu_s": stamps[1][1] - stamps[0][1]}
                print(f"train {name} {precision}: {row[precision]['wall_s']:.2f} s", flush=True)
    for row in out.values():
        row["cpu_speedup"] = row["fp32"]["cpu_s"] / row["bf16"]["cpu_s"]
        row["wall_speedup"] = row["fp32"]["wall_s"] / row["bf16"]["wall_s"]
    return out


def jaccard(a: NeuronSet, b: NeuronSet) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def attribution(model: Any, args: argparse.Namespace, exs: list) -> dict[str, Any]:
    """grad_x_act (all layers) and per-layer IG of 4 prompts at both precisions: time and agreement."""
    prompts, answers = rendered(model, exs[:4], "gold", 3, 512)
    batch = tokenize_with_answers(model, prompts, answers)
    layers = [int(x) for x in args.ig_layers.split(",")] if not args.tiny else [1, 3]
    runs = {"grad_x_act (all layers)": dict(method="grad_x_act", layers=None),
            f"ig (layers {','.join(map(str, layers))}, {args.ig_steps} steps)": dict(method="ig", steps=args.ig_steps,
                                                                                    layers=layers)}
    out: dict[str, Any] = {"n_tokens": [int(n) for n in batch.lengths]}
    for name, kw in runs.items():
        scores, row = {}, {}
        for precision in PRECISIONS:
            with Clock() as c:
                scores[precision] = attribute(model, batch, alpha_chunk=4, precision=precision, **kw)
            row[precision] = {"wall_s": c.wall, "cpu_s": c.cpu}
            print(f"{name} {precision}: {c.wall:.1f} s", flush=True)
        s32, s16 = scores["fp32"], scores["bf16"]
        chosen = kw["layers"] or list(range(model.cfg.n_layers))
        s32, s16 = s32[:, chosen], s16[:, chosen]
        rel = [float((s16[i] - s32[i]).norm() / s32[i].norm()) for i in range(len(prompts))]
        per = [jaccard(select(s32[i: i + 1], threshold=0.2, frequency=1.0),
                       select(s16[i: i + 1], threshold=0.2, frequency=1.0)) for i in range(len(prompts))]
        agg32, agg16 = select(s32, threshold=0.2, frequency=0.5), select(s16, threshold=0.2, frequency=0.5)
        row.update({"rel_error": rel, "jaccard_per_prompt": per, "jaccard_selected": jaccard(agg32, agg16),
                    "n_selected": [len(agg32), len(agg16)], "cpu_speedup": row["fp32"]["cpu_s"] / row["bf16"]["cpu_s"],
                    "wall_speedup": row["fp32"]["wall_s"] / row["bf16"]["wall_s"]})
        out[name] = row
    return out


def generation(model: Any, exs: list) -> dict[str, Any]:
    prompts, _ = rendered(model, exs[4:12], "gold+2", 3, 512)
    outs, row = {}, {}
    for precision in PRECISIONS:
        with Clock() as c, autocast(precision, model.cfg.device):
            outs[precision] = generate_greedy(model, prompts, max_new_tokens=32, batch_size=8, show_progress=False,
                                              stop_at_newline=True)
        row[precision] = {"wall_s": c.wall, "cpu_s": c.cpu}
        print(f"generation {precision}: {c.wall:.1f} s", flush=True)
    same = [a == b for a, b in zip(outs["fp32"], outs["bf16"], strict=True)]
    row.update({"n_prompts": len(prompts), "identical_outputs": sum(same) / len(same),
                "cpu_speedup": row["fp32"]["cpu_s"] / row["bf16"]["cpu_s"],
                "wall_speedup": row["fp32"]["wall_s"] / row["bf16"]["wall_s"],
                "outputs": outs})
    return row


def curves(model: Any, args: argparse.Namespace, sets: dict, mass: Any, items: list, dev: list) -> dict[str, Any]:
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for method in args.curve_methods.split(","):
        row: dict[str, Any] = {}
        for precision in PRECISIONS:
            cfg = TrainConfig(method=method, steps=args.curve_steps, batch_size=args.train_items,
                              lr=3e-4 if method == "neurorit" else 3e-5, warmup_steps=3, seed=0, eval_every=8,
                              checkpoint_every=0, precision=precision, n_target_layers=2 if args.tiny else None)
            plan = plan_method(model, method, sets, mass, cfg)
            with Clock() as c:
                log = run_plan(model, plan, items, dev, cfg, None, progress=False)
            model.load_state_dict(snapshot)
            row[precision] = {"loss": [o.loss for o in log], "wall_s": c.wall, "cpu_s": c.cpu,
                              "dev": {o.step: o.dev_answer_logprob for o in log if o.dev_answer_logprob is not None}}
            print(f"curve {method} {precision}: {c.wall:.0f} s, final loss {log[-1].loss:.4f}", flush=True)
        a, b = row["fp32"]["loss"], row["bf16"]["loss"]
        row["max_rel_loss_diff"] = max(abs(x - y) / max(abs(x), 1e-9) for x, y in zip(a, b, strict=True))
        row["dev_logprob_diff"] = {k: row["bf16"]["dev"][k] - v for k, v in row["fp32"]["dev"].items()}
        out[method] = row
    return out


def render(res: dict[str, Any]) -> str:
    lines = [f"# bf16 autocast vs fp32 ({res['model']})", "",
             f"One run, one process; {res['threads']} torch threads; load average {res['load_avg_start']} at the "
             f"start, {res['load_avg_end']} at the end (a shared machine). Command: `{res['command']}`. "
             "Speed-ups are fp32 time / bf16 time.", "",
             f"## Training step ({res['train_items']} items, {', '.join(map(str, res['train_tokens']))} tokens)", "",
             "| method | fp32 CPU (s) | bf16 CPU (s) | CPU speed-up | wall speed-up |", "|---|---|---|---|---|"]
    for name, r in res["train_step"].items():
        lines.append(f"| {name} | {r['fp32']['cpu_s']:.2f} | {r['bf16']['cpu_s']:.2f} | {r['cpu_speedup']:.2f} "
                     f"| {r['wall_speedup']:.2f} |")
    att = res["attribution"]
    lines += ["", f"## Attribution of 4 gold-context prompts ({', '.join(map(str, att['n_tokens']))} tokens)", "",
              "| run | fp32 CPU (s) | bf16 CPU (s) | CPU speed-up | relative error per prompt | Jaccard per prompt "
              "(0.2 x max) | Jaccard of the set (freq 0.5) | sizes fp32 / bf16 |", "|---|---|---|---|---|---|---|---|"]
    for name, r in att.items():
        if name == "n_tokens":
            continue
        lines.append(f"| {name} | {r['fp32']['cpu_s']:.1f} | {r['bf16']['cpu_s']:.1f} | {r['cpu_speedup']:.2f} | "
                     f"{', '.join(f'{x:.3f}' for x in r['rel_error'])} | "
                     f"{', '.join(f'{x:.2f}' for x in r['jaccard_per_prompt'])} | {r['jaccard_selected']:.2f} | "
                     f"{r['n_selected'][0]} / {r['n_selected'][1]} |")
    g = res["generation"]
    lines += ["", f"## Greedy generation ({g['n_prompts']} prompts, 32 new tokens, stop at newline)", "",
              f"fp32 {g['fp32']['cpu_s']:.1f} s CPU, bf16 {g['bf16']['cpu_s']:.1f} s CPU (speed-up "
              f"{g['cpu_speedup']:.2f}, wall {g['wall_speedup']:.2f}); identical outputs: "
              f"{100 * g['identical_outputs']:.0f}%."]
    lines += ["", f"## Training curves ({res['curve_steps']} steps, same start, same data)", "",
              "| method | fp32 final loss | bf16 final loss | max relative loss difference | dev answer log-prob "
              "fp32 -> bf16 (by step) | fp32 CPU (s) | bf16 CPU (s) |", "|---|---|---|---|---|---|---|"]
    for name, r in res["curves"].items():
        dev = "; ".join(f"{k}: {v:.3f} -> {r['bf16']['dev'][k]:.3f}" for k, v in r["fp32"]["dev"].items())
        lines.append(f"| {name} | {r['fp32']['loss'][-1]:.4f} | {r['bf16']['loss'][-1]:.4f} | "
                     f"{r['max_rel_loss_diff']:.4f} | {dev} | {r['fp32']['cpu_s']:.0f} | {r['bf16']['cpu_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    model = load(args.tiny)
    sets, mass = neuron_sets(model, args.tiny)
    exs = embedded_examples(24)
    tcfg = TrainConfig(batch_size=args.train_items)
    data = DataConfig(n_passages=3, max_prompt_tokens=args.train_tokens)
    items = build_train_items(exs[:16], model.tokenizer, tcfg, data).items
    dev = build_train_items(exs[16:24], model.tokenizer, tcfg, data, seed=1).items
    res: dict[str, Any] = {"model": "tiny gated d_model 128, 4 layers" if args.tiny else "smollm2-135m-instruct",
                           "command": "python -m benchmarks.bench_bf16 " + " ".join(
                               argv if argv is not None else sys.argv[1:]),
                           "threads": torch.get_num_threads(), "load_avg_start": load_start,
                           "train_items": args.train_items, "curve_steps": args.curve_steps,
                           "train_tokens": [int(n) for n in tokenize_items(model, items[: args.train_items]).lengths]}
    res["train_step"] = train_steps(model, args, sets, mass, items)
    res["attribution"] = attribution(model, args, exs)
    res["generation"] = generation(model, exs)
    res["curves"] = curves(model, args, sets, mass, items, dev)
    res["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["median_train_cpu_speedup"] = statistics.median(r["cpu_speedup"] for r in res["train_step"].values())
    res["environment"] = environment_info(0)
    stem = "bf16_tiny" if args.tiny else "bf16"
    out = Path(args.out)
    atomic_write_json(out / f"{stem}.json", res)
    atomic_write_text(out / f"{stem}.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
