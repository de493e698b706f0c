"""Peak memory and time of one training forward + backward: full-vocabulary logits vs answer positions only.

The trainer's loss is the mean cross-entropy over answer tokens. Computed as
``sft_loss(model(tokens), batch)`` it builds ``[batch, pos, d_vocab]`` float32 logits at
every prompt position (for SmolLM2, 4 x 896 x 49152 x 4 B = 0.7 GB), their log-softmax,
and both gradients, although only the few answer positions enter the loss.
``answer_sft_loss(model, batch)`` (what :class:`~neurorit_lens.training.trainer.Trainer`
uses) runs the blocks, gathers the answer positions of the final residual stream and
unembeds only those; the loss is the same bit for bit (``tests/unit/test_answer_loss.py``).

Each variant runs in its own child process (so memory the allocator keeps from one cannot
hide the other's peak): the model is loaded, every weight requires grad (as ``full`` and
``clean`` train), and ``--repeats`` forward + backward passes are timed on the same batch
of ``--n-items`` rows of ``--tokens`` tokens whose last ``--answer-tokens`` are the answer.
The peak is the resident high-water mark during the passes (``VmHWM``, reset at their
start; :mod:`neurorit_lens.memory`), so it includes the loaded weights and gradients.
Token ids are random: memory and time depend on the shapes only.

    python -m benchmarks.bench_loss_memory                      # SmolLM2, 4 x 896 tokens
    python -m benchmarks.bench_loss_memory --tiny --tokens 128  # seconds, no checkpoint

Writes ``benchmarks/results/loss_memory.{json,md}`` (``loss_memory_tiny`` with ``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info
from neurorit_lens.memory import PeakRSS, status_kb
from neurorit_lens.objective import AnswerBatch, answer_sft_loss, sft_loss

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("logits", "answer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-items", type=int, default=4, help="rows in the batch (default 4, the comparison's)")
    p.add_argument("--tokens", type=int, default=896, help="tokens per row (default 896, the comparison's)")
    p.add_argument("--answer-tokens", type=int, default=4, help="answer tokens at the end of each row")
    p.add_argument("--repeats", type=int, default=2, help="timed forward + backward passes per variant")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="a random 4-layer model from a config, no checkpoint")
    p.add_argument("--out", default=str(RESULTS), help="folder for loss_memory.{json,md}")
    p.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.n_items < 1 or args.repeats < 1 or not 0 < args.answer_tokens < args.tokens:
        p.error("need --n-items >= 1, --repeats >= 1 and 0 < --answer-tokens < --tokens")
    return args


def make_batch(d_vocab: int, n: int, t: int, n_ans: int) -> AnswerBatch:
    """Random tokens; position p predicts token p+1, so the last ``n_ans`` tokens are predicted
    from positions ``t - n_ans - 1 .. t - 2``."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, d_vocab, (n, t), generator=g)
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[:, t - n_ans - 1: t - 1] = True
    target = torch.zeros(n, t, dtype=torch.long)
    target[:, :-1] = tokens[:, 1:]
    return AnswerBatch(tokens=tokens, target_ids=target, answer_mask=mask, lengths=torch.full((n,), t),
                       prompt_lengths=torch.full((n,), t - n_ans), n_answer_tokens=torch.full((n,), n_ans))


def load(tiny: bool) -> Any:
    if tiny:
        from neurorit_lens.models import tiny_model

        return tiny_model(n_layers=4, d_model=128, d_mlp=512, n_heads=4, gated=True,
                          normalization_type="RMS", act_fn="silu", seed=0)
    from neurorit_lens.models import load_model

    return load_model()


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant in this process: peak RSS and wall time of ``--repeats`` forward + backward."""
    model = load(args.tiny)
    for p in model.parameters():
        p.requires_grad_(True)
    batch = make_batch(model.cfg.d_vocab, args.n_items, args.tokens, args.answer_tokens)
    rss_loaded = status_kb("VmRSS") / 1024
    times, losses = [], []
    with PeakRSS() as mem:
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=False)
            t0 = time.perf_counter()
            loss = sft_loss(model(batch.tokens), batch) if args.variant == "logits" else answer_sft_loss(model, batch)
            loss.backward()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
            del loss
    return {"variant": args.variant, "rss_loaded_mb": rss_loaded, "peak_rss_mb": mem.peak_mb,
            "wall_s": times, "wall_s_median": statistics.median(times), "loss": losses}


def run_variant(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_loss_memory", "--variant", variant, "--n-items", str(args.n_items),
           "--tokens", str(args.tokens), "--answer-tokens", str(args.answer_tokens), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads)] * bool(args.threads) + ["--tiny"] * args.tiny
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout  # stderr passes through
    return json.loads(out.strip().splitlines()[-1])


def render(res: dict[str, Any]) -> str:
    rows = res["variants"]
    lines = [f"# Training loss: full-vocabulary logits vs answer positions only ({res['model']})", "",
             f"{res['n_items']} rows x {res['tokens']} tokens, {res['answer_tokens']} answer tokens per row, every "
             f"weight trainable; {res['threads']} thread(s), load {res['load_before']:.2f} before / "
             f"{res['load_after']:.2f} after; median of {res['repeats']} passes.", "",
             "| loss | RSS after load (MiB) | peak RSS (MiB) | fwd + bwd (s) | loss value |", "|---|---|---|---|---|"]
    for name, label in (("logits", "`sft_loss(model(tokens))`"), ("answer", "`answer_sft_loss(model, batch)`")):
        r = rows[name]
        lines.append(f"| {label} | {r['rss_loaded_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['wall_s_median']:.2f} | "
                     f"{r['loss'][0]:.6f} |")
    saved = rows["logits"]["peak_rss_mb"] - rows["answer"]["peak_rss_mb"]
    lines += ["", f"Peak saved: {saved:.0f} MiB ({saved / rows['logits']['peak_rss_mb']:.0%}); time ratio answer / "
              f"logits {rows['answer']['wall_s_median'] / rows['logits']['wall_s_median']:.2f}; same loss: "
              f"{rows['logits']['loss'] == rows['answer']['loss']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(child(args)))
        return 0
    before = os.getloadavg()[0]
    variants = {v: run_variant(args, v) for v in VARIANTS}
    res = {"model": "tiny" if args.tiny else "smollm2-135m-instruct", "n_items": args.n_items,
           "tokens": args.tokens, "answer_tokens": args.answer_tokens, "repeats": args.repeats,
           "threads": args.threads or torch.get_num_threads(), "load_before": before,
           "load_after": os.getloadavg()[0], "variants": variants, "env": environment_info()}
    name = "loss_memory_tiny" if args.tiny else "loss_memory"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", res)
    text = render(res)
    atomic_write_text(out / f"{name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
