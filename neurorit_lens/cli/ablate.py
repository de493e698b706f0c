"""`neurorit ablate`: the causal test of mined neuron sets against random controls."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from neurorit_lens.cli.main import add_config_args, config_from_args
from neurorit_lens.config import AblationConfig, DataConfig

NAME = "ablate"
HELP = "ablate mined neuron sets (and random sets of the same shape) and measure the effect"
DESCRIPTION = (
    "Causal test of neurons.json: on held-out questions, zero (or mean-ablate, or scale) each set "
    "in --sets and --n-random random sets with the same per-layer counts, and measure the change "
    "in gold-answer log-prob (teacher forced) and in accuracy (greedy generation) under "
    "relevant-only and noisy contexts. Writes OUT/ablation.json and prints a table with "
    "bootstrap 95%% intervals and the difference against the random controls."
)

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name or path (see `neurorit eval --help`; 'tiny' for tests)")
    p.add_argument("--neurons", required=True, help="neurons.json written by `neurorit mine`")
    p.add_argument("--out", required=True, help="output folder (ablation.json, ablation plots)")
    p.add_argument("--device", default=None, help="torch device (default: the loader's choice)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write PNG plots")
    add_config_args(p, DataConfig)
    add_config_args(p, AblationConfig, exclude=("seed",))


def _load_model(name: str, device: str | None):
    from neurorit_lens.models import load_model

    try:
        return load_model(name, device=device) if device else load_model(name)
    except TypeError:  # a loader without a device argument
        model = load_model(name)
        return model.to(device) if device else model


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.ablation.measure import run_ablation
    from neurorit_lens.data import load_split
    from neurorit_lens.io import read_json, write_run_metadata
    from neurorit_lens.neurons.sets import load_neuron_sets

    data_cfg = config_from_args(args, DataConfig)
    cfg = config_from_args(args, AblationConfig, seed=data_cfg.seed)
    neurons_path = Path(args.neurons)
    if not neurons_path.is_file():
        raise FileNotFoundError(f"neuron file not found: {neurons_path}")
    t0 = time.time()
    model = _load_model(args.model, args.device)
    sets = load_neuron_sets(neurons_path, model)  # rejects a file from another model
    meta = read_json(neurons_path).get("meta") or {}
    mined_site = meta.get("site") or (meta.get("config") or {}).get("site")
    if mined_site and mined_site != cfg.site:
        log.warning("neurons were mined at site %r but --site is %r", mined_site, cfg.site)
    examples = load_split(data_cfg)
    if not examples:
        raise ValueError(f"no examples in split {data_cfg.split!r} of {data_cfg.data!r}")
    res = run_ablation(model, examples, sets, cfg, data_cfg, show_progress=True,
                       meta={"model": args.model, "neurons": str(neurons_path), "n_examples": len(examples)})
    res.meta["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    path = res.save(out)
    write_run_metadata(out, data_cfg.seed, command="ablate", model=args.model)
    if args.plot:
        try:
            from neurorit_lens.viz.plots import plot_ablation_effects

            for metric in ("logprob", "accuracy"):
                if any(r.metric == metric and r.n > 0 for r in res.rows):
                    plot_ablation_effects(res.to_dict(), metric=metric, save=out / f"ablation_{metric}.png")
        except ImportError:  # plotting is optional
            pass
    print(res.table())
    print(f"\nwrote {path}")
    return 0
