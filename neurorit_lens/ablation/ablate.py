"""Causal tests of neuron sets: ablate them and compare with random sets of the same shape.

Attribution (IG) says which neurons *correlate* with the answer; ablation says whether they
*cause* it. For each mined set (``R_excl``, ``I_excl``, ``shared``) we switch the neurons off
(zero them, set them to their mean over a reference set, or scale them) and measure, on
held-out questions, under relevant-only contexts and under noisy contexts:

- the change in the teacher-forced log-probability of the gold answer (summed over its
  tokens, :func:`neurorit_lens.objective.answer_target`), per example;
- optionally the change in accuracy (greedy generation, gold answer contained in output).

The same is measured for ``n_random`` random neuron sets with the same per-layer counts
(:meth:`NeuronSet.random_like`, distinct seeds, disjoint from the tested set). A set
"does something" only if its effect differs from the random controls': we report, per
set and context, the mean effect with a bootstrap 95% interval over examples, the mean
random effect, and the paired difference ``effect - mean random effect`` (per example,
averaged over seeds) with its own bootstrap interval, plus a plain-language verdict.

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.neurons.sets import NeuronSet
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

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from neurorit_lens.config import AblationConfig, DataConfig
from neurorit_lens.evaluation import metrics as _metrics
from neurorit_lens.evaluation.generation import generate_greedy
from neurorit_lens.hooks import (
    FwdHook,
    mean_ablation,
    mlp_hook_name,
    neuron_hooks,
    scale_ablation,
    zero_ablation,
)
from neurorit_lens.io import atomic_write_json, read_json
from neurorit_lens.neurons.sets import NeuronSet
from neurorit_lens.objective import AnswerBatch, encode_prompt, tokenize_with_answers
from neurorit_lens.tl_backend import Model

log = logging.getLogger(__name__)

MODES = ("zero", "mean", "scale")
METRICS = ("logprob", "accuracy")
RESULT_FILE = "ablation.json"

__all__ = [
    "AblationResult",
    "ContextPrompts",
    "Effect",
    "SetEffect",
    "ablation_hooks",
    "answer_logprobs",
    "bootstrap_ci",
    "build_context_prompts",
    "measure_ablation",
    "neuron_means",
    "random_controls",
    "run_ablation",
]


# --------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------
def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


def neuron_means(
    model: Model,
    prompts: Sequence[str] | AnswerBatch,
    site: str = "post",
    batch_size: int = 8,
    show_progress: bool = False,
) -> Float[torch.Tensor, "layer d_mlp"]:
    """Mean activation of every MLP neuron over all real (unpadded) positions of a reference set.

    Args:
        model: the HookedTransformer.
        prompts: reference texts (tokenised as TL does, BOS included) or an
            :class:`AnswerBatch` (its ``lengths`` mark the real positions; the answer tokens
            count as real positions).
        site: ``post`` (default) or ``pre``.
        batch_size: sequences per forward pass.
        show_progress: tqdm bar over batches.

    Returns:
        ``[n_layers, d_mlp]`` float32 tensor on the CPU: each neuron's activation averaged over
        every real position of every reference sequence (positions weighted equally).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mlp_hook_name(0, site)  # validates site
    if isinstance(prompts, AnswerBatch):
        tokens, lengths = prompts.tokens, prompts.lengths
    else:
        prompts = list(prompts)
        if not prompts:
            raise ValueError("neuron_means needs at least one reference prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be strings or an AnswerBatch")
        rows = [torch.tensor(encode_prompt(model, p)) for p in prompts]
        lengths = torch.tensor([len(r) for r in rows])
        pad = model.tokenizer.pad_token_id if model.tokenizer is not None else None
        tokens = torch.full((len(rows), int(lengths.max())), pad if pad is not None else 0, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
    if len(tokens) == 0:
        raise ValueError("neuron_means needs at least one reference sequence")
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    sums = torch.zeros(n_layers, d_mlp, dtype=torch.float64)
    count = 0
    dev = _device(model)
    order = torch.argsort(lengths, descending=True)  # similar lengths share a batch
    starts = range(0, len(order), batch_size)
    for s in tqdm(starts, desc="neuron means", disable=not show_progress):
        idx = order[s : s + batch_size]
        L = int(lengths[idx].max())
        toks = tokens[idx, :L].to(dev)
        mask = (torch.arange(L)[None, :] < lengths[idx][:, None]).to(dev)

        def make_hook(layer: int, mask: torch.Tensor = mask):
            def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook) -> None:
                m = mask.to(act.dtype).unsqueeze(-1)
                sums[layer] += (act.detach() * m).sum((0, 1)).double().cpu()

            return hook

        hooks = [(mlp_hook_name(layer, site), make_hook(layer)) for layer in range(n_layers)]
        with torch.no_grad(), neuron_hooks(model, hooks):
            model(toks, stop_at_layer=n_layers)
        count += int(mask.sum())
    return (sums / count).float()


