"""`neurorit mine`: attribute MLP neurons under relevant and irrelevant contexts, write the five sets."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurorit_lens.cli.main import add_config_args, config_from_args
from neurorit_lens.config import DataConfig, MiningConfig

NAME = "mine"
HELP = "mine relevant/irrelevant-context MLP neurons (IG, joint IG or grad x act) and write neurons.json"
DESCRIPTION = (
    "Build each example's relevant-context (R) and irrelevant-context (I) prompts, score every "
    "MLP neuron's contribution to the gold answer's log-prob (--method ig: per-layer Integrated "
    "Gradients, the paper's method; ig_joint: IG over all layers at once; grad_x_act: one "
    "backward pass), select neurons per condition (threshold t * max kept in >= p of the "
    "examples, or top-k) and write OUT/neurons.json with R, I, R_excl = R - I, I_excl = I - R, "
    "shared = R & I, the raw scores OUT/scores_{R,I}.safetensors and per-example scores under "
    "OUT/scores/ (an interrupted run resumes from them). Mining uses the train split by default."
)

log = logging.getLogger("neurorit_lens")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="model name (smollm2-135m-instruct, gemma-3-270m, tiny, ...) or local checkpoint dir")
    p.add_argument("--out", default="runs/mine", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse per-example scores already in OUT/scores (same model, settings and tokens)")
    p.add_argument("--shard", default=None, metavar="RANK/WORLD",
                   help="process examples[RANK::WORLD] only (per-example scores; no neurons.json)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    add_config_args(p, DataConfig, defaults={"split": "train"})
    add_config_args(p, MiningConfig)
    from neurorit_lens.distributed.process import (
        DistributedConfig,  # torchrun launches: see docs/distributed.md
    )

    add_config_args(p, DistributedConfig, prefix="dist_")


def _parse_shard(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        rank, world = (int(x) for x in s.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like RANK/WORLD (e.g. 0/4), got {s!r}") from None
    return rank, world


def run(args: argparse.Namespace) -> int:
    from neurorit_lens.distributed.process import DistributedConfig, dist_env, distributed_session

    if dist_env() is not None and args.shard is None:  # launched by torchrun: shard, all-reduce, rank 0 writes
        with distributed_session(config_from_args(args, DistributedConfig, prefix="dist_")):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from neurorit_lens.data import load_split
    from neurorit_lens.distributed.mining import mine_distributed
    from neurorit_lens.distributed.process import is_distributed, is_main_process, rank_device
    from neurorit_lens.io import atomic_write_json, write_run_metadata
    from neurorit_lens.models import load_model
    from neurorit_lens.neurons.mining import mine

    data_cfg = config_from_args(args, DataConfig)
    cfg = config_from_args(args, MiningConfig)
    shard = _parse_shard(args.shard)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        atomic_write_json(out / "config.json", {"command": NAME, "model": args.model, "device": args.device,
                                                "data": data_cfg.to_dict(), "mining": cfg.to_dict(),
                                                "shard": args.shard})
        write_run_metadata(out, data_cfg.seed, command=NAME, model=args.model, device=args.device)
    args.device = rank_device(args.device)
    examples = load_split(data_cfg)
    if not examples:
        raise ValueError(f"no examples in split {data_cfg.split!r} of {data_cfg.data!r}")
    model = load_model(args.model, device=args.device)
    log.info("mining %s on %d examples of %s (split %s), method %s, %d steps", args.model, len(examples),
             data_cfg.data, data_cfg.split, cfg.method, cfg.steps)
    if is_distributed():
        res = mine_distributed(model, examples, cfg, data_cfg, out_dir=out, resume=args.resume,
                               show_progress=args.progress, model_name=args.model)
        if not is_main_process():
            return 0
    else:
        res = mine(model, examples, cfg, data_cfg, out_dir=out, resume=args.resume, show_progress=args.progress,
                   shard=shard, model_name=args.model)
    print(f"examples: R {len(res.ids_R)}, I {len(res.ids_I)} (excluded: R {res.excluded['R']['n']}, "
          f"I {res.excluded['I']['n']}); {res.info['n_computed']} attributed, {res.info['seconds']:.1f} s")
    for name, s in res.sets.items():
        print(f"  {name:7s} {len(s):6d} neurons  per layer {s.counts_per_layer()}")
    for cond in ("R", "I"):
        print(f"  top {cond}: " + ", ".join(f"{lab} {v:.3g}" for lab, v in res.top(5, cond)))
    if shard is None or shard[1] == 1:
        print(f"wrote {out / 'neurons.json'}")
    else:
        print(f"wrote per-example scores under {out / 'scores'} (shard {shard[0]}/{shard[1]})")
    return 0
