"""Parameter gradient masks: which entries of which weights a training run may change.

Neuro-RIT trains at two granularities, both expressed here as one structure, a
:data:`ParamMasks` mapping ``parameter name -> mask``:

- *neuron level* (stage 1): the parameters that belong to an MLP neuron ``(l, i)`` are
  its input column ``W_in[:, i]``, its bias ``b_in[i]``, its output row ``W_out[i, :]``
  and, for gated MLPs, its gate column ``W_gate[:, i]``. The mask is ``True`` exactly on
  those entries.
- *layer level* (stage 2, the ``layers`` and ``full`` baselines): whole tensors are
  trainable; their mask is ``None``. ``full`` takes the parameters the model's HF
  architecture has (:func:`full_param_masks`), not the zero biases TL adds.

A parameter absent from the mapping is frozen. The trainer turns masks into
``requires_grad`` flags, zeroes the masked gradient entries after every backward pass,
and applies decoupled weight decay only to unmasked entries, so a masked entry is never
moved (``tests/unit/test_masks.py`` checks bit-identity after training).

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.neuron_sets import NeuronSet
>>> m = tiny_model(n_layers=2, d_model=32, d_mlp=64)
>>> masks = neuron_param_masks(m, NeuronSet({0: [1, 2]}))
>>> sorted(masks)
['blocks.0.mlp.W_in', 'blocks.0.mlp.W_out', 'blocks.0.mlp.b_in']
>>> count_trainable(m, masks)  # 2 neurons x (32 in + 1 bias + 32 out)
130
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from jaxtyping import Bool

from neurorit_lens.models.export import hf_native_params
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.tl_backend import Model

ParamMasks = dict[str, "Bool[torch.Tensor, '...'] | None"]

# (parameter suffix, axis that indexes the MLP neuron)
NEURON_PARAM_AXES: tuple[tuple[str, int], ...] = (("W_in", 1), ("b_in", 0), ("W_out", 0), ("W_gate", 1))


def mlp_param_name(layer: int, suffix: str) -> str:
    """``blocks.{layer}.mlp.{suffix}`` (the name of an MLP weight in a HookedTransformer)."""
    return f"blocks.{layer}.mlp.{suffix}"


def neuron_param_entries(model: Model, layer: int) -> list[tuple[str, int]]:
    """The MLP parameters of ``layer`` that hold per-neuron entries, with the neuron axis.

    Only parameters that exist in this model are listed (``W_gate`` only for gated MLPs).
    """
    params = dict(model.named_parameters())
    out = []
    for suffix, axis in NEURON_PARAM_AXES:
        name = mlp_param_name(layer, suffix)
        if name in params:
            if params[name].shape[axis] != model.cfg.d_mlp:
                raise ValueError(f"{name} has shape {tuple(params[name].shape)}; axis {axis} is not d_mlp")
            out.append((name, axis))
    if not out:
        raise ValueError(f"model has no MLP parameters in layer {layer} (attention-only model?)")
    return out


def _neuron_mask(shape: torch.Size, axis: int, indices: list[int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    idx = torch.as_tensor(indices, dtype=torch.long)
    if axis == 0:
        mask[idx] = True
    else:
        mask[:, idx] = True
    return mask


def neuron_param_masks(model: Model, neurons: NeuronSet) -> ParamMasks:
    """Masks that make exactly the parameters of ``neurons`` trainable.

    Args:
        model: the HookedTransformer whose parameters are masked.
        neurons: the neurons to train (stage 1: ``R_excl``).

    Returns:
        ``{param name: bool mask of the parameter's shape}`` for every MLP weight that
        holds one of the neurons' entries.
    """
    neurons.check_model(model)
    params = dict(model.named_parameters())
    masks: ParamMasks = {}
    for layer, idx in neurons.by_layer().items():
        for name, axis in neuron_param_entries(model, layer):
            masks[name] = _neuron_mask(params[name].shape, axis, idx)
    return masks


def layer_param_names(model: Model, layers: Iterable[int], attention: bool = False) -> list[str]:
    """Names of the MLP (and with ``attention`` the attention) parameters of ``layers``."""
    layers = sorted(set(int(x) for x in layers))
    bad = [layer for layer in layers if not 0 <= layer < model.cfg.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range for a model with {model.cfg.n_layers} layers")
    prefixes = [f"blocks.{layer}.mlp." for layer in layers]
    if attention:
        prefixes += [f"blocks.{layer}.attn." for layer in layers]
    return [n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))]


def layer_param_masks(model: Model, layers: Iterable[int], attention: bool = False) -> ParamMasks:
    """Whole MLP (optionally attention) weights of ``layers`` trainable (masks ``None``)."""
    return {name: None for name in layer_param_names(model, layers, attention)}


def full_param_masks(model: Model) -> ParamMasks:
    """Full fine-tuning: every parameter the model's HF architecture has, whole.

    TL adds zero tensors to converted models that their HF checkpoints do not have
    (``unembed.b_U`` always; attention and MLP biases of Llama-style models); those stay
    frozen, so the tuned model exports to its source architecture
    (:func:`neurorit_lens.models.export.hf_native_params`). A TL-only model (no HF
    architecture) trains every parameter.
    """
    return {name: None for name in hf_native_params(model)}


def merge_masks(*masks: Mapping[str, torch.Tensor | None]) -> ParamMasks:
    """Union of several mask mappings (``None``, i.e. the whole tensor, wins)."""
    out: ParamMasks = {}
    for m in masks:
        for name, mask in m.items():
            if name in out and out[name] is None:
                continue
            if mask is None:
                out[name] = None
            elif name in out:
                out[name] = out[name] | mask  # type: ignore[operator]
            else:
                out[name] = mask.clone()
    return out


def check_masks(model: Model, masks: Mapping[str, torch.Tensor | None]) -> None:
    """Raise ``ValueError`` if a mask names a missing parameter or has the wrong shape."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for unknown parameter {name!r}")
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"mask for {name} must be bool, got {mask.dtype}")
            if mask.shape != params[name].shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, "
                                 f"parameter has {tuple(params[name].shape)}")


def count_trainable(model: Model, masks: Mapping[str, torch.Tensor | None]) -> int:
    """Number of parameter entries the masks leave trainable."""
    check_masks(model, masks)
    params = dict(model.named_parameters())
    return int(sum(params[n].numel() if m is None else int(m.sum()) for n, m in masks.items()))


def total_params(model: Model) -> int:
    """Number of parameter entries of the model (TL unties tied embeddings, so both count)."""
    return int(sum(p.numel() for p in model.parameters()))


def trainable_fraction(model: Model, masks: Mapping[str, torch.Tensor | None]) -> float:
    return count_trainable(model, masks) / total_params(model)
