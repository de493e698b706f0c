"""Neuro-RIT's two stages and the baselines, as configurations of one trainer.

Every method trains on the same noisy-context data, for the same total number of
optimizer steps, with the same learning-rate search (``TrainConfig.lr_grid``, best final
dev loss wins), in :class:`neurorit_lens.training.trainer.Trainer`. They differ only in what is
deactivated (zeroed by a hook) and what is trainable (a parameter mask):

=========  ==========================================  =============================================
method     deactivated (hook, then baked into weights)  trainable
=========  ==========================================  =============================================
stage1     ``I_excl``                                   parameters of the ``R_excl`` neurons
neurorit   ``I_excl``                                   stage 1, then stage 2: whole MLP (and with
                                                        ``train_attention`` attention) of the target
                                                        layers; ``stage1_fraction`` of the steps in
                                                        stage 1, the rest in stage 2
layers     nothing                                      the same target layers as neurorit's stage 2
random     random neurons, ``I_excl``'s per-layer       random neurons with ``R_excl``'s per-layer
           counts                                       counts (seeded, disjoint from both real sets)
full       nothing                                      every parameter (RetRobust-style)
=========  ==========================================  =============================================

Target layers (stage 2): layers ranked by ``R_excl`` attribution mass
(``neurons.json`` ``meta["layer_mass"]["R_excl"]``; per-layer ``R_excl`` counts when the
mass is absent); ``k`` is ``TrainConfig.n_target_layers`` when set, otherwise the ``k``
whose trainable parameters (stage 1 and stage 2 together) are nearest to
``TrainConfig.target_fraction`` of the model's parameters (ties: the smaller ``k``).

Export: the deactivated neurons' ``W_out`` rows, ``W_in`` columns, ``b_in`` entries (and
``W_gate`` columns) are set to zero (:func:`bake_deactivation`), so the saved model needs
no hook and gives the same logits as the hooked one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import torch

from neurorit_lens.config import DataConfig, TrainConfig, TrainMethod
from neurorit_lens.data.schema import QAExample
from neurorit_lens.distributed.process import is_main_process
from neurorit_lens.distributed.training import (
    trainer_class,  # DistributedTrainer under torchrun, else Trainer
)
from neurorit_lens.hooks import zero_ablation
from neurorit_lens.io import (
    _json_default,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    read_json,
)
from neurorit_lens.neurons.sets import NeuronSet, exclusive_sets
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.items import TrainData, TrainItem, build_train_items
from neurorit_lens.training.masks import (
    ParamMasks,
    count_trainable,
    layer_param_masks,
    merge_masks,
    neuron_param_entries,
    neuron_param_masks,
    total_params,
)
from neurorit_lens.training.trainer import TRAIN_LOG, StepOutput, Trainer, evaluate_dev  # noqa: F401  (Trainer: public name)

log = logging.getLogger(__name__)

METHODS = get_args(TrainMethod)


@dataclass
class StagePlan:
    """One trainer run: its name, what it deactivates, what it trains, for how many steps."""

    name: str
    deactivate: NeuronSet
    masks: ParamMasks
    steps: int


@dataclass
class MethodPlan:
    """The stages of one method and what they add up to."""

    method: str
    stages: list[StagePlan]
    deactivated: NeuronSet
    trained_neurons: NeuronSet
    target_layers: list[int]
    trainable_params: int
    total_params: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params

    @property
    def union_masks(self) -> ParamMasks:
        return merge_masks(*(s.masks for s in self.stages))

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "stages": {s.name: s.steps for s in self.stages},
                "target_layers": self.target_layers, "n_deactivated": len(self.deactivated),
                "n_trained_neurons": len(self.trained_neurons), "trainable_params": self.trainable_params,
                "total_params": self.total_params, "trainable_fraction": self.trainable_fraction}


# --- choosing what to train ------------------------------------------------------------
def _full_sets(sets: Mapping[str, NeuronSet] | None) -> dict[str, NeuronSet]:
    sets = dict(sets or {})
    if ("R_excl" not in sets or "I_excl" not in sets) and "R" in sets and "I" in sets:
        sets = {**exclusive_sets(sets["R"], sets["I"]), **sets}
    return sets


def layer_ranking(
    n_layers: int, r_excl: NeuronSet | None = None, layer_mass: Mapping[str, Any] | None = None
) -> list[int]:
    """Layers ordered by ``R_excl`` attribution mass, largest first (ties: lower layer first).

    Args:
        n_layers: the model's number of layers.
        r_excl: the ``R_excl`` set (its per-layer counts are the fallback score).
        layer_mass: ``neurons.json`` ``meta["layer_mass"]``; its ``"R_excl"`` entry is a
            per-layer list of attribution mass.

    Raises:
        ValueError: when neither a mass nor a non-empty ``R_excl`` is given, or the mass
            has the wrong length.
    """
    mass = (layer_mass or {}).get("R_excl")
    if mass is not None:
        mass = [float(x) for x in mass]
        if len(mass) != n_layers:
            raise ValueError(f"layer_mass['R_excl'] has {len(mass)} entries for a model with {n_layers} layers")
        if any(math.isnan(x) for x in mass):
            raise ValueError("layer_mass['R_excl'] contains NaN")
    elif r_excl:
        counts = r_excl.counts_per_layer()
        mass = [float(counts.get(layer, 0)) for layer in range(n_layers)]
    else:
        raise ValueError("cannot choose target layers: no layer_mass['R_excl'] and no R_excl neurons")
    return sorted(range(n_layers), key=lambda layer: (-mass[layer], layer))


def select_target_layers(
    model: Model, ranking: Sequence[int], cfg: TrainConfig, base_masks: ParamMasks | None = None
) -> list[int]:
    """The ``k`` best-ranked layers, ``k`` from ``cfg`` (see module docstring).

    Args:
        model: the model (parameter counts).
        ranking: layers, best first (:func:`layer_ranking`).
        cfg: ``n_target_layers`` or ``target_fraction``, and ``train_attention``.
        base_masks: parameters trained anyway (stage 1), counted in the fraction.

    Returns:
        The chosen layers, sorted.
    """
    ranking = list(ranking)
    if cfg.n_target_layers is not None:
        if cfg.n_target_layers > len(ranking):
            raise ValueError(f"n_target_layers={cfg.n_target_layers} but the model has {len(ranking)} layers")
        return sorted(ranking[: cfg.n_target_layers])
    total = total_params(model)
    base = base_masks or {}
    best_k, best_gap = 1, float("inf")
    for k in range(1, len(ranking) + 1):
        frac = count_trainable(model,
                               merge_masks(base, layer_param_masks(model, ranking[:k], cfg.train_attention))) / total
        gap = abs(frac - cfg.target_fraction)
        if gap < best_gap - 1e-12:
            best_k, best_gap = k, gap
        if frac > cfg.target_fraction:
            break
    return sorted(ranking[:best_k])


def _split_steps(cfg: TrainConfig) -> tuple[int, int]:
    if cfg.steps < 2:
        raise ValueError("method neurorit needs steps >= 2 (stage 1 and stage 2 share them)")
    s1 = min(max(1, round(cfg.steps * cfg.stage1_fraction)), cfg.steps - 1)
    return s1, cfg.steps - s1


def plan_method(
    model: Model,
    method: str,
    sets: Mapping[str, NeuronSet] | None,
    layer_mass: Mapping[str, Any] | None,
    cfg: TrainConfig,
) -> MethodPlan:
    """Stages, masks and deactivated neurons of ``method`` (see module docstring).

    Args:
        model: the model to train.
        method: one of :data:`METHODS`.
        sets: neuron sets (``R_excl`` and ``I_excl``, or ``R`` and ``I``); unused by ``full``.
        layer_mass: ``meta["layer_mass"]`` from ``neurons.json`` (optional).
        cfg: steps, stage split, target-layer rule, seed.

    Returns:
        A :class:`MethodPlan` whose stages' steps sum to ``cfg.steps``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    total = total_params(model)
    sets = _full_sets(sets)
    empty = NeuronSet()
    if method == "full":
        masks = {n: None for n, _ in model.named_parameters()}
        st = [StagePlan("full", empty, masks, cfg.steps)]
        return MethodPlan(method, st, empty, empty, list(range(model.cfg.n_layers)), total, total)
    missing = [k for k in ("R_excl", "I_excl") if k not in sets]
    if missing and method != "layers":
        raise ValueError(f"method {method!r} needs neuron sets R_excl and I_excl (or R and I); missing {missing}")
    for s in sets.values():
        s.check_model(model)
    r_excl, i_excl = sets.get("R_excl", empty), sets.get("I_excl", empty)
    if method in ("stage1", "neurorit", "random") and not r_excl:
        raise ValueError(f"method {method!r}: R_excl is empty, so stage 1 has nothing to train")
    if method == "random":
        real = r_excl | i_excl
        trained = r_excl.random_like(model.cfg.d_mlp, seed=cfg.seed, exclude=real)
        deact = i_excl.random_like(model.cfg.d_mlp, seed=cfg.seed + 1, exclude=real | trained)
        masks = neuron_param_masks(model, trained)
        st = [StagePlan("random", deact, masks, cfg.steps)]
        return MethodPlan(method, st, deact, trained, [], count_trainable(model, masks), total)
    s1_masks = neuron_param_masks(model, r_excl) if r_excl else {}
    if method == "stage1":
        st = [StagePlan("stage1", i_excl, s1_masks, cfg.steps)]
        return MethodPlan(method, st, i_excl, r_excl, [], count_trainable(model, s1_masks), total)
    ranking = layer_ranking(model.cfg.n_layers, r_excl, layer_mass)
    layers = select_target_layers(model, ranking, cfg, s1_masks)
    s2_masks = layer_param_masks(model, layers, cfg.train_attention)
    if method == "layers":
        st = [StagePlan("layers", empty, s2_masks, cfg.steps)]
        return MethodPlan(method, st, empty, empty, layers, count_trainable(model, s2_masks), total)
    n1, n2 = _split_steps(cfg)
    st = [StagePlan("stage1", i_excl, s1_masks, n1), StagePlan("stage2", i_excl, s2_masks, n2)]
    return MethodPlan(method, st, i_excl, r_excl, layers, count_trainable(model, merge_masks(s1_masks, s2_masks)),
                      total)


