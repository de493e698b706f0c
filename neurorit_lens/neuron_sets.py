"""Neurons and neuron sets: set algebra, per-layer counts, and the ``neurons.json`` format.

A neuron is an MLP unit ``(layer, index)``, labelled ``L{layer}N{index}`` as TL does.
A :class:`NeuronSet` is an immutable set of them with ``|``, ``&`` and ``-``, which is all
Neuro-RIT needs: ``R_excl = R - I``, ``I_excl = I - R``, ``shared = R & I``.

>>> R = NeuronSet({0: [1, 2], 3: [7]})
>>> I = NeuronSet({0: [2], 1: [5]})
>>> (R - I).labels()
['L0N1', 'L3N7']
>>> (R & I).labels()
['L0N2']
>>> (R | I).counts_per_layer()
{0: 2, 1: 1, 3: 1}

``neurons.json`` holds named sets and a ``meta`` block (what mined them), read here once:
:func:`read_neurons_file` returns the sets and a typed :class:`MiningMeta`. This module sits
below every stage: hooks take sets, saved-model folders record them, mining writes them.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool

from neurorit_lens.io import atomic_write_json, read_json

_LABEL = re.compile(r"^L(\d+)N(\d+)$")


@dataclass(frozen=True, order=True)
class Neuron:
    layer: int
    index: int

    @property
    def label(self) -> str:
        return f"L{self.layer}N{self.index}"

    @classmethod
    def from_label(cls, label: str) -> Neuron:
        m = _LABEL.match(label)
        if not m:
            raise ValueError(f"not a neuron label: {label!r} (expected L<layer>N<index>)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return self.label


class NeuronSet:
    """Immutable set of MLP neurons, stored as ``{layer: frozenset(indices)}``."""

    __slots__ = ("_layers",)

    def __init__(self, layers: Mapping[int, Iterable[int]] | Iterable[Neuron] | None = None):
        data: dict[int, set[int]] = {}
        if layers is None:
            pass
        elif isinstance(layers, Mapping):
            for layer, idx in layers.items():
                layer = int(layer)
                vals = {int(i) for i in idx}
                if layer < 0 or any(i < 0 for i in vals):
                    raise ValueError(f"negative layer or index in layer {layer}")
                if vals:
                    data.setdefault(layer, set()).update(vals)
        else:
            for n in layers:
                if not isinstance(n, Neuron):
                    n = Neuron(*n)
                data.setdefault(n.layer, set()).add(n.index)
        self._layers: dict[int, frozenset[int]] = {k: frozenset(v) for k, v in sorted(data.items()) if v}

    # --- set algebra -------------------------------------------------------------
    def _combine(self, other: NeuronSet, op) -> NeuronSet:
        if not isinstance(other, NeuronSet):
            return NotImplemented
        layers = set(self._layers) | set(other._layers)
        return NeuronSet({l: op(self._layers.get(l, frozenset()), other._layers.get(l, frozenset())) for l in layers})

    def __or__(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, frozenset.__or__)

    def __and__(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, frozenset.__and__)

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, frozenset.__sub__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NeuronSet) and self._layers == other._layers

    def __hash__(self) -> int:
        return hash(tuple(self._layers.items()))

    def __len__(self) -> int:
        return sum(len(v) for v in self._layers.values())

    def __bool__(self) -> bool:
        return bool(self._layers)

    def __iter__(self) -> Iterator[Neuron]:
        for layer, idx in self._layers.items():
            for i in sorted(idx):
                yield Neuron(layer, i)

    def __contains__(self, n: object) -> bool:
        if isinstance(n, str):
            n = Neuron.from_label(n)
        if isinstance(n, tuple) and not isinstance(n, Neuron):
            n = Neuron(*n)
        return isinstance(n, Neuron) and n.index in self._layers.get(n.layer, frozenset())

    def __repr__(self) -> str:
        return f"NeuronSet({len(self)} neurons in {len(self._layers)} layers: {self.counts_per_layer()})"

    # --- views -------------------------------------------------------------------
    def by_layer(self) -> dict[int, list[int]]:
        return {l: sorted(v) for l, v in self._layers.items()}

    def layers(self) -> list[int]:
        return list(self._layers)

    def counts_per_layer(self) -> dict[int, int]:
        return {l: len(v) for l, v in self._layers.items()}

    def labels(self) -> list[str]:
        return [n.label for n in self]

    def to_mask(self, n_layers: int, d_mlp: int) -> Bool[torch.Tensor, "layer d_mlp"]:
        self.check_shape(n_layers, d_mlp)
        mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
        for l, idx in self._layers.items():
            mask[l, sorted(idx)] = True
        return mask

    @classmethod
    def from_mask(cls, mask: Bool[torch.Tensor, "layer d_mlp"]) -> NeuronSet:
        return cls({l: torch.nonzero(mask[l]).flatten().tolist() for l in range(mask.shape[0])})

    # --- validation and controls --------------------------------------------------
    def check_shape(self, n_layers: int, d_mlp: int) -> None:
        """Raise ``ValueError`` if any neuron is outside a model with this shape."""
        bad = [n.label for n in self if n.layer >= n_layers or n.index >= d_mlp]
        if bad:
            raise ValueError(
                f"{len(bad)} neuron(s) out of range for a model with {n_layers} layers x {d_mlp} "
                f"MLP neurons (is this neuron file from another model?): {bad[:5]}"
            )

    def check_model(self, model: Any) -> None:
        self.check_shape(model.cfg.n_layers, model.cfg.d_mlp)

    def random_like(self, d_mlp: int, seed: int, exclude: NeuronSet | None = None) -> NeuronSet:
        """Random neurons with the same per-layer counts (a control), avoiding ``exclude``."""
        rng = random.Random(seed)
        out: dict[int, list[int]] = {}
        for l, count in self.counts_per_layer().items():
            banned = exclude._layers.get(l, frozenset()) if exclude is not None else frozenset()
            pool = [i for i in range(d_mlp) if i not in banned]
            if count > len(pool):
                raise ValueError(f"layer {l}: cannot draw {count} random neurons from {len(pool)}")
            out[l] = rng.sample(pool, count)
        return NeuronSet(out)

    # --- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int]]:
        return {str(l): sorted(v) for l, v in self._layers.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Iterable[int]]) -> NeuronSet:
        if not isinstance(d, Mapping):
            raise ValueError(f"a neuron set is a mapping layer -> indices, got {type(d).__name__}")
        try:
            return cls({int(k): list(v) for k, v in d.items()})
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad neuron set mapping: {e}") from e

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuronSet:
        return cls.from_dict(read_json(path))


SET_NAMES = ("R", "I", "R_excl", "I_excl", "shared")


def exclusive_sets(R: NeuronSet, I: NeuronSet) -> dict[str, NeuronSet]:
    """The five Neuro-RIT sets from the relevant (R) and irrelevant (I) selections."""
    return {"R": R, "I": I, "R_excl": R - I, "I_excl": I - R, "shared": R & I}


def save_neuron_sets(
    path: str | os.PathLike, sets: Mapping[str, NeuronSet], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``neurons.json``: ``{"R", "I", "R_excl", "I_excl", "shared"}`` plus metadata."""
    obj: dict[str, Any] = {name: s.to_dict() for name, s in sets.items()}
    if meta:
        obj["meta"] = dict(meta)
    return atomic_write_json(path, obj)


