"""The ``contrast`` definition of I: IG from the gold-only to the noisy activations.

For one question the model reads two prompts that end the same way: the noisy one
(relevant passage among irrelevant ones) and the gold-only one (relevant passage only).
Their *shared suffix* is the longest common run of final real tokens (question, assistant
tag and the teacher-forced gold answer; more when the last passage is the same). On the
noisy run, a neuron's activation at a suffix position is ``a_noisy``, at the matching
suffix position of the gold-only run ``a_gold``; the noise changed it by ``d = a_noisy - a_gold``.

``method="ig"`` (per layer, like :func:`~neurorit_lens.neurons.attribution.attribute`'s
``ig``): for layer ``l``, the noisy run is kept up to that layer (its ``resid_pre`` is
cached), the layer's activations at the suffix positions move along the straight path
``a(alpha) = a_gold + alpha * d`` while every other position keeps its noisy value, and the
layers above are recomputed. With ``F`` the answer objective (default ``log p(gold)``)::

    C_i = sum_{suffix positions} d_i * mean_k dF/da_i(alpha_k)

and completeness holds per layer: ``sum_i C_{l,i} = F(noisy) - F(noisy, layer l's suffix
activations := the gold-only ones)`` up to discretisation error. ``ig_joint`` moves every
chosen layer together (completeness over all of them together), ``grad_x_act`` is the one
point ``alpha = 1`` (``d * dF/da`` at the noisy run, all layers in one pass; attribution
patching).

Mining stores ``-C`` (:func:`neurorit_lens.neurons.irrelevant.orient_scores`): larger = the
noise-induced change of the neuron lowers ``F``.

How it is computed: the gate ``g`` (leaf, ``[rows, 1, d_mlp]``, value ``alpha``) enters as
``x = base + g * (act - base)`` at the suffix positions, with ``base`` the gold-only
activations aligned to the noisy positions, so ``dF/dg_i = sum_pos d_{pos,i} dF/dx_{pos,i}``.
Only the suffix changes with ``alpha``, so the positions before it are computed once and
reused as a key/value prefix (rotary and standard position embeddings), which makes a pass
cost about as much as the suffix, not the whole prompt.

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.objective import tokenize_with_answers
>>> model = tiny_model()
>>> noisy = tokenize_with_answers(model, ["Trains run late. Velmor is in Zarnia. Q: where? A:"], [" Velmor"])
>>> gold = tokenize_with_answers(model, ["Velmor is in Zarnia. Q: where? A:"], [" Velmor"])
>>> tuple(contrast_attribute(model, noisy, gold, method="ig", steps=4).shape)
(1, 2, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from neurorit_lens.config import AttributionMethod, MiningConfig, RiemannRule, Site, Target
from neurorit_lens.hooks import mlp_hook_name, neuron_hooks
from neurorit_lens.neurons.attribution import _check_inputs, _method_alphas, budget_chunk, frozen_parameters
from neurorit_lens.neurons.gates import Readout, cache_resid_pre, tile, trunk
from neurorit_lens.objective import AnswerBatch, tokenize_with_answers
from neurorit_lens.precision import autocast, resolve_precision
from neurorit_lens.tl_backend import Model

__all__ = ["contrast_attribute", "contrast_baseline_target", "contrast_scores", "gold_activations", "shared_suffix"]


def shared_suffix(noisy: AnswerBatch, gold: AnswerBatch) -> Int[torch.Tensor, "batch"]:
    """Length of the longest common suffix of each pair's real tokens (prompt + answer).

    Raises:
        ValueError: different batch sizes, or a pair whose suffix does not reach the last
            prompt token (it would not hold every answer-predicting position).
    """
    if len(noisy) != len(gold):
        raise ValueError(f"{len(noisy)} noisy but {len(gold)} gold-only sequences")
    out = []
    for b in range(len(noisy)):
        a = noisy.tokens[b, : int(noisy.lengths[b])].tolist()
        g = gold.tokens[b, : int(gold.lengths[b])].tolist()
        n = 0
        while n < min(len(a), len(g)) and a[-1 - n] == g[-1 - n]:
            n += 1
        need = int(noisy.lengths[b] - noisy.last_prompt_pos[b])
        if n < need:
            raise ValueError(f"pair {b}: the noisy and gold-only sequences share only their last {n} tokens, "
                             f"fewer than the {need} from the last prompt token on (do both prompts end with the "
                             "same question and answer?)")
        out.append(n)
    return torch.tensor(out, dtype=torch.long)


def _suffix_mask(noisy: AnswerBatch, suffix: torch.Tensor, p0: int = 0) -> Bool[torch.Tensor, "batch pos"]:
    ar = torch.arange(p0, noisy.tokens.shape[1], device=noisy.tokens.device)[None, :]
    ln = noisy.lengths[:, None].to(ar.device)
    return (ar >= ln - suffix[:, None].to(ar.device)) & (ar < ln)


@torch.no_grad()
def gold_activations(model: Model, noisy: AnswerBatch, gold: AnswerBatch, suffix: torch.Tensor,
                     layers: Sequence[int], site: Site = MiningConfig.site, p0: int = 0,
                     offload: bool = False) -> dict[int, Float[torch.Tensor, "batch pos d_mlp"]]:
    """Gold-only activations of each layer moved to the matching noisy positions ``p0:``
    (suffix position ``j`` from the end of one sequence onto ``j`` from the end of the other);
    0 outside the shared suffix."""
    device = model.cfg.device or "cpu"
    mask = _suffix_mask(noisy, suffix, p0).to(device)
    shift = (noisy.lengths - gold.lengths).to(device)
    pos = torch.arange(p0, noisy.tokens.shape[1], device=device)[None, :]
    idx = (pos - shift[:, None]).clamp(0, gold.tokens.shape[1] - 1)
    out: dict[int, torch.Tensor] = {}

    def make(layer: int):
        def hook(act: torch.Tensor, *, hook) -> None:
            base = act.gather(1, idx[..., None].expand(-1, -1, act.shape[-1])) * mask[..., None].to(act.dtype)
            out[layer] = base.cpu() if offload else base

        return hook

    hooks = [(mlp_hook_name(l, site), make(l)) for l in layers]
    with neuron_hooks(model, hooks):
        model(gold.tokens.to(device), stop_at_layer=max(layers) + 1, padding_side="right")
    return out


def _mix_hook(gate: torch.Tensor, base: torch.Tensor, mask3: torch.Tensor):
    def hook(act: torch.Tensor, *, hook) -> torch.Tensor:
        return torch.where(mask3, base + gate.to(act.dtype) * (act - base), act)

    return hook


def _contrast_pass(model: Model, start: torch.Tensor, start_layer: int, layers: Sequence[int],
                   bases: Sequence[torch.Tensor], row_alphas: torch.Tensor, mask: torch.Tensor, readout: Readout,
                   target: str, site: str, past: dict | None) -> Float[torch.Tensor, "rows layer d_mlp"]:
    """dF/dgate of each layer in ``layers`` for rows whose suffix activations sit at ``alpha`` on the path."""
    rows, d_mlp = row_alphas.shape[0], model.cfg.d_mlp
    gates = [row_alphas.to(start.device, model.cfg.dtype)[:, None, None].expand(rows, 1, d_mlp).clone()
             .requires_grad_(True) for _ in layers]
    mask3 = mask[..., None]
    hooks = [(mlp_hook_name(l, site), _mix_hook(g, b, mask3)) for l, g, b in zip(layers, gates, bases, strict=True)]
    with torch.enable_grad(), neuron_hooks(model, hooks):
        F = readout.target(model, trunk(model, start, start_layer, past), target)
        grads = torch.autograd.grad(F.sum(), gates)
    return torch.stack([g[:, 0, :] for g in grads], dim=1)


def _prefix(model: Model, noisy: AnswerBatch, suffix: torch.Tensor) -> int:
    """Positions before every pair's suffix are the same at every alpha: reuse them as a prefix."""
    if model.cfg.positional_embedding_type not in ("standard", "rotary"):
        return 0
    return int((noisy.lengths - suffix).min())


