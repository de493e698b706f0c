"""What each method deactivates and trains: Neuro-RIT's two stages and the baselines as plans.

Every method trains on the same noisy-context data, for the same total number of
optimizer steps, with the same learning-rate search (``TrainConfig.lr_grid``, best final
dev loss wins), in :class:`neurorit_lens.training.trainer.Trainer`
(:func:`neurorit_lens.training.methods.train` runs a plan). They differ only in what is
deactivated (zeroed by a hook) and what is trainable (a parameter mask):

=========  ==========================================  =============================================
method     deactivated (hook, then baked into weights)  trainable
=========  ==========================================  =============================================
stage1     ``I_excl``                                   parameters of the ``R_excl`` neurons
neurorit   ``I_excl``                                   stage 1, then stage 2: whole MLP (and with
                                                        ``train_attention`` attention) of the target
                                                        layers; ``stage1_steps`` (or
                                                        ``stage1_fraction`` of the steps) in stage 1,
                                                        the rest in stage 2
layers     nothing                                      the same target layers as neurorit's stage 2
random     random neurons, ``I_excl``'s per-layer       random neurons with ``R_excl``'s per-layer
           counts                                       counts (seeded, disjoint from both real sets)
full       nothing                                      every parameter the HF architecture has
                                                        (RetRobust-style; not the zero biases TL adds)
clean      nothing                                      the same parameters as ``full``, but trained
                                                        on gold-only contexts (the format control)
=========  ==========================================  =============================================

``clean`` is the format control: supervised fine-tuning on the same questions,
for the same steps and schedule, with the same trainable parameters as ``full``, but every
training prompt holds the gold passage alone (setting ``gold``; no noisy or irrelevant-only
instance, :func:`neurorit_lens.training.items.build_train_items` with ``gold_only``). Its
gain over the base model is what short-answer SFT alone buys; a method's gain over
``clean`` is what training on noise adds. ``full``'s parameter set (not ``layers``') is
chosen so that ``full`` vs ``clean`` isolates the training data, with nothing else changed.
Dev items (dev loss, LR search) stay the noisy mix every method is scored on.

Target layers (stage 2): layers ranked by ``R_excl`` attribution mass
(``neurons.json`` ``meta["layer_mass"]["R_excl"]``; per-layer ``R_excl`` counts when the
mass is absent); ``k`` is ``TrainConfig.n_target_layers`` when set, otherwise the ``k``
whose trainable parameters (stage 1 and stage 2 together) are nearest to
``TrainConfig.target_fraction`` of the model's parameters (ties: the smaller ``k``).

Stage schedule of neurorit: stage 1 trains at ``TrainConfig.stage1_lr`` (default: the same
learning rate as stage 2). With ``stage_schedule="per_stage"`` (default) the stages split
``steps`` and each is a run of its own, with its own warmup and decay; stage 2 then receives
less learning-rate schedule mass (sum of the LR multipliers over its steps) than ``layers``
over all steps. With ``"continuous"`` the two stages are one run split in two: one warmup and
decay over ``steps``, so stage 1 plus stage 2 get the mass of every single-stage method but
stage 2 gets only the tail of the decay (:func:`schedule_mass`). With ``"stage1_extra"``
stage 2 is exactly ``layers``' run (``steps`` steps, its warmup and decay) and stage 1 adds
``stage1_steps`` steps before it; the compute-matched control is ``layers`` trained for the
sum. In every schedule stage 2 continues the data order where stage 1 stopped
(``stage2_data="continue"``), so no item is read twice before every item was read once;
``"restart"`` reproduces the runs made before, whose stage 2 re-read stage 1's items.
``stage1_neurons="random"`` trains random neurons with ``R_excl``'s per-layer counts in
stage 1 instead (the neuron-identity control).

Deactivation (``TrainConfig.deactivation``): ``none`` (default: nothing is deactivated, as no
definition of I passed the causal screen of docs/screen.md), ``zero``, ``scale`` (multiply by
``deactivation_scale``), ``gate`` (multiply by a gate learned with stage 1 under an L1
penalty, :mod:`neurorit_lens.training.gate`; ``gate_clamp`` keeps it in [0, 1]) or
``constant`` (hold each neuron at its mean activation at the
answer-predicting positions of gold-only contexts, ``answer_means.safetensors`` from
mining). The same hooks act during training and evaluation
(:func:`neurorit_lens.hooks.deactivation_hooks`).

Export (:func:`bake_deactivation`), exact for every mode, so the saved model needs no hook
and gives the same logits as the hooked one: ``zero`` sets the neurons' ``W_out`` rows,
``W_in`` columns, ``b_in`` entries (and ``W_gate`` columns) to zero; ``scale`` multiplies
their ``W_out`` rows by the factor; ``constant`` adds ``sum_i c_i W_out[i]`` to the layer's
``b_out`` and then zeroes the neurons as ``zero`` does; ``gate`` (learned gates,
:mod:`neurorit_lens.training.gate`) multiplies their ``W_out`` rows by their gates.
"""