@dataclass(frozen=True)
class MiningMeta:
    """The ``meta`` block of ``neurons.json``: what mined the sets (every field optional, as in
    files written by hand or by older versions).

    Fields: ``model`` (name), ``model_shape`` (layers, d_mlp), ``config`` (the
    :class:`~neurorit_lens.config.MiningConfig` as a dict), per-set ``counts`` per layer and
    ``totals``, ``n_examples`` per condition, ``layer_mass`` (per set, the per-layer sum of mean
    attribution; stage 2 picks its layers from ``R_excl``'s), ``excluded`` examples, and any
    other keys in ``extra``.
    """

    model: str = ""
    model_shape: tuple[int, int] | None = None
    config: dict[str, Any] | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    n_examples: dict[str, Any] = field(default_factory=dict)
    layer_mass: dict[str, Any] | None = None
    excluded: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> MiningMeta:
        d = dict(d or {})
        shape = d.pop("model_shape", None)
        known = {f for f in cls.__dataclass_fields__ if f not in ("model_shape", "extra")}
        kw = {k: d.pop(k) for k in list(d) if k in known and d[k] is not None}
        return cls(model_shape=(int(shape[0]), int(shape[1])) if shape else None, extra=d, **kw)

    @classmethod
    def of_file(cls, obj: Mapping[str, Any] | None) -> MiningMeta:
        """The meta of a parsed ``neurons.json`` object (empty when it has none)."""
        return cls.from_dict((obj or {}).get("meta"))

    @property
    def site(self) -> str | None:
        """Where the neurons were read (``post``/``pre``): the mining config's, else a top-level ``site``."""
        return self.extra.get("site") or (self.config or {}).get("site")

    def setting(self, name: str) -> Any:
        """A mining-config field as recorded (``None`` when the file has no config)."""
        return (self.config or {}).get(name)


def read_neurons_file(path: str | os.PathLike) -> tuple[dict[str, NeuronSet], MiningMeta]:
    """The sets and the meta of a ``neurons.json`` (the one reader of the file)."""
    obj = read_json(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a JSON object with neuron sets")
    sets = {k: NeuronSet.from_dict(v) for k, v in obj.items() if k != "meta"}
    return sets, MiningMeta.of_file(obj)


def load_neuron_sets(path: str | os.PathLike, model: Any | None = None) -> dict[str, NeuronSet]:
    """Read ``neurons.json``; with ``model``, reject sets that do not fit its shape."""
    sets, meta = read_neurons_file(path)
    if model is not None:
        check_sets_fit(path, sets, meta, model)
    return sets


def check_sets_fit(path: str | os.PathLike, sets: Mapping[str, NeuronSet], meta: MiningMeta, model: Any) -> None:
    """``ValueError`` unless the sets of ``path`` were mined on (and fit) ``model``'s shape."""
    shape = meta.model_shape
    if shape and (shape[0] != model.cfg.n_layers or shape[1] != model.cfg.d_mlp):
        raise ValueError(
            f"{path}: neuron sets were mined on a model with shape {list(shape)} (layers, d_mlp), "
            f"this model has ({model.cfg.n_layers}, {model.cfg.d_mlp})"
        )
    for name, s in sets.items():
        try:
            s.check_model(model)
        except ValueError as e:
            raise ValueError(f"{path}: set {name}: {e}") from e
