"""Causal tests of neuron sets: ablate them and compare with random sets of the same shape.

Attribution (IG) says which neurons *correlate* with the answer; ablation says whether they
*cause* it. For each mined set (``R_excl``, ``I_excl``, ``shared``) we switch the neurons off
(zero them, set them to their mean over a reference set, or scale them) and measure, on
held-out questions, under relevant-only contexts and under noisy contexts:

- the change in the teacher-forced log-probability of the gold answer (summed over its
  tokens, :func:`neurorit_lens.objective.answer_target`), per example;
- optionally the change in accuracy (greedy generation, gold answer contained in output).
  Zero and scale ablation at the post site bake exactly into the output weights, so with
  ``generation_backend="auto"`` they are decoded by the model's transformers twin with those
  weights scaled (:func:`~neurorit_lens.models.generation.scaled_neurons_in_twin`, about 1.6x
  faster than hooks on TransformerLens), and so is the unablated baseline; every other mode,
  and ``"tl"``, decodes through TransformerLens with hooks. Either way one numerical path
  serves the baseline and every condition.

The same is measured for ``n_random`` random neuron sets with the same per-layer counts
(:meth:`NeuronSet.random_like`, distinct seeds, disjoint from the tested set). A set
"does something" only if its effect differs from the random controls': we report, per
set and context, the mean effect with a bootstrap 95% interval over examples, the mean
random effect, and the paired difference ``effect - mean random effect`` (per example,
averaged over seeds) with its own bootstrap interval, plus a plain-language verdict.

Prompts come from the project's one prompt path
(:func:`neurorit_lens.data.build.build_prompts`), with the evaluation's budget rule: the
prompt leaves ``max_new_tokens`` of the model's context free for the accuracy generation.
The hooks, means and random controls are in :mod:`neurorit_lens.ablation.controls`, the
result, its table and verdicts in :mod:`neurorit_lens.ablation.result`.

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.neuron_sets import NeuronSet
>>> from neurorit_lens.config import AblationConfig
>>> model = tiny_model()
>>> ctx = ContextPrompts("relevant", "gold", ["Q: capital of Zarnia? A:"] * 4, [" Velmor"] * 4)
>>> res = measure_ablation(model, [ctx], {"R_excl": NeuronSet({0: [1, 2]})},
...                        AblationConfig(sets=("R_excl",), n_random=5, measure_accuracy=False),
...                        show_progress=False)
>>> res.row("R_excl", "relevant", "logprob").n
4
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from neurorit_lens.ablation.controls import ablation_hooks, answer_position_means, neuron_means, random_controls
from neurorit_lens.ablation.result import AblationResult, Effect, SetEffect, verdict_of
from neurorit_lens.config import AblationConfig, DataConfig
from neurorit_lens.data.answers import accuracy
from neurorit_lens.data.build import ANSWER_RESERVE, PromptSet, build_prompts
from neurorit_lens.hooks import FwdHook, neuron_hooks
from neurorit_lens.models.generation import generate_greedy, scaled_neurons_in_twin, twin_of
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import (
    PreparedAnswers,
    answer_logprobs,
    prepare_answers,
    tokenize_with_answers,
)
from neurorit_lens.precision import autocast
from neurorit_lens.tl_backend import Model

Condition = tuple[str, int | None, NeuronSet]  # (set name, control seed or None, neurons)
Key = tuple[str, str, int | None]  # (set name, context name, control seed or None)
HooksFor = Callable[[str, "int | None", NeuronSet], Sequence[FwdHook]]  # (set name, control seed, neurons) -> hooks


@dataclass
class ContextPrompts:
    """The held-out examples rendered under one context condition.

    Attributes:
        name: ``relevant`` or ``noisy`` (how the result labels it).
        setting: the data setting that made the prompts (``gold``, ``noise=0.8`` ...).
        prompts: rendered prompt strings.
        continuations: the exact gold-answer continuation appended to each prompt.
        answers: all gold aliases per example (for accuracy); defaults to the continuation.
        ids: example ids.
    """

    name: str
    setting: str
    prompts: list[str]
    continuations: list[str]
    answers: list[list[str]] | None = None
    ids: list[str] | None = None
    n_skipped: int = 0
    n_truncated: int = 0

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.continuations):
            raise ValueError(f"context {self.name!r}: {len(self.prompts)} prompts but "
                             f"{len(self.continuations)} answer continuations")
        if self.answers is None:
            self.answers = [[c.strip()] for c in self.continuations]
        if len(self.answers) != len(self.prompts):
            raise ValueError(f"context {self.name!r}: {len(self.answers)} answer lists for {len(self.prompts)} prompts")
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.prompts))]
        if len(self.ids) != len(self.prompts):
            raise ValueError(f"context {self.name!r}: {len(self.ids)} ids for {len(self.prompts)} prompts")

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def from_prompt_set(cls, name: str, ps: PromptSet, setting: str | None = None) -> ContextPrompts:
        """The condition ``name`` from a :class:`~neurorit_lens.data.build.PromptSet`."""
        return cls(name=name, setting=ps.setting if setting is None else setting, prompts=list(ps.prompts),
                   continuations=list(ps.continuations), answers=ps.answers, ids=ps.ids,
                   n_skipped=int(ps.n_skipped), n_truncated=int(ps.n_truncated))


def build_context_prompts(model: Model, examples: Sequence[Any], setting: str, name: str,
                          data_cfg: DataConfig, reserve_tokens: int = ANSWER_RESERVE) -> ContextPrompts:
    """Render ``examples`` under one data setting through the one prompt path.

    ``reserve_tokens``: tokens generated after the prompt (``run_ablation`` passes
    ``AblationConfig.max_new_tokens``), kept free of the model's context.
    """
    ps = build_prompts(list(examples), setting, model.tokenizer, data_cfg, n_ctx=model.cfg.n_ctx,
                       reserve_tokens=reserve_tokens)
    if not ps.prompts:
        raise ValueError(f"no example could be built for setting {setting!r} ({ps.n_skipped} skipped)")
    return ContextPrompts.from_prompt_set(name, ps, setting)


def _correct(model: Model, ctx: ContextPrompts, n: int, cfg: AblationConfig, hooks: Sequence[FwdHook],
             baked: NeuronSet | None = None) -> np.ndarray:
    """Per-example 0/1 accuracy of greedy answers to the first ``n`` prompts, ablated by ``hooks``
    on TransformerLens, or (``baked`` given, empty for the baseline) by ``cfg.mode`` scaled into
    the transformers twin's weights."""
    def answers() -> list[str]:
        return generate_greedy(model, ctx.prompts[:n], cfg.max_new_tokens, cfg.batch_size, show_progress=False,
                               backend="tl" if baked is None else "hf")

    if baked is None:
        with torch.no_grad(), neuron_hooks(model, list(hooks)):
            preds = answers()
    else:
        factor = 0.0 if cfg.mode == "zero" else cfg.scale
        with scaled_neurons_in_twin(model, baked.by_layer() if baked else {}, factor) as ok:
            if not ok:
                raise RuntimeError("the twin cannot hold this ablation; use generation_backend='tl'")
            preds = answers()
    return np.asarray([accuracy(p, list(a)) for p, a in zip(preds, ctx.answers[:n], strict=True)], dtype=np.float64)


