"""What mining hands to the later stages, read from its folder in one place.

``neurorit mine`` (and the runner's ``mining`` stage) writes ``neurons.json`` (the five sets and
a ``meta`` block) and, with ``--answer-means``, ``answer_means.safetensors``. Ablation and
training read them through :meth:`MiningOutput.load`; nothing else parses the ``meta`` block.

>>> from neurorit_lens.neuron_sets import NeuronSet, save_neuron_sets
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = save_neuron_sets(d / "neurons.json", {"R_excl": NeuronSet({1: [3]})},
...                      {"model_shape": [2, 64], "layer_mass": {"R_excl": [0.0, 0.5]}})
>>> out = MiningOutput.load(d)
>>> out.sets["R_excl"].labels(), out.layer_mass, out.answer_means is None
(['L1N3'], {'R_excl': [0.0, 0.5]}, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from neurorit_lens.neuron_sets import MiningMeta, NeuronSet, check_sets_fit, read_neurons_file
from neurorit_lens.neurons.irrelevant import load_answer_means

__all__ = ["MiningOutput"]

ANSWER_MEANS_FILE = "answer_means.safetensors"


@dataclass(frozen=True, eq=False)
class MiningOutput:
    """The sets, the meta, the layer mass and the answer-position means of one mining folder.

    Attributes:
        path: the ``neurons.json`` read.
        sets: ``R``, ``I``, ``R_excl``, ``I_excl``, ``shared`` (or whatever the file holds).
        meta: the typed ``meta`` block.
        answer_means: ``[layer, d_mlp]`` means at the answer-predicting positions of the
            gold-only contexts (mined with ``--answer-means``), else ``None``.
    """

    path: Path
    sets: dict[str, NeuronSet]
    meta: MiningMeta
    answer_means: Float[torch.Tensor, "layer d_mlp"] | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def layer_mass(self) -> dict[str, Any] | None:
        """Per set, the per-layer attribution mass (stage 2 picks its layers from ``R_excl``'s)."""
        return self.meta.layer_mass

    def require_answer_means(self) -> Float[torch.Tensor, "layer d_mlp"]:
        """The answer means; ``FileNotFoundError`` saying how to mine them when the folder has none."""
        return self.answer_means if self.answer_means is not None else load_answer_means(self.folder)

    @classmethod
    def load(cls, path: str | os.PathLike, model: Any = None) -> MiningOutput:
        """Read a mining folder or its ``neurons.json``; with ``model``, reject sets that do not fit it."""
        p = Path(path)
        if p.is_dir():
            p = p / "neurons.json"
        if not p.is_file():
            raise FileNotFoundError(f"neuron file not found: {p}")
        sets, meta = read_neurons_file(p)
        if model is not None:
            check_sets_fit(p, sets, meta, model)
        means = load_answer_means(p.parent) if (p.parent / ANSWER_MEANS_FILE).exists() else None
        return cls(p, sets, meta, means)