@torch.no_grad()
def bake_deactivation(model: Model, neurons: NeuronSet) -> None:
    """Zero the weights of ``neurons`` in place so they are off without a hook.

    Sets their ``W_out`` rows (which alone makes the MLP output identical to zeroing
    ``hook_post``), and their ``W_in`` columns, ``b_in`` entries and ``W_gate`` columns.
    """
    neurons.check_model(model)
    params = dict(model.named_parameters())
    for layer, idx in neurons.by_layer().items():
        index = torch.as_tensor(idx, dtype=torch.long)
        for name, axis in neuron_param_entries(model, layer):
            p = params[name]
            if axis == 0:
                p[index.to(p.device)] = 0
            else:
                p[:, index.to(p.device)] = 0


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

    Each stage is its own trainer run (fresh AdamW and schedule) with its own checkpoint
    folder ``out_dir/<stage>/``; steps are numbered globally across stages.
    """
    history: list[StepOutput] = []
    offset = 0
    for st in plan.stages:
        sdir = Path(out_dir) / st.name if out_dir is not None else None
        hooks = zero_ablation(st.deactivate) if st.deactivate else []
        trainer = trainer_class()(model, train_items, cfg, dev_items, hooks=hooks, param_masks=st.masks,
                                  out_dir=sdir, steps=st.steps, lr=lr, stage=st.name, step_offset=offset,
                                  resume=resume, callbacks=callbacks, progress=progress)
        history += trainer.fit()
        offset += st.steps
    if out_dir is not None and is_main_process():
        atomic_write_text(Path(out_dir) / TRAIN_LOG, "".join(_json_line(o) for o in history))
    return history


def _json_line(o: StepOutput) -> str:
    return json.dumps(o.to_dict()) + "\n"


# --- the entry point ----------------------------------------------------------------------
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
           data_cfg: DataConfig, seed: int, what: str) -> tuple[list[TrainItem], dict[str, Any]]:
    examples = list(examples)
    if examples and all(isinstance(e, TrainItem) for e in examples):
        return examples, {"n_items": len(examples)}  # type: ignore[return-value]
    if not all(isinstance(e, QAExample) for e in examples):
        raise ValueError(f"{what} examples must all be QAExample or all TrainItem")
    built: TrainData = build_train_items(examples, model.tokenizer, cfg, data_cfg, seed=seed)  # type: ignore[arg-type]
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
) -> TrainResult:
    """Train ``model`` in place with ``cfg.method`` and export it with deactivation baked in.

    Args:
        model: the model (modified in place).
        train_examples: training questions (``QAExample``; built into noisy-context items
            by :func:`neurorit_lens.training.items.build_train_items`) or ready ``TrainItem`` s.
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

    Returns:
        A :class:`TrainResult` (also written to ``out_dir/train.json``).
    """
    t0 = time.perf_counter()
    data_cfg = data_cfg or DataConfig()
    train_items, train_info = _items(train_examples, model, cfg, data_cfg, cfg.seed, "train")
    dev_items: list[TrainItem] = []
    dev_info: dict[str, Any] = {}
    if dev_examples:
        dev_items, dev_info = _items(dev_examples, model, cfg, data_cfg, cfg.seed + 1, "dev")
        dev_items = dev_items[: cfg.max_dev_items]
    lrs = list(cfg.lr_grid) or [cfg.lr]
    if len(lrs) > 1 and not dev_items:
        raise ValueError("a learning-rate search (lr_grid with several values) needs dev examples")
    plan = plan_method(model, cfg.method, sets, layer_mass, cfg)
    log.info("method %s: %d trainable parameters (%.2f%% of %d), target layers %s", cfg.method,
             plan.trainable_params, 100 * plan.trainable_fraction, plan.total_params, plan.target_layers)
    params = dict(model.named_parameters())
    touched = list(plan.union_masks)
    snapshot = {n: params[n].detach().clone() for n in touched} if len(lrs) > 1 else {}
    root = Path(out_dir) if out_dir is not None else None
    search: dict[str, float | None] = {}
    histories: dict[float, list[StepOutput]] = {}

    def run_dir(lr: float) -> Path | None:
        return root / "runs" / f"lr={lr:g}" if root is not None else None

    for i, lr in enumerate(lrs):
        if i > 0:
            _restore(params, snapshot)
        histories[lr] = run_plan(model, plan, train_items, dev_items, cfg, run_dir(lr), lr, resume, progress, callbacks)
        dev = [o.dev_loss for o in histories[lr] if o.dev_loss is not None]
        search[f"{lr:g}"] = dev[-1] if dev else None
    best = lrs[0]
    if len(lrs) > 1:
        best = min(lrs, key=lambda lr: _nan_last(search[f"{lr:g}"]))
        if best != lrs[-1]:
            _restore(params, snapshot)
            if root is None:
                histories[best] = run_plan(model, plan, train_items, dev_items, cfg, None, best, False, progress)
            else:  # every stage of that run is complete on disk: this reloads its final weights
                histories[best] = run_plan(model, plan, train_items, dev_items, cfg, run_dir(best), best, True, False)
    if plan.deactivated:
        bake_deactivation(model, plan.deactivated)
    final_dev = evaluate_dev(model, dev_items, cfg.batch_size) if dev_items else {}
    result = TrainResult(
        method=cfg.method, lr=best, lr_search=search, steps=sum(s.steps for s in plan.stages),
        stage_steps={s.name: s.steps for s in plan.stages}, trainable_params=plan.trainable_params,
        total_params=plan.total_params, trainable_fraction=plan.trainable_fraction, target_layers=plan.target_layers,
        n_deactivated=len(plan.deactivated), n_trained_neurons=len(plan.trained_neurons),
        n_train_items=len(train_items), n_dev_items=len(dev_items), seed=cfg.seed,
        wall_s=time.perf_counter() - t0, final_dev=final_dev, data={"train": train_info, "dev": dev_info},
        config=cfg.to_dict(), environment=environment_info(cfg.seed), log=histories[best],
    )
    if root is not None and is_main_process():  # under torchrun only rank 0 writes
        atomic_write_text(root / TRAIN_LOG, "".join(_json_line(o) for o in result.log))
        if save_model:
            from neurorit_lens.models.saved import save_trained_model

            out_sets = {**{k: v for k, v in _full_sets(sets).items()}, "deactivated": plan.deactivated,
                        "trained_neurons": plan.trained_neurons}
            save_trained_model(model, root / "model", sets=out_sets, train_log=result.log, extra={
                "base_model": base_model, "method": cfg.method, "lr": best, "steps": result.steps,
                "trainable_params": result.trainable_params, "trainable_fraction": result.trainable_fraction,
                "target_layers": result.target_layers, "seed": cfg.seed, "train_config": cfg.to_dict()})
        result.wall_s = time.perf_counter() - t0
        result.save(root / "train.json")
    return result


def _restore(params: Mapping[str, torch.nn.Parameter], snapshot: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, t in snapshot.items():
            params[n].copy_(t)


def _nan_last(x: float | None) -> float:
    return float("inf") if x is None or math.isnan(x) else x