def ablation_hooks(
    neurons: NeuronSet,
    mode: str = "zero",
    means: Float[torch.Tensor, "layer d_mlp"] | None = None,
    scale: float = 0.0,
    site: str = "post",
) -> list[FwdHook]:
    """Forward hooks that ablate ``neurons``; attach them with :func:`neurorit_lens.hooks.neuron_hooks`.

    Args:
        neurons: the neurons to ablate.
        mode: ``zero`` (set to 0), ``mean`` (set to ``means[layer, index]``) or ``scale``
            (multiply by ``scale``: 0 = zero ablation, 0.5 = weaken, 2 = enhance).
        means: ``[n_layers, d_mlp]`` reference means (:func:`neuron_means`), needed for ``mean``.
        scale: factor for ``scale`` mode.
        site: ``post`` (default) or ``pre``.

    Returns:
        ``[(hook_name, fn), ...]``, one per layer that has neurons in the set.
    """
    if not isinstance(neurons, NeuronSet):
        raise ValueError(f"neurons must be a NeuronSet, got {type(neurons).__name__}")
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose from {MODES}")
    if mode == "zero":
        return zero_ablation(neurons, site)
    if mode == "scale":
        if not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number, got {scale}")
        return scale_ablation(neurons, float(scale), site)
    if means is None:
        raise ValueError("mode='mean' needs means (see neurorit_lens.ablation.ablate.neuron_means)")
    return mean_ablation(neurons, means, site)


def random_controls(
    neurons: NeuronSet,
    d_mlp: int,
    n: int,
    seed: int = 0,
    exclude: NeuronSet | None = None,
) -> list[tuple[int, NeuronSet]]:
    """``n`` random sets with the per-layer counts of ``neurons``, each disjoint from it.

    Args:
        neurons: the tested set.
        d_mlp: neurons per layer of the model.
        n: number of controls (distinct seeds ``seed * 1000 + k``).
        seed: base seed.
        exclude: further neurons to avoid (always unioned with ``neurons``).

    Returns:
        ``[(seed_k, random_set_k), ...]``.
    """
    if n < 0:
        raise ValueError(f"number of random controls must be >= 0, got {n}")
    banned = neurons if exclude is None else (neurons | exclude)
    out = []
    for k in range(n):
        s = seed * 1000 + k
        out.append((s, neurons.random_like(d_mlp, seed=s, exclude=banned)))
    return out


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float] | np.ndarray, n_bootstrap: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example effects.

    Delegates to :func:`neurorit_lens.evaluation.metrics.bootstrap_ci`, so every interval in the
    project is computed the same way.
    """
    return _metrics.bootstrap_ci(values, n=n_bootstrap, seed=seed, alpha=1 - level)


@dataclass
class Effect:
    """Mean of per-example values with a bootstrap interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray, n_bootstrap: int, seed: int) -> Effect:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        lo, hi = bootstrap_ci(x, n_bootstrap, seed)
        return cls(float(x.mean()), lo, hi, int(x.size))

    def excludes_zero(self) -> bool:
        return self.n > 0 and (self.ci_low > 0 or self.ci_high < 0)

    def fmt(self, digits: int = 2, scale: float = 1.0) -> str:
        if self.n == 0:
            return "n/a"
        m, lo, hi = self.mean * scale, self.ci_low * scale, self.ci_high * scale
        return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


