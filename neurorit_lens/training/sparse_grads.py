"""Weight gradients of the trained neurons only, instead of whole MLP weight gradients.

Neuron-level training (stage 1, ``random``) trains a few columns of ``W_in``/``W_gate``, a
few entries of ``b_in`` and a few rows of ``W_out`` per layer. With the weights as
autograd leaves, backward computes each touched matrix's *whole* weight gradient (one GEMM
of ``tokens x d_model x d_mlp`` per matrix) and the mask then throws all but the trained
entries away. On SmolLM2 that is 25 layers x 3 matrices of work for 0.24M entries.

:class:`NeuronGrads` computes the same entries directly. For every layer whose MLP
parameters all carry a *neuron mask* (whole columns / rows / entries of one index set,
:func:`neuron_mask_indices`), those parameters are taken out of autograd and TL hooks
record what their gradients are made of:

- the MLP input ``x`` (a forward pre-hook on the MLP module);
- the gradients at ``hook_pre`` (and ``hook_pre_linear`` of a gated MLP), i.e. at the
  outputs of the ``W_gate``/``W_in`` products, caught by a hook that runs *before* any
  other hook on that point;
- the ``hook_post`` value fed to ``W_out`` (caught *after* every other hook, e.g. a
  deactivation) and the gradient of the MLP output.

Then, with ``I`` the trained neurons and ``g`` the gradient at a product's output,
``dW_in[:, I] = x^T g[:, I]``, ``db_in[I] = sum_t g[t, I]`` (gated: the gradient at
``hook_post``), ``dW_gate[:, I] = (g_gate[:, I])^T x`` and
``dW_out[I, :] = post[:, I]^T g_out``: the same products as the dense gradient, restricted to
the columns of ``I`` and written in the same operand order, accumulated into ``p.grad``
(zeros elsewhere, so masking, data-parallel sync, clipping and the compact AdamW are
unchanged). The activation gradients are those of the dense path; whether a narrower GEMM
sums in the same order is up to the BLAS, so the gradients equal the dense ones to float
rounding (``tests/unit/test_training.py`` compares the trained weights of both paths).
Under bf16 autocast (``TrainConfig.precision``) the caught activations and gradients are
cast to the weights' dtype first, so these products run in fp32.
A layer that has a whole-tensor MLP parameter (``layers``, neurorit stage 2) keeps the
ordinary dense path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from jaxtyping import Float

from neurorit_lens.hooks import neuron_hooks
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.masks import mlp_param_name, neuron_param_entries


def neuron_mask_indices(mask: torch.Tensor | None, axis: int) -> torch.Tensor | None:
    """The neuron indices ``I`` if ``mask`` is exactly "all of ``I`` along ``axis``", else ``None``."""
    if mask is None:
        return None
    if mask.ndim == 1:
        idx = mask.nonzero().squeeze(1)
        return idx if len(idx) else None
    lines = mask.any(dim=1 - axis)
    idx = lines.nonzero().squeeze(1)
    whole = mask.index_select(axis, idx).all()
    return idx if len(idx) and bool(whole) and int(mask.sum()) == len(idx) * mask.shape[1 - axis] else None


def sparse_layers(model: Model, masks: Mapping[str, torch.Tensor | None]) -> dict[int, torch.Tensor]:
    """Layers whose MLP parameters in ``masks`` all hold the same neuron index set, with it.

    A layer qualifies when it has a plain (``MLP``) or gated (``GatedMLP``) MLP without a
    LayerNorm activation, every per-neuron parameter of it is masked (none whole, none
    frozen, ``b_out`` not trained) and all masks select the same neurons.
    """
    out: dict[int, torch.Tensor] = {}
    if model.cfg.is_layer_norm_activation():
        return out
    for layer, block in enumerate(model.blocks):
        if type(getattr(block, "mlp", None)).__name__ not in ("MLP", "GatedMLP"):
            continue
        entries = neuron_param_entries(model, layer)
        if mlp_param_name(layer, "b_out") in masks or any(n not in masks for n, _ in entries):
            continue
        sets = [neuron_mask_indices(masks[n], axis) for n, axis in entries]
        if all(s is not None for s in sets) and all(torch.equal(s, sets[0]) for s in sets):  # type: ignore[arg-type]
            out[layer] = sets[0]  # type: ignore[assignment]
    return out


def _accumulate(p: torch.nn.Parameter, axis: int, idx: torch.Tensor, g: torch.Tensor) -> None:
    """``p.grad`` (created as zeros) ``+= g`` at the neurons ``idx`` along ``axis``."""
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    p.grad.index_add_(axis, idx, g.to(p.dtype))


class NeuronGrads:
    """Gradients of neuron-masked MLP parameters computed for the trained neurons only.

    Args:
        model: the HookedTransformer being trained.
        masks: the trainer's parameter masks.

    Use :meth:`active` around the training forward/backward passes (the trainer wraps its
    whole run); :attr:`names` are the parameters it takes out of autograd.
    """

    def __init__(self, model: Model, masks: Mapping[str, torch.Tensor | None]):
        self.model = model
        self.layers = sparse_layers(model, masks)
        self.names = [n for layer in self.layers for n, _ in neuron_param_entries(model, layer)]

    def __bool__(self) -> bool:
        return bool(self.layers)

    @contextlib.contextmanager
    def active(self, user_hooks: list) -> Iterator[None]:
        """Hooks that catch the gradients (first / last around ``user_hooks``), the parameters
        out of autograd; all undone on exit."""
        if not self.layers:
            with neuron_hooks(self.model, user_hooks):
                yield
            return
        params = dict(self.model.named_parameters())
        saved = {n: params[n].requires_grad for n in self.names}
        handles = []
        first, last = [], []
        try:
            for n in self.names:
                params[n].requires_grad_(False)
            for layer, idx in self.layers.items():
                f, la, h = self._layer_hooks(layer, idx.to(params[self.names[0]].device))
                first += f
                last += la
                handles.append(h)
            with neuron_hooks(self.model, first), neuron_hooks(self.model, user_hooks), \
                    neuron_hooks(self.model, last):
                yield
        finally:
            for h in handles:
                h.remove()
            for n, flag in saved.items():
                params[n].requires_grad_(flag)

    def _layer_hooks(self, layer: int, idx: torch.Tensor) -> tuple[list, list, _Both]:
        """``(hooks before the user's, hooks after them, MLP input pre-hook handle)`` of ``layer``."""
        mlp = self.model.blocks[layer].mlp
        gated = type(mlp).__name__ == "GatedMLP"
        state: dict[str, torch.Tensor] = {}
        pre = f"blocks.{layer}.mlp."

        def keep_input(_mod: torch.nn.Module, args: tuple) -> None:
            # detached: the state keeps each layer's last input until the next pass; with its grad_fn it
            # kept that pass's graph alive (under activation checkpointing, every recomputed block)
            state["x"] = args[0].detach().reshape(-1, args[0].shape[-1]).to(mlp.W_in.dtype)

        def on_grad(fn: Callable[[torch.Tensor, torch.Tensor], None]) -> Callable:
            def hook(act: torch.Tensor, *, hook) -> torch.Tensor:
                if torch.is_grad_enabled():
                    if not act.requires_grad:
                        act.requires_grad_(True)
                    x = state["x"]
                    act.register_hook(lambda g: fn(x, g.reshape(-1, g.shape[-1]).to(x.dtype)))
                return act
            return hook

        def grad_in(x: Float[torch.Tensor, "t d"], g: Float[torch.Tensor, "t m"]) -> None:
            gi = g.index_select(1, idx)
            if gated:  # F.linear(x, W_in.T): grad of the [m, d] weight is g^T x
                _accumulate(mlp.W_in, 1, idx, (gi.T @ x).T)
            else:  # addmm(b_in, x, W_in): x^T g, and the bias sums g
                _accumulate(mlp.W_in, 1, idx, x.T @ gi)
                _accumulate(mlp.b_in, 0, idx, gi.sum(0))

        def grad_gate(x: Float[torch.Tensor, "t d"], g: Float[torch.Tensor, "t m"]) -> None:
            _accumulate(mlp.W_gate, 1, idx, (g.index_select(1, idx).T @ x).T)

        def grad_post_bias(_x: torch.Tensor, g: Float[torch.Tensor, "t m"]) -> None:
            _accumulate(mlp.b_in, 0, idx, g.index_select(1, idx).sum(0))

        def keep_post(act: torch.Tensor, *, hook) -> torch.Tensor:
            state["post"] = act.reshape(-1, act.shape[-1]).index_select(1, idx).detach().to(mlp.W_out.dtype)
            return act

        def on_output(_mod: torch.nn.Module, _args: tuple, out: torch.Tensor) -> None:
            if torch.is_grad_enabled() and out.requires_grad:
                post = state["post"]

                def grad_out(g: torch.Tensor) -> None:
                    g2 = g.reshape(-1, g.shape[-1]).to(post.dtype)
                    # F.linear(post, W_out.T): [d, m] weight grad g^T post; addmm: post^T g
                    _accumulate(mlp.W_out, 0, idx, (g2.T @ post).T if gated else post.T @ g2)
                out.register_hook(grad_out)

        first = [(pre + "hook_pre", on_grad(grad_gate if gated else grad_in))]
        if gated:
            first += [(pre + "hook_pre_linear", on_grad(grad_in)), (pre + "hook_post", on_grad(grad_post_bias))]
        h_in = mlp.register_forward_pre_hook(keep_input)
        h_out = mlp.register_forward_hook(on_output)
        return first, [(pre + "hook_post", keep_post)], _Both(h_in, h_out)


class _Both:
    """Two removable handles removed together."""

    def __init__(self, *handles: torch.utils.hooks.RemovableHandle):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


__all__ = ["NeuronGrads", "neuron_mask_indices", "sparse_layers"]
