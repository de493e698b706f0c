"""Folding a deactivation into the weights, exactly, so a saved model needs no hook.

See :func:`bake_deactivation`; :mod:`neurorit_lens.training.plans` describes the modes.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.masks import mlp_param_name, neuron_param_entries

__all__ = ["bake_deactivation"]


@torch.no_grad()
def bake_deactivation(
    model: Model,
    neurons: NeuronSet,
    mode: str = "zero",
    scale: float = 0.0,
    values: Float[torch.Tensor, "layer d_mlp"] | None = None,
) -> None:
    """Fold the deactivation of ``neurons`` into the weights in place (no hook needed after).

    ``zero``: sets their ``W_out`` rows (which alone makes the MLP output identical to
    zeroing ``hook_post``), and their ``W_in`` columns, ``b_in`` entries and ``W_gate``
    columns to 0. ``scale``: multiplies their ``W_out`` rows by ``scale`` (the MLP output
    is linear in ``hook_post``). ``constant``: adds ``sum_i values[l, i] W_out[l][i]`` to
    ``b_out`` of layer ``l``, then zeroes the neurons as ``zero`` does.
    """
    neurons.check_model(model)
    params = dict(model.named_parameters())
    if mode not in ("zero", "scale", "constant"):
        raise ValueError(f"unknown deactivation mode {mode!r}; choose from zero, scale, constant")
    if mode == "constant" and values is None:
        raise ValueError("bake_deactivation(mode='constant') needs values")
    for layer, idx in neurons.by_layer().items():
        index = torch.as_tensor(idx, dtype=torch.long)
        w_out = params[mlp_param_name(layer, "W_out")]
        if mode == "scale":
            w_out[index.to(w_out.device)] *= scale
            continue
        if mode == "constant":
            c = values[layer, index].to(w_out.device, w_out.dtype)  # type: ignore[index]
            b_out = params[mlp_param_name(layer, "b_out")]
            b_out += (c[:, None] * w_out[index.to(w_out.device)]).sum(0).to(b_out.dtype)
        _zero_neurons(params, model, layer, idx)


def _zero_neurons(params: dict[str, torch.nn.Parameter], model: Model, layer: int, idx: list[int]) -> None:
    index = torch.as_tensor(idx, dtype=torch.long)
    for name, axis in neuron_param_entries(model, layer):
        p = params[name]
        if axis == 0:
            p[index.to(p.device)] = 0
        else:
            p[:, index.to(p.device)] = 0