from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch
from jaxtyping import Float

from neurorit_lens.config import TrainConfig, TrainMethod
from neurorit_lens.hooks import FwdHook, deactivation_hooks
from neurorit_lens.neuron_sets import NeuronSet, exclusive_sets
from neurorit_lens.registry import Registry
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.bake import bake_deactivation
from neurorit_lens.training.gate import GatePenalty, attach_gates, bake_gates, gate_hooks, gate_masks
from neurorit_lens.training.masks import (
    ParamMasks,
    count_trainable,
    full_param_masks,
    layer_param_masks,
    merge_masks,
    neuron_param_masks,
    total_params,
)
from neurorit_lens.training.trainer import lr_factor

METHODS = get_args(TrainMethod)  # the command line's choices; the registered names (TRAIN_METHODS) are the same


@dataclass
class StagePlan:
    """One trainer run: its name, what it deactivates, what it trains, for how many steps.

    ``lr``: its own peak learning rate (``None``: the run's, i.e. ``--lr`` or the searched
    one). ``continue_from``: ``(offset, total)`` when the stage is the part of one schedule of
    ``total`` steps starting at ``offset`` (see :class:`neurorit_lens.training.trainer.Trainer`).
    ``data_offset``: global batches of the data order that earlier stages consumed (stage 2
    continues where stage 1 stopped).
    """

    name: str
    deactivate: NeuronSet
    masks: ParamMasks
    steps: int
    lr: float | None = None
    continue_from: tuple[int, int] | None = None
    penalty: Callable[[], torch.Tensor] | None = None
    data_offset: int = 0


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
    deactivation: str = "zero"
    deactivation_scale: float = 0.0
    deactivation_values: Float[torch.Tensor, "layer d_mlp"] | None = None
    gates: torch.nn.Parameter | None = None
    gate_clamp: bool = False

    def hooks(self, neurons: NeuronSet) -> list[FwdHook]:
        """Forward hooks that deactivate ``neurons`` in this plan's mode."""
        if not neurons:
            return []
        if self.deactivation == "gate":
            if self.gates is None:
                raise ValueError("deactivation 'gate' needs the plan's gates (plan_method attaches them)")
            return gate_hooks(self.gates, neurons, clamp=self.gate_clamp)
        return deactivation_hooks(neurons, self.deactivation, self.deactivation_scale, self.deactivation_values)

    def bake(self, model: Model) -> None:
        """Fold the deactivation of :attr:`deactivated` into ``model``'s weights."""
        if self.deactivation == "gate" and self.gates is not None:
            bake_gates(model, self.deactivated, clamp=self.gate_clamp)
            self.gates = None
        elif self.deactivated:
            bake_deactivation(model, self.deactivated, self.deactivation, self.deactivation_scale,
                              self.deactivation_values)

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
def full_sets(sets: Mapping[str, NeuronSet] | None) -> dict[str, NeuronSet]:
    """``sets`` with ``R_excl``/``I_excl`` derived from ``R``/``I`` when only those are given."""
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
        masks = merge_masks(base, layer_param_masks(model, ranking[:k], cfg.train_attention))
        frac = count_trainable(model, masks) / total
        gap = abs(frac - cfg.target_fraction)
        if gap < best_gap - 1e-12:
            best_k, best_gap = k, gap
        if frac > cfg.target_fraction:
            break
    return sorted(ranking[:best_k])