@dataclass
class SetEffect:
    """One row: a neuron set ablated, in one context condition, on one metric.

    ``effect`` is (ablated - unablated) per example; ``random`` the same for the random
    controls (per example, averaged over seeds); ``diff`` the paired ``effect - random``.
    """

    set_name: str
    context: str  # "relevant" | "noisy"
    setting: str  # the data setting, e.g. "gold", "noise=0.8"
    metric: str  # "logprob" | "accuracy"
    n_neurons: int
    n: int
    base: float  # unablated mean (log-prob in nats, or accuracy in [0, 1])
    effect: Effect
    random: Effect
    diff: Effect
    random_seed_means: list[float] = field(default_factory=list)
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (NaN, e.g. for an empty set, becomes ``None`` so the JSON stays standard)."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SetEffect:
        d = dict(d)
        for k in ("effect", "random", "diff"):
            d[k] = Effect(**{f: (float("nan") if v is None and f != "n" else v) for f, v in d[k].items()})
        if d.get("base") is None:
            d["base"] = float("nan")
        return cls(**d)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


_CONTEXT_WORDS = {"relevant": "relevant-only contexts", "noisy": "noisy contexts"}


def _verdict(row: SetEffect) -> str:
    ctx = _CONTEXT_WORDS.get(row.context, f"{row.context} contexts")
    what = "gold log-prob" if row.metric == "logprob" else "accuracy"
    if row.n == 0 or row.n_neurons == 0:
        return f"{row.set_name}: no {'neurons' if row.n_neurons == 0 else 'examples'}, nothing measured under {ctx}"
    d = row.diff
    neurons = f"{row.n_neurons} neuron{'s' if row.n_neurons != 1 else ''}"
    if (row.metric == "accuracy" and row.effect.ci_low == row.effect.ci_high == 0
            and row.random.ci_low == row.random.ci_high == 0):
        return (f"{row.set_name} ablation changed no correct/incorrect outcome under {ctx}, and neither did "
                f"the random controls (n={row.n}, {neurons})")
    if row.metric == "logprob":
        amount = f"{abs(d.mean):.3f} nats"
        ci = f"95% CI of the difference [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
    else:
        amount = f"{abs(d.mean) * 100:.1f} points"
        ci = f"95% CI [{d.ci_low * 100:+.1f}, {d.ci_high * 100:+.1f}] points"
    own = f"own effect {row.effect.fmt(3 if row.metric == 'logprob' else 1, 1 if row.metric == 'logprob' else 100)}"
    if d.excludes_zero():
        direction = "lowers" if d.mean < 0 else "raises"
        return (f"{row.set_name} ablation {direction} {what} under {ctx} by {amount} more than random "
                f"neurons of the same per-layer counts ({ci}; {own}; n={row.n}, {neurons})")
    return (f"{row.set_name} ablation is not distinguishable from random controls on {what} under {ctx} "
            f"(difference {d.mean * (1 if row.metric == 'logprob' else 100):+.3f}{'' if row.metric == 'logprob' else ' points'}, "
            f"{ci} includes 0; {own}; n={row.n}, {neurons})")


# --------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------
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


