"""Hook names and hook factories: the only module that knows TL's hook names.

Hook functions follow TL's signature ``fn(tensor, *, hook)``. Temporary hooks can go
through ``model.hooks(...)``; long-lived hooks (ablation during an experiment,
deactivation during training) go through :func:`neuron_hooks`, a context manager that
adds its own handles as *permanent* (so TL's ``reset_hooks`` elsewhere cannot drop them
half-way) and removes exactly those handles in ``finally``.

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.neuron_sets import NeuronSet
>>> model = tiny_model()
>>> ns = NeuronSet({0: [1, 2]})
>>> with neuron_hooks(model, zero_ablation(ns)):
...     _ = model(model.to_tokens("hello"))
>>> any(hp.fwd_hooks for hp in model.hook_dict.values())
False
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, get_args

import torch
from jaxtyping import Float

from neurorit_lens.config import Site
from neurorit_lens.registry import Registry
from neurorit_lens.tl_backend import HookPoint, Model, act_name

if TYPE_CHECKING:
    from neurorit_lens.neuron_sets import NeuronSet

HookFn = Callable[..., torch.Tensor | None]
FwdHook = tuple[str, HookFn]

SITES = get_args(Site)


def mlp_hook_name(layer: int, site: str = "post") -> str:
    """Name of the MLP neuron activation hook (``blocks.{l}.mlp.hook_post`` by default).

    ``post`` is the post-activation; for gated MLPs TL's ``hook_post`` is the product
    act(gate) * in that feeds ``W_out``, which is the neuron this project uses.
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    return act_name(site, layer)


def resid_pre_name(layer: int) -> str:
    return act_name("resid_pre", layer)


def layer_of(hook_name: str) -> int:
    """Layer index of a ``blocks.{l}....`` hook name."""
    parts = hook_name.split(".")
    if len(parts) < 2 or parts[0] != "blocks":
        raise ValueError(f"not a block hook name: {hook_name}")
    return int(parts[1])


def mlp_names_filter(layers: Iterable[int], site: str = "post") -> Callable[[str], bool]:
    names = {mlp_hook_name(layer, site) for layer in layers}
    return lambda name: name in names


@contextlib.contextmanager
def neuron_hooks(
    model: Model,
    fwd_hooks: Sequence[FwdHook] = (),
    bwd_hooks: Sequence[FwdHook] = (),
) -> Iterator[Model]:
    """Attach hooks for the duration of a ``with`` block and remove only those in ``finally``.

    Composable: nested blocks and TL's own ``model.hooks`` keep working, and an exception
    inside the block still leaves the model without any of these hooks.
    """
    added: list[tuple[HookPoint, str, object]] = []
    try:
        for direction, hooks in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
            for name, fn in hooks:
                if name not in model.hook_dict:
                    raise KeyError(f"model has no hook point named {name!r}")
                hp = model.hook_dict[name]
                store = hp.fwd_hooks if direction == "fwd" else hp.bwd_hooks
                hp.add_hook(fn, dir=direction, is_permanent=True)
                added.append((hp, direction, store[-1]))
        yield model
    finally:
        for hp, direction, handle in reversed(added):
            handle.hook.remove()
            store = hp.fwd_hooks if direction == "fwd" else hp.bwd_hooks
            for i, h in enumerate(store):
                if h is handle:
                    del store[i]
                    break


def _index(indices: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(list(indices), dtype=torch.long, device=device)


def zero_neurons_hook(indices: Sequence[int]) -> HookFn:
    """Hook that sets the chosen neurons of one layer to 0 at every position."""
    idx_list = sorted(indices)

    def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook: HookPoint) -> torch.Tensor:
        act = act.clone()
        act[..., _index(idx_list, act.device)] = 0.0
        return act

    return hook


def scale_neurons_hook(indices: Sequence[int], alpha: float) -> HookFn:
    """Hook that multiplies the chosen neurons by ``alpha`` (0 = zero ablation, 2 = enhance)."""
    idx_list = sorted(indices)

    def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook: HookPoint) -> torch.Tensor:
        act = act.clone()
        idx = _index(idx_list, act.device)
        act[..., idx] = act[..., idx] * alpha
        return act

    return hook


def set_neurons_hook(indices: Sequence[int], values: Float[torch.Tensor, "n"]) -> HookFn:
    """Hook that replaces the chosen neurons by fixed values (mean ablation).

    ``values[k]`` is the value of neuron ``indices[k]`` (the pairs are kept together when
    the indices are sorted).
    """
    idx_in = [int(i) for i in indices]
    values = torch.as_tensor(values).detach().flatten()
    if len(values) != len(idx_in):
        raise ValueError(f"{len(values)} values for {len(idx_in)} neurons")
    if len(set(idx_in)) != len(idx_in):
        raise ValueError(f"duplicate neuron indices in {idx_in}")
    perm = sorted(range(len(idx_in)), key=idx_in.__getitem__)
    idx_list = [idx_in[k] for k in perm]
    values = values[torch.as_tensor(perm, dtype=torch.long)] if perm else values

    def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook: HookPoint) -> torch.Tensor:
        act = act.clone()
        act[..., _index(idx_list, act.device)] = values.to(act.device, act.dtype)
        return act

    return hook


