"""What a training run may move, and how: masked gradients, masked decay, AdamW on trainable entries.

A :class:`MaskedParams` takes a :data:`neurorit_lens.training.masks.ParamMasks` mapping and
owns everything the trainer does to parameters around ``backward``:

- ``requires_grad`` is set on exactly the masked parameters for the duration of a run and
  restored afterwards (:meth:`MaskedParams.trainable`);
- masked gradient entries are zeroed after backward, before clipping
  (:meth:`MaskedParams.mask_grads`), so the gradient norm and clipping see only trainable
  entries;
- decoupled weight decay goes through the mask, ``p -= lr * wd * p * mask``
  (:meth:`MaskedParams.decay`): PyTorch's AdamW would shrink frozen entries too;
- AdamW steps the **trainable entries only**. A whole-tensor parameter (mask ``None``) is
  its own optimizer leaf. A masked parameter (a neuron's row or column inside a weight
  matrix) is represented by a compact 1-D *shadow* holding just its trainable entries: the
  gradient is gathered into the shadow, the optimizer steps the shadow, and the shadow is
  written back into the weight (:meth:`MaskedParams.step`). AdamW is elementwise, so each
  entry takes exactly the step it would take inside the full tensor, and a frozen entry,
  whose gradient is always 0, would not move there either; but the optimizer's moments
  and its work are proportional to the trained entries (0.24M for stage 1 on SmolLM2)
  instead of to the touched weight matrices (66M).

Under FSDP2 (whole tensors only: ``full``, ``clean``) the parameters are ``DTensor`` shards:
there are no shadows, decay and AdamW are elementwise on each rank's shard, and
:meth:`MaskedParams.clip` all-reduces the gradient norm.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping

import torch

from neurorit_lens.distributed.fsdp import full_tensor
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.masks import ParamMasks


class MaskedParams:
    """The trainable parameters of ``model`` under ``masks``, with their compact optimizer leaves.

    Args:
        model: the model whose parameters are trained in place.
        masks: ``{name: bool mask or None}`` (``None``: the whole tensor trains).

    Attributes:
        names, params: the masked parameters, in the model's order.
        leaves: what the optimizer steps: the parameter itself, or its 1-D shadow.
    """

    def __init__(self, model: Model, masks: Mapping[str, torch.Tensor | None]):
        params = dict(model.named_parameters())
        self.model = model
        self.names = [n for n, _ in model.named_parameters() if n in masks]
        self.params = [params[n] for n in self.names]
        device = self.params[0].device
        self.masks: ParamMasks = {n: (None if m is None else m.to(device)) for n, m in masks.items()}
        self.index: dict[str, torch.Tensor] = {}
        self.leaves: list[torch.Tensor] = []
        for n, p in zip(self.names, self.params, strict=True):
            m = self.masks[n]
            if m is None:
                self.leaves.append(p)
                continue
            if not p.is_contiguous():
                raise ValueError(f"masked parameter {n} must be contiguous")
            self.index[n] = m.reshape(-1).nonzero().squeeze(1)
            self.leaves.append(torch.nn.Parameter(p.detach().reshape(-1)[self.index[n]].clone()))

    def _shadows(self) -> Iterator[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]]:
        """``(parameter, shadow, flat index)`` of every masked parameter."""
        for n, p, leaf in zip(self.names, self.params, self.leaves, strict=True):
            if n in self.index:
                yield p, leaf, self.index[n]

    @contextlib.contextmanager
    def trainable(self) -> Iterator[None]:
        """``requires_grad`` on exactly the masked parameters; flags restored and grads freed after."""
        saved = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.masks)
        try:
            yield
        finally:
            for n, p in self.model.named_parameters():
                p.requires_grad_(saved[n])
                p.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the weights' trainable entries into the shadows (after loading or broadcasting weights)."""
        for p, shadow, idx in self._shadows():
            shadow.copy_(p.reshape(-1)[idx])

    def zero_grad(self) -> None:
        for t in (*self.params, *self.leaves):
            t.grad = None

    def mask_grads(self, skip: Collection[str] = ()) -> None:
        """Zero the gradient entries outside each mask (``skip``: parameters whose gradient is
        already zero there, e.g. written by :class:`~neurorit_lens.training.sparse_grads.NeuronGrads`)."""
        for n, p in zip(self.names, self.params, strict=True):
            m = self.masks[n]
            if p.grad is not None and m is not None and n not in skip:
                p.grad = torch.where(m, p.grad, torch.zeros((), dtype=p.grad.dtype, device=p.grad.device))

    def clip(self, max_norm: float) -> float:
        """Clip the (masked) gradients to global L2 norm ``max_norm`` (0: no clipping); the norm before.

        FSDP2-sharded gradients give a partial norm per rank; :func:`full_tensor` all-reduces it
        to the norm of the whole gradient, so every rank clips by the same factor.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return 0.0
        norm = full_tensor(torch.nn.utils.get_total_norm(grads))
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, max_norm, norm)
        return float(norm)

    @torch.no_grad()
    def decay(self, lr: float, wd: float) -> None:
        """Decoupled weight decay of the trainable entries: ``p -= lr * wd * p`` where the mask is set."""
        if wd <= 0:
            return
        for n, leaf in zip(self.names, self.leaves, strict=True):
            if self.masks[n] is None:
                leaf.mul_(1 - lr * wd)
            else:
                leaf.sub_(leaf * (lr * wd))

    @torch.no_grad()
    def step(self, opt: torch.optim.Optimizer) -> None:
        """Gather the gradients into the shadows, step the optimizer, write the shadows back."""
        for p, shadow, idx in self._shadows():
            shadow.grad = None if p.grad is None else p.grad.reshape(-1)[idx]
        opt.step()
        for p, shadow, idx in self._shadows():
            p.view(-1).index_copy_(0, idx, shadow)
