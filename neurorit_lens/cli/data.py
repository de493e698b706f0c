"""`neurorit data`: load a dataset and report what the data stage made of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neurorit_lens.cli.common import Flat, config_of
from neurorit_lens.config import DEFAULT_SETTINGS, DataConfig

NAME = "data"
HELP = "load a dataset and report examples, skipped records, passages per label, splits and settings"


@dataclass
class Args:
    """Load --data (a file, 'hf:<name or dir>[:split]' or 'embedded[:N[:SEED]]') with the format
    auto-detected, and print: examples loaded, records skipped and why, passages per label,
    train/dev/test sizes, and for the chosen split how many instances each noise setting builds
    (and how many examples it skips). --out DIR writes DIR/data_summary.json.
    """

    # Noise settings to count instances for, comma-separated.
    settings: tuple[str, ...] = (*DEFAULT_SETTINGS, "counterfactual")
    out: str | None = None  # Folder for data_summary.json (none = print only).
    # Which QA data, how it is split, and how prompts are built.
    data: Flat[DataConfig] = field(default_factory=DataConfig)


def run(args: Args) -> int:
    from neurorit_lens.data import build_instances
    from neurorit_lens.data.splits import load_splits
    from neurorit_lens.io import atomic_write_json

    cfg = config_of(args.data)
    res, splits = load_splits(cfg)  # distractors mined within each split
    summary = res.summary()
    summary["splits"] = {k: len(v) for k, v in splits.items()}
    chosen = res.examples if cfg.split == "all" else splits[cfg.split]
    if cfg.limit is not None:
        chosen = chosen[: cfg.limit]
    summary["split"] = cfg.split
    summary["settings"] = {}
    for name in args.settings:
        b = build_instances(chosen, name, n_passages=cfg.n_passages, seed=cfg.seed)
        summary["settings"][name] = {"n": len(b), "n_skipped": b.n_skipped, "skipped_reasons": b.skipped_reasons}

    print(f"{res.source}  (format {res.format})")
    print(f"  examples {len(res)}   skipped {res.n_skipped} {res.skipped_reasons or ''}")
    print(f"  duplicate ids renamed {res.n_duplicate_ids}   irrelevant->unlabelled (contain an answer) "
          f"{res.n_relabelled}   empty passages dropped {res.n_empty_passages}   "
          f"examples given mined distractors {res.n_with_distractors}")
    print("  passages: " + "  ".join(f"{k} {v}" for k, v in summary["passages"].items()))
    print("  splits:   " + "  ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    print(f"  settings on {cfg.split} ({len(chosen)} examples, n_passages={cfg.n_passages}):")
    for name, d in summary["settings"].items():
        extra = f"  skipped {d['n_skipped']} {d['skipped_reasons']}" if d["n_skipped"] else ""
        print(f"    {name:<16} {d['n']:>6}{extra}")
    if args.out:
        path = atomic_write_json(Path(args.out) / "data_summary.json", summary)
        print(f"wrote {path}")
    return 0
