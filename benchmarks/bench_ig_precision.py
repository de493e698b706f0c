"""IG scores in bf16 against fp32 on the same examples: two mining folders, file by file.

Mine the same examples twice with ``neurorit mine`` (the second with ``--precision bf16``),
then compare every per-example score file the two folders share (``scores/<R|I>/<id>``):

- relative error ``||s_bf16 - s_fp32||_F / ||s_fp32||_F`` per example;
- the Jaccard index of each example's selected neurons (mining's threshold rule:
  score >= ``--threshold`` x the example's maximum, one example at a time);
- the Jaccard index of the set selected over all shared examples (``--frequency``).

    python -m benchmarks.bench_ig_precision runs/study/mining/ig/embedded /root/bf16/ig/embedded

Writes ``benchmarks/results/ig_precision.{json,md}`` (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.io import atomic_write_json, atomic_write_text
from neurorit_lens.neurons.pooling import jaccard
from neurorit_lens.neurons.score_files import CONDITIONS, read_tensor
from neurorit_lens.neurons.selection import select

RESULTS = Path(__file__).resolve().parent / "results"


def shared_files(a: Path, b: Path, condition: str) -> list[str]:
    """Names of the score files of ``condition`` present in both folders, sorted."""
    names = [{p.name for p in (d / "scores" / condition).glob("*.safetensors")} for d in (a, b)]
    return sorted(names[0] & names[1])


def compare(a: Path, b: Path, condition: str, threshold: float, frequency: float) -> dict[str, Any] | None:
    """Per-example and pooled agreement of the shared files of one condition (None if none is shared)."""
    names = shared_files(a, b, condition)
    if not names:
        return None
    sa = torch.stack([read_tensor(a / "scores" / condition / n)[0] for n in names])
    sb = torch.stack([read_tensor(b / "scores" / condition / n)[0] for n in names])
    rel = [float((y - x).norm() / x.norm()) for x, y in zip(sa, sb, strict=True)]
    per = [jaccard(select(x[None], threshold=threshold, frequency=1.0),
                   select(y[None], threshold=threshold, frequency=1.0)) for x, y in zip(sa, sb, strict=True)]
    set_a = select(sa, threshold=threshold, frequency=frequency)
    set_b = select(sb, threshold=threshold, frequency=frequency)
    return {"examples": [n.removesuffix(".safetensors") for n in names], "relative_error": rel,
            "jaccard_per_example": per, "jaccard_set": jaccard(set_a, set_b),
            "set_sizes": [len(set_a), len(set_b)]}


def render(res: dict[str, Any]) -> str:
    lines = ["# IG scores, bf16 autocast against fp32, on the same examples", "",
             f"`{res['a']}` (fp32) against `{res['b']}` (bf16); selection threshold {res['threshold']} x max, "
             f"frequency {res['frequency']}. Command: `python -m benchmarks.bench_ig_precision {res['a']} {res['b']}`.",
             "", "| condition | examples | relative error median [min, max] | per-example Jaccard median [min, max] "
             "| Jaccard of the set | set sizes fp32 / bf16 |", "|---|---|---|---|---|---|"]
    for cond, r in res["conditions"].items():
        if r is None:
            lines.append(f"| {cond} | 0 | - | - | - | - |")
            continue
        e, j = r["relative_error"], r["jaccard_per_example"]
        lines.append(f"| {cond} | {len(e)} | {statistics.median(e):.3f} [{min(e):.3f}, {max(e):.3f}] | "
                     f"{statistics.median(j):.2f} [{min(j):.2f}, {max(j):.2f}] | {r['jaccard_set']:.2f} | "
                     f"{r['set_sizes'][0]} / {r['set_sizes'][1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("fp32", type=Path, help="mining folder of the fp32 run")
    p.add_argument("bf16", type=Path, help="mining folder of the bf16 run (same examples, --precision bf16)")
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--frequency", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    for d in (args.fp32, args.bf16):
        if not (d / "scores").is_dir():
            p.error(f"{d}: no scores/ folder (not a mining folder of `neurorit mine`)")
    res = {"a": str(args.fp32), "b": str(args.bf16), "threshold": args.threshold, "frequency": args.frequency,
           "conditions": {c: compare(args.fp32, args.bf16, c, args.threshold, args.frequency) for c in CONDITIONS}}
    if all(r is None for r in res["conditions"].values()):
        p.error("the two folders share no score file")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "ig_precision.json", res)
    atomic_write_text(args.out / "ig_precision.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