def _split_steps(cfg: TrainConfig) -> tuple[int, int]:
    """Steps of neurorit's stage 1 and stage 2: ``stage1_steps``, or ``stage1_fraction`` of ``steps``.

    ``stage1_extra``: stage 2 takes all ``steps`` and stage 1 its ``stage1_steps`` (or
    ``stage1_fraction`` of ``steps``) on top.
    """
    if cfg.stage_schedule == "stage1_extra":
        s1 = cfg.stage1_steps if cfg.stage1_steps is not None else max(1, round(cfg.steps * cfg.stage1_fraction))
        return s1, cfg.steps
    if cfg.steps < 2:
        raise ValueError("method neurorit needs steps >= 2 (stage 1 and stage 2 share them)")
    if cfg.stage1_steps is not None:
        if cfg.stage1_steps >= cfg.steps:
            raise ValueError(f"stage1_steps={cfg.stage1_steps} leaves no step for stage 2 (steps={cfg.steps})")
        return cfg.stage1_steps, cfg.steps - cfg.stage1_steps
    s1 = min(max(1, round(cfg.steps * cfg.stage1_fraction)), cfg.steps - 1)
    return s1, cfg.steps - s1


def _neurorit_stages(cfg: TrainConfig, i_excl: NeuronSet, s1_masks: ParamMasks,
                     s2_masks: ParamMasks) -> list[StagePlan]:
    """Stage 1 (``stage1_lr``) and stage 2, each with its own schedule or one shared one (``stage_schedule``)."""
    n1, n2 = _split_steps(cfg)
    shared = cfg.stage_schedule == "continuous"
    offset2 = n1 if cfg.stage2_data == "continue" or shared else 0
    return [StagePlan("stage1", i_excl, s1_masks, n1, cfg.stage1_lr, (0, n1 + n2) if shared else None),
            StagePlan("stage2", i_excl, s2_masks, n2, None, (n1, n1 + n2) if shared else None, data_offset=offset2)]


def plan_method(
    model: Model,
    method: str,
    sets: Mapping[str, NeuronSet] | None,
    layer_mass: Mapping[str, Any] | None,
    cfg: TrainConfig,
    values: Float[torch.Tensor, "layer d_mlp"] | None = None,
) -> MethodPlan:
    """Stages, masks and deactivated neurons of ``method``, with ``cfg.deactivation``'s mode.

    ``values``: ``[n_layers, d_mlp]`` constants of ``constant`` deactivation (mining's
    ``answer_means``).
    """
    plan = _plan(model, method, sets, layer_mass, cfg)
    if cfg.deactivation == "none":  # every neuron stays on; stage 1 trains R_excl only
        plan.deactivated = NeuronSet()
        for st in plan.stages:
            st.deactivate = NeuronSet()
    if cfg.deactivation == "constant" and plan.deactivated:
        if values is None:
            raise ValueError("deactivation='constant' needs the neurons' answer-position means "
                             "(answer_means.safetensors next to neurons.json; mine with "
                             "--answer-means; `neurorit run`: --mining.answer-means)")
        if tuple(values.shape) != (model.cfg.n_layers, model.cfg.d_mlp):
            raise ValueError(f"values have shape {tuple(values.shape)}, the model "
                             f"{(model.cfg.n_layers, model.cfg.d_mlp)}")
    plan.deactivation, plan.deactivation_scale = cfg.deactivation, cfg.deactivation_scale
    plan.deactivation_values = values if cfg.deactivation == "constant" else None
    if cfg.deactivation == "gate" and plan.deactivated:
        _add_gates(model, plan, cfg)
    return plan