def _prepare_batches(model: Model, prompts: Sequence[str], continuations: Sequence[str],
                     batch_size: int) -> list[tuple[torch.Tensor, AnswerBatch]]:
    """Tokenise once, sorted by length so batches carry little padding: [(row indices, batch)]."""
    lengths = [len(encode_prompt(model, p)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = tokenize_with_answers(model, [prompts[i] for i in idx], [continuations[i] for i in idx])
        out.append((torch.tensor(idx), batch))
    return out


def answer_logprobs(
    model: Model,
    batches: Sequence[tuple[torch.Tensor, AnswerBatch]],
    n: int,
    hooks: Sequence[FwdHook] = (),
) -> Float[torch.Tensor, "batch"]:
    """Teacher-forced gold-answer log-prob per example (summed over answer tokens) under ``hooks``.

    Args:
        model: the HookedTransformer.
        batches: ``[(row indices, AnswerBatch)]`` from :func:`_prepare_batches`.
        n: number of examples (rows are scattered back to their original order).
        hooks: forward hooks active during the passes (e.g. :func:`ablation_hooks`).

    Returns:
        ``[n]`` float32 CPU tensor of log p(answer | prompt).
    """
    out = torch.full((n,), float("nan"))
    dev = _device(model)
    with torch.inference_mode(), neuron_hooks(model, list(hooks)):
        for idx, batch in batches:
            out[idx] = _batch_answer_logprob(model, batch.to(dev)).float().cpu()
    return out


def _batch_answer_logprob(model: Model, batch: AnswerBatch) -> Float[torch.Tensor, "batch"]:
    """Sum of answer-token log-probs, unembedding only the positions that predict the answer.

    Equal to ``answer_target(model(batch.tokens), batch)`` (the final norm acts per position),
    without the ``[batch, pos, d_vocab]`` logits of every prompt position.
    """
    resid = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
    b_idx, p_idx = torch.nonzero(batch.answer_mask, as_tuple=True)
    sel = resid[b_idx, p_idx]  # [n_answer_positions, d_model]
    logits = model.unembed(model.ln_final(sel[:, None, :]))[:, 0]
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch.target_ids[b_idx, p_idx, None])[:, 0]
    return torch.zeros(len(batch), dtype=lp.dtype, device=lp.device).index_add_(0, b_idx, lp)


def _per_example_correct(preds: Sequence[str], answers: Sequence[Sequence[str]]) -> np.ndarray:
    return np.asarray([_metrics.accuracy(p, list(a)) for p, a in zip(preds, answers, strict=True)], dtype=np.float64)


def _correct(model: Model, ctx: ContextPrompts, n: int, cfg: AblationConfig, hooks: Sequence[FwdHook]) -> np.ndarray:
    with torch.no_grad(), neuron_hooks(model, list(hooks)):
        preds = generate_greedy(model, ctx.prompts[:n], cfg.max_new_tokens, cfg.batch_size, show_progress=False,
                                backend="tl")  # baseline and ablated conditions on one backend
    return _per_example_correct(preds, ctx.answers[:n])


def measure_ablation(
    model: Model,
    contexts: Sequence[ContextPrompts],
    sets: Mapping[str, NeuronSet],
    cfg: AblationConfig,
    means: Float[torch.Tensor, "layer d_mlp"] | None = None,
    show_progress: bool = True,
    meta: Mapping[str, Any] | None = None,
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

    Returns:
        An :class:`AblationResult`.
    """
    missing = [s for s in cfg.sets if s not in sets]
    if missing:
        raise ValueError(f"neuron set(s) {missing} not found; available: {sorted(sets)}")
    if not contexts:
        raise ValueError("no context conditions given")
    for ctx in contexts:
        if len(ctx) == 0:
            raise ValueError(f"context {ctx.name!r} ({ctx.setting}) has no examples")
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    for name in cfg.sets:
        try:
            sets[name].check_shape(n_layers, d_mlp)
        except ValueError as e:
            raise ValueError(f"set {name}: {e}") from e
    union = NeuronSet()
    for s in sets.values():
        union = union | s

    prepared = {ctx.name: _prepare_batches(model, ctx.prompts, ctx.continuations, cfg.batch_size) for ctx in contexts}
    if cfg.mode == "mean" and means is None:
        all_p = [p for ctx in contexts for p in ctx.prompts]
        all_c = [c for ctx in contexts for c in ctx.continuations]
        means = neuron_means(model, tokenize_with_answers(model, all_p, all_c), cfg.site, cfg.batch_size)
    if means is not None and tuple(means.shape) != (n_layers, d_mlp):
        raise ValueError(f"means must have shape ({n_layers}, {d_mlp}), got {tuple(means.shape)}")

    # conditions: each tested set and its random controls
    conditions: list[tuple[str, int | None, NeuronSet]] = []
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

    n_acc = {ctx.name: (len(ctx) if cfg.accuracy_limit is None else min(len(ctx), cfg.accuracy_limit))
             for ctx in contexts}
    base_lp = {ctx.name: answer_logprobs(model, prepared[ctx.name], len(ctx)) for ctx in contexts}
    base_acc = {}
    if cfg.measure_accuracy:
        base_acc = {ctx.name: _correct(model, ctx, n_acc[ctx.name], cfg, ()) for ctx in contexts}

    lp: dict[tuple[str, str, int | None], np.ndarray] = {}
    acc: dict[tuple[str, str, int | None], np.ndarray] = {}
    todo = [(c, ctx) for c in conditions if c[2] for ctx in contexts]
    for (name, seed, ns), ctx in tqdm(todo, desc="ablation conditions", disable=not show_progress):
        hooks = ablation_hooks(ns, cfg.mode, means, cfg.scale, cfg.site)
        lp[(name, ctx.name, seed)] = (answer_logprobs(model, prepared[ctx.name], len(ctx), hooks)
                                      - base_lp[ctx.name]).numpy().astype(np.float64)
        if cfg.measure_accuracy:
            acc[(name, ctx.name, seed)] = _correct(model, ctx, n_acc[ctx.name], cfg, hooks) - base_acc[ctx.name]

    rows: list[SetEffect] = []
    per_example: dict[str, Any] = {}
    for ci, ctx in enumerate(contexts):
        pe: dict[str, Any] = {"ids": list(ctx.ids), "base_logprob": base_lp[ctx.name].tolist(), "sets": {}}
        if cfg.measure_accuracy:
            pe["base_correct"] = base_acc[ctx.name].tolist()
        for si, name in enumerate(cfg.sets):
            ns = sets[name]
            metrics = [("logprob", lp, len(ctx), float(base_lp[ctx.name].mean()))]
            if cfg.measure_accuracy:
                metrics.append(("accuracy", acc, n_acc[ctx.name], float(base_acc[ctx.name].mean())))
            set_pe: dict[str, Any] = {}
            for mi, (metric, store, n, base) in enumerate(metrics):
                bseed = cfg.seed + 7919 * (ci * 97 + si * 7 + mi)
                if not ns:
                    empty = Effect(float("nan"), float("nan"), float("nan"), 0)
                    row = SetEffect(name, ctx.name, ctx.setting, metric, 0, 0, base, empty, empty, empty)
                else:
                    eff = store[(name, ctx.name, None)]
                    rnd = np.stack([store[(name, ctx.name, s)] for s in controls[name]]) if controls[name] else None
                    rnd_mean = rnd.mean(0) if rnd is not None else np.full_like(eff, np.nan)
                    row = SetEffect(
                        set_name=name, context=ctx.name, setting=ctx.setting, metric=metric, n_neurons=len(ns),
                        n=n, base=base,
                        effect=Effect.of(eff, cfg.n_bootstrap, bseed),
                        random=Effect.of(rnd_mean, cfg.n_bootstrap, bseed + 1) if rnd is not None else
                        Effect(float("nan"), float("nan"), float("nan"), 0),
                        diff=Effect.of(eff - rnd_mean, cfg.n_bootstrap, bseed + 2) if rnd is not None else
                        Effect(float("nan"), float("nan"), float("nan"), 0),
                        random_seed_means=[float(r.mean()) for r in rnd] if rnd is not None else [],
                    )
                    set_pe[metric] = {"effect": eff.tolist(),
                                      "random": rnd.tolist() if rnd is not None else []}
                row.verdict = _verdict(row)
                rows.append(row)
            pe["sets"][name] = set_pe
        per_example[ctx.name] = pe

    return AblationResult(
        rows=rows,
        config=cfg.to_dict(),
        contexts={ctx.name: {"setting": ctx.setting, "n": len(ctx), "n_accuracy": n_acc[ctx.name]
                             if cfg.measure_accuracy else 0, "n_skipped": ctx.n_skipped,
                             "n_truncated": ctx.n_truncated} for ctx in contexts},
        sets={name: {"n_neurons": len(sets[name]), "counts_per_layer": sets[name].counts_per_layer(),
                     "random_seeds": controls[name]} for name in cfg.sets},
        per_example=per_example,
        meta=dict(meta or {}),
    )


# --------------------------------------------------------------------------------------
# the experiment on QA examples
# --------------------------------------------------------------------------------------
def build_context_prompts(model: Model, examples: Sequence[Any], setting: str, name: str,
                          data_cfg: DataConfig) -> ContextPrompts:
    """Render ``examples`` under one data setting with the data module's context builder."""
    from neurorit_lens.data import answer_continuation, build_instances, render_prompts

    built = build_instances(list(examples), setting, data_cfg.n_passages, data_cfg.seed)
    if not built.instances:
        raise ValueError(f"no example could be built for setting {setting!r} ({built.n_skipped} skipped)")
    rendered = render_prompts(built.instances, model.tokenizer, data_cfg.template, data_cfg.max_prompt_tokens)
    conts = [answer_continuation(inst.answers[0], rendered.template) for inst in built.instances]
    return ContextPrompts(
        name=name, setting=setting, prompts=list(rendered.prompts), continuations=conts,
        answers=[list(inst.answers) for inst in built.instances], ids=[inst.id for inst in built.instances],
        n_skipped=int(built.n_skipped), n_truncated=int(rendered.n_truncated),
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

    Returns:
        An :class:`AblationResult`.
    """
    if not examples:
        raise ValueError("run_ablation needs at least one example")
    contexts = [
        build_context_prompts(model, examples, cfg.relevant_setting, "relevant", data_cfg),
        build_context_prompts(model, examples, cfg.noisy_setting, "noisy", data_cfg),
    ]
    info = {"data": data_cfg.to_dict(), **dict(meta or {})}
    return measure_ablation(model, contexts, sets, cfg, means=means, show_progress=show_progress, meta=info)


# --------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------
@dataclass
class AblationResult:
    """Effects of ablating neuron sets, vs random controls, per context and metric."""

    rows: list[SetEffect]
    config: dict[str, Any]
    contexts: dict[str, dict[str, Any]]
    sets: dict[str, dict[str, Any]]
    per_example: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, set_name: str, context: str, metric: str = "logprob") -> SetEffect:
        for r in self.rows:
            if (r.set_name, r.context, r.metric) == (set_name, context, metric):
                return r
        raise KeyError(f"no result for set {set_name!r}, context {context!r}, metric {metric!r}")

    def top(self, k: int = 5, metric: str = "logprob") -> list[SetEffect]:
        """The ``k`` rows of ``metric`` with the largest |difference vs random|."""
        rows = [r for r in self.rows if r.metric == metric and r.diff.n > 0]
        return sorted(rows, key=lambda r: -abs(r.diff.mean))[:k]

    def verdicts(self) -> list[str]:
        return [r.verdict for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "contexts": self.contexts, "sets": self.sets,
                "rows": [r.to_dict() for r in self.rows], "verdicts": self.verdicts(),
                "meta": self.meta, "per_example": self.per_example}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AblationResult:
        try:
            return cls(rows=[SetEffect.from_dict(r) for r in d["rows"]], config=dict(d["config"]),
                       contexts=dict(d["contexts"]), sets=dict(d["sets"]),
                       per_example=dict(d.get("per_example", {})), meta=dict(d.get("meta", {})))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an ablation result: {e}") from e

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``out_dir/ablation.json`` atomically; returns its path."""
        return atomic_write_json(Path(out_dir) / RESULT_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> AblationResult:
        """Read ``ablation.json`` (or the folder that holds it)."""
        p = Path(path)
        if p.is_dir():
            p = p / RESULT_FILE
        return cls.from_dict(read_json(p))

    def table(self) -> str:
        """A Markdown table: effect of each set vs random controls, per context and metric."""
        mode = self.config.get("mode", "zero")
        n_random = self.config.get("n_random", "?")
        lines = [
            f"Ablation ({mode}) vs {n_random} random sets with the same per-layer counts; "
            "effect = ablated - unablated, mean [bootstrap 95% CI] over examples.",
            "",
            "| set | neurons | context | metric | n | unablated | set effect | random effect | set - random |",
            "|---|---:|---|---|---:|---:|---|---|---|",
        ]
        for r in self.rows:
            if r.metric == "logprob":
                base, scale, dig, unit = f"{r.base:.3f}", 1.0, 3, "log-prob (nats)"
            else:
                base, scale, dig, unit = f"{r.base * 100:.1f}%", 100.0, 1, "accuracy (points)"
            lines.append(f"| {r.set_name} | {r.n_neurons} | {r.context} ({r.setting}) | {unit} | {r.n} | {base} | "
                         f"{r.effect.fmt(dig, scale)} | {r.random.fmt(dig, scale)} | {r.diff.fmt(dig, scale)} |")
        lines.append("")
        lines += [f"- {v}" for v in self.verdicts()]
        return "\n".join(lines)
