"""Worker side of the 2-process gloo tests (imported by spawned processes, not collected).

Each task is a plain function that runs the same code in one process (no process group:
every helper of :mod:`neurorit_lens.distributed` is then a no-op) and in every rank of a
job, and returns something picklable; the test compares the two.
"""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind only, no connect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- tasks ---------------------------------------------------------------------------------
class FakeStats:
    """Stand-in with the additive fields of ``selection.SelectionStats``."""

    def __init__(self, rank: int, n_layers: int = 3, d_mlp: int = 5):
        self.n_examples = 2 + rank
        self.keep_count = torch.arange(n_layers * d_mlp, dtype=torch.int64).view(n_layers, d_mlp) * (rank + 1)
        self.score_sum = torch.full((n_layers, d_mlp), 0.5, dtype=torch.float32) * (rank + 1)


def task_stats(out_dir: Path | None = None) -> dict[str, Any]:
    from neurorit_lens.distributed.collectives import all_reduce_additive
    from neurorit_lens.distributed.process import get_rank

    s = all_reduce_additive(FakeStats(get_rank()))
    return {"n_examples": s.n_examples, "keep_count": s.keep_count, "score_sum": s.score_sum}


GLOBAL_BATCH = [
    ("The capital of Zarnia is", " Velmor"),
    ("Question: Who wrote the report? Answer:", " Alice wrote it"),
    ("The river Quell flows", " north"),
    ("The tallest tower in Brindle is the", " Sorrel Spire is 300 metres tall"),
]


def tiny_model_for_check():
    from neurorit_lens.models import tiny_model

    return tiny_model(n_layers=2, d_mlp=64, seed=3)


def manual_training(out_dir: Path | None = None, steps: int = 4, lr: float = 1e-2) -> dict[str, Any]:
    """A minimal masked SFT loop on the tiny model with :class:`GradientSync`.

    Each rank takes its strided slice of the global batch, normalises its summed token
    loss by the global answer-token count, and gradients are summed across ranks.
    """
    from neurorit_lens.distributed.collectives import (
        GradientSync,
        all_reduce_scalar,
        global_token_count,
    )
    from neurorit_lens.distributed.process import get_rank, get_world_size, local_batch_slice
    from neurorit_lens.objective import token_logprobs, tokenize_with_answers

    model = tiny_model_for_check()
    mask = torch.zeros(model.cfg.d_model, model.cfg.d_mlp)
    mask[:, :8] = 1.0  # neuron-level: only the first 8 neurons' input columns
    w_in = model.blocks[0].mlp.W_in
    w_out = model.blocks[1].mlp.W_out
    for p in (w_in, w_out):
        p.requires_grad_(True)
    handle = w_in.register_hook(lambda g: g * mask)
    params = [w_in, w_out]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sync = GradientSync(model.parameters(), average=False)
    items = local_batch_slice(GLOBAL_BATCH, get_rank(), get_world_size())
    batch = tokenize_with_answers(model, [p for p, _ in items], [a for _, a in items])
    n_global = global_token_count(batch.answer_mask.sum())
    losses = []
    try:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = -token_logprobs(model(batch.tokens), batch).sum() / n_global
            loss.backward()
            sync()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(all_reduce_scalar(loss.item()))
    finally:
        handle.remove()
    return {"losses": losses, "w_in": w_in.detach().clone(), "w_out": w_out.detach().clone(),
            "n_global": n_global, "n_sync_params": len(sync.params)}


def trainer_run(out_dir: Path | None = None) -> dict[str, Any]:
    """Stage-1-like run of the real Trainer (hooks + neuron masks + accumulation + clipping).

    The same class in a process group (data parallel) and in one process. Global batch =
    ``batch_size * grad_accum`` = 4 items of unequal answer length.
    """
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.hooks import zero_ablation
    from neurorit_lens.neuron_sets import NeuronSet
    from neurorit_lens.training.items import TrainItem
    from neurorit_lens.training.masks import neuron_param_masks
    from neurorit_lens.training.trainer import Trainer

    model = tiny_model_for_check()
    items = [TrainItem(p, a, id=str(i)) for i, (p, a) in enumerate(GLOBAL_BATCH)]
    cfg = TrainConfig(steps=4, batch_size=2, grad_accum=2, warmup_steps=1, lr=2e-2, max_grad_norm=0.5,
                      weight_decay=0.01, checkpoint_every=2, seed=1)
    masks = neuron_param_masks(model, NeuronSet({0: list(range(10)), 1: [3, 4, 5]}))
    hooks = zero_ablation(NeuronSet({0: [20, 21], 1: [30]}))
    trainer = Trainer(model, items, cfg, dev_items=items[:3], hooks=hooks, param_masks=masks,
                              out_dir=out_dir, progress=False)
    log = trainer.fit()
    return {"log": [o.to_dict() for o in log], "world_size": trainer.world_size,
            "params": {n: p.detach().clone() for n, p in model.named_parameters() if n in masks},
            "files": sorted(x.name for x in out_dir.iterdir()) if out_dir and out_dir.exists() else []}


