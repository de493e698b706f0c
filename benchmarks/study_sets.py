"""The component study's pooled neuron sets and their split-half stability (docs/study.md).

Reads the per-data-set mining folders that ``benchmarks/study_mine.sh`` writes, pools them
(:func:`neurorit_lens.neurons.pooling.pool_results`), and writes for each estimator the set
sizes, per-layer counts and the Jaccard index of every set between the two halves of the
questions. Run: ``python -m benchmarks.study_sets [--mining runs/study/mining] [--sets ig grad_x_act]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurorit_lens.io import atomic_write_json, atomic_write_text
from neurorit_lens.neuron_sets import SET_NAMES
from neurorit_lens.neurons.mining import MiningResult
from neurorit_lens.neurons.pooling import pool_results, split_half_stability

DATASETS = ("embedded", "nq")


def summarise(mining: Path, name: str) -> dict:
    runs = [MiningResult.load(mining / name / ds) for ds in DATASETS]
    pooled = pool_results(runs)
    stab = split_half_stability(runs)
    return {"set": name, "config": pooled.config.to_dict(), "n_examples": {"R": len(pooled.ids_R),
                                                                           "I": len(pooled.ids_I)},
            "sizes": {n: len(pooled.sets[n]) for n in SET_NAMES},
            "counts_per_layer": {n: pooled.sets[n].counts_per_layer() for n in ("R_excl", "I_excl")},
            "split_half": stab}


def markdown(rows: list[dict]) -> str:
    lines = ["# Component study: pooled neuron sets and their split-half stability", "",
             "Pooled over the first 100 train questions of embedded:1000 and NQ-open; Jaccard between the sets",
             "selected on even and on odd positions of each data set's questions (`python -m benchmarks.study_sets`).",
             "", "| estimator | n (R / I) | " + " | ".join(f"{n} size" for n in SET_NAMES) + " | "
             + " | ".join(f"J {n}" for n in SET_NAMES) + " |", "|---|---|" + "---|" * (2 * len(SET_NAMES))]
    for r in rows:
        j = r["split_half"]["jaccard"]
        lines.append(f"| {r['set']} | {r['n_examples']['R']} / {r['n_examples']['I']} | "
                     + " | ".join(str(r["sizes"][n]) for n in SET_NAMES) + " | "
                     + " | ".join(f"{j[n]:.2f}" for n in SET_NAMES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mining", type=Path, default=Path("runs/study/mining"))
    ap.add_argument("--sets", nargs="+", default=["ig", "grad_x_act"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/study"))
    args = ap.parse_args(argv)
    rows = [summarise(args.mining, s) for s in args.sets
            if all((args.mining / s / ds / "neurons.json").exists() for ds in DATASETS)]
    if not rows:
        raise SystemExit(f"no finished mining under {args.mining} for {args.sets}")
    atomic_write_json(args.out / "sets.json", rows)
    atomic_write_text(args.out / "sets.md", markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
