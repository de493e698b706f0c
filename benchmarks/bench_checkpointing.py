"""Peak memory and step time of training with and without activation checkpointing, in one run.

``TrainConfig.activation_checkpointing`` (:mod:`neurorit_lens.training.recompute`) keeps
only each block's input in the forward pass and recomputes the block in backward. This
measures what it saves and costs on SmolLM2 for ``full``, ``layers`` and Neuro-RIT's stage 1
(``neurorit``: the neuron-level stage, whose backward reaches layer 0 and whose neuron-only
gradient hooks run again in the recomputation), at ``--n-items`` items of ``--tokens``
tokens (default 4 x 896, the comparison's batch).

Every case runs in a fresh child process (so memory the allocator keeps from one case cannot
hide another's peak): load the model, plan the method from the results table's neuron sets
(``benchmarks/results/neurons_table_mining.json``), allocate the AdamW state (one step with
zero gradients, which moves nothing) and time a 1-step ``Trainer.fit``: a step as in the
middle of a run. The peak is the resident high-water mark over that step (``VmHWM``,
:class:`neurorit_lens.memory.PeakRSS`): weights, gradients, AdamW state and activations.
Wall and CPU time of the step are both reported (the machine is shared; CPU time is less
sensitive to other jobs). Cases run one
after another; before a case without checkpointing, the parent reads ``MemAvailable`` and,
if the case's expected peak does not fit with a margin, runs it (and its checkpointed
twin) at half the items instead, and says so in the results.

Items are real text: passages of the embedded set, cut to ``--tokens`` tokens in all
(prompt, answer and EOS; the tokenizer may merge a token at the cut, the actual counts are
reported).

    python -m benchmarks.bench_checkpointing                    # SmolLM2, 4 x 896, ~30 min on 2 cores
    python -m benchmarks.bench_checkpointing --tiny --tokens 64 # seconds, no checkpoint file

Writes ``benchmarks/results/checkpointing.{json,md}`` (``checkpointing_tiny`` with ``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.memory import PeakRSS, status_kb
from neurorit_lens.neurons.output import MiningOutput
from neurorit_lens.neurons.sets import NeuronSet
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.plans import plan_method
from neurorit_lens.training.trainer import Trainer, tokenize_items

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NEURONS = RESULTS / "neurons_table_mining.json"
METHODS = ("full", "layers", "neurorit")
# Expected peak (GiB) without checkpointing at 4 x 896 on SmolLM2 (full: measured in the
# comparison; neurorit: the same; layers: assumed as neurorit). A case runs at half the
# items when MemAvailable is below this plus a 1.5 GiB margin.
EXPECTED_PLAIN_GIB = {"full": 20.6, "layers": 17.5, "neurorit": 17.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-items", type=int, default=4, help="items per step (default 4, the comparison's)")
    p.add_argument("--tokens", type=int, default=896, help="tokens per item (default 896)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of full,layers,neurorit")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="a random 4-layer model from a config, no checkpoint")
    p.add_argument("--out", default=str(RESULTS), help="folder for checkpointing.{json,md}")
    p.add_argument("--stem", default=None, help="file name stem (default checkpointing, checkpointing_tiny)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "method:0|1" in a child process
    return p.parse_args(argv)


def load(tiny: bool) -> Any:
    if tiny:
        from neurorit_lens.models import tiny_model

        return tiny_model(n_layers=4, d_model=128, d_mlp=512, n_heads=4, gated=True, normalization_type="RMS",
                          act_fn="silu", seed=0)
    from neurorit_lens.models import load_model

    return load_model()


def make_items(model: Any, n: int, tokens: int) -> list[TrainItem]:
    """``n`` items of real passage text, each about ``tokens`` tokens with its answer and EOS."""
    exs = embedded_examples(max(n, 4))
    text = " ".join(p.text for ex in exs for p in ex.passages)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    items = []
    for i in range(n):
        answer = " " + exs[i].answers[0]
        n_ans = len(model.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1  # + EOS
        start = (i * 97) % max(1, len(ids) - tokens)
        prompt = model.tokenizer.decode(ids[start: start + tokens - n_ans - 1]) + "\nAnswer:"
        items.append(TrainItem(prompt, answer, id=str(i)))
    return items


def sets_for(model: Any, tiny: bool) -> tuple[dict[str, NeuronSet], Any]:
    if tiny:
        g = torch.Generator().manual_seed(0)
        perms = {layer: torch.randperm(model.cfg.d_mlp, generator=g)[:9].tolist() for layer in range(4)}
        return {"R_excl": NeuronSet({k: v[:6] for k, v in perms.items()}),
                "I_excl": NeuronSet({k: v[6:] for k, v in perms.items()})}, None
    mined = MiningOutput.load(NEURONS, model)
    return {k: mined.sets[k] for k in ("R_excl", "I_excl")}, mined.layer_mass


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process: peak RSS over a 2-step fit and the second step's time."""
    method, ckpt = args.child.split(":")
    model = load(args.tiny)
    items = make_items(model, args.n_items, args.tokens)
    sets, mass = sets_for(model, args.tiny)
    cfg = TrainConfig(method=method, steps=2, batch_size=args.n_items, lr=3e-4, warmup_steps=0, seed=0,
                      deactivation="zero", activation_checkpointing=ckpt == "1", n_target_layers=2 if args.tiny
                      else None)
    plan = plan_method(model, method, sets, mass, cfg)
    stage = plan.stages[0]  # neurorit: stage 1
    trainer = _PrimedTrainer(model, items, cfg, hooks=plan.hooks(stage.deactivate), param_masks=stage.masks,
                             steps=1, resume=False, progress=False)
    n_tokens = [int(x) for x in tokenize_items(model, items).lengths]
    rss_loaded = status_kb("VmRSS") / 1024
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    with PeakRSS() as mem:
        log = trainer.fit()
    return {"method": method, "stage": stage.name, "checkpointing": ckpt == "1", "n_items": args.n_items,
            "n_tokens": n_tokens, "rss_loaded_mb": rss_loaded, "peak_rss_mb": mem.peak_mb,
            "step_s": time.perf_counter() - t0, "step_cpu_s": time.process_time() - c0,
            "loss": [o.loss for o in log], "threads": torch.get_num_threads(), "load_before": load_before,
            "load_after": os.getloadavg()[0]}