def fsdp_training(out_dir: Path | None = None, steps: int = 3, lr: float = 1e-2) -> dict[str, Any]:
    """Layer-level training (the whole MLP of block 1, as in stage 2) with the model sharded by FSDP2.

    (Attention key biases are left out on purpose: their true gradient is 0 (softmax shift
    invariance), so Adam turns float noise into full-size steps that differ between runs.)
    """
    return _fsdp_run(lambda n: n.startswith("blocks.1.mlp."), steps, lr, checkpointing=False)


def fsdp_full_training(out_dir: Path | None = None, steps: int = 3, lr: float = 1e-3) -> dict[str, Any]:
    """``full`` sharded by FSDP2: every parameter but the attention key biases (see above), with
    activation checkpointing per block (:mod:`neurorit_lens.training.recompute`) on top."""
    return _fsdp_run(lambda n: not n.endswith("attn.b_K"), steps, lr, checkpointing=True)


def _fsdp_run(trains, steps: int, lr: float, checkpointing: bool) -> dict[str, Any]:
    from neurorit_lens.distributed.collectives import (
        all_reduce_scalar,
        global_token_count,
        shard_model_fsdp,
    )
    from neurorit_lens.distributed.process import get_rank, get_world_size, local_batch_slice
    from neurorit_lens.hooks import neuron_hooks, zero_ablation
    from neurorit_lens.neuron_sets import NeuronSet
    from neurorit_lens.objective import token_logprobs, tokenize_with_answers
    from neurorit_lens.training.recompute import checkpointed_blocks

    model = tiny_model_for_check()
    names = [n for n, _ in model.named_parameters() if trains(n)]
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    shard_model_fsdp(model, sum_gradients=True)
    params = [p for n, p in model.named_parameters() if n in names]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    items = local_batch_slice(GLOBAL_BATCH, get_rank(), get_world_size())
    batch = tokenize_with_answers(model, [p for p, _ in items], [a for _, a in items])
    n_global = global_token_count(batch.answer_mask.sum())
    losses = []
    with neuron_hooks(model, zero_ablation(NeuronSet({0: [20, 21]}))), checkpointed_blocks(model, checkpointing):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = -token_logprobs(model(batch.tokens), batch).sum() / n_global
            loss.backward()
            opt.step()
            losses.append(all_reduce_scalar(loss.item()))
    sharded = any(type(p).__name__ == "DTensor" for p in params)
    full = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in model.named_parameters() if n in names}
    return {"losses": losses, "sharded": sharded, "params": full}


class StopTraining(Exception):
    """Raised by a callback to stop a run after a checkpoint (a killed job, on every rank at once)."""


FULL_CFG = dict(method="full", steps=4, batch_size=2, grad_accum=2, warmup_steps=1, lr=1e-3, max_grad_norm=0.5,
                weight_decay=0.01, checkpoint_every=2, eval_every=2, seed=1)


def full_train(out_dir: Path, model=None, callbacks=()):
    """``full`` through the real entry (:func:`neurorit_lens.training.methods.train`, default
    ``sharding="auto"``: FSDP2 in a process group, plain in one process): a global batch of 4
    items (2 x 2 accumulated), clipping, weight decay, a checkpoint every 2 steps; rank 0
    writes ``out_dir/model``. Returns the :class:`TrainResult`."""
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.training.items import TrainItem
    from neurorit_lens.training.methods import train

    items = [TrainItem(p, a, id=str(i)) for i, (p, a) in enumerate(GLOBAL_BATCH)]
    model = tiny_model_for_check() if model is None else model
    return train(model, items, items[:3], None, None, TrainConfig(**FULL_CFG), out_dir=out_dir, progress=False,
                 callbacks=callbacks)


