"""`neurorit train`: Neuro-RIT two-stage tuning or a baseline, saved as a loadable model folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from neurorit_lens.cli.common import (
    Common,
    Flat,
    Launch,
    ModelName,
    OutDir,
    config_of,
    load_model,
    without,
    write_config,
)
from neurorit_lens.config import DataConfig, TrainConfig

NAME = "train"
HELP = "tune a model with Neuro-RIT (stage 1 + stage 2) or a baseline (full, layers, stage1, random, clean)"
DataFlags = without(DataConfig, "split", "seed")  # training uses the train and dev splits; --seed is Common's
TrainFlags = without(TrainConfig, "seed")  # one --seed seeds both sections

log = logging.getLogger(__name__)
NO_NEURONS = ("full", "clean")  # methods that train without a neurons.json


@dataclass
class Args(Common):
    """Split the QA data by question (train/dev), build noisy-context training examples
    (relevant passages among irrelevant ones at --noise-ratios, plus --irrelevant-only-fraction
    irrelevant-only contexts, whose target --irrelevant-target sets) and train with --method:
    neurorit (stage 1: the R_excl neurons' own weights trained; I_excl is switched off only
    with --deactivation zero|scale|constant|gate, and the default, none, switches nothing off;
    stage 2: the MLPs of the layers with most R_excl attribution mass), stage1, layers (stage 2's
    layers alone), random, full, or clean (every weight, as full, trained on gold-only contexts:
    the format control). Every method takes the same --steps optimizer steps and the same
    --lr-grid search on dev loss.
    Checkpoints under OUT/runs/ make a killed run resumable (--resume, the default). Writes
    OUT/model/ (load it with `--model OUT/model`), OUT/train.json and OUT/train_log.jsonl.
    """

    model: ModelName
    out: OutDir
    # neurons.json written by `neurorit mine` (required for every method but full and clean).
    neurons: str | None = None
    resume: bool = True  # Continue from the checkpoints in OUT/runs/ if present.
    # Which QA data, how it is split, and how prompts are built.
    data: Flat[DataFlags] = field(default_factory=DataFlags)
    # The training method, its schedule and budget.
    train: Flat[TrainFlags] = field(default_factory=TrainFlags)
    # Process-group settings when launched with torchrun.
    launch: Flat[Launch] = field(default_factory=Launch)


def run(args: Args) -> int:
    from neurorit_lens.distributed.process import dist_env, distributed_session

    if dist_env() is not None:  # launched by torchrun: data-parallel over the global batch, rank 0 writes
        with distributed_session(args.launch.config()):
            return _run(args)
    return _run(args)


def _neurons_path(args: Args, cfg: TrainConfig) -> Path | None:
    path = Path(args.neurons) if args.neurons else None
    if cfg.method not in NO_NEURONS:
        if path is None:
            raise ValueError(f"--method {cfg.method} needs --neurons (a neurons.json from `neurorit mine`)")
        if not path.is_file():
            raise FileNotFoundError(f"neuron file not found: {path}")
    return path


def _run(args: Args) -> int:
    from neurorit_lens.data import load_split
    from neurorit_lens.distributed.process import is_main_process, rank_device
    from neurorit_lens.neurons.output import MiningOutput
    from neurorit_lens.training.inputs import prepare_training
    from neurorit_lens.training.items import split_for_training
    from neurorit_lens.training.methods import train

    data_cfg = config_of(args.data, seed=args.seed)
    cfg = config_of(args.train, seed=args.seed)
    out = Path(args.out)
    neurons_path = _neurons_path(args, cfg)
    t0 = time.time()
    device = rank_device(args.device)
    model = load_model(args.model, device)
    # rejects a file from another model, and a constant deactivation without answer means, before training
    mined = MiningOutput.load(neurons_path, model) if neurons_path is not None else None
    inputs = prepare_training(mined, cfg)
    examples = load_split(data_cfg.replace(split="all", limit=None))  # split here, by question
    train_q, dev_q = split_for_training(examples, data_cfg)
    write_config(out, NAME, data_cfg.seed, {"model": args.model, "neurons": args.neurons, "device": device,
                                            "data": data_cfg.to_dict(), "train": cfg.to_dict()},
                 write=is_main_process())
    log.info("training %s with method %s on %d train / %d dev questions of %s", args.model, cfg.method,
             len(train_q), len(dev_q), data_cfg.data)
    res = train(model, train_q, dev_q, inputs.sets, inputs.layer_mass, cfg, data_cfg, out, resume=args.resume,
                base_model=args.model, progress=args.progress, deactivation_values=inputs.deactivation_values)
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