class _PrimedTrainer(Trainer):
    """A trainer whose AdamW state exists before its first step (one step with zero gradients, which
    moves nothing), so a 1-step fit has the memory and work of a step in the middle of a run."""

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        opt, sched = super()._optimizer()
        for leaf in self.trainable.leaves:
            leaf.grad = torch.zeros_like(leaf)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return opt, sched


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run_case(args: argparse.Namespace, method: str, ckpt: bool, n_items: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_checkpointing", "--child", f"{method}:{int(ckpt)}",
           "--n-items", str(n_items), "--tokens", str(args.tokens)]
    cmd += ["--threads", str(args.threads)] * bool(args.threads) + ["--tiny"] * args.tiny
    avail = mem_available_gib()
    print(f"{method} checkpointing={ckpt} {n_items} x {args.tokens}: MemAvailable {avail:.1f} GiB", flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["mem_available_gib_before"] = avail
    print(f"  peak {res['peak_rss_mb']:.0f} MiB, step {res['step_s']:.1f} s wall, {res['step_cpu_s']:.1f} s CPU",
          flush=True)
    return res


def plain_items(args: argparse.Namespace, method: str) -> int:
    """Items for the case without checkpointing: ``--n-items``, or half when it would not fit now."""
    if args.tiny:
        return args.n_items
    need = EXPECTED_PLAIN_GIB[method] * (args.n_items / 4) * (args.tokens / 896) + 1.5
    return args.n_items if mem_available_gib() >= need else max(1, args.n_items // 2)


def render(res: dict[str, Any]) -> str:
    lines = [f"# Activation checkpointing: peak memory and step time ({res['model']})", "",
             f"One run, every case in a fresh process, one after another; {res['threads']} torch threads; "
             f"load average {res['load_avg_start']} at the start, {res['load_avg_end']} at the end (a shared "
             "machine: other jobs ran beside it). Peak = resident high-water mark (weights, gradients, AdamW state, "
             "activations) of one training step with the AdamW state already allocated. `neurorit` is its stage 1 "
             "(neuron-level, backward to layer 0, deactivation zero). Command: "
             f"`{res['command']}`.", "",
             "| method | items x tokens | checkpointing | peak RSS (MiB) | RSS after load (MiB) | step wall (s) "
             "| step CPU (s) | load before | MemAvailable before (GiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        ck = "yes" if r["checkpointing"] else "no"
        lines.append(f"| {r['method']} | {r['n_items']} x {max(r['n_tokens'])} | {ck} "
                     f"| {r['peak_rss_mb']:.0f} | {r['rss_loaded_mb']:.0f} | {r['step_s']:.1f} | {r['step_cpu_s']:.1f} "
                     f"| {r['load_before']:.2f} | {r['mem_available_gib_before']:.1f} |")
    lines += ["", "| method | items | peak ratio (plain / checkpointed) | step wall ratio (checkpointed / plain) "
              "| step CPU ratio | same loss |", "|---|---|---|---|---|---|"]
    for c in res["comparisons"]:
        lines.append(f"| {c['method']} | {c['n_items']} | {c['peak_ratio']:.2f} | {c['time_ratio']:.2f} "
                     f"| {c['cpu_ratio']:.2f} | {c['same_loss']} |")
    g = res.get("goal")
    if g:
        lines += ["", "Goal (full: peak >= 2x lower at <= 1.4x step time, judged on CPU time): at "
                  f"{g['n_items']} items "
                  f"peak ratio {g['peak_ratio']:.2f}, CPU time ratio {g['cpu_ratio']:.2f} (wall "
                  f"{g['time_ratio']:.2f}): {'met' if g['met'] else 'not met'}."]
    if res["reduced"]:
        lines += ["", "Run at half the items for lack of free memory: " + ", ".join(res["reduced"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    load_start = [round(x, 2) for x in os.getloadavg()]
    cases, comparisons, reduced = [], [], []
    for method in methods:
        n_plain = plain_items(args, method)
        if n_plain < args.n_items:
            reduced.append(f"{method} without checkpointing at {n_plain} x {args.tokens}")
        by_n: dict[int, dict[bool, dict[str, Any]]] = {}
        for ckpt, n in ((True, args.n_items), (False, n_plain)) + (((True, n_plain),) if n_plain < args.n_items
                                                                    else ()):
            by_n.setdefault(n, {})[ckpt] = run_case(args, method, ckpt, n)
            cases.append(by_n[n][ckpt])
        for n, pair in by_n.items():
            if len(pair) == 2:
                comparisons.append({"method": method, "n_items": n,
                                    "peak_ratio": pair[False]["peak_rss_mb"] / pair[True]["peak_rss_mb"],
                                    "time_ratio": pair[True]["step_s"] / pair[False]["step_s"],
                                    "cpu_ratio": pair[True]["step_cpu_s"] / pair[False]["step_cpu_s"],
                                    "same_loss": all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in
                                                     zip(pair[False]["loss"], pair[True]["loss"], strict=True))})
    full = [c for c in comparisons if c["method"] == "full"]
    goal = ({"peak_ratio": full[0]["peak_ratio"], "time_ratio": full[0]["time_ratio"], "n_items": full[0]["n_items"],
             "cpu_ratio": full[0]["cpu_ratio"],
             "met": full[0]["peak_ratio"] >= 2 and full[0]["cpu_ratio"] <= 1.4} if full else None)
    res = {"model": "tiny gated d_model 128, 4 layers" if args.tiny else "smollm2-135m-instruct",
           "command": "python -m benchmarks.bench_checkpointing " + " ".join(argv if argv is not None
                                                                              else sys.argv[1:]),
           "threads": torch.get_num_threads(), "load_avg_start": load_start,
           "load_avg_end": [round(x, 2) for x in os.getloadavg()], "cases": cases, "comparisons": comparisons,
           "goal": goal, "reduced": reduced, "environment": environment_info(0)}
    stem = args.stem or ("checkpointing_tiny" if args.tiny else "checkpointing")
    out = Path(args.out)
    atomic_write_json(out / f"{stem}.json", res)
    atomic_write_text(out / f"{stem}.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
