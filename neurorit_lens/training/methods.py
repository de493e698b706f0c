"""The entry point: train a model with a method, search the learning rate, bake and export.

:func:`train` builds noisy-context items (:mod:`neurorit_lens.training.items`), plans the
method (:func:`neurorit_lens.training.plans.plan_method`: what is deactivated, what trains,
for how many steps), runs every stage of the plan with the one
:class:`neurorit_lens.training.trainer.Trainer` for every learning rate of
``TrainConfig.lr_grid`` (best final dev loss wins; its weights are reloaded from its
checkpoints, nothing is retrained), bakes the deactivation into the weights and saves the
model, ``train.json`` and ``train_log.jsonl``. Under ``torchrun`` every rank runs this
function; the trainer is data parallel and only rank 0 writes.

See :mod:`neurorit_lens.training.plans` for the table of methods.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.data.schema import QAExample
from neurorit_lens.distributed.fsdp import gather_full, is_sharded, shard_like
from neurorit_lens.distributed.process import is_main_process
from neurorit_lens.io import (
    _json_default,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    read_json,
)
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.checkpoint import TRAIN_LOG, StepOutput, log_lines
from neurorit_lens.training.items import TrainData, TrainItem, build_train_items
from neurorit_lens.training.plans import MethodPlan, bake_deactivation, full_sets, plan_method
from neurorit_lens.training.trainer import Trainer, evaluate_dev

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "bake_deactivation", "plan_method", "run_plan", "train"]


def run_plan(
    model: Model,
    plan: MethodPlan,
    train_items: Sequence[TrainItem],
    dev_items: Sequence[TrainItem] | None,
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None,
    lr: float | None = None,
    resume: bool = True,
    progress: bool = True,
    callbacks: Sequence[Callable[[StepOutput], None]] = (),
) -> list[StepOutput]:
    """Run the plan's stages in order on ``model`` (in place, hooks on, weights not baked).

    Each stage is its own trainer run (fresh AdamW) with its own checkpoint folder
    ``out_dir/<stage>/``, at the stage's own learning rate where it has one, and on its own
    schedule or its part of one shared schedule (``StagePlan.continue_from``); steps are
    numbered globally across stages.
    """
    history: list[StepOutput] = []
    offset = 0
    for st in plan.stages:
        sdir = Path(out_dir) / st.name if out_dir is not None else None
        hooks = plan.hooks(st.deactivate)
        trainer = Trainer(model, train_items, cfg, dev_items, hooks=hooks, param_masks=st.masks, out_dir=sdir,
                          steps=st.steps, lr=st.lr if st.lr is not None else lr, stage=st.name,
                          step_offset=offset, continue_from=st.continue_from, data_offset=st.data_offset,
                          penalty=st.penalty, resume=resume,
                          callbacks=callbacks, progress=progress)
        history += trainer.fit()
        offset += st.steps
    if out_dir is not None and is_main_process():
        atomic_write_text(Path(out_dir) / TRAIN_LOG, log_lines(history))
    return history


@dataclass
class TrainResult:
    """What a training run did: chosen LR, trainable parameters, final dev metrics, the log."""

    method: str
    lr: float
    lr_search: dict[str, float | None]
    steps: int
    stage_steps: dict[str, int]
    trainable_params: int
    total_params: int
    trainable_fraction: float
    target_layers: list[int]
    n_deactivated: int
    n_trained_neurons: int
    n_train_items: int
    n_dev_items: int
    seed: int
    wall_s: float
    final_dev: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    log: list[StepOutput] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["log"] = [o.to_dict() for o in self.log]
        return json.loads(json.dumps(d, default=_json_default))  # tuples -> lists, as after a JSON round trip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainResult:
        d = dict(d)
        d["log"] = [StepOutput.from_dict(o) for o in d.get("log", [])]
        return cls(**d)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainResult:
        return cls.from_dict(read_json(path))

    def top(self, k: int = 5) -> list[StepOutput]:
        """The ``k`` evaluated steps with the lowest dev loss."""
        evald = [o for o in self.log if o.dev_loss is not None]
        return sorted(evald, key=lambda o: o.dev_loss)[:k]  # type: ignore[arg-type, return-value]


def _items(examples: Sequence[QAExample] | Sequence[TrainItem], model: Model, cfg: TrainConfig,
           data_cfg: DataConfig, seed: int, what: str, gold_only: bool = False
           ) -> tuple[list[TrainItem], dict[str, Any]]:
    examples = list(examples)
    if not examples and what == "dev":
        return [], {}
    if examples and all(isinstance(e, TrainItem) for e in examples):
        return examples, {"n_items": len(examples)}  # type: ignore[return-value]
    if not all(isinstance(e, QAExample) for e in examples):
        raise ValueError(f"{what} examples must all be QAExample or all TrainItem")
    built: TrainData = build_train_items(examples, model.tokenizer, cfg, data_cfg, seed=seed,  # type: ignore[arg-type]
                                         gold_only=gold_only)
    return built.items, built.to_dict()


def train(
    model: Model,
    train_examples: Sequence[QAExample] | Sequence[TrainItem],
    dev_examples: Sequence[QAExample] | Sequence[TrainItem] | None,
    sets: Mapping[str, NeuronSet] | None,
    layer_mass: Mapping[str, Any] | None,
    cfg: TrainConfig,
    data_cfg: DataConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = True,
    save_model: bool = True,
    base_model: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[StepOutput], None]] = (),
    deactivation_values: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``cfg.method`` and export it with deactivation baked in.

    Args:
        model: the model (modified in place).
        train_examples: training questions (``QAExample``; built into noisy-context items
            by :func:`neurorit_lens.training.items.build_train_items`, gold-only items for
            ``clean``) or ready ``TrainItem`` s (used as given, whatever the method).
        dev_examples: dev questions or items (dev loss, LR search); may be ``None`` when
            ``cfg.lr_grid`` has at most one value.
        sets: neuron sets from ``neurons.json`` (``None`` is fine for ``full``).
        layer_mass: ``meta["layer_mass"]`` from ``neurons.json`` (optional).
        cfg: the training config (``cfg.method`` picks the method).
        data_cfg: prompt building for ``QAExample`` input.
        out_dir: run folder: ``runs/lr=<lr>/<stage>/`` checkpoints, ``train_log.jsonl``,
            ``train.json`` and (with ``save_model``) ``model/``.
        resume: continue interrupted runs from their checkpoints.
        save_model: write ``out_dir/model`` with :func:`neurorit_lens.models.saved.save_trained_model`.
        base_model: name recorded in the saved model's metadata.
        progress: tqdm bars.
        callbacks: called after every optimizer step.
        deactivation_values: ``[n_layers, d_mlp]`` constants of ``cfg.deactivation='constant'``
            (mining's ``answer_means``, :func:`neurorit_lens.neurons.mining.load_answer_means`).

    Returns:
        A :class:`TrainResult` (also written to ``out_dir/train.json``).

    Under ``torchrun`` with FSDP2 (``full``, ``clean``; ``TrainConfig.sharding``) ``model`` stays
    sharded after the call; ``out_dir/model`` holds its full weights, gathered to rank 0.
    """
    t0 = time.perf_counter()
    data_cfg = data_cfg or DataConfig()
    train_items, train_info = _items(train_examples, model, cfg, data_cfg, cfg.seed, "train",
                                     gold_only=cfg.method == "clean")
    dev_items, dev_info = _items(dev_examples or [], model, cfg, data_cfg, cfg.seed + 1, "dev")
    dev_items = dev_items[: cfg.max_dev_items]
    lrs = list(cfg.lr_grid) or [cfg.lr]
    if len(lrs) > 1 and not dev_items:
        raise ValueError("a learning-rate search (lr_grid with several values) needs dev examples")
    plan = plan_method(model, cfg.method, sets, layer_mass, cfg, deactivation_values)
    log.info("method %s: %d trainable parameters (%.2f%% of %d), target layers %s", cfg.method,
             plan.trainable_params, 100 * plan.trainable_fraction, plan.total_params, plan.target_layers)
    root = Path(out_dir) if out_dir is not None else None
    run = functools.partial(run_plan, model, plan, train_items, dev_items, cfg)
    best, search, history = _search_lr(model, plan, run, lrs, root, resume, progress, callbacks)
    plan.bake(model)
    result = TrainResult(
        method=cfg.method, lr=best, lr_search=search, steps=sum(s.steps for s in plan.stages),
        stage_steps={s.name: s.steps for s in plan.stages}, **_plan_counts(plan), n_train_items=len(train_items),
        n_dev_items=len(dev_items), seed=cfg.seed, wall_s=time.perf_counter() - t0,
        final_dev=evaluate_dev(model, dev_items, cfg.batch_size) if dev_items else {},
        data={"train": train_info, "dev": dev_info}, config=cfg.to_dict(), environment=environment_info(cfg.seed),
        log=history)
    # FSDP2 shards: every rank joins the gathers, rank 0 gets the full weights to save
    weights = gather_full(model.named_parameters()) if root is not None and save_model and is_sharded(model) else None
    if root is not None and is_main_process():  # under torchrun only rank 0 writes
        _write_outputs(root, model, plan, sets, cfg, result, save_model, base_model, weights)
        result.wall_s = time.perf_counter() - t0
        result.save(root / "train.json")
    return result


