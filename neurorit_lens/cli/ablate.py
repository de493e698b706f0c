"""`neurorit ablate`: the causal test of mined neuron sets against random controls."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from neurorit_lens.cli.common import (
    Common,
    Flat,
    ModelName,
    NeuronsFile,
    OutDir,
    config_of,
    load_examples,
    load_model,
    without,
)
from neurorit_lens.config import AblationConfig, DataConfig

NAME = "ablate"
HELP = "ablate mined neuron sets (and random sets of the same shape) and measure the effect"
DataFlags = without(DataConfig, "seed")  # one --seed (Common's) seeds both sections
AblationFlags = without(AblationConfig, "seed")

log = logging.getLogger(__name__)


@dataclass
class Args(Common):
    """Causal test of neurons.json: on held-out questions, zero (or mean-ablate, scale, hold at a
    constant, or gate with gates learned per set on the train split: --mode) each set in --sets and
    --n-random random sets with the same per-layer counts, and measure the change in gold-answer
    log-prob (teacher forced) and in accuracy (greedy generation, the extracted answer) under
    relevant-only and noisy contexts. Writes OUT/ablation.json and prints a table with bootstrap 95%
    intervals and the difference against the random controls.
    """

    model: ModelName
    neurons: NeuronsFile
    out: OutDir
    plot: bool = True  # Write PNG plots of the effects next to ablation.json.
    # Which QA data, how it is split, and how prompts are built.
    data: Flat[DataFlags] = field(default_factory=DataFlags)
    # The causal test: which sets, how they are ablated, and the random controls.
    ablation: Flat[AblationFlags] = field(default_factory=AblationFlags)


def run(args: Args) -> int:
    from neurorit_lens.ablation.measure import run_ablation
    from neurorit_lens.io import write_run_metadata
    from neurorit_lens.neurons.output import MiningOutput

    data_cfg = config_of(args.data, seed=args.seed)
    cfg = config_of(args.ablation, seed=args.seed)
    neurons_path = Path(args.neurons)
    if not neurons_path.is_file():
        raise FileNotFoundError(f"neuron file not found: {neurons_path}")
    t0 = time.time()
    model = load_model(args.model, args.device)
    mined = MiningOutput.load(neurons_path, model)  # rejects a file from another model
    if mined.meta.site and mined.meta.site != cfg.site:
        log.warning("neurons were mined at site %r but --site is %r", mined.meta.site, cfg.site)
    examples = load_examples(data_cfg)
    means = mined.answer_means if cfg.mode == "constant" else None  # mining's answer-position means, where stored
    train = load_examples(dataclasses.replace(data_cfg, split="train")) if cfg.mode == "gate" else None
    res = run_ablation(model, examples, mined.sets, cfg, data_cfg, show_progress=args.progress, means=means,
                       meta={"model": args.model, "neurons": str(neurons_path), "n_examples": len(examples)},
                       train_examples=train, gate_dir=Path(args.out) / "gates")
    res.meta["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    path = res.save(out)
    write_run_metadata(out, data_cfg.seed, command="ablate", model=args.model)
    if args.plot:
        _plot(res, out)
    print(res.table())
    print(f"\nwrote {path}")
    return 0


def _plot(res, out: Path) -> None:
    from neurorit_lens.ablation.result import METRICS

    try:
        from neurorit_lens.viz.plots import plot_ablation_effects
    except ImportError:  # plotting is optional
        log.info("matplotlib is not installed: no ablation plots")
        return
    for metric in METRICS:
        if any(r.metric == metric and r.n > 0 for r in res.rows):
            plot_ablation_effects(res.to_dict(), metric=metric, save=out / f"ablation_{metric}.png")
