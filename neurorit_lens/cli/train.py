"""`neurorit train`: Neuro-RIT two-stage tuning or a baseline, saved as a loadable model folder."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from neurorit_lens.cli.main import add_config_args, config_from_args
from neurorit_lens.config import DataConfig, TrainConfig

NAME = "train"
HELP = "tune a model with Neuro-RIT (stage 1 + stage 2) or a baseline (full, layers, stage1, random)"
DESCRIPTION = (
    "Split the QA data by question (train/dev), build noisy-context training examples "
    "(relevant passages among irrelevant ones at --noise-ratios, plus --irrelevant-only-fraction "
    "irrelevant-only contexts; target: the gold answer) and train with --method: neurorit "
    "(stage 1: I_excl deactivated, R_excl neurons' own weights trained; stage 2: MLP of the "
    "layers with most R_excl attribution mass), stage1, layers, random or full. Every method "
    "takes the same --steps optimizer steps and the same --lr-grid search on dev loss. "
    "Checkpoints under OUT/runs/ make a killed run resumable (--resume, the default). Writes "
    "OUT/model/ (load it with `--model OUT/model`), OUT/train.json and OUT/train_log.jsonl."
)

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name or path ('tiny' for tests; see `neurorit eval --help`)")
    p.add_argument("--neurons", default=None,
                   help="neurons.json written by `neurorit mine` (required for every method but full)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the checkpoints in OUT/runs/ if present")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    add_config_args(p, DataConfig, exclude=("split",))  # training uses the train and dev splits
    add_config_args(p, TrainConfig, exclude=("seed",))  # one --seed (DataConfig's) seeds both
    from neurorit_lens.distributed.process import (
        DistributedConfig,  # torchrun launches: see docs/distributed.md
    )

    add_config_args(p, DistributedConfig, prefix="dist_")


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.distributed.process import DistributedConfig, dist_env, distributed_session

    if dist_env() is not None:  # launched by torchrun: data-parallel over the global batch, rank 0 writes
        with distributed_session(config_from_args(args, DistributedConfig, prefix="dist_")):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from neurorit_lens.data import load_split
    from neurorit_lens.distributed.process import is_main_process, rank_device
    from neurorit_lens.io import atomic_write_json, read_json, write_run_metadata
    from neurorit_lens.models import load_model
    from neurorit_lens.neurons.sets import load_neuron_sets
    from neurorit_lens.training.items import split_for_training
    from neurorit_lens.training.methods import train

    data_cfg = config_from_args(args, DataConfig)
    cfg = config_from_args(args, TrainConfig, seed=data_cfg.seed)
    out = Path(args.out)
    neurons_path = Path(args.neurons) if args.neurons else None
    if cfg.method != "full":
        if neurons_path is None:
            raise ValueError(f"--method {cfg.method} needs --neurons (a neurons.json from `neurorit mine`)")
        if not neurons_path.is_file():
            raise FileNotFoundError(f"neuron file not found: {neurons_path}")
    t0 = time.time()
    args.device = rank_device(args.device)
    model = load_model(args.model, device=args.device)
    sets, layer_mass = None, None
    if neurons_path is not None:
        sets = load_neuron_sets(neurons_path, model)  # rejects a file from another model, before training
        layer_mass = (read_json(neurons_path).get("meta") or {}).get("layer_mass")
    examples = load_split(data_cfg.replace(split="all", limit=None))  # split here, by question
    train_q, dev_q = split_for_training(examples, data_cfg)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        atomic_write_json(out / "config.json", {"command": NAME, "model": args.model, "neurons": args.neurons,
                                                "device": args.device, "data": data_cfg.to_dict(),
                                                "train": cfg.to_dict()})
        write_run_metadata(out, data_cfg.seed, command=NAME, model=args.model, device=args.device)
    log.info("training %s with method %s on %d train / %d dev questions of %s", args.model, cfg.method,
             len(train_q), len(dev_q), data_cfg.data)
    res = train(model, train_q, dev_q, sets, layer_mass, cfg, data_cfg, out, resume=args.resume,
                base_model=args.model, progress=args.progress)
    res.wall_s = time.time() - t0
    if not is_main_process():
        return 0
    res.save(out / "train.json")
    print(f"method {res.method}: lr {res.lr:g}, {res.steps} steps, trainable {res.trainable_params:,} "
          f"of {res.total_params:,} parameters ({100 * res.trainable_fraction:.2f}%), target layers "
          f"{res.target_layers}, final dev loss {res.final_dev.get('dev_loss', float('nan')):.4f}, "
          f"{res.wall_s:.0f} s")
    print(f"wrote {out / 'model'} and {out / 'train.json'}")
    return 0
