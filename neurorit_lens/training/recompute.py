"""Activation checkpointing per transformer block: keep each block's input, recompute the rest.

Backward needs the activations every block saved in the forward pass (attention scores,
MLP hidden states, LayerNorm statistics): at 4 items x 896 tokens on SmolLM2 that is most
of a ``full`` training's peak memory. :func:`checkpointed_blocks` runs every block through
:func:`torch.utils.checkpoint.checkpoint` (non-reentrant): the forward pass keeps only the
block's input, and backward runs the block's forward once more to rebuild what it needs,
about one extra forward pass per step.

Hooks inside a block run again during that recomputation, on the same input, so a pure
hook (deactivation, gates, ablations, the TL hook points) gives the same tensors. Hooks
with side effects see a second call: the neuron-gradient hooks of
:mod:`neurorit_lens.training.sparse_grads` register their gradient hooks on the tensors of
the first (original) forward, which the backward pass runs through; the tensors the
recomputation makes only refill the saved values of that graph and receive no gradient,
so hooks registered on them never fire and nothing is counted twice
(``tests/unit/test_recompute.py`` checks losses and gradients of every method against the
plain path).

Only forward passes under ``torch.enable_grad`` are checkpointed; evaluation and
generation under ``no_grad`` run the blocks as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from neurorit_lens.tl_backend import Model


def _checkpointed(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run


@contextlib.contextmanager
def checkpointed_blocks(model: Model, enabled: bool = True) -> Iterator[Model]:
    """Checkpoint every block of ``model`` inside the ``with`` block (nothing with ``enabled=False``).

    The blocks' ``forward`` is wrapped on the instances and restored in ``finally``.
    """
    if not enabled:
        yield model
        return
    saved: list[tuple[torch.nn.Module, Any]] = []
    try:
        for block in model.blocks:
            saved.append((block, block.__dict__.get("forward")))
            block.forward = _checkpointed(block.forward)
        yield model
    finally:
        for block, old in reversed(saved):
            if old is None:
                del block.forward
            else:
                block.forward = old


__all__ = ["checkpointed_blocks"]