def _bakes_into_twin(model: Model, cfg: AblationConfig, hooks_for: HooksFor | None) -> bool:
    """Whether the accuracy test decodes through the twin with the ablation in its weights."""
    if cfg.generation_backend != "auto" or hooks_for is not None or cfg.mode not in ("zero", "scale"):
        return False
    if cfg.site != "post" or twin_of(model) is None:
        return False
    with scaled_neurons_in_twin(model, {0: []}, 1.0) as ok:  # the twin's MLP output can be scaled
        return ok


def _check_inputs(model: Model, contexts: Sequence[ContextPrompts], sets: Mapping[str, NeuronSet],
                  cfg: AblationConfig) -> None:
    missing = [s for s in cfg.sets if s not in sets]
    if missing:
        raise ValueError(f"neuron set(s) {missing} not found; available: {sorted(sets)}")
    if not contexts:
        raise ValueError("no context conditions given")
    for ctx in contexts:
        if len(ctx) == 0:
            raise ValueError(f"context {ctx.name!r} ({ctx.setting}) has no examples")
    for name in cfg.sets:
        try:
            sets[name].check_shape(model.cfg.n_layers, model.cfg.d_mlp)
        except ValueError as e:
            raise ValueError(f"set {name}: {e}") from e


def _reference_means(model: Model, contexts: Sequence[ContextPrompts], cfg: AblationConfig,
                     means: Float[torch.Tensor, "layer d_mlp"] | None) -> Float[torch.Tensor, "layer d_mlp"] | None:
    """``means`` checked, or computed: mode ``mean`` over every prompt + answer of ``contexts``,
    mode ``constant`` at the answer-predicting positions of the first (relevant) context."""
    if cfg.mode == "constant" and means is None:
        means = answer_position_means(model, contexts[0].prompts, contexts[0].continuations, cfg.site,
                                      cfg.batch_size)
    if cfg.mode == "mean" and means is None:
        all_p = [p for ctx in contexts for p in ctx.prompts]
        all_c = [c for ctx in contexts for c in ctx.continuations]
        means = neuron_means(model, tokenize_with_answers(model, all_p, all_c), cfg.site, cfg.batch_size)
    shape = (model.cfg.n_layers, model.cfg.d_mlp)
    if means is not None and tuple(means.shape) != shape:
        raise ValueError(f"means must have shape {shape}, got {tuple(means.shape)}")
    return means


