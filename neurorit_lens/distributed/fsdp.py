"""FSDP2 sharding of a HookedTransformer, and the moves between its ``DTensor`` shards and full tensors.

Training every weight (``full``, ``clean``) replicates the weights, gradients and two AdamW
moments on every rank under data parallelism: 16 bytes per parameter, 128 GB for an 8B
model. :func:`shard_model_fsdp` applies FSDP2's ``fully_shard`` to every transformer block,
the final norm and the unembedding, then to the root, so each rank keeps ``1/W`` of every
parameter (a ``DTensor`` sharded on dim 0), gathers a unit's weights for its forward and
backward only, and reduce-scatters the gradients. TL's hook points live inside the blocks and
keep working.

What reads or writes whole tensors goes through the helpers here, which are collectives
(every rank calls them, in the same order) and return plain tensors unchanged:
:func:`full_tensor` (a parameter, a gradient norm), :func:`gather_full` (the weights, for a
checkpoint or the saved model, kept on one rank), :func:`full_optimizer_state` (AdamW's
moments, so a checkpoint has the layout a single process writes) and, the other way,
:func:`shard_like` / :func:`shard_optimizer_state` (a full tensor from a checkpoint becomes
this rank's shard). In one process nothing is sharded and every helper is the identity.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from neurorit_lens.distributed.process import get_rank, is_distributed

log = logging.getLogger(__name__)

HEAD_MODULES = ("ln_final", "unembed")  # sharded as units of their own, see shard_model_fsdp


def is_dtensor(t: Any) -> bool:
    """True for a ``DTensor`` (an FSDP2 shard, or a value computed from shards)."""
    if not isinstance(t, torch.Tensor) or not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(model: torch.nn.Module) -> bool:
    """True when ``model`` went through ``fully_shard`` (its parameters are ``DTensor`` shards)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model_fsdp(
    model: torch.nn.Module, reshard_after_forward: bool = True, sum_gradients: bool = False, **kwargs: Any
) -> torch.nn.Module:
    """Shard a HookedTransformer with FSDP2 (``fully_shard`` on every block, the final norm and
    the unembedding, then the root).

    For models whose weights, gradients and optimiser state do not fit one GPU: each rank
    keeps ``1/W`` of every parameter (a ``DTensor`` sharded on dim 0) and gathers a block's
    weights just for its forward and backward. TL's hook points live inside the blocks and
    keep working, so deactivation hooks stay on. Meant for whole-tensor training (``full``,
    ``clean``); entry-level masks would have to be applied to each rank's local shard.
    Every rank must hold the same weights before the call (each keeps its own slice).

    Args:
        model: a HookedTransformer (``requires_grad`` already set on what trains).
        reshard_after_forward: free gathered weights after forward (ZeRO-3) or keep them (ZeRO-2).
        sum_gradients: sum instead of average gradients over ranks (use with losses already
            normalised by the global token count, ``collectives.global_token_count``).
        **kwargs: passed to ``fully_shard`` (e.g. ``mp_policy`` for bf16 compute).

    Returns:
        The same model, sharded in place (unchanged in one process).
    """
    if not is_distributed():
        return model
    from torch.distributed.fsdp import fully_shard

    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError("shard_model_fsdp expects a HookedTransformer-like model with .blocks")
    # The final norm and the unembedding are units of their own: the trainer's loss calls them after
    # model(tokens, stop_at_layer=n_layers) has returned, outside the root's forward, on the answer
    # positions only (objective.answer_position_logprobs); a unit gathers its weights when it is called.
    heads = [m for name in HEAD_MODULES if isinstance(m := getattr(model, name, None), torch.nn.Module)
             and any(True for _ in m.parameters())]
    for unit in [*blocks, *heads]:
        fully_shard(unit, reshard_after_forward=reshard_after_forward, **kwargs)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **kwargs)
    if sum_gradients:
        for m in [*blocks, *heads, model]:
            m.set_force_sum_reduction_for_comms(True)  # type: ignore[operator]  (gloo has no PREMUL_SUM)
            m.set_gradient_divide_factor(1.0)  # type: ignore[operator]
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a ``DTensor`` (an all-gather, or an all-reduce of a partial
    value such as a gradient norm: every rank must call it); a plain tensor as it is."""
    return t.full_tensor() if is_dtensor(t) else t  # type: ignore[attr-defined]


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` cut the way ``like`` is sharded: this rank's slice, scattered from rank 0's
    ``full`` (a collective; every rank passes a tensor of the full shape). ``full`` on
    ``like``'s device when ``like`` is a plain tensor."""
    if not is_dtensor(like):
        return full.to(like.device, like.dtype)
    from torch.distributed.tensor import distribute_tensor

    if tuple(full.shape) != tuple(like.shape):
        raise ValueError(f"a full tensor of shape {tuple(full.shape)} cannot fill a shard of {tuple(like.shape)}")
    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh,  # type: ignore[attr-defined]
                             like.placements)  # type: ignore[attr-defined]


def gather_full(named: Iterable[tuple[str, torch.Tensor]], dst: int = 0) -> dict[str, torch.Tensor]:
    """Full CPU copies of named tensors on rank ``dst`` (``{}`` on the other ranks).

    Sharded tensors are all-gathered one at a time, so a rank holds at most one full tensor
    on its device at once; every rank must call this with the same names in the same order.
    """
    keep = get_rank() == dst
    out: dict[str, torch.Tensor] = {}
    for name, t in named:
        full = full_tensor(t.detach())
        if keep:
            out[name] = full.to("cpu", copy=True)
    return out


def full_optimizer_state(state: Mapping[str, Any], dst: int = 0) -> dict[str, Any] | None:
    """``optimizer.state_dict()`` with every ``DTensor`` (AdamW's moments of sharded
    parameters) replaced by its full CPU tensor, on rank ``dst``; ``None`` elsewhere.

    The result has exactly the layout one process writes, so a checkpoint saved under FSDP2
    resumes under data parallelism or in one process, and the other way round.
    """
    keep = get_rank() == dst
    out: dict[str, Any] = {}
    for idx, entry in state["state"].items():
        full_entry = {}
        for key, value in entry.items():
            if is_dtensor(value):
                value = full_tensor(value).to("cpu", copy=True)
            full_entry[key] = value
        out[idx] = full_entry
    return {**state, "state": out} if keep else None


def shard_optimizer_state(state: Mapping[str, Any], params: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Undo :func:`full_optimizer_state` for this rank: each full state tensor of a sharded
    parameter (same shape as the parameter) becomes this rank's shard of it.

    Args:
        state: an ``optimizer.state_dict()`` with full tensors (from a checkpoint).
        params: the optimizer's parameters in state-dict order (its param groups, flattened).
    """
    out: dict[Any, Any] = {}
    for idx, entry in state["state"].items():
        p = params[int(idx)]
        out[idx] = {k: (shard_like(v, p) if is_dtensor(p) and isinstance(v, torch.Tensor)
                        and tuple(v.shape) == tuple(p.shape) else v)
                    for k, v in entry.items()}
    return {**state, "state": out}


__all__ = [
    "full_optimizer_state",
    "full_tensor",
    "gather_full",
    "is_dtensor",
    "is_sharded",
    "shard_like",
    "shard_model_fsdp",
    "shard_optimizer_state",
]