def contrast_attribute(
    model: Model,
    noisy: AnswerBatch,
    gold: AnswerBatch,
    method: AttributionMethod = MiningConfig.method,
    steps: int = MiningConfig.steps,
    rule: RiemannRule = MiningConfig.rule,
    alpha_chunk: int = MiningConfig.alpha_chunk,
    target: Target = MiningConfig.target,
    site: Site = MiningConfig.site,
    layers: Sequence[int] | None = MiningConfig.layers,
    offload: bool = False,
    alphas: Sequence[float] | None = None,
    show_progress: bool = False,
    precision: str = "fp32",
    max_memory_gb: float | None = None,
) -> Float[torch.Tensor, "batch layer d_mlp"]:
    """Contrast score ``C`` of every neuron (see module docstring), summed over the shared suffix.

    Args:
        model: a HookedTransformer (its parameters are frozen for the call and restored).
        noisy, gold: the noisy and the gold-only prompt of each question, teacher-forced with
            the same answer (right padded, :func:`neurorit_lens.objective.tokenize_with_answers`).
        method: ``ig`` (per layer), ``ig_joint`` (the chosen layers together) or ``grad_x_act``
            (the defaults are :class:`~neurorit_lens.config.MiningConfig`'s).
        steps, rule, alphas, alpha_chunk: integration points and how many go in one pass, as in
            :func:`neurorit_lens.neurons.attribution.attribute`.
        target: F, computed on the noisy sequence.
        site: ``post`` or ``pre``.
        layers: layers to attribute (default all); rows of other layers are 0.
        offload: keep cached residuals and gold-only activations on the CPU.
        show_progress: tqdm bar over passes.
        precision: ``fp32`` or ``bf16`` autocast, as in ``attribute``.
        max_memory_gb: fewer alphas per pass where one pass would exceed it, as in ``attribute``.

    Returns:
        ``[batch, n_layers, d_mlp]`` scores, not yet oriented (negative = the noise lowers F).
    """
    chosen = _check_inputs(model, noisy, target, site, "all", layers)
    device = model.cfg.device or "cpu"
    noisy, gold = noisy.to(device), gold.to(device)
    suffix = shared_suffix(noisy, gold).to(device)
    a = _method_alphas(method, steps, rule, alphas)
    B, d_mlp = len(noisy), model.cfg.d_mlp
    scores = torch.zeros(B, model.cfg.n_layers, d_mlp, dtype=torch.promote_types(model.cfg.dtype, torch.float32),
                         device=device)
    p0 = _prefix(model, noisy, suffix)
    readout = Readout(noisy).prepare(model).shift(p0)
    mask = _suffix_mask(noisy, suffix, p0)
    groups = [[l] for l in chosen] if method == "ig" else [chosen]
    chunks = {g[0]: list(a.split(budget_chunk(model, noisy, g[0], alpha_chunk, max_memory_gb))) for g in groups}
    with frozen_parameters(model), autocast(precision, device):
        bases = gold_activations(model, noisy, gold, suffix, chosen, site, p0, offload)
        resid, kv = cache_resid_pre(model, noisy.tokens, sorted({g[0] for g in groups}), offload, p0)
        bar = tqdm(total=sum(map(len, chunks.values())), desc=f"contrast {method}", disable=not show_progress,
                   leave=False)
        try:
            for group in groups:
                start = resid.pop(group[0]).to(device)
                for chunk in chunks[group[0]]:
                    c = len(chunk)
                    past = None if kv is None else {i: e.prefix(p0, c) for i, e in kv.items()}
                    g = _contrast_pass(model, tile(start, c), group[0], group,
                                       [tile(bases[l].to(device), c) for l in group], chunk.repeat_interleave(B),
                                       tile(mask, c), readout.repeat(c), target, site, past)
                    scores[:, group] += g.view(c, B, len(group), d_mlp).sum(0).to(scores.dtype)
                    bar.update(1)
        finally:
            bar.close()
    scores /= a.numel()
    return scores.cpu() if offload else scores