def _conditions(sets: Mapping[str, NeuronSet], cfg: AblationConfig,
                d_mlp: int) -> tuple[list[Condition], dict[str, list[int]]]:
    """Each tested set followed by its random controls, and the control seeds per set."""
    union = NeuronSet()
    for s in sets.values():
        union = union | s
    conditions: list[Condition] = []
    controls: dict[str, list[int]] = {}
    for si, name in enumerate(cfg.sets):
        ns = sets[name]
        conditions.append((name, None, ns))
        if not ns:
            controls[name] = []
            continue
        exclude = union if cfg.random_exclude == "all" else None
        ctrl = random_controls(ns, d_mlp, cfg.n_random, seed=cfg.seed * 100 + si + 1, exclude=exclude)
        controls[name] = [s for s, _ in ctrl]
        conditions += [(name, s, r) for s, r in ctrl]
    return conditions, controls


@dataclass
class _Scores:
    """Unablated scores per context, and per (set, context, seed) the change under ablation."""

    n_acc: dict[str, int]
    base_lp: dict[str, torch.Tensor]
    base_acc: dict[str, np.ndarray]
    lp: dict[Key, np.ndarray]
    acc: dict[Key, np.ndarray]


def _score_conditions(model: Model, contexts: Sequence[ContextPrompts], prepared: Mapping[str, PreparedAnswers],
                      conditions: Sequence[Condition], cfg: AblationConfig,
                      means: Float[torch.Tensor, "layer d_mlp"] | None, show_progress: bool,
                      hooks_for: HooksFor | None = None) -> _Scores:
    """Run every non-empty condition on every context: Δ log-prob and (optionally) Δ accuracy."""
    n_acc = {ctx.name: (len(ctx) if cfg.accuracy_limit is None else min(len(ctx), cfg.accuracy_limit))
             for ctx in contexts}
    sc = _Scores(n_acc, {ctx.name: answer_logprobs(model, prepared[ctx.name]) for ctx in contexts}, {}, {}, {})
    twin = cfg.measure_accuracy and _bakes_into_twin(model, cfg, hooks_for)
    if cfg.measure_accuracy:
        sc.base_acc = {ctx.name: _correct(model, ctx, n_acc[ctx.name], cfg, (), NeuronSet() if twin else None)
                       for ctx in contexts}
    todo = [(c, ctx) for c in conditions if c[2] for ctx in contexts]
    for (name, seed, ns), ctx in tqdm(todo, desc="ablation conditions", disable=not show_progress):
        hooks = (hooks_for(name, seed, ns) if hooks_for is not None
                 else ablation_hooks(ns, cfg.mode, means, cfg.scale, cfg.site))
        sc.lp[(name, ctx.name, seed)] = (answer_logprobs(model, prepared[ctx.name], hooks=hooks)
                                         - sc.base_lp[ctx.name]).numpy().astype(np.float64)
        if cfg.measure_accuracy:
            sc.acc[(name, ctx.name, seed)] = (_correct(model, ctx, n_acc[ctx.name], cfg, hooks, ns if twin else None)
                                              - sc.base_acc[ctx.name])
    return sc


