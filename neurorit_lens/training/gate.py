"""Learned gates: deactivation that training decides (``TrainConfig.deactivation="gate"``).

Each deactivated (candidate) neuron ``(l, i)`` gets a gate ``g_{l,i}``, initialised to 1,
that multiplies its activation (``hook_post``) in every forward pass of training and dev
evaluation. The gates train together with the parameters of stage 1 (the trained neurons of
``stage1`` / ``neurorit``'s stage 1, or of ``random``), on the same noisy-context SFT loss plus
an L1 penalty that pulls them toward 0::

    loss = SFT loss + gate_penalty * mean_{candidates} |g_{l,i}|

so the data decide how far each neuron is switched off. By default a gate may end anywhere,
even below 0 or above 1 (nothing clamps it; the screen saw learned gates amplify neurons up to
2.2x). ``clamp=True`` in :func:`gate_hooks` and :func:`bake_gates` (``TrainConfig.gate_clamp`` in
training) uses ``clamp(g, 0, 1)``
instead, a gate that can only switch a neuron off, partly or fully (outside [0, 1] the SFT
gradient is 0 and the penalty pulls the gate back toward the range). In ``neurorit``'s
stage 2 the gates stay on, frozen.

The gates are one parameter of the model while it trains, ``neurorit_gates``
(``[n_layers, d_mlp]``, 1 and frozen outside the candidates, so masks, checkpoints, the
learning-rate search and data-parallel gradient sums handle them like any trained entry).
:func:`bake_gates` folds them into the weights and removes the parameter: the MLP output is
``sum_i (a_i g_i) W_out[i] = sum_i a_i (g_i W_out[i])``, so multiplying each candidate's
``W_out`` row by its gate gives the hooked model's logits without a hook (tested).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

from neurorit_lens.hooks import FwdHook, mlp_hook_name
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.tl_backend import Model
from neurorit_lens.training.masks import ParamMasks, mlp_param_name

GATE_PARAM = "neurorit_gates"

__all__ = ["GATE_PARAM", "GatePenalty", "attach_gates", "bake_gates", "detach_gates", "gate_hooks", "gate_masks"]


def attach_gates(model: Model) -> torch.nn.Parameter:
    """Register ``model.neurorit_gates`` (all ones, ``[n_layers, d_mlp]``), replacing an old one."""
    detach_gates(model)
    p = next(model.parameters())
    gates = torch.nn.Parameter(torch.ones(model.cfg.n_layers, model.cfg.d_mlp, device=p.device, dtype=p.dtype),
                               requires_grad=False)
    model.register_parameter(GATE_PARAM, gates)
    return gates


def detach_gates(model: Model) -> None:
    """Remove ``model.neurorit_gates`` if it is there."""
    if GATE_PARAM in model._parameters:
        del model._parameters[GATE_PARAM]


def gate_masks(gates: torch.Tensor, neurons: NeuronSet) -> ParamMasks:
    """The trainable entries of the gates: exactly the candidate neurons."""
    return {GATE_PARAM: neurons.to_mask(*gates.shape).to(gates.device, torch.bool)}


def _gate_values(gates: torch.Tensor, clamp: bool) -> torch.Tensor:
    """The multipliers a gate applies: the gates, or ``clamp(g, 0, 1)`` (shared by hook and bake)."""
    return gates.clamp(0.0, 1.0) if clamp else gates


def gate_hooks(gates: torch.Tensor, neurons: NeuronSet, site: str = "post", clamp: bool = False) -> list[FwdHook]:
    """Hooks that multiply each layer's activations by that layer's gates (1 outside the
    candidates), clamped to [0, 1] with ``clamp``."""

    def make(layer: int) -> Any:
        def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook) -> torch.Tensor:
            return act * _gate_values(gates[layer], clamp).to(act.dtype)

        return hook

    return [(mlp_hook_name(layer, site), make(layer)) for layer in sorted(neurons.by_layer())]


class GatePenalty:
    """``coef * mean |g|`` over the candidate gates, the term added to the loss (a callable)."""

    def __init__(self, gates: torch.Tensor, neurons: NeuronSet, coef: float):
        if not neurons:
            raise ValueError("a gate penalty needs candidate neurons")
        self.gates, self.coef = gates, float(coef)
        self.mask = gate_masks(gates, neurons)[GATE_PARAM]
        self.fingerprint = {"gate_penalty": self.coef, "n_gates": int(self.mask.sum())}

    def __call__(self) -> torch.Tensor:
        return self.coef * self.gates[self.mask].abs().mean()


@torch.no_grad()
def bake_gates(model: Model, neurons: NeuronSet, clamp: bool = False) -> None:
    """Multiply each candidate's ``W_out`` row by its gate (clamped to [0, 1] with ``clamp``,
    as :func:`gate_hooks`), then remove the gates from the model."""
    params = dict(model.named_parameters())
    if GATE_PARAM not in params:
        raise ValueError(f"the model has no {GATE_PARAM} to bake (attach_gates was not called)")
    gates = params[GATE_PARAM]
    for layer, idx in neurons.by_layer().items():
        w_out = params[mlp_param_name(layer, "W_out")]
        index = torch.as_tensor(idx, dtype=torch.long, device=w_out.device)
        w_out[index] *= _gate_values(gates[layer, index], clamp).to(w_out.dtype)[:, None]
    detach_gates(model)
