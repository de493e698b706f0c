"""Ablation hooks, reference means and random control sets.

- :func:`ablation_hooks`: forward hooks that switch a neuron set off (zero, mean or scale).
- :func:`neuron_means`: each MLP neuron's mean activation over a reference set (for
  mean ablation).
- :func:`answer_position_means`: each neuron's mean activation at the positions that predict
  the answer tokens of (gold-only) prompts (for ``constant`` ablation; mining stores the same
  statistic of its train questions as ``answer_means.safetensors``).
- :func:`random_controls`: random sets with the tested set's per-layer counts, disjoint
  from it, one per seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import get_args

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from neurorit_lens.config import AblationMode
from neurorit_lens.hooks import FwdHook, deactivation_hooks, mlp_hook_name, neuron_hooks
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import AnswerBatch, encode_prompt
from neurorit_lens.registry import Registry
from neurorit_lens.tl_backend import Model

MODES = get_args(AblationMode)


def _device(model: Model) -> torch.device:
    return next(model.parameters()).device


def _reference_tokens(model: Model, prompts: Sequence[str] | AnswerBatch
                      ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch"]]:
    """Right-padded tokens and real lengths of the reference texts (TL's tokenisation, BOS included)."""
    if isinstance(prompts, AnswerBatch):
        return prompts.tokens, prompts.lengths
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
    return tokens, lengths


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
    tokens, lengths = _reference_tokens(model, prompts)
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
        mode: ``zero`` (set to 0), ``mean`` (set to ``means[layer, index]``), ``scale``
            (multiply by ``scale``: 0 = zero ablation, 0.5 = weaken, 2 = enhance) or
            ``constant`` (set to ``means[layer, index]``, the answer-position means of
            :func:`answer_position_means`; the same hook as ``mean``, other values).
        means: ``[n_layers, d_mlp]`` reference values, needed for ``mean`` and ``constant``.
        scale: factor for ``scale`` mode.
        site: ``post`` (default) or ``pre``.

    Returns:
        ``[(hook_name, fn), ...]``, one per layer that has neurons in the set.
    """
    if not isinstance(neurons, NeuronSet):
        raise ValueError(f"neurons must be a NeuronSet, got {type(neurons).__name__}")
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose from {MODES}")
    return ABLATION_MODES.get(mode)(neurons, means, scale, site)


def _ablate_zero(neurons: NeuronSet, means: torch.Tensor | None, scale: float, site: str) -> list[FwdHook]:
    return deactivation_hooks(neurons, "zero", scale=scale, values=means, site=site)


def _ablate_scale(neurons: NeuronSet, means: torch.Tensor | None, scale: float, site: str) -> list[FwdHook]:
    return deactivation_hooks(neurons, "scale", scale=scale, values=means, site=site)


def _ablate_gate(neurons: NeuronSet, means: torch.Tensor | None, scale: float, site: str) -> list[FwdHook]:
    raise ValueError("mode 'gate' has no fixed hooks: each set's gates are learned "
                     "(neurorit_lens.ablation.gate.LearnedGates)")


def _hold_at(mode: str):
    """``mean`` and ``constant``: the same hook (hold each neuron at a value), with other values."""

    def hooks(neurons: NeuronSet, means: torch.Tensor | None, scale: float, site: str) -> list[FwdHook]:
        if means is None:
            raise ValueError(f"mode={mode!r} needs means (see neurorit_lens.ablation.controls.neuron_means "
                             "and answer_position_means)")
        return deactivation_hooks(neurons, "constant", scale=scale, values=means, site=site)

    return hooks


ABLATION_MODES: Registry[Callable[[NeuronSet, torch.Tensor | None, float, str], list[FwdHook]]] = Registry(
    "ablation mode")
"""How a set is ablated in the causal test: name -> hook factory ``(neurons, means, scale, site) -> hooks``."""
ABLATION_MODES.register("zero", "set to 0", _ablate_zero)
ABLATION_MODES.register("mean", "set to their mean activation over the reference prompts", _hold_at("mean"))
ABLATION_MODES.register("scale", "multiplied by --scale (0 = zero, 0.5 = weaken, 2 = enhance)", _ablate_scale)
ABLATION_MODES.register("constant", "set to their mean at the answer-predicting positions of relevant-only contexts",
                        _hold_at("constant"))
ABLATION_MODES.register("gate", "multiplied by gates learned per set on the train split (no fixed hooks)",
                        _ablate_gate)


def answer_position_means(
    model: Model, prompts: Sequence[str], continuations: Sequence[str], site: str = "post", batch_size: int = 8,
) -> Float[torch.Tensor, "layer d_mlp"]:
    """Mean activation of every neuron at the positions that predict the answer tokens.

    The prompts are teacher-forced with their ``continuations``; every answer-predicting
    position (the last prompt token and all answer tokens but the last) weighs the same.
    """
    from neurorit_lens.neurons.irrelevant import activation_stats
    from neurorit_lens.objective import tokenize_with_answers

    if len(prompts) == 0:
        raise ValueError("answer_position_means needs at least one prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = (tokenize_with_answers(model, prompts[s:s + batch_size], continuations[s:s + batch_size])
               for s in range(0, len(prompts), batch_size))
    return activation_stats(model, batches, site, positions="answer")


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
