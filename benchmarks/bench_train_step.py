"""Training step time of every method on SmolLM2, on the same batch, in one run.

Every method (``full``, ``layers``, Neuro-RIT's stage 1 and stage 2, ``stage1``, ``random``)
is planned by :func:`neurorit_lens.training.plans.plan_method` from the neuron sets of the
results table (``benchmarks/results/neurons_table_mining.json``: 141 ``R_excl`` neurons in
25 layers, layer 0 included) and run by the one :class:`~neurorit_lens.training.trainer.Trainer`
with its hooks and masks on the same batch (``--n-items`` noisy-context items of ~200 tokens
from the embedded set). Each timing is a 2-step ``fit`` of which only the second step counts
(the first allocates the optimizer state); the methods are timed round-robin, ``--repeats``
times, so a change of machine load hits all of them alike, and the median is reported
beside the load average and thread count. The weights are restored after every run.

A second, cheap measurement isolates the optimizer: one AdamW step over the weights that
neuron-level training touches, once over whole tensors (what the trainer did before:
66M entries for stage 1) and once over the trainable entries only (what it does now).

    python -m benchmarks.bench_train_step                 # SmolLM2, 2 items, 3 repeats
    python -m benchmarks.bench_train_step --repeats 5 --threads 2
    python -m benchmarks.bench_train_step --tiny --threads 1   # ~1 min, no download

``--tiny`` builds a random gated model from a config instead (d_model 256, 6 layers,
d_mlp 1024, RMSNorm, SiLU; batch of 2 items of ~140 tokens) with 6 ``R_excl`` and 3
``I_excl`` random neurons per layer, and times ``layers`` (3 target layers), ``stage1`` and
``random`` with the neuron-only weight gradients (the default) and with the old dense
masked gradients (``Trainer(neuron_grads=False)``), median of several steps, round-robin,
in one run. Writes ``train_step_tiny.{json,md}``.

Writes ``benchmarks/results/train_step.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.hooks import zero_ablation
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.models import load_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.neurons.output import MiningOutput
from neurorit_lens.training.items import build_train_items
from neurorit_lens.training.masks import count_trainable
from neurorit_lens.training.optim import MaskedParams
from neurorit_lens.training.plans import StagePlan, plan_method
from neurorit_lens.training.trainer import Trainer, tokenize_items

RESULTS = Path(__file__).resolve().parent / "results"
NEURONS = RESULTS / "neurons_table_mining.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model name for load_model (default: SmolLM2-135M-Instruct)")
    p.add_argument("--neurons", default=str(NEURONS), help="neurons.json with R_excl, I_excl and meta.layer_mass")
    p.add_argument("--n-items", type=int, default=2, help="items in the batch (batch_size)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per method (round-robin)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=str(RESULTS), help="folder for train_step.{json,md}")
    p.add_argument("--tiny", action="store_true", help="random d_model-256 6-layer gated model from a config "
                   "(no download): stage1 / random / layers, neuron-only vs dense weight gradients")
    return p.parse_args(argv)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cases(model: Any, sets: dict[str, NeuronSet], layer_mass: Any, cfg: TrainConfig) -> dict[str, StagePlan]:
    """One trainer configuration (hooks + masks) per method; neurorit contributes both stages."""
    out: dict[str, StagePlan] = {}
    for method in ("full", "layers", "neurorit", "stage1", "random"):
        plan = plan_method(model, method, sets, layer_mass, cfg)
        if method == "neurorit":
            out["neurorit stage 1"], out["neurorit stage 2"] = plan.stages
        else:
            out[method] = plan.stages[0]
    # layer tuning as deep as the neuron sets reach (layer 0): the same backward depth as stage 1
    deep = dataclasses.replace(cfg, n_target_layers=model.cfg.n_layers)
    out["layers (every layer)"] = plan_method(model, "layers", sets, layer_mass, deep).stages[0]
    return out


def lowest_trained_layer(stage: StagePlan) -> str:
    """The deepest trainable weight (the backward pass has to reach it): ``embed`` or a block index."""
    if any(n.startswith(("embed.", "pos_embed.")) for n in stage.masks):
        return "embed"
    layers = [int(n.split(".")[1]) for n in stage.masks if n.startswith("blocks.")]
    return str(min(layers)) if layers else "-"


def time_second_step(model: Any, items: list, stage: StagePlan, cfg: TrainConfig) -> dict[str, float]:
    """Wall and CPU seconds of the second optimizer step of a 2-step ``fit`` (hooks and masks on)."""
    stamps: list[tuple[float, float]] = []
    hooks = zero_ablation(stage.deactivate) if stage.deactivate else []
    trainer = Trainer(model, items, cfg, hooks=hooks, param_masks=stage.masks, steps=2, resume=False,
                      progress=False, callbacks=[lambda _o: stamps.append((time.perf_counter(), time.process_time()))])
    before = load_avg()
    trainer.fit()
    (w1, c1), (w2, c2) = stamps
    return {"wall_s": w2 - w1, "cpu_s": c2 - c1, "load_before": before[0], "load_after": load_avg()[0]}


def time_backprop_floor(model: Any, items: list, layer: int) -> dict[str, float]:
    """Forward + backward down to the residual stream of ``layer`` with every weight frozen.

    No weight gradient at all: the least any method that trains something in ``layer``
    must compute (the activation gradients of every block from the top down to it).
    """
    from neurorit_lens.hooks import neuron_hooks
    from neurorit_lens.objective import answer_sft_loss

    batch = tokenize_items(model, items)
    hook = (f"blocks.{layer}.hook_resid_pre", lambda x, hook: x.detach().requires_grad_(True))
    before = load_avg()
    t0, c0 = time.perf_counter(), time.process_time()
    with neuron_hooks(model, [hook]):
        answer_sft_loss(model, batch).backward()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "load_before": before[0],
            "load_after": load_avg()[0]}


def time_optimizer(model: Any, stage: StagePlan, repeats: int = 3) -> dict[str, float]:
    """One AdamW step over whole touched tensors vs over the trainable entries only (random gradients)."""
    mp = MaskedParams(model, stage.masks)
    dense = [torch.nn.Parameter(p.detach().clone()) for p in mp.params]
    compact = [torch.nn.Parameter(leaf.detach().clone()) for leaf in mp.leaves]
    out: dict[str, float] = {"dense_entries": sum(p.numel() for p in dense),
                             "compact_entries": sum(p.numel() for p in compact)}
    for name, leaves in (("dense", dense), ("compact", compact)):
        opt = torch.optim.AdamW(leaves, lr=1e-4, weight_decay=0.0)
        times = []
        for _ in range(repeats + 1):
            for p in leaves:
                p.grad = torch.randn_like(p)
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        out[f"{name}_s"] = statistics.median(times[1:])  # the first step allocates the state
        del opt
    return out


def tiny_setup() -> tuple[Any, list, dict[str, StagePlan]]:
    """The ``--tiny`` model, a batch of ~140-token items and its cases (see module docstring)."""
    from neurorit_lens.models import tiny_model
    from neurorit_lens.training.items import TrainItem

    model = tiny_model(n_layers=6, d_model=256, d_mlp=1024, n_heads=4, gated=True, normalization_type="RMS",
                       act_fn="silu", seed=0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    items = [TrainItem(" ".join(words[(i + j) % 12] for j in range(26)) + " Answer:", " Velmor", id=str(i))
             for i in range(4)]
    g = torch.Generator().manual_seed(0)
    perms = {layer: torch.randperm(1024, generator=g)[:9].tolist() for layer in range(6)}
    sets = {"R_excl": NeuronSet({layer: p[:6] for layer, p in perms.items()}),
            "I_excl": NeuronSet({layer: p[6:] for layer, p in perms.items()})}
    cfg = TrainConfig(steps=2, batch_size=2, lr=3e-4, warmup_steps=0, seed=0, n_target_layers=3)
    plans = {m: plan_method(model, m, sets, None, cfg).stages[0] for m in ("layers", "stage1", "random")}
    return model, items, plans


def run_tiny(args: argparse.Namespace) -> int:
    """``--tiny``: step times of layers / stage1 / random, neuron-only vs dense weight gradients."""
    model, items, plans = tiny_setup()
    cfg = TrainConfig(steps=2, batch_size=2, lr=3e-4, warmup_steps=0, seed=0)
    cases = {"layers": (plans["layers"], True), "stage1": (plans["stage1"], True),
             "random": (plans["random"], True), "stage1 (dense grads)": (plans["stage1"], False),
             "random (dense grads)": (plans["random"], False)}
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, (stage, sparse) in cases.items():
            stamps: list[tuple[float, float]] = []
            Trainer(model, items, cfg, hooks=zero_ablation(stage.deactivate) if stage.deactivate else [],
                    param_masks=stage.masks, steps=5, resume=False, progress=False, neuron_grads=sparse,
                    callbacks=[lambda _o, s=stamps: s.append((time.perf_counter(), time.process_time()))]).fit()
            model.load_state_dict(snapshot)
            for (w0, c0), (w1, c1) in zip(stamps[:-1], stamps[1:], strict=True):  # steps 2-5
                wall[name].append(w1 - w0)
                cpu[name].append(c1 - c0)
            print(f"{name}: {1000 * statistics.median(cpu[name]):.1f} ms CPU", flush=True)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    rows = {k: {"trainable_params": count_trainable(model, cases[k][0].masks),
                "lowest_trained_layer": lowest_trained_layer(cases[k][0]), "median_step_cpu_s": med[k],
                "median_step_wall_s": statistics.median(wall[k]), "vs_layers": med[k] / med["layers"],
                "vs_random": med[k] / med["random"], "steps_cpu_s": cpu[k], "steps_wall_s": wall[k]}
             for k in cases}
    result = {"model": "tiny gated d_model 256, 6 layers, d_mlp 1024", "n_tokens":
              [int(n) for n in tokenize_items(model, items[:2]).lengths], "threads": torch.get_num_threads(),
              "repeats": args.repeats, "load_avg": load_avg(), "methods": rows, "environment": environment_info(0)}
    lines = [f"Training step time, {result['model']}, one run: batch of 2 items "
             f"({', '.join(map(str, result['n_tokens']))} tokens), {result['threads']} torch threads, median of "
             f"{4 * args.repeats} steps ({args.repeats} round-robin repeats x steps 2-5), load avg "
             f"{result['load_avg'][0]}. Ratios are of CPU time per step (one thread, so CPU time is the work "
             "done, whatever else runs on the machine).", "",
             "| method | trainable params | lowest trained layer | step CPU (ms) | step wall (ms) | vs layers "
             "| vs random |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {r['trainable_params']:,} | {r['lowest_trained_layer']} | "
              f"{1000 * r['median_step_cpu_s']:.1f} | {1000 * r['median_step_wall_s']:.1f} | {r['vs_layers']:.2f} "
              f"| {r['vs_random']:.2f} |" for k, r in rows.items()]
    out = Path(args.out)
    atomic_write_json(out / "train_step_tiny.json", result)
    atomic_write_text(out / "train_step_tiny.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        return run_tiny(args)
    model = load_model(args.model) if args.model else load_model()
    mined = MiningOutput.load(args.neurons)
    sets = {k: mined.sets[k] for k in ("R_excl", "I_excl")}
    layer_mass = mined.layer_mass
    cfg = TrainConfig(steps=2, batch_size=args.n_items, lr=3e-4, warmup_steps=0, seed=0)
    data_cfg = DataConfig(n_passages=3, max_prompt_tokens=256)
    items = build_train_items(embedded_examples()[: max(4, args.n_items)], model.tokenizer, cfg, data_cfg).items
    items = items[: args.n_items]
    n_tokens = [int(n) for n in tokenize_items(model, items).lengths]
    plans = cases(model, sets, layer_mass, cfg)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in plans}
    floors: dict[int, list[dict[str, float]]] = {}
    for rep in range(args.repeats):
        for name, stage in plans.items():
            runs[name].append(time_second_step(model, items, stage, cfg))
            model.load_state_dict(snapshot)
            print(f"repeat {rep + 1}/{args.repeats} {name}: {runs[name][-1]['wall_s']:.2f} s", flush=True)
        for layer in sorted({int(lowest_trained_layer(st)) for st in plans.values()
                             if lowest_trained_layer(st).isdigit()}):
            floors.setdefault(layer, []).append(time_backprop_floor(model, items, layer))
    optimizer = time_optimizer(model, plans["stage1"])
    rows = {name: {"trainable_params": count_trainable(model, st.masks),
                   "lowest_trained_layer": lowest_trained_layer(st),
                   "n_deactivated": len(st.deactivate),
                   "median_wall_s": statistics.median(r["wall_s"] for r in runs[name]),
                   "min_wall_s": min(r["wall_s"] for r in runs[name]),
                   "median_cpu_s": statistics.median(r["cpu_s"] for r in runs[name]), "runs": runs[name]}
            for name, st in plans.items()}
    for r in rows.values():
        r["vs_layers"] = r["median_wall_s"] / rows["layers"]["median_wall_s"]
        r["vs_full"] = r["median_wall_s"] / rows["full"]["median_wall_s"]
        low = r["lowest_trained_layer"]
        if low.isdigit() and int(low) in floors:
            r["vs_floor"] = r["median_wall_s"] / statistics.median(x["wall_s"] for x in floors[int(low)])
    result = {"model": args.model or "smollm2-135m-instruct", "n_items": len(items), "n_tokens": n_tokens,
              "repeats": args.repeats, "threads": torch.get_num_threads(), "neurons": str(args.neurons),
              "methods": rows, "optimizer_step_stage1": optimizer,
              "backprop_floor": {str(k): {"median_wall_s": statistics.median(r["wall_s"] for r in v), "runs": v}
                                 for k, v in floors.items()}, "environment": environment_info(0)}
    out = Path(args.out)
    atomic_write_json(out / "train_step.json", result)
    atomic_write_text(out / "train_step.md", render(result))
    print(render(result))
    return 0


def render(res: dict[str, Any]) -> str:
    lines = [f"Training step time per method, {res['model']}, one run: batch of {res['n_items']} items "
             f"({', '.join(map(str, res['n_tokens']))} tokens), {res['threads']} torch threads, "
             f"median of {res['repeats']} round-robin repeats (second step of a 2-step fit).", "",
             "| method | trainable params | lowest trained layer | step (s, median) | min (s) | CPU (s) "
             "| vs layers | vs full | vs floor at its lowest layer | load avg (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["methods"].items():
        loads = [x["load_before"] for x in r["runs"]]
        vs_floor = f"{r['vs_floor']:.2f}" if "vs_floor" in r else "-"
        lines.append(f"| {name} | {r['trainable_params']:,} | {r['lowest_trained_layer']} | {r['median_wall_s']:.2f} "
                     f"| {r['min_wall_s']:.2f} | {r['median_cpu_s']:.2f} | {r['vs_layers']:.2f} | {r['vs_full']:.2f} "
                     f"| {vs_floor} | {min(loads):.1f}-{max(loads):.1f} |")
    floor = res.get("backprop_floor", {})
    if floor:
        lines += ["", "Floor (same run, every weight frozen, forward + backward down to the residual stream of a "
                  "layer, no weight gradient): " + "; ".join(f"to layer {k}: {v['median_wall_s']:.2f} s"
                                                             for k, v in floor.items()) + "."]
    o = res["optimizer_step_stage1"]
    lines += ["", f"AdamW step of stage 1 alone: over whole touched tensors ({o['dense_entries']:,} entries) "
              f"{o['dense_s']:.3f} s; over the trainable entries only ({o['compact_entries']:,}) "
              f"{o['compact_s']:.4f} s.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