def _add_gates(model: Model, plan: MethodPlan, cfg: TrainConfig) -> None:
    """``gate``: attach the gates to ``model``; they train (with their penalty) in the stages that train
    neurons (``stage1``, ``random``) and stay on, frozen, in stage 2."""
    plan.gates, plan.gate_clamp = attach_gates(model), cfg.gate_clamp
    for st in plan.stages:
        if st.name in ("stage1", "random"):
            st.masks = merge_masks(st.masks, gate_masks(plan.gates, plan.deactivated))
            st.penalty = GatePenalty(plan.gates, plan.deactivated, cfg.gate_penalty)
    plan.trainable_params = count_trainable(model, plan.union_masks)


@dataclass
class PlanInputs:
    """What a training method's plan builder gets (the registered implementation's argument)."""

    model: Model
    method: str
    sets: dict[str, NeuronSet]
    layer_mass: Mapping[str, Any] | None
    cfg: TrainConfig
    total: int

    def exclusive_sets(self, need_r_excl: bool = True) -> tuple[NeuronSet, NeuronSet]:
        """``R_excl`` and ``I_excl``, checked against the model (``need_r_excl``: present, ``R_excl`` non-empty)."""
        missing = [k for k in ("R_excl", "I_excl") if k not in self.sets]
        if missing and need_r_excl:
            raise ValueError(f"method {self.method!r} needs neuron sets R_excl and I_excl (or R and I); "
                             f"missing {missing}")
        for s in self.sets.values():
            s.check_model(self.model)
        r_excl, i_excl = self.sets.get("R_excl", NeuronSet()), self.sets.get("I_excl", NeuronSet())
        if need_r_excl and not r_excl:
            raise ValueError(f"method {self.method!r}: R_excl is empty, so stage 1 has nothing to train")
        return r_excl, i_excl

    def neuron_masks(self, neurons: NeuronSet) -> ParamMasks:
        return neuron_param_masks(self.model, neurons) if neurons else {}
    def target_layers(self, r_excl: NeuronSet, s1_masks: ParamMasks) -> list[int]:
        """Stage 2's layers: ranked by ``R_excl``'s attribution mass, as many as ``cfg`` asks."""
        ranking = layer_ranking(self.model.cfg.n_layers, r_excl, self.layer_mass)
        return select_target_layers(self.model, ranking, self.cfg, s1_masks)

    def plan(self, stages: list[StagePlan], deactivated: NeuronSet, trained: NeuronSet, layers: list[int],
             masks: ParamMasks) -> MethodPlan:
        return MethodPlan(self.method, stages, deactivated, trained, layers, count_trainable(self.model, masks),
                          self.total)


TRAIN_METHODS: Registry[Callable[[PlanInputs], MethodPlan]] = Registry("training method")
"""Training methods: name -> plan builder (:class:`PlanInputs` -> :class:`MethodPlan`), and a line for the docs."""


@TRAIN_METHODS.register("neurorit", "stage 1: the R_excl neurons' own weights (I_excl deactivated); stage 2: the "
                        "MLP of the layers with most R_excl attribution mass")
def _plan_neurorit(p: PlanInputs) -> MethodPlan:
    r_excl, i_excl = p.exclusive_sets()
    s1_neurons = r_excl
    if p.cfg.stage1_neurons == "random":
        s1_neurons = r_excl.random_like(p.model.cfg.d_mlp, seed=p.cfg.seed, exclude=r_excl | i_excl)
    s1_masks = p.neuron_masks(s1_neurons)
    layers = p.target_layers(r_excl, s1_masks)
    s2_masks = layer_param_masks(p.model, layers, p.cfg.train_attention)
    st = _neurorit_stages(p.cfg, i_excl, s1_masks, s2_masks)
    return p.plan(st, i_excl, s1_neurons, layers, merge_masks(s1_masks, s2_masks))


