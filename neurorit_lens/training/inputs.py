"""What a training takes from a mining output: one function, called by the runner, ``neurorit train``
and the method comparison.

>>> from neurorit_lens.config import TrainConfig
>>> prepare_training(None, TrainConfig(method="full"))
TrainingInputs(sets=None, layer_mass=None, deactivation_values=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from neurorit_lens.config import TrainConfig
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.neurons.output import MiningOutput

__all__ = ["TrainingInputs", "prepare_training"]


@dataclass(frozen=True, eq=False)
class TrainingInputs:
    """The mining-derived arguments of :func:`neurorit_lens.training.methods.train`."""

    sets: dict[str, NeuronSet] | None
    layer_mass: dict[str, Any] | None
    deactivation_values: Float[torch.Tensor, "layer d_mlp"] | None


def prepare_training(mined: MiningOutput | None, cfg: TrainConfig) -> TrainingInputs:
    """The sets, the layer mass and (for ``constant`` deactivation) the answer-position means that
    ``cfg`` trains with; ``mined=None`` for a method that needs no neurons (``full``, ``clean``).

    Raises:
        FileNotFoundError: ``constant`` deactivation and a mining folder without answer means.
    """
    if mined is None:
        return TrainingInputs(None, None, None)
    values = mined.require_answer_means() if cfg.deactivation == "constant" else None
    return TrainingInputs(mined.sets, mined.layer_mass, values)
