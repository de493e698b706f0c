"""Data-parallel neuron mining: each rank attributes its shard, statistics are all-reduced.

Launched with ``torchrun --nproc-per-node N -m neurorit_lens mine ...`` (or by calling
:func:`mine_distributed` inside any process group):

1. rank ``r`` of ``W`` runs :func:`neurorit_lens.neurons.mining.mine` on ``examples[r::W]``
   (prompts are built per example from a seed that depends on the example id only, so a
   shard sees exactly the prompts a single process would);
2. the additive selection statistics of each condition (example count, per-neuron keep
   counts, per-neuron score sums; :class:`neurorit_lens.neurons.selection.SelectionStats`) are
   summed over ranks with one ``all_reduce`` each (``2 * n_layers * d_mlp * 8`` bytes +
   a counter: the keep counts travel as int64, the score sums as float64);
3. every rank now holds the statistics of the whole data set and selects the same sets;
4. the per-example scores are gathered to rank 0 (each shard has also flushed them to
   ``out_dir/scores/`` for resuming), put back in the single-process order, and rank 0
   writes ``neurons.json``, ``scores_{R,I}.safetensors`` and ``mining.json`` exactly as a single process would.

The selected sets equal the single-process sets (keep counts are integers; tested with 2
gloo processes on the tiny model); score sums agree to float64 summation order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data.schema import QAExample
from neurorit_lens.distributed.collectives import (
    all_reduce_additive,
    gather_objects,
    stats_comm_bytes,
)
from neurorit_lens.distributed.process import (
    barrier,
    current_shard,
    get_rank,
    get_world_size,
    is_distributed,
)
from neurorit_lens.neuron_sets import exclusive_sets
from neurorit_lens.neurons.mining import CONDITIONS, MiningResult, mine
from neurorit_lens.tl_backend import Model

log = logging.getLogger(__name__)

__all__ = ["merge_excluded", "mine_distributed"]


def merge_excluded(parts: Sequence[dict[str, Any]], order: dict[str, int]) -> dict[str, Any]:
    """Merge per-shard ``excluded`` records of one condition (counts summed, ids in data order)."""
    if not parts:
        return {}
    out: dict[str, Any] = {"setting": parts[0].get("setting"), "missing_passages": 0, "reasons": {},
                           "empty_answer": 0, "ids": []}
    for p in parts:
        out["missing_passages"] += int(p.get("missing_passages", 0))
        out["empty_answer"] += int(p.get("empty_answer", 0))
        for k, v in (p.get("reasons") or {}).items():
            out["reasons"][k] = out["reasons"].get(k, 0) + v
        out["ids"].extend(p.get("ids", []))
    out["ids"].sort(key=lambda i: order.get(i, len(order)))
    out["n"] = len(out["ids"])
    return out


def mine_distributed(
    model: Model,
    examples: list[QAExample],
    cfg: MiningConfig,
    data_cfg: DataConfig,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    show_progress: bool = True,
    model_name: str | None = None,
) -> MiningResult:
    """Mine over all ranks of the process group; equals :func:`~neurorit_lens.neurons.mining.mine` on one.

    Args:
        model: the model (a full replica on every rank).
        examples: the *whole* example list, identical on every rank.
        cfg, data_cfg, resume, show_progress, model_name: as for ``mine``.
        out_dir: shared folder: every rank flushes its per-example scores under
            ``out_dir/scores/``; rank 0 writes ``neurons.json`` and the raw scores.
            The per-example scores reach rank 0 through the process group (pickled,
            ``n_layers * d_mlp * 4`` bytes per example and condition), so nodes need no
            shared file system.

    Returns:
        On rank 0 the complete :class:`MiningResult` (as one process would return it). On
        other ranks a result with the global statistics and sets but only this shard's
        scores and ids. Outside a process group, ``mine`` itself.
    """
    if not is_distributed():
        return mine(model, examples, cfg, data_cfg, out_dir, resume, show_progress, None, model_name)
    if cfg.normalize or cfg.sign_consistency or cfg.answer_means:
        raise ValueError("normalize, sign_consistency and answer_means are not supported by distributed mining "
                         "yet (their statistics are not all-reduced); mine in one process")
    rank, world = get_rank(), get_world_size()
    local = mine(model, examples, cfg, data_cfg, out_dir, resume, show_progress and rank == 0, current_shard(),
                 model_name)
    # local.config: cfg with its precision resolved (what the result records)
    for cond in CONDITIONS:
        all_reduce_additive(getattr(local, f"stats_{cond}"))
    sets = exclusive_sets(local.stats_R.select(cfg.selection, cfg.frequency, cfg.top_k),
                          local.stats_I.select(cfg.selection, cfg.frequency, cfg.top_k))
    comm = {"world_size": world, "stats_bytes_per_rank": sum(stats_comm_bytes(getattr(local, f"stats_{c}"))
                                                             for c in CONDITIONS)}
    payload = {"ids": {c: local.ids_R if c == "R" else local.ids_I for c in CONDITIONS},
               "scores": {c: local.scores(c) for c in CONDITIONS},
               "excluded": local.excluded, "info": local.info}
    parts = gather_objects(payload)
    if rank != 0:
        res = MiningResult(local.scores_R, local.scores_I, local.ids_R, local.ids_I, sets, local.stats_R,
                           local.stats_I, local.config, local.model_name, local.model_shape, local.excluded,
                           {**local.info, "distributed": comm})
        barrier()
        return res
    assert parts is not None
    order = {ex.id: i for i, ex in enumerate(examples)}
    ids, scores = _merge_scores(parts, order, local.model_shape)
    excluded = {c: merge_excluded([p["excluded"][c] for p in parts], order) for c in CONDITIONS}
    info = _merge_info([p["info"] for p in parts], comm, ids)
    res = MiningResult(scores["R"], scores["I"], ids["R"], ids["I"], sets, local.stats_R, local.stats_I,
                       local.config, local.model_name, local.model_shape, excluded, info)
    try:
        if out_dir is not None:
            res.save(out_dir)
    finally:
        barrier()
    return res


def _merge_scores(parts: list[dict[str, Any]], order: dict[str, int],
                  model_shape: tuple[int, ...]) -> tuple[dict[str, list[str]], dict[str, torch.Tensor]]:
    """Every rank's per-example ids and scores, per condition, back in data order."""
    ids: dict[str, list[str]] = {}
    scores: dict[str, torch.Tensor] = {}
    for cond in CONDITIONS:
        rows = [(i, p["scores"][cond][j]) for p in parts for j, i in enumerate(p["ids"][cond])]
        rows.sort(key=lambda r: order[r[0]])
        ids[cond] = [i for i, _ in rows]
        scores[cond] = torch.stack([s for _, s in rows]) if rows else torch.zeros(0, *model_shape)
    return ids, scores


def _merge_info(infos: list[dict[str, Any]], comm: dict[str, Any], ids: dict[str, list[str]]) -> dict[str, Any]:
    """Rank 0's ``mining.json`` info with counts summed over ranks and a per-rank breakdown."""
    info = dict(infos[0])
    info.update({
        "n_input_examples": sum(i.get("n_input_examples", 0) for i in infos),
        "n_computed": sum(i.get("n_computed", 0) for i in infos),
        "seconds": max(i.get("seconds", 0.0) for i in infos),
        "shard": None,
        "distributed": {**comm, "per_rank": [{"n_input_examples": i.get("n_input_examples"),
                                              "n_computed": i.get("n_computed"),
                                              "seconds": i.get("seconds")} for i in infos]},
    })
    info["conditions"] = {c: {**(infos[0].get("conditions", {}).get(c, {})),
                              "n": len(ids[c]),
                              "n_resumed": sum(i.get("conditions", {}).get(c, {}).get("n_resumed", 0) for i in infos)}
                          for c in CONDITIONS}
    return info