def _plan_counts(plan: MethodPlan) -> dict[str, Any]:
    return {"trainable_params": plan.trainable_params, "total_params": plan.total_params,
            "trainable_fraction": plan.trainable_fraction, "target_layers": plan.target_layers,
            "n_deactivated": len(plan.deactivated), "n_trained_neurons": len(plan.trained_neurons)}


def _run_dir(root: Path | None, lr: float) -> Path | None:
    return root / "runs" / f"lr={lr:g}" if root is not None else None


def _search_lr(model: Model, plan: MethodPlan, run: Callable[..., list[StepOutput]], lrs: list[float],
               root: Path | None, resume: bool, progress: bool,
               callbacks: Sequence[Callable[[StepOutput], None]]
               ) -> tuple[float, dict[str, float | None], list[StepOutput]]:
    """Run the plan once per learning rate from the same start; ``(best lr, final dev loss per lr, its log)``.

    The best run (lowest final dev loss; NaN or missing last) is not the last one run, so its
    weights are restored: reloaded from its complete checkpoints, or retrained without an
    ``out_dir``.
    """
    params = dict(model.named_parameters())
    snapshot = {n: params[n].detach().clone() for n in plan.union_masks} if len(lrs) > 1 else {}
    search: dict[str, float | None] = {}
    histories: dict[float, list[StepOutput]] = {}
    for i, lr in enumerate(lrs):
        if i > 0:
            _restore(model, snapshot)
        histories[lr] = run(_run_dir(root, lr), lr, resume, progress, callbacks)
        dev = [o.dev_loss for o in histories[lr] if o.dev_loss is not None]
        search[f"{lr:g}"] = dev[-1] if dev else None
    best = lrs[0]
    if len(lrs) > 1:
        best = min(lrs, key=lambda lr: _nan_last(search[f"{lr:g}"]))
        if best != lrs[-1]:
            _restore(model, snapshot)
            if root is None:
                histories[best] = run(None, best, False, progress)
            else:  # every stage of that run is complete on disk: this reloads its final weights
                histories[best] = run(_run_dir(root, best), best, True, False)
    return best, search, histories[best]