def full_train_run(out_dir: Path, resume_check: bool = True) -> dict[str, Any]:
    """:func:`full_train` in ``out_dir/whole``; with ``resume_check`` also in ``out_dir/resumed``
    stopped after step 2 (rank 0 copies that folder to ``out_dir/stopped``) and resumed on a
    fresh model; and the error for entry-level masks under FSDP2."""
    import shutil

    from neurorit_lens.config import TrainConfig
    from neurorit_lens.distributed.fsdp import is_dtensor, is_sharded
    from neurorit_lens.distributed.process import get_rank
    from neurorit_lens.neuron_sets import NeuronSet
    from neurorit_lens.training.masks import neuron_param_masks
    from neurorit_lens.training.trainer import Trainer

    out_dir = Path(out_dir)
    model = tiny_model_for_check()
    res = full_train(out_dir / "whole", model)
    out: dict[str, Any] = {"log": [o.to_dict() for o in res.log], "sharded": is_sharded(model),
                           "dtensor": all(is_dtensor(p) for p in model.parameters())}
    if resume_check:
        def stop(o) -> None:
            if o.step == 2:
                raise StopTraining

        try:
            full_train(out_dir / "resumed", callbacks=[stop])
        except StopTraining:
            pass
        if get_rank() == 0:  # the step-2 checkpoint, for resuming it elsewhere
            shutil.copytree(out_dir / "resumed", out_dir / "stopped")
        out["resumed_log"] = [o.to_dict() for o in full_train(out_dir / "resumed").log]
    try:  # entry-level masks cannot be sharded: a clear error in a process group (none in one process)
        Trainer(tiny_model_for_check(), GLOBAL_BATCH, TrainConfig(**{**FULL_CFG, "sharding": "fsdp"}),
                param_masks=neuron_param_masks(tiny_model_for_check(), NeuronSet({0: [1, 2]})), progress=False)
        out["masked_error"] = None
    except ValueError as e:
        out["masked_error"] = str(e)
    return out


MINE_EXAMPLES = 5  # odd: the shards are uneven


def mining_setup():
    from neurorit_lens.config import DataConfig, MiningConfig
    from neurorit_lens.data import embedded_examples

    model = tiny_model_for_check()
    examples = embedded_examples()[:MINE_EXAMPLES]
    cfg = MiningConfig(method="ig", steps=2, alpha_chunk=2, threshold=0.3, frequency=0.4)
    return model, examples, cfg, DataConfig(max_prompt_tokens=256)  # 128 would drop every passage


def mining_run(out_dir: Path | None = None) -> dict[str, Any]:
    """Distributed mining in a process group; plain ``mine`` in one process."""
    from neurorit_lens.distributed.mining import mine_distributed

    model, examples, cfg, data_cfg = mining_setup()
    res = mine_distributed(model, examples, cfg, data_cfg, out_dir=out_dir, show_progress=False, model_name="tiny")
    return {"sets": {k: v.to_dict() for k, v in res.sets.items()}, "ids_R": res.ids_R, "ids_I": res.ids_I,
            "scores_R": res.scores_R, "scores_I": res.scores_I, "keep_R": res.stats_R.keep_count,
            "keep_I": res.stats_I.keep_count, "sum_R": res.stats_R.score_sum, "n_R": res.stats_R.n_examples,
            "info": res.info,
            "files": sorted(x.name for x in out_dir.iterdir()) if out_dir and out_dir.exists() else []}


TASKS = {"mine": mining_run, "fsdp": fsdp_training, "fsdp_full": fsdp_full_training, "stats": task_stats,
         "manual_training": manual_training,
         "trainer": trainer_run, "full_train": full_train_run}


# --- process entry -------------------------------------------------------------------------
def worker(rank: int, world_size: int, port: int, out_dir: str, task_names: list[str]) -> None:
    """``torch.multiprocessing.spawn`` target: open gloo on loopback, run tasks, save results."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from neurorit_lens.distributed.process import (
        DistributedConfig,
        destroy_distributed,
        init_distributed,
    )

    init_distributed(DistributedConfig(backend="gloo", timeout_s=120))
    results: dict[str, Any] = {}
    try:
        for name in task_names:
            try:
                results[name] = TASKS[name](Path(out_dir) / name)
            except Exception:
                results[name] = {"error": traceback.format_exc()}
                raise
    finally:
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        destroy_distributed()


def run_spawned(world_size: int, out_dir: str | Path, task_names: list[str], timeout_s: float = 240,
                start_method: str = "fork") -> list[dict[str, Any]]:
    """Run ``task_names`` in ``world_size`` gloo processes; the list of each rank's results.

    ``fork`` by default: the children inherit the already imported torch/TransformerLens
    (a fresh interpreter per rank costs ~15 s of imports on a loaded 2-core machine).
    """
    import torch.multiprocessing as mp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.start_processes(worker, args=(world_size, free_port(), str(out_dir), task_names),
                             nprocs=world_size, join=False, start_method=start_method)
    import time

    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"distributed workers did not finish in {timeout_s} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