def _effect_row(name: str, ctx: ContextPrompts, metric: str, ns: NeuronSet, n: int, base: float,
                eff: np.ndarray, rnd: np.ndarray | None, cfg: AblationConfig, bseed: int) -> SetEffect:
    """A row of a non-empty set: its effect, its controls' mean effect, and the paired difference."""
    if rnd is None:
        random, diff, seed_means = Effect.empty(), Effect.empty(), []
    else:
        rnd_mean = rnd.mean(0)
        random = Effect.of(rnd_mean, cfg.n_bootstrap, bseed + 1)
        diff = Effect.paired(eff, rnd_mean, cfg.n_bootstrap, bseed + 2)
        seed_means = [float(r.mean()) for r in rnd]
    return SetEffect(set_name=name, context=ctx.name, setting=ctx.setting, metric=metric, n_neurons=len(ns), n=n,
                     base=base, effect=Effect.of(eff, cfg.n_bootstrap, bseed), random=random, diff=diff,
                     random_seed_means=seed_means)


def _set_rows(ci: int, ctx: ContextPrompts, si: int, name: str, ns: NeuronSet, cfg: AblationConfig,
              sc: _Scores, seeds: Sequence[int]) -> tuple[list[SetEffect], dict[str, Any]]:
    """The rows of one set in one context (one per metric) and its per-example values."""
    metrics = [("logprob", sc.lp, len(ctx), float(sc.base_lp[ctx.name].mean()))]
    if cfg.measure_accuracy:
        metrics.append(("accuracy", sc.acc, sc.n_acc[ctx.name], float(sc.base_acc[ctx.name].mean())))
    rows, per_example = [], {}
    for mi, (metric, store, n, base) in enumerate(metrics):
        bseed = cfg.seed + 7919 * (ci * 97 + si * 7 + mi)
        if not ns:
            empty = Effect.empty()
            row = SetEffect(name, ctx.name, ctx.setting, metric, 0, 0, base, empty, empty, empty)
        else:
            eff = store[(name, ctx.name, None)]
            rnd = np.stack([store[(name, ctx.name, s)] for s in seeds]) if seeds else None
            row = _effect_row(name, ctx, metric, ns, n, base, eff, rnd, cfg, bseed)
            per_example[metric] = {"effect": eff.tolist(), "random": rnd.tolist() if rnd is not None else []}
        row.verdict = verdict_of(row)
        rows.append(row)
    return rows, per_example


def _context_rows(ci: int, ctx: ContextPrompts, sets: Mapping[str, NeuronSet], cfg: AblationConfig,
                  sc: _Scores, controls: Mapping[str, list[int]]) -> tuple[list[SetEffect], dict[str, Any]]:
    """All rows of one context and its per-example record for ``ablation.json``."""
    pe: dict[str, Any] = {"ids": list(ctx.ids), "base_logprob": sc.base_lp[ctx.name].tolist(), "sets": {}}
    if cfg.measure_accuracy:
        pe["base_correct"] = sc.base_acc[ctx.name].tolist()
    rows: list[SetEffect] = []
    for si, name in enumerate(cfg.sets):
        set_rows, pe["sets"][name] = _set_rows(ci, ctx, si, name, sets[name], cfg, sc, controls[name])
        rows += set_rows
    return rows, pe


