"""Pooling mining runs, and how stable their selected sets are.

A study mines each data set in a folder of its own (its own prompts, shards and resume files)
and selects one set of neurons over all of them: :func:`pool_results` stacks the per-example
scores of several :class:`~neurorit_lens.neurons.mining.MiningResult` s and redoes the
selection over every example, which is what one run over the examples of all of them selects.

:func:`split_half_stability` says whether more questions would change the sets: it splits
each run's examples into two halves (even and odd positions, so each half has every data set
in it), selects on each half and gives the Jaccard index of every set between the halves.
A value near 1 says the sets are settled; well below 1 says they still move with the questions.

>>> from neurorit_lens.config import DataConfig, MiningConfig
>>> from neurorit_lens.data import embedded_examples
>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.neurons.mining import mine
>>> m, cfg = tiny_model(), MiningConfig(threshold=0.5)
>>> a = mine(m, embedded_examples()[:2], cfg, DataConfig(), show_progress=False)
>>> b = mine(m, embedded_examples()[2:4], cfg, DataConfig(), show_progress=False)
>>> pool_results([a, b]).scores_R.shape[0]
4
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from neurorit_lens.neuron_sets import SET_NAMES, NeuronSet
from neurorit_lens.neurons.mining import SELECTION_FIELDS, MiningResult

__all__ = ["jaccard", "pool_results", "split_half_stability", "subset"]


def jaccard(a: NeuronSet, b: NeuronSet) -> float:
    """|a ∩ b| / |a ∪ b| (NaN when both are empty)."""
    union = len(a | b)
    return len(a & b) / union if union else math.nan


def _check_compatible(results: Sequence[MiningResult]) -> None:
    if not results:
        raise ValueError("pool_results needs at least one MiningResult")
    first = results[0]
    first_cfg = first.config.to_dict()
    for r in results[1:]:
        if r.model_shape != first.model_shape or r.model_name != first.model_name:
            raise ValueError(f"cannot pool mining of {r.model_name} {r.model_shape} with "
                             f"{first.model_name} {first.model_shape}")
        cfg = r.config.to_dict()
        if cfg != first_cfg:
            diff = sorted(k for k, v in cfg.items() if first_cfg[k] != v)
            raise ValueError(f"cannot pool mining runs whose MiningConfig differs in {diff}")
    for cond in ("R", "I"):
        ids = [i for r in results for i in (r.ids_R if cond == "R" else r.ids_I)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"example ids repeat across the pooled runs (condition {cond})")


def _weighted(tensors: Sequence[torch.Tensor | None], weights: Sequence[int]) -> torch.Tensor | None:
    if any(t is None for t in tensors) or sum(weights) == 0:
        return None
    return sum(t.double() * w for t, w in zip(tensors, weights, strict=True)).div(sum(weights)).float()


def _merge_excluded(results: Sequence[MiningResult]) -> dict[str, Any]:
    """Per condition: counts added, count tables added key by key, id lists concatenated, labels kept."""
    out: dict[str, Any] = {}
    for r in results:
        for cond, ex in r.excluded.items():
            o = out.setdefault(cond, {})
            for key, v in ex.items():
                if isinstance(v, dict):
                    tab = o.setdefault(key, {})
                    for k, n in v.items():
                        tab[k] = tab.get(k, 0) + n
                elif isinstance(v, list):
                    o[key] = o.get(key, []) + list(v)
                elif isinstance(v, int):
                    o[key] = o.get(key, 0) + v
                else:  # a label such as the setting: kept when the runs agree
                    o[key] = v if o.get(key, v) == v else sorted({o[key], v})
    return out


def pool_results(results: Sequence[MiningResult], **selection: Any) -> MiningResult:
    """One :class:`MiningResult` over every example of ``results``, selected anew.

    Args:
        results: mining runs of one model with one :class:`MiningConfig` (the data may differ).
        **selection: selection settings to use instead of theirs (``selection``, ``threshold``,
            ``frequency``, ``top_k``).

    Returns:
        Scores stacked in the order given; sets selected over all of them. ``act_scale`` and
        ``answer_means`` are the example-weighted means of the runs' (``None`` unless every
        run has them).
    """
    _check_compatible(results)
    first = results[0]
    nr, ni = [len(r.ids_R) for r in results], [len(r.ids_I) for r in results]
    pooled = MiningResult(
        torch.cat([r.scores_R for r in results]), torch.cat([r.scores_I for r in results]),
        [i for r in results for i in r.ids_R], [i for r in results for i in r.ids_I],
        dict(first.sets), first.stats_R, first.stats_I, first.config, first.model_name, first.model_shape,
        _merge_excluded(results), {"pooled_from": [r.info for r in results], "n_R": nr, "n_I": ni},
        _weighted([r.act_scale for r in results], [a + b for a, b in zip(nr, ni, strict=True)]),
        _weighted([r.answer_means for r in results], nr),
    )
    return pooled.reselect(**{**{k: getattr(first.config, k) for k in SELECTION_FIELDS}, **selection})


def subset(res: MiningResult, rows_R: Sequence[int], rows_I: Sequence[int]) -> MiningResult:
    """``res`` restricted to the given rows of each condition, selected anew."""
    r, i = torch.as_tensor(list(rows_R), dtype=torch.long), torch.as_tensor(list(rows_I), dtype=torch.long)
    part = MiningResult(res.scores_R[r], res.scores_I[i], [res.ids_R[k] for k in r.tolist()],
                        [res.ids_I[k] for k in i.tolist()], dict(res.sets), res.stats_R, res.stats_I, res.config,
                        res.model_name, res.model_shape, {}, dict(res.info), res.act_scale, res.answer_means)
    return part.reselect(**{k: getattr(res.config, k) for k in SELECTION_FIELDS})


def split_half_stability(results: Sequence[MiningResult], **selection: Any) -> dict[str, Any]:
    """Jaccard index of each set selected on two halves of the examples.

    Each run's examples are halved by position (even rows, odd rows), so both halves hold
    every data set; the halves are pooled and selected like :func:`pool_results`.

    Returns:
        ``{"jaccard": {set name: J}, "sizes": {"a": {...}, "b": {...}}, "n": {"a": ..., "b": ...}}``.
    """
    halves = []
    for parity in (0, 1):
        parts = [subset(r, range(parity, len(r.ids_R), 2), range(parity, len(r.ids_I), 2)) for r in results]
        halves.append(pool_results(parts, **selection))
    a, b = halves
    return {"jaccard": {n: jaccard(a.sets[n], b.sets[n]) for n in SET_NAMES},
            "sizes": {"a": {n: len(a.sets[n]) for n in SET_NAMES}, "b": {n: len(b.sets[n]) for n in SET_NAMES}},
            "n": {"a": {"R": len(a.ids_R), "I": len(a.ids_I)}, "b": {"R": len(b.ids_R), "I": len(b.ids_I)}}}