def _write_outputs(root: Path, model: Model, plan: MethodPlan, sets: Mapping[str, NeuronSet] | None,
                   cfg: TrainConfig, result: TrainResult, save_model: bool, base_model: str | None,
                   weights: Mapping[str, torch.Tensor] | None = None) -> None:
    """``root/train_log.jsonl`` and (with ``save_model``) ``root/model`` with its neuron sets and metadata
    (``weights``: the full weights of a sharded ``model``)."""
    atomic_write_text(root / TRAIN_LOG, log_lines(result.log))
    if not save_model:
        return
    from neurorit_lens.models.saved import save_trained_model

    out_sets = {**full_sets(sets), "deactivated": plan.deactivated, "trained_neurons": plan.trained_neurons}
    save_trained_model(model, root / "model", sets=out_sets, train_log=result.log, tensors=weights, extra={
        "base_model": base_model, "method": cfg.method, "lr": result.lr, "steps": result.steps,
        "trainable_params": result.trainable_params, "trainable_fraction": result.trainable_fraction,
        "target_layers": result.target_layers, "seed": cfg.seed, "train_config": cfg.to_dict()})


def _restore(model: Model, snapshot: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())  # read anew: FSDP2 replaces them when the first run shards the model
    with torch.no_grad():
        for n, t in snapshot.items():
            params[n].copy_(shard_like(t, params[n]))


def _nan_last(x: float | None) -> float:
    return float("inf") if x is None or math.isnan(x) else x