def contrast_baseline_target(model: Model, noisy: AnswerBatch, gold: AnswerBatch, layers: Sequence[int] = (),
                             target: Target = MiningConfig.target,
                             site: Site = MiningConfig.site) -> Float[torch.Tensor, "batch"]:
    """F of the noisy sequence with the shared-suffix activations of ``layers`` replaced by the
    gold-only ones (the path's start; with ``layers=()`` F of the noisy run)."""
    device = model.cfg.device or "cpu"
    noisy, gold = noisy.to(device), gold.to(device)
    suffix = shared_suffix(noisy, gold).to(device)
    layers = list(layers)
    bases = gold_activations(model, noisy, gold, suffix, layers, site) if layers else {}
    mask3 = _suffix_mask(noisy, suffix)[..., None]
    zero = torch.zeros((), device=device)
    hooks = [(mlp_hook_name(l, site), _mix_hook(zero, bases[l], mask3)) for l in layers]
    with torch.no_grad(), neuron_hooks(model, hooks):
        return Readout(noisy).target(model, trunk(model, noisy.tokens, None), target)


def contrast_scores(model: Model, noisy: AnswerBatch, gold_prompts: Sequence[str], answers: Sequence[str],
                    cfg: MiningConfig) -> Float[torch.Tensor, "batch layer d_mlp"]:
    """Mining's call: :func:`contrast_attribute` with ``cfg``'s settings (``auto`` precision
    resolved, :func:`neurorit_lens.precision.resolve_precision`), float32 on the CPU."""
    gold = tokenize_with_answers(model, list(gold_prompts), list(answers), max_len=model.cfg.n_ctx)
    precision = resolve_precision(cfg.precision, cfg.method, model.cfg.device)
    return contrast_attribute(model, noisy, gold, method=cfg.method, steps=cfg.steps, rule=cfg.rule,
                              alpha_chunk=cfg.alpha_chunk, target=cfg.target, site=cfg.site, layers=cfg.layers,
                              offload=cfg.offload_scores, precision=precision,
                              max_memory_gb=cfg.max_memory_gb).float().cpu()
