"""Attribution of the answer log-prob to MLP neurons: Integrated Gradients and cheaper kin.

Three estimators behind one interface, :func:`attribute`, all returning one score per
(example, layer, neuron), summed over the attributed positions:

``ig`` (per layer, Knowledge-Neurons style; the paper's method)
    For layer ``l`` scale that layer's activation ``a`` by ``alpha`` from a zero baseline,
    everything else untouched: ``IG_i = a_i * mean_k dF(alpha_k a)/da_i``. Completeness holds
    per layer: ``sum_i IG_i = F(a) - F(a_l := 0)`` up to discretisation error.
``ig_joint``
    Every neuron of every chosen layer is scaled together by multiplicative gates going
    from 0 to 1: ``IG_i = mean_k a_i(alpha_k) * dF/dx_i(alpha_k)``, the gradient w.r.t. the
    gate (``a_i(alpha)`` is the raw activation on that path, ``x = alpha * a`` what the next
    module sees). ``m`` passes for all layers at once; completeness holds for the whole
    model: ``sum over all neurons = F(gates = 1) - F(all chosen layers zeroed)``.
``grad_x_act`` (attribution patching)
    ``a_i * dF/da_i`` at alpha = 1: one forward and one backward.

How it is computed (the speed comes from here, the numbers do not change):

* Gates, not activations, are the leaves: the hook multiplies the activation by a gate
  ``g`` of shape ``[rows, 1, d_mlp]`` (1 outside the attributed positions), so
  ``dF/dg_i = sum_pos a_{pos,i} dF/dx_{pos,i}``, i.e. IG summed over positions, without
  materialising a ``[rows, pos, d_mlp]`` gradient per layer.
* ``ig``: one forward caches ``resid_pre`` of every chosen layer; for each layer and each
  chunk of alphas the forward starts at that layer from the cached residual
  (``start_at_layer``), with the alphas batched along the batch dimension.
* The unembedding is applied only at the positions that predict answer tokens.
* With ``positions="last"`` the positions before the last prompt token never change
  (causal model), so their keys and values are recorded once and every alpha pass runs
  only the remaining positions on top of that prefix (TL's ``past_kv_cache`` interface).
* Parameters are frozen for the duration (``requires_grad`` restored in ``finally``);
  gradients flow only to the gates.

Sequences are right padded (see :mod:`neurorit_lens.objective`), so padded positions never
influence real ones in a causal model, and they are never scaled.

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.objective import tokenize_with_answers
>>> model = tiny_model()
>>> batch = tokenize_with_answers(model, ["The capital of Zarnia is"], [" Velmor"])
>>> scores = attribute(model, batch, method="ig", steps=4)
>>> tuple(scores.shape)
(1, 2, 64)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import get_args

import torch
from jaxtyping import Bool, Float
from tqdm.auto import tqdm

from neurorit_lens.config import AttributionMethod, MiningConfig, Positions, RiemannRule, Site, Target
from neurorit_lens.hooks import mlp_hook_name, neuron_hooks
from neurorit_lens.models.resources import backward_bytes_per_row
from neurorit_lens.neurons.gates import (
    PrefixKV,
    Readout,
    cache_resid_pre,
    gated_pass,
    prefix_len,
    tile,
    trunk,
)
from neurorit_lens.objective import TARGETS, AnswerBatch
from neurorit_lens.precision import autocast
from neurorit_lens.tl_backend import Model

METHODS = get_args(AttributionMethod)
RULES = get_args(RiemannRule)
POSITIONS = get_args(Positions)

__all__ = [
    "METHODS",
    "POSITIONS",
    "RULES",
    "attribute",
    "baseline_target",
    "budget_chunk",
    "completeness_gap",
    "ig_alphas",
    "position_mask",
    "target_fn",
]


# --- small pieces ------------------------------------------------------------------


def _check_points(steps: int, rule: str) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")


def ig_alphas(steps: int, rule: RiemannRule = MiningConfig.rule) -> Float[torch.Tensor, "steps"]:
    """Riemann points on [0, 1]: midpoint ``(k - 0.5)/m``, right ``k/m``, left ``(k - 1)/m``.

    These are Captum's ``riemann_middle`` / ``riemann_right`` / ``riemann_left`` points; every
    point has weight ``1/m``.
    """
    _check_points(steps, rule)
    k = torch.arange(1, steps + 1, dtype=torch.float64)
    offset = {"midpoint": 0.5, "right": 0.0, "left": 1.0}[rule]
    return (k - offset) / steps


def position_mask(batch: AnswerBatch, positions: Positions = MiningConfig.positions) -> Bool[torch.Tensor, "batch pos"]:
    """Which positions are scaled and attributed: every real one (``all``), every real one but
    the first (``skip_first``: the first token is the same in every prompt and serves as the
    attention sink, whose huge activations make the early layers' IG path ill-conditioned),
    or the last prompt token."""
    if positions not in POSITIONS:
        raise ValueError(f"unknown positions {positions!r}; choose from {POSITIONS}")
    ar = torch.arange(batch.tokens.shape[1], device=batch.tokens.device)[None, :]
    if positions in ("all", "skip_first"):
        return (ar < batch.lengths[:, None].to(ar.device)) & (ar >= int(positions == "skip_first"))
    return ar == batch.last_prompt_pos[:, None].to(ar.device)


@contextlib.contextmanager
def frozen_parameters(model: Model) -> Iterator[Model]:
    """Set ``requires_grad=False`` on every parameter; restore the previous flags in ``finally``."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _check_inputs(model: Model, batch: AnswerBatch, target: str, site: str, positions: str,
                  layers: Sequence[int] | None) -> list[int]:
    if not isinstance(batch, AnswerBatch):
        raise ValueError("batch must be an AnswerBatch (see targets.tokenize_with_answers), "
                         f"got {type(batch).__name__}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {TARGETS}")
    mlp_hook_name(0, site)  # validates site
    if positions not in POSITIONS:
        raise ValueError(f"unknown positions {positions!r}; choose from {POSITIONS}")
    if model.cfg.positional_embedding_type == "shortformer":
        raise ValueError("shortformer positional embeddings are not supported (forward passes start at a layer)")
    n_layers = model.cfg.n_layers
    if layers is None:
        return list(range(n_layers))
    out = sorted({int(x) for x in layers})
    if not out:
        raise ValueError("layers is empty")
    bad = [x for x in out if x < 0 or x >= n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range for a model with {n_layers} layers")
    return out


def attribute(
    model: Model,
    batch: AnswerBatch,
    method: AttributionMethod = MiningConfig.method,
    steps: int = MiningConfig.steps,
    rule: RiemannRule = MiningConfig.rule,
    alpha_chunk: int = MiningConfig.alpha_chunk,
    positions: Positions = MiningConfig.positions,
    target: Target = MiningConfig.target,
    site: Site = MiningConfig.site,
    layers: Sequence[int] | None = MiningConfig.layers,
    show_progress: bool = False,
    offload: bool = False,
    alphas: Sequence[float] | None = None,
    precision: str = "fp32",
    max_memory_gb: float | None = None,
) -> Float[torch.Tensor, "batch layer d_mlp"]:
    """Attribution score of every MLP neuron for every example of ``batch``.

    The defaults are :class:`~neurorit_lens.config.MiningConfig`'s (``method="grad_x_act"``).

    Args:
        model: a HookedTransformer (its parameters are frozen for the call and restored).
        batch: right-padded prompt + answer tokens (``targets.tokenize_with_answers``).
        method: ``ig`` (per layer), ``ig_joint`` (all chosen layers together) or ``grad_x_act``.
        steps: number of Riemann points m for the IG methods (ignored by ``grad_x_act``).
        rule: ``midpoint`` (default), ``right`` or ``left`` Riemann points.
        alpha_chunk: alphas per forward pass (batched along the batch dimension).
        positions: ``all`` real positions, ``skip_first`` (all but the first, the attention
            sink), or only the ``last`` prompt position.
        target: F, one of ``logprob``, ``prob``, ``logit``, ``logit_diff``.
        site: ``post`` (default, the input to W_out) or ``pre``.
        layers: layers to attribute (default all); rows of other layers are 0. For
            ``ig_joint`` only these layers are gated.
        show_progress: tqdm bar over forward passes.
        offload: keep the cached residuals and the returned scores on CPU.
        alphas: explicit integration points (each weight ``1/len(alphas)``), overriding
            ``steps`` / ``rule``; for comparisons with other libraries' grids.
        precision: ``fp32``, or ``bf16`` autocast of the forward passes
            (:func:`neurorit_lens.precision.autocast`); the gates, their gradients and the sum
            over integration points stay float32 either way.
        max_memory_gb: a budget for the activations of one forward + backward pass
            (weights and cached residuals not counted): each pass takes at most
            ``alpha_chunk`` alphas, fewer where the estimate
            (:func:`neurorit_lens.models.resources.backward_bytes_per_row`, from the layers the
            pass runs through) would exceed it, at least 1. The scores are the same sum
            (equal to float rounding). ``None``: ``alpha_chunk`` everywhere.

    Returns:
        ``[batch, n_layers, d_mlp]`` scores (model dtype promoted to at least float32),
        summed over the attributed positions.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if alpha_chunk < 1:
        raise ValueError(f"alpha_chunk must be >= 1, got {alpha_chunk}")
    chosen = _check_inputs(model, batch, target, site, positions, layers)
    device = model.cfg.device or "cpu"
    batch = batch.to(device)
    a = _method_alphas(method, steps, rule, alphas)
    out_dtype = torch.promote_types(model.cfg.dtype, torch.float32)
    scores = torch.zeros(len(batch), model.cfg.n_layers, model.cfg.d_mlp, dtype=out_dtype, device=device)
    def chunks(start_layer: int) -> list[torch.Tensor]:
        return list(a.split(budget_chunk(model, batch, start_layer, alpha_chunk, max_memory_gb)))

    with frozen_parameters(model), autocast(precision, device):
        if method == "ig":
            _ig_per_layer(model, batch, positions, target, site, chosen, chunks, offload, show_progress, scores)
        else:
            _ig_joint(model, batch, positions, target, site, chosen, chunks(chosen[0]), offload,
                      show_progress, method, scores)
    scores /= a.numel()
    return scores.cpu() if offload else scores


def budget_chunk(model: Model, batch: AnswerBatch, start_layer: int, alpha_chunk: int,
                 max_memory_gb: float | None) -> int:
    """Alphas per pass from ``start_layer``: ``alpha_chunk``, lowered until the estimated
    activation memory of ``alpha_chunk * len(batch)`` rows fits ``max_memory_gb`` (at least 1)."""
    if max_memory_gb is None:
        return alpha_chunk
    if max_memory_gb <= 0:
        raise ValueError(f"max_memory_gb must be positive, got {max_memory_gb}")
    itemsize = torch.tensor([], dtype=model.cfg.dtype).element_size()
    per_row = backward_bytes_per_row(model.cfg, int(batch.tokens.shape[1]), model.cfg.n_layers - start_layer,
                                     int(batch.answer_mask.sum()) // max(len(batch), 1) + 1, itemsize)
    rows = int(max_memory_gb * 1e9) // max(per_row * len(batch), 1)
    return int(min(alpha_chunk, max(1, rows)))


def _method_alphas(method: str, steps: int, rule: str,
                   alphas: Sequence[float] | None) -> Float[torch.Tensor, "points"]:
    """The integration points: one point at alpha 1 for ``grad_x_act``, ``alphas`` when given, else the rule's.

    ``steps`` and ``rule`` are checked for every method, as :class:`~neurorit_lens.config.MiningConfig` does.
    """
    _check_points(steps, rule)
    if method == "grad_x_act":
        return torch.ones(1, dtype=torch.float64)
    if alphas is not None:
        a = torch.as_tensor(list(alphas), dtype=torch.float64)
        if a.numel() == 0:
            raise ValueError("alphas is empty")
        return a
    return ig_alphas(steps, rule)


class _GatedPasses:
    """What every gated pass of one :func:`attribute` call shares: the attributed-position
    mask, the answer readout and the key/value prefix, all from the first ``p0`` positions on."""

    def __init__(self, model: Model, batch: AnswerBatch, positions: str, target: str, site: str):
        self.model, self.target, self.site, self.B = model, target, site, len(batch)
        self.p0 = prefix_len(model, batch, positions)
        self.readout = Readout(batch).prepare(model).shift(self.p0)
        self.mask = position_mask(batch, positions)[:, self.p0:]
        self.kv: dict[int, PrefixKV] | None = None

    def cache(self, tokens: torch.Tensor, layers: Sequence[int], offload: bool) -> dict[int, torch.Tensor]:
        resid, self.kv = cache_resid_pre(self.model, tokens, layers, offload, self.p0)
        return resid

    def run(self, start: torch.Tensor, start_layer: int, gate_layers: Sequence[int],
            chunk: torch.Tensor) -> torch.Tensor:
        """Gradients for one chunk of alphas: rows are (alpha, example), alpha-major."""
        c = len(chunk)
        past = None if self.kv is None else {i: e.prefix(self.p0, c) for i, e in self.kv.items()}
        g, _ = gated_pass(self.model, tile(start, c), start_layer, gate_layers, chunk.repeat_interleave(self.B),
                           tile(self.mask, c), self.readout.repeat(c), self.target, self.site, past)
        return g


def _ig_per_layer(model: Model, batch: AnswerBatch, positions: str, target: str, site: str,
                  chosen: list[int], chunks: Callable[[int], list[torch.Tensor]], offload: bool,
                  show_progress: bool, scores: torch.Tensor) -> None:
    """``ig``: each layer's gate scaled alone, from its own cached ``resid_pre`` (adds into ``scores``);
    ``chunks(layer)``: the alphas of each pass from ``layer``."""
    passes = _GatedPasses(model, batch, positions, target, site)
    resid = passes.cache(batch.tokens, chosen, offload)
    B, d_mlp, device = len(batch), model.cfg.d_mlp, scores.device
    per_layer = {layer: chunks(layer) for layer in chosen}
    bar = tqdm(total=sum(map(len, per_layer.values())), desc="ig", disable=not show_progress, leave=False)
    try:
        for layer in chosen:
            r0 = resid.pop(layer).to(device)
            for chunk in per_layer[layer]:
                g = passes.run(r0, layer, [layer], chunk)
                scores[:, layer] += g[:, 0].view(len(chunk), B, d_mlp).sum(0).to(scores.dtype)
                bar.update(1)
            del r0
    finally:
        bar.close()


def _ig_joint(model: Model, batch: AnswerBatch, positions: str, target: str, site: str,
              chosen: list[int], chunks: list[torch.Tensor], offload: bool, show_progress: bool,
              method: str, scores: torch.Tensor) -> None:
    """``ig_joint`` / ``grad_x_act``: all chosen layers gated together from the first one (adds into ``scores``)."""
    passes = _GatedPasses(model, batch, positions, target, site)
    start_layer = chosen[0]
    start = passes.cache(batch.tokens, [start_layer], offload)[start_layer].to(scores.device)
    B, d_mlp = len(batch), model.cfg.d_mlp
    bar = tqdm(total=len(chunks), desc=method, disable=not show_progress or len(chunks) == 1, leave=False)
    try:
        for chunk in chunks:
            g = passes.run(start, start_layer, chosen, chunk)
            scores[:, chosen] += g.view(len(chunk), B, len(chosen), d_mlp).sum(0).to(scores.dtype)
            bar.update(1)
    finally:
        bar.close()


# --- targets and completeness ----------------------------------------------------------


def target_fn(model: Model, batch: AnswerBatch, target: Target = MiningConfig.target) -> Float[torch.Tensor, "batch"]:
    """F for the unmodified model (no gradient): the quantity every attribution explains."""
    return baseline_target(model, batch, layers=(), target=target)


def baseline_target(
    model: Model,
    batch: AnswerBatch,
    layers: Sequence[int] = (),
    target: Target = MiningConfig.target,
    site: Site = MiningConfig.site,
    positions: Positions = MiningConfig.positions,
) -> Float[torch.Tensor, "batch"]:
    """F with the activations of ``layers`` set to zero at the attributed positions (the IG baseline)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {TARGETS}")
    device = model.cfg.device or "cpu"
    batch = batch.to(device)
    mask3 = position_mask(batch, positions)[..., None]

    def zero(act: torch.Tensor, *, hook) -> torch.Tensor:
        return act * (~mask3).to(act.dtype)

    hooks = [(mlp_hook_name(l, site), zero) for l in layers]
    with torch.no_grad(), neuron_hooks(model, hooks):
        resid = trunk(model, batch.tokens, None)
        return Readout(batch).target(model, resid, target)


def completeness_gap(
    model: Model,
    batch: AnswerBatch,
    scores: Float[torch.Tensor, "batch layer d_mlp"],
    method: AttributionMethod = MiningConfig.method,
    target: Target = MiningConfig.target,
    site: Site = MiningConfig.site,
    positions: Positions = MiningConfig.positions,
    layers: Sequence[int] | None = MiningConfig.layers,
) -> Float[torch.Tensor, "batch ..."]:
    """Sum of attributions minus what completeness says it should be (``method``: the one that made ``scores``).

    For ``ig``: ``[batch, len(layers)]`` gaps ``sum_i IG_{l,i} - (F(a) - F(a_l := 0))``.
    For ``ig_joint`` (and ``grad_x_act``, which has no such guarantee): ``[batch]`` gaps
    ``sum over layers, neurons - (F(1) - F(every chosen layer zeroed))``.
    """
    chosen = _check_inputs(model, batch, target, site, positions, layers)
    f1 = baseline_target(model, batch, (), target, site, positions)
    s = scores.to(f1.device, torch.float64)
    if method == "ig":
        gaps = []
        for l in chosen:
            f0 = baseline_target(model, batch, [l], target, site, positions)
            gaps.append(s[:, l].sum(-1) - (f1 - f0).double())
        return torch.stack(gaps, dim=1)
    f0 = baseline_target(model, batch, chosen, target, site, positions)
    return s[:, chosen].sum((1, 2)) - (f1 - f0).double()