def measure_ablation(
    model: Model,
    contexts: Sequence[ContextPrompts],
    sets: Mapping[str, NeuronSet],
    cfg: AblationConfig,
    means: Float[torch.Tensor, "layer d_mlp"] | None = None,
    show_progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    hooks_for: HooksFor | None = None,
) -> AblationResult:
    """Ablate each set in ``cfg.sets`` and its random controls on already-rendered prompts.

    Args:
        model: the HookedTransformer.
        contexts: one :class:`ContextPrompts` per context condition (relevant, noisy).
        sets: neuron sets by name (``neurons.json``); ``cfg.sets`` chooses which are tested.
        cfg: the ablation config.
        means: reference means for ``mode='mean'``; if ``None`` they are computed over every
            prompt + answer of ``contexts``.
        show_progress: tqdm bar over ablation conditions.
        meta: extra metadata stored in the result (model name, data, ...).
        hooks_for: ``(set name, control seed or None, neurons) -> hooks`` replacing
            ``cfg.mode``'s hooks (e.g. gates learned per set); ``None``: ``cfg.mode``.

    Returns:
        An :class:`~neurorit_lens.ablation.result.AblationResult`.
    """
    _check_inputs(model, contexts, sets, cfg)
    if cfg.mode == "gate" and hooks_for is None:
        raise ValueError("mode 'gate' learns each set's hooks: pass hooks_for=LearnedGates(...) "
                         "(neurorit_lens.ablation.gate), or call run_ablation with train_examples")
    with autocast(cfg.precision, model.cfg.device):
        prepared = {ctx.name: prepare_answers(model, ctx.prompts, ctx.continuations, cfg.batch_size)
                    for ctx in contexts}
        means = _reference_means(model, contexts, cfg, means)
        conditions, controls = _conditions(sets, cfg, model.cfg.d_mlp)
        sc = _score_conditions(model, contexts, prepared, conditions, cfg, means, show_progress, hooks_for)
    rows: list[SetEffect] = []
    per_example: dict[str, Any] = {}
    for ci, ctx in enumerate(contexts):
        ctx_rows, per_example[ctx.name] = _context_rows(ci, ctx, sets, cfg, sc, controls)
        rows += ctx_rows
    return AblationResult(
        rows=rows,
        config=cfg.to_dict(),
        contexts={ctx.name: {"setting": ctx.setting, "n": len(ctx), "n_accuracy": sc.n_acc[ctx.name]
                             if cfg.measure_accuracy else 0, "n_skipped": ctx.n_skipped,
                             "n_truncated": ctx.n_truncated} for ctx in contexts},
        sets={name: {"n_neurons": len(sets[name]), "counts_per_layer": sets[name].counts_per_layer(),
                     "random_seeds": controls[name]} for name in cfg.sets},
        per_example=per_example,
        meta=dict(meta or {}),
    )


def run_ablation(
    model: Model,
    examples: Sequence[Any],
    sets: Mapping[str, NeuronSet],
    cfg: AblationConfig,
    data_cfg: DataConfig,
    show_progress: bool = True,
    means: Float[torch.Tensor, "layer d_mlp"] | None = None,
    meta: Mapping[str, Any] | None = None,
    train_examples: Sequence[Any] | None = None,
    gate_dir: str | Path | None = None,
) -> AblationResult:
    """The causal test on held-out QA examples (see the module docstring).

    Args:
        model: the HookedTransformer.
        examples: held-out :class:`~neurorit_lens.data.schema.QAExample` s.
        sets: neuron sets by name (from ``neurons.json``).
        cfg: ablation config (sets, mode, random controls, contexts, accuracy).
        data_cfg: how prompts are built (passages, template, prompt length, seed).
        show_progress: tqdm bars.
        means: reference means for ``mode='mean'`` (default: over the rendered prompts).
        meta: extra metadata stored in the result.
        train_examples: mode ``gate``: the questions whose noisy-context items train each
            set's gates (:mod:`neurorit_lens.ablation.gate`); other modes ignore them.
        gate_dir: mode ``gate``: where each set's learned gates are kept (none: not kept).

    Returns:
        An :class:`~neurorit_lens.ablation.result.AblationResult`.
    """
    if not examples:
        raise ValueError("run_ablation needs at least one example")
    hooks_for = None
    if cfg.mode == "gate":
        from neurorit_lens.ablation.gate import LearnedGates, gate_train_items

        if not train_examples:
            raise ValueError("mode 'gate' needs train_examples: the gates are learned on train questions")
        items = gate_train_items(model, train_examples, data_cfg, seed=cfg.seed)
        hooks_for = LearnedGates(model, items, cfg, gate_dir)
        meta = {**dict(meta or {}), "n_gate_items": len(items)}
    contexts = [
        build_context_prompts(model, examples, cfg.relevant_setting, "relevant", data_cfg, cfg.max_new_tokens),
        build_context_prompts(model, examples, cfg.noisy_setting, "noisy", data_cfg, cfg.max_new_tokens),
    ]
    info = {"data": data_cfg.to_dict(), **dict(meta or {})}
    return measure_ablation(model, contexts, sets, cfg, means=means, show_progress=show_progress, meta=info,
                            hooks_for=hooks_for)
