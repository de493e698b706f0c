"""`neurorit mine`: attribute MLP neurons under relevant and irrelevant contexts, write the five sets."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from neurorit_lens.cli.common import (
    DEFAULT_MODEL,
    Common,
    Flat,
    Launch,
    ModelName,
    OutDir,
    config_of,
    load_examples,
    load_model,
    without,
    write_config,
)
from neurorit_lens.config import DataConfig, MiningConfig

NAME = "mine"
HELP = "mine relevant/irrelevant-context MLP neurons (IG, joint IG or grad x act) and write neurons.json"

DataFlags = without(DataConfig, "seed")  # --seed is Common's

log = logging.getLogger("neurorit_lens")


@dataclass
class Args(Common):
    """Build each example's relevant-context (R) and irrelevant-context (I) prompts, score every
    MLP neuron's contribution to the gold answer's log-prob (--method ig: per-layer Integrated
    Gradients, the paper's method; ig_joint: IG over all layers at once; grad_x_act: one
    backward pass), select neurons per condition (threshold t * max kept in >= p of the
    examples, or top-k) and write OUT/neurons.json with R, I, R_excl = R - I, I_excl = I - R,
    shared = R & I, the raw scores OUT/scores_{R,I}.safetensors and per-example scores under
    OUT/scores/ (an interrupted run resumes from them). Mining uses the train split by default.
    """

    model: ModelName = DEFAULT_MODEL
    out: OutDir = "runs/mine"
    # Reuse the per-example scores already in OUT/scores (same model, settings and tokens).
    resume: bool = True
    # Process examples[RANK::WORLD] only, writing per-example scores and no neurons.json.
    shard: Annotated[str | None, tyro.conf.arg(metavar="RANK/WORLD")] = None
    # Which QA data, how it is split, and how prompts are built.
    data: Flat[DataFlags] = field(default_factory=lambda: DataFlags(split="train"))
    # Attribution of the answer to neurons, and the selection of the sets.
    mining: Flat[MiningConfig] = field(default_factory=MiningConfig)
    # Process-group settings when launched with torchrun.
    launch: Flat[Launch] = field(default_factory=Launch)


def _parse_shard(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        rank, world = (int(x) for x in s.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like RANK/WORLD (e.g. 0/4), got {s!r}") from None
    return rank, world


def run(args: Args) -> int:
    from neurorit_lens.distributed.process import dist_env, distributed_session

    if dist_env() is not None and args.shard is None:  # launched by torchrun: shard, all-reduce, rank 0 writes
        with distributed_session(args.launch.config()):
            return _run(args)
    return _run(args)


def _run(args: Args) -> int:
    from neurorit_lens.distributed.mining import mine_distributed
    from neurorit_lens.distributed.process import is_distributed, is_main_process, rank_device
    from neurorit_lens.neurons.mining import mine

    data_cfg, cfg = config_of(args.data, seed=args.seed), config_of(args.mining)
    shard = _parse_shard(args.shard)
    out = Path(args.out)
    write_config(out, NAME, data_cfg.seed, {"model": args.model, "device": args.device, "data": data_cfg.to_dict(),
                                            "mining": cfg.to_dict(), "shard": args.shard}, write=is_main_process())
    device = rank_device(args.device)
    examples = load_examples(data_cfg)
    model = load_model(args.model, device)
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