def zero_ablation(neurons: NeuronSet, site: str = "post") -> list[FwdHook]:
    """Forward hooks that zero every neuron of ``neurons``."""
    return [(mlp_hook_name(layer, site), zero_neurons_hook(idx)) for layer, idx in neurons.by_layer().items() if idx]


def scale_ablation(neurons: NeuronSet, alpha: float, site: str = "post") -> list[FwdHook]:
    """Forward hooks that scale every neuron of ``neurons`` by ``alpha``."""
    return [(mlp_hook_name(layer, site), scale_neurons_hook(idx, alpha))
            for layer, idx in neurons.by_layer().items() if idx]


def mean_ablation(
    neurons: NeuronSet, means: Float[torch.Tensor, "layer d_mlp"], site: str = "post"
) -> list[FwdHook]:
    """Forward hooks that set each neuron to its mean activation over a reference set.

    ``means[l, i]`` is the mean of neuron (l, i) over all positions of reference prompts
    (see :func:`neurorit_lens.ablation.controls.neuron_means`).
    """
    if means.ndim != 2:
        raise ValueError(f"means must be a [layer, d_mlp] tensor, got shape {tuple(means.shape)}")
    neurons.check_shape(means.shape[0], means.shape[1])
    hooks = []
    for layer, idx in neurons.by_layer().items():
        if idx:
            vals = means[layer, sorted(idx)]
            hooks.append((mlp_hook_name(layer, site), set_neurons_hook(idx, vals)))
    return hooks


def _deactivate_zero(neurons: NeuronSet, scale: float, values: torch.Tensor | None, site: str) -> list[FwdHook]:
    return zero_ablation(neurons, site)


def _deactivate_scale(neurons: NeuronSet, scale: float, values: torch.Tensor | None, site: str) -> list[FwdHook]:
    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale}")
    return scale_ablation(neurons, float(scale), site)


def _deactivate_constant(neurons: NeuronSet, scale: float, values: torch.Tensor | None, site: str) -> list[FwdHook]:
    if values is None:
        raise ValueError("deactivation mode 'constant' needs the neurons' values (answer_means.safetensors, "
                         "written by `neurorit mine --answer-means` or `neurorit run --mining.answer-means`)")
    return mean_ablation(neurons, values, site)


def _deactivate_gate(neurons: NeuronSet, scale: float, values: torch.Tensor | None, site: str) -> list[FwdHook]:
    raise ValueError("deactivation mode 'gate' has no fixed hook: its gates are learned in training "
                     "(neurorit_lens.training.gate, TrainConfig.deactivation='gate')")


DEACTIVATION_MODES: Registry[Callable[[NeuronSet, float, torch.Tensor | None, str], list[FwdHook]]] = Registry(
    "deactivation mode")
"""How neurons are switched off: name -> hook factory ``(neurons, scale, values, site) -> hooks``."""
DEACTIVATION_MODES.register("zero", "set to 0", _deactivate_zero)
DEACTIVATION_MODES.register("scale", "multiplied by a factor (--deactivation-scale)", _deactivate_scale)
DEACTIVATION_MODES.register("constant", "held at their mean at the answer-predicting positions of gold-only "
                            "contexts (mining's answer means)", _deactivate_constant)
DEACTIVATION_MODES.register("gate", "multiplied by a gate learned with stage 1 under an L1 penalty (training only)",
                            _deactivate_gate)


def deactivation_hooks(
    neurons: NeuronSet,
    mode: str = "zero",
    scale: float = 0.0,
    values: Float[torch.Tensor, "layer d_mlp"] | None = None,
    site: str = "post",
) -> list[FwdHook]:
    """Forward hooks that switch ``neurons`` off in one of the deactivation modes (:data:`DEACTIVATION_MODES`).

    ``zero`` sets them to 0, ``scale`` multiplies them by ``scale``, ``constant`` holds
    neuron (l, i) at ``values[l, i]`` at every position (e.g. its mean activation at the
    answer-predicting positions of gold-only contexts). Each mode bakes exactly into the
    weights (:func:`neurorit_lens.training.bake.bake_deactivation`).
    """
    return DEACTIVATION_MODES.get(mode)(neurons, scale, values, site)
