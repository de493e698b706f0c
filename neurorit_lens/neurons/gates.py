"""The gated forward/backward passes behind :func:`~neurorit_lens.neurons.attribution.attribute`.

A gate multiplies an MLP layer's activation at the attributed positions; one pass runs the
model from a cached residual (``start_at_layer``), optionally on top of a recorded
key/value prefix, and returns the gradient of the answer objective with respect to the
gates. See :mod:`neurorit_lens.neurons.attribution` for why it is computed this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float

from neurorit_lens.hooks import mlp_hook_name, neuron_hooks, resid_pre_name
from neurorit_lens.objective import AnswerBatch, answer_target
from neurorit_lens.tl_backend import Model


class Readout:
    """The answer-predicting positions of a batch, gathered compactly ``[batch, n_answer]``.

    F only reads these positions, so the final norm and the unembedding are applied to them
    alone instead of to every position.
    """

    def __init__(self, batch: AnswerBatch):
        mask = batch.answer_mask
        n = mask.sum(1)
        if bool((n == 0).any()):
            bad = torch.nonzero(n == 0).flatten().tolist()
            raise ValueError(f"example(s) {bad} have no answer token to attribute to")
        A = int(n.max())
        B = mask.shape[0]
        idx = torch.zeros(B, A, dtype=torch.long, device=mask.device)
        amask = torch.zeros(B, A, dtype=torch.bool, device=mask.device)
        tgt = torch.zeros(B, A, dtype=torch.long, device=mask.device)
        for b in range(B):
            pos = torch.nonzero(mask[b]).flatten()
            idx[b, : len(pos)] = pos
            amask[b, : len(pos)] = True
            tgt[b, : len(pos)] = batch.target_ids[b, pos]
        self.index = idx
        self.unembed_wt: torch.Tensor | None = None  # W_U^T, made contiguous once per call
        self.batch = AnswerBatch(tokens=tgt, answer_mask=amask, target_ids=tgt, lengths=n,
                                 prompt_lengths=torch.ones_like(n), n_answer_tokens=n)

    def shift(self, p0: int) -> Readout:
        """The same read-out for a sequence whose first ``p0`` positions were cut off."""
        if p0 == 0:
            return self
        out = object.__new__(Readout)
        out.index = (self.index - p0).clamp(min=0)
        out.batch = self.batch
        out.unembed_wt = self.unembed_wt
        return out

    def prepare(self, model: Model) -> Readout:
        """Transpose the unembedding once (TL's ``Unembed`` copies ``W_U.T`` on every call)."""
        W_U = getattr(model.unembed, "W_U", None)
        self.unembed_wt = W_U.detach().T.contiguous() if W_U is not None else None
        return self

    def repeat(self, times: int) -> Readout:
        out = object.__new__(Readout)
        out.unembed_wt = self.unembed_wt
        out.index = self.index.repeat(times, 1)
        b = self.batch
        out.batch = AnswerBatch(*(t.repeat(times, *([1] * (t.dim() - 1))) for t in (
            b.tokens, b.answer_mask, b.target_ids, b.lengths, b.prompt_lengths, b.n_answer_tokens)))
        return out

    def target(self, model: Model, resid: Float[torch.Tensor, "batch pos d_model"],
               kind: str) -> Float[torch.Tensor, "batch"]:
        x = resid.gather(1, self.index[..., None].expand(-1, -1, resid.shape[-1]))
        if model.cfg.normalization_type is not None:
            x = model.ln_final(x)
        if self.unembed_wt is not None:
            # same F.linear as TL's Unembed.forward, with the transposed weight made once
            logits = torch.nn.functional.linear(x, self.unembed_wt, model.unembed.b_U)
        else:
            logits = model.unembed(x)
        cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return answer_target(logits, self.batch, kind)


def trunk(model: Model, tokens_or_resid: torch.Tensor, start_at_layer: int | None,
           past: dict | None = None) -> torch.Tensor:
    """Run the blocks (from ``start_at_layer`` if given) and return the final residual stream."""
    n = model.cfg.n_layers
    if start_at_layer is None:
        return model(tokens_or_resid, stop_at_layer=n, padding_side="right")
    if start_at_layer >= n:
        return tokens_or_resid
    return model(tokens_or_resid, start_at_layer=start_at_layer, stop_at_layer=n, past_kv_cache=past)


class PrefixKV:
    """A key/value cache entry in TL's interface (``past_keys``, ``append``).

    ``record=True``: starts empty and keeps what the layer computes (to capture the keys
    and values of a forward pass exactly as TL's own cache would store them).
    ``record=False``: a frozen prefix; ``append`` returns prefix + new without storing.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, record: bool = False):
        self.past_keys, self.past_values, self.record = keys, values, record

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.record:
            self.past_keys, self.past_values = k.detach(), v.detach()
            return k, v
        return torch.cat([self.past_keys, k], dim=1), torch.cat([self.past_values, v], dim=1)

    def prefix(self, p0: int, times: int) -> PrefixKV:
        return PrefixKV(tile(self.past_keys[:, :p0], times), tile(self.past_values[:, :p0], times))


def prefix_len(model: Model, batch: AnswerBatch, positions: str) -> int:
    """Positions before the first attributed one are the same for every alpha (causal model):
    with ``positions="last"`` they are computed once and reused through a key/value prefix."""
    if positions != "last" or model.cfg.positional_embedding_type not in ("standard", "rotary"):
        return 0
    return int(batch.last_prompt_pos.min())


def gate_hook(gate: torch.Tensor, mask3: torch.Tensor):
    def hook(act: torch.Tensor, *, hook) -> torch.Tensor:
        return act * torch.where(mask3, gate.to(act.dtype), torch.ones((), dtype=act.dtype, device=act.device))

    return hook


def gated_pass(
    model: Model,
    start: torch.Tensor,
    start_layer: int | None,
    gate_layers: Sequence[int],
    row_alphas: Float[torch.Tensor, "rows"],
    mask: Bool[torch.Tensor, "rows pos"],
    readout: Readout,
    target: str,
    site: str,
    past: dict | None = None,
) -> tuple[Float[torch.Tensor, "rows layer d_mlp"], Float[torch.Tensor, "rows"]]:
    """One forward + backward with every layer in ``gate_layers`` multiplied by its row's alpha.

    Returns dF/dgate per gated layer (``[rows, len(gate_layers), d_mlp]``) and F per row.
    """
    d_mlp = model.cfg.d_mlp
    dtype = model.cfg.dtype
    rows = row_alphas.shape[0]
    gates = [row_alphas.to(start.device, dtype)[:, None, None].expand(rows, 1, d_mlp).clone().requires_grad_(True)
             for _ in gate_layers]
    mask3 = mask[..., None]
    hooks = [(mlp_hook_name(l, site), gate_hook(g, mask3)) for l, g in zip(gate_layers, gates, strict=True)]
    with torch.enable_grad(), neuron_hooks(model, hooks):
        resid = trunk(model, start, start_layer, past)
        F = readout.target(model, resid, target)
        grads = torch.autograd.grad(F.sum(), gates)
    return torch.stack([g[:, 0, :] for g in grads], dim=1), F.detach()


def cache_resid_pre(model: Model, tokens: torch.Tensor, layers: Sequence[int], offload: bool,
                     p0: int = 0) -> tuple[dict[int, torch.Tensor], dict[int, PrefixKV] | None]:
    """``resid_pre`` of each chosen layer (positions ``p0:``) from one forward.

    With ``p0 > 0`` the forward runs every layer and also records each layer's keys and
    values, whose first ``p0`` positions become the reusable prefix.
    """
    cache: dict[int, torch.Tensor] = {}

    def make(layer: int):
        def hook(x: torch.Tensor, *, hook) -> None:
            x = x[:, p0:].detach()
            cache[layer] = x.to("cpu") if offload else x

        return hook

    hooks = [(resid_pre_name(l), make(l)) for l in layers]
    with torch.no_grad(), neuron_hooks(model, hooks):
        if p0 == 0:
            model(tokens, stop_at_layer=max(layers) + 1, padding_side="right")
            return cache, None
        n = model.cfg.n_layers
        resid0 = model(tokens, stop_at_layer=0, padding_side="right")  # embeddings only
        empty = resid0.new_zeros(resid0.shape[0], 0)
        rec = {i: PrefixKV(empty, empty, record=True) for i in range(n)}
        model(resid0, start_at_layer=0, stop_at_layer=n, past_kv_cache=rec)
    return cache, rec


def tile(x: torch.Tensor, times: int) -> torch.Tensor:
    return x.repeat(times, *([1] * (x.dim() - 1)))


# --- the interface -------------------------------------------------------------------
