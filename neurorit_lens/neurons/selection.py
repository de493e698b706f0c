"""Neuron selection from per-example attribution scores (docs/design.md, 'Selection and the sets').

Rules:

``threshold`` (default, Knowledge-Neurons style)
    Per example keep the neurons whose attribution is ``>= t * max`` attribution of that
    example (t = 0.2). Only positive maxima count: an example whose largest score is
    ``<= 0`` keeps nothing. A neuron is selected if it is kept in at least a fraction ``p``
    of the examples (p = 0.5).
``topk``
    The ``k`` neurons with the highest mean score over examples (positive means only).
``topk_per_layer``
    The ``k`` highest positive mean scores within each layer.

Variants offered with every rule (they do not just pick large neurons):

sign consistency (``sign_consistency = q > 0``)
    A selected neuron is kept only if its score is ``> 0`` (the wanted sign: mining orients
    every condition's scores so that larger means more of that condition) in at least a
    fraction ``q`` of the examples.
normalised scores
    :func:`normalize_scores` divides each neuron's scores by its typical activation scale
    (mean ``|activation|`` over the mined prompts, :func:`neurorit_lens.neurons.mining.activation_scale`)
    before the statistics are taken.

Everything is computed from *additive* statistics (:class:`SelectionStats`: number of
examples, per-neuron keep counts, per-neuron score sums), so shards of a distributed run
can each ``update`` their own stats and ``merge`` (or all-reduce the tensors) before
selecting. Ties are broken by the lower (layer, index).

>>> import torch
>>> s = torch.tensor([[[1.0, 0.1, 0.5]], [[0.2, 1.0, 0.3]]])  # 2 examples, 1 layer, 3 neurons
>>> select(s, "threshold", threshold=0.4, frequency=0.5).labels()
['L0N0', 'L0N1', 'L0N2']
>>> select(s, "threshold", threshold=0.4, frequency=1.0).labels()
[]
>>> select(s, "topk", top_k=1).labels()
['L0N0']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

import torch
from jaxtyping import Float, Int

from neurorit_lens.config import SelectionRule
from neurorit_lens.neuron_sets import NeuronSet

RULES = get_args(SelectionRule)

__all__ = ["RULES", "SelectionStats", "normalize_scores", "select"]


@dataclass
class SelectionStats:
    """Additive statistics of a condition's attribution scores.

    Attributes:
        threshold: the per-example ``t`` the keep counts were computed with.
        n_examples: examples seen.
        keep_count: ``[layer, d_mlp]`` examples in which each neuron was kept.
        score_sum: ``[layer, d_mlp]`` sum of scores over examples (float64).
        pos_count: ``[layer, d_mlp]`` examples in which each neuron's score was ``> 0``.
    """

    n_layers: int
    d_mlp: int
    threshold: float = 0.2
    n_examples: int = 0
    keep_count: Int[torch.Tensor, "layer d_mlp"] = field(default=None)  # type: ignore[assignment]
    score_sum: Float[torch.Tensor, "layer d_mlp"] = field(default=None)  # type: ignore[assignment]
    pos_count: Int[torch.Tensor, "layer d_mlp"] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.keep_count is None:
            self.keep_count = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.long)
        if self.score_sum is None:
            self.score_sum = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.float64)
        if self.pos_count is None:
            self.pos_count = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.long)
        shape = (self.n_layers, self.d_mlp)
        if any(tuple(t.shape) != shape for t in (self.keep_count, self.score_sum, self.pos_count)):
            raise ValueError(f"stats tensors must have shape ({self.n_layers}, {self.d_mlp})")

    @classmethod
    def from_scores(cls, scores: Float[torch.Tensor, "example layer d_mlp"], threshold: float = 0.2) -> SelectionStats:
        if scores.dim() != 3:
            raise ValueError(f"scores must be [example, layer, d_mlp], got shape {tuple(scores.shape)}")
        st = cls(scores.shape[1], scores.shape[2], threshold)
        return st.update(scores)

    def update(self, scores: Float[torch.Tensor, "example layer d_mlp"]) -> SelectionStats:
        """Add examples (in place; returns self)."""
        if scores.dim() == 2:
            scores = scores[None]
        if scores.dim() != 3 or tuple(scores.shape[1:]) != (self.n_layers, self.d_mlp):
            raise ValueError(f"scores must be [example, {self.n_layers}, {self.d_mlp}], got {tuple(scores.shape)}")
        if not torch.isfinite(scores).all():
            raise ValueError("scores contain NaN or inf")
        s = scores.detach().to("cpu", torch.float64)
        mx = s.flatten(1).max(1).values  # [example]
        keep = (s >= self.threshold * mx[:, None, None]) & (mx[:, None, None] > 0)
        self.keep_count += keep.sum(0)
        self.score_sum += s.sum(0)
        self.pos_count += (s > 0).sum(0)
        self.n_examples += s.shape[0]
        return self

    def merge(self, other: SelectionStats) -> SelectionStats:
        """Combined statistics of two disjoint sets of examples (a new object)."""
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise ValueError(f"cannot merge stats of shape {(self.n_layers, self.d_mlp)} "
                             f"and {(other.n_layers, other.d_mlp)}")
        if self.threshold != other.threshold:
            raise ValueError(f"cannot merge stats computed with thresholds {self.threshold} and {other.threshold}")
        return SelectionStats(self.n_layers, self.d_mlp, self.threshold, self.n_examples + other.n_examples,
                              self.keep_count + other.keep_count, self.score_sum + other.score_sum,
                              self.pos_count + other.pos_count)

    @property
    def mean_scores(self) -> Float[torch.Tensor, "layer d_mlp"]:
        return self.score_sum / max(self.n_examples, 1)

    def select(self, rule: str = "threshold", frequency: float = 0.5, top_k: int = 100,
               sign_consistency: float = 0.0) -> NeuronSet:
        """The selected :class:`NeuronSet` (empty if no example was seen).

        With ``sign_consistency = q > 0`` a neuron is kept only if its score was ``> 0`` in at
        least a fraction ``q`` of the examples (applied after the rule).
        """
        if not 0 <= sign_consistency <= 1:
            raise ValueError(f"sign_consistency must be in [0, 1], got {sign_consistency}")
        chosen = self._select(rule, frequency, top_k)
        if sign_consistency == 0 or not chosen:
            return chosen
        ok = self.pos_count.double() >= sign_consistency * self.n_examples - 1e-9
        return NeuronSet.from_mask(chosen.to_mask(self.n_layers, self.d_mlp) & ok)

    def _select(self, rule: str, frequency: float, top_k: int) -> NeuronSet:
        if rule not in RULES:
            raise ValueError(f"unknown selection rule {rule!r}; choose from {RULES}")
        if not 0 < frequency <= 1:
            raise ValueError(f"frequency must be in (0, 1], got {frequency}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if self.n_examples == 0:
            return NeuronSet()
        if rule == "threshold":
            # kept in >= p of the examples; integer comparison avoids float rounding at the boundary
            mask = self.keep_count.double() >= frequency * self.n_examples - 1e-9
            mask &= self.keep_count > 0
            return NeuronSet.from_mask(mask)
        mean = self.mean_scores
        if rule == "topk":
            return NeuronSet.from_mask(_top_mask(mean.flatten(), top_k).view_as(mean))
        return NeuronSet.from_mask(torch.stack([_top_mask(row, top_k) for row in mean]))

    # --- serialisation (for shards that exchange stats through files) ----------------
    def to_dict(self) -> dict:
        return {"n_layers": self.n_layers, "d_mlp": self.d_mlp, "threshold": self.threshold,
                "n_examples": self.n_examples, "keep_count": self.keep_count.tolist(),
                "score_sum": self.score_sum.tolist(), "pos_count": self.pos_count.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> SelectionStats:
        return cls(int(d["n_layers"]), int(d["d_mlp"]), float(d["threshold"]), int(d["n_examples"]),
                   torch.tensor(d["keep_count"], dtype=torch.long), torch.tensor(d["score_sum"], dtype=torch.float64),
                   torch.tensor(d["pos_count"], dtype=torch.long) if "pos_count" in d else None)


def _top_mask(x: Float[torch.Tensor, "n"], k: int) -> torch.Tensor:
    """Mask of the ``k`` largest positive entries (ties to the lower index)."""
    order = torch.sort(-x, stable=True).indices[:k]
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[order] = True
    return mask & (x > 0)


def normalize_scores(
    scores: Float[torch.Tensor, "example layer d_mlp"], scale: Float[torch.Tensor, "layer d_mlp"],
    eps: float = 1e-8,
) -> Float[torch.Tensor, "example layer d_mlp"]:
    """Scores divided by each neuron's activation scale (``scale <= eps`` -> score 0: a dead neuron)."""
    if tuple(scale.shape) != tuple(scores.shape[1:]):
        raise ValueError(f"scale has shape {tuple(scale.shape)}, scores {tuple(scores.shape)}")
    if not torch.isfinite(scale).all() or (scale < 0).any():
        raise ValueError("scale must be finite and >= 0")
    s = scale.to(scores.dtype)
    return torch.where(s > eps, scores / s.clamp(min=eps), torch.zeros_like(scores))


def select(
    scores: Float[torch.Tensor, "example layer d_mlp"],
    rule: str = "threshold",
    threshold: float = 0.2,
    frequency: float = 0.5,
    top_k: int = 100,
    sign_consistency: float = 0.0,
) -> NeuronSet:
    """Select neurons from per-example scores (see the module docstring for the rules).

    Args:
        scores: ``[example, layer, d_mlp]`` attribution scores of one condition.
        rule: ``threshold``, ``topk`` or ``topk_per_layer``.
        threshold: per-example fraction ``t`` of the example's maximum score.
        frequency: fraction ``p`` of examples a neuron must be kept in.
        top_k: ``k`` for the top-k rules.
        sign_consistency: keep only neurons with a score ``> 0`` in at least this fraction of
            the examples (0 = off).

    Returns:
        The selected :class:`NeuronSet`.
    """
    return SelectionStats.from_scores(scores, threshold).select(rule, frequency, top_k, sign_consistency)