@TRAIN_METHODS.register("stage1", "Neuro-RIT's stage 1 alone: the R_excl neurons' own weights")
def _plan_stage1(p: PlanInputs) -> MethodPlan:
    r_excl, i_excl = p.exclusive_sets()
    s1_masks = p.neuron_masks(r_excl)
    return p.plan([StagePlan("stage1", i_excl, s1_masks, p.cfg.steps)], i_excl, r_excl, [], s1_masks)


@TRAIN_METHODS.register("layers", "the MLP of the same target layers as neurorit's stage 2, all steps")
def _plan_layers(p: PlanInputs) -> MethodPlan:
    r_excl, _ = p.exclusive_sets(need_r_excl=False)
    layers = p.target_layers(r_excl, p.neuron_masks(r_excl))
    s2_masks = layer_param_masks(p.model, layers, p.cfg.train_attention)
    empty = NeuronSet()
    return p.plan([StagePlan("layers", empty, s2_masks, p.cfg.steps)], empty, empty, layers, s2_masks)


def _plan_whole_model(p: PlanInputs) -> MethodPlan:
    masks = full_param_masks(p.model)
    empty = NeuronSet()
    return p.plan([StagePlan(p.method, empty, masks, p.cfg.steps)], empty, empty,
                  list(range(p.model.cfg.n_layers)), masks)


TRAIN_METHODS.register("full", "every weight (RetRobust-style)", _plan_whole_model)


@TRAIN_METHODS.register("random", "random neurons with R_excl's per-layer counts (and random ones with I_excl's "
                        "deactivated): the neuron-identity control")
def _plan_random(p: PlanInputs) -> MethodPlan:
    r_excl, i_excl = p.exclusive_sets()
    real = r_excl | i_excl
    trained = r_excl.random_like(p.model.cfg.d_mlp, seed=p.cfg.seed, exclude=real)
    deact = i_excl.random_like(p.model.cfg.d_mlp, seed=p.cfg.seed + 1, exclude=real | trained)
    masks = neuron_param_masks(p.model, trained)
    return p.plan([StagePlan("random", deact, masks, p.cfg.steps)], deact, trained, [], masks)


TRAIN_METHODS.register("clean", "every weight, as full, trained on gold-only contexts (the format control)",
                       _plan_whole_model)


def _plan(
    model: Model,
    method: str,
    sets: Mapping[str, NeuronSet] | None,
    layer_mass: Mapping[str, Any] | None,
    cfg: TrainConfig,
) -> MethodPlan:
    """Stages, masks and deactivated neurons of ``method`` (see module docstring).

    Args:
        model: the model to train.
        method: a name in :data:`TRAIN_METHODS`.
        sets: neuron sets (``R_excl`` and ``I_excl``, or ``R`` and ``I``); unused by ``full``
            and ``clean``.
        layer_mass: ``meta["layer_mass"]`` from ``neurons.json`` (optional).
        cfg: steps, stage split, target-layer rule, seed.

    Returns:
        A :class:`MethodPlan` whose stages' steps sum to ``cfg.steps`` (plus stage 1's with
        ``stage_schedule="stage1_extra"``).
    """
    if method not in TRAIN_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    build = TRAIN_METHODS.get(method)
    return build(PlanInputs(model, method, full_sets(sets), layer_mass, cfg, total_params(model)))


def schedule_mass(plan: MethodPlan, cfg: TrainConfig) -> dict[str, float]:
    """Per stage, the sum over its steps of the learning-rate multiplier it trains with."""
    out = {}
    for st in plan.stages:
        offset, total = st.continue_from or (0, st.steps)
        out[st.name] = sum(lr_factor(offset + s, total, cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio)
                           for s in range(st.steps))
    return out


__all__ = ["METHODS", "TRAIN_METHODS", "MethodPlan", "PlanInputs", "StagePlan", "bake_deactivation", "full_sets",
           "layer_ranking", "plan_method", "schedule_mass", "select_target_layers"]
