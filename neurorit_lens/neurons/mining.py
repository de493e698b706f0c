"""Neuron mining over QA examples: attribution under relevant (R) and irrelevant (I) contexts.

For every example, two prompts are built with :mod:`neurorit_lens.data`: the *R* condition
(``cfg.relevant_setting``, default ``gold``: the relevant passage(s) only) and the *I*
condition (``cfg.irrelevant_setting``, default ``irrelevant``: irrelevant passages only).
Each prompt is teacher-forced with the gold answer and every MLP neuron is scored with
:func:`neurorit_lens.neurons.attribution.attribute` (F = the answer's log-prob). Selection
(:mod:`neurorit_lens.neurons.selection`) turns the per-example scores of each condition into the
sets R and I, and the Neuro-RIT sets follow: ``R_excl = R - I``, ``I_excl = I - R``,
``shared = R & I``.

Robustness: examples lacking the passages a condition needs, or whose answer tokenises to
nothing, are excluded from that condition and counted. Per-example scores are flushed to
``out_dir/scores/{R,I}/<example-id>.safetensors`` (atomic writes) as soon as they exist,
stamped with a fingerprint of the model, the attribution settings and the exact tokens, so
an interrupted run resumes where it stopped and a changed setting is never mixed in.
``shard=(rank, world)`` processes ``examples[rank::world]`` (see
:mod:`neurorit_lens.distributed.process`); the per-example files of all shards share one folder.

>>> from neurorit_lens.config import DataConfig, MiningConfig
>>> from neurorit_lens.data import embedded_examples
>>> from neurorit_lens.models import tiny_model
>>> res = mine(tiny_model(), embedded_examples()[:3], MiningConfig(), DataConfig(), show_progress=False)
>>> res.scores_R.shape[1:]
torch.Size([2, 64])
>>> sorted(res.sets)
['I', 'I_excl', 'R', 'R_excl', 'shared']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data import QAExample
from neurorit_lens.data.build import build_prompts
from neurorit_lens.io import atomic_write_bytes, atomic_write_json, read_json
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.selection import SelectionStats
from neurorit_lens.neurons.sets import (
    SET_NAMES,
    NeuronSet,
    exclusive_sets,
    load_neuron_sets,
    save_neuron_sets,
)
from neurorit_lens.objective import encode_answer, tokenize_with_answers
from neurorit_lens.tl_backend import Model

log = logging.getLogger(__name__)

CONDITIONS = ("R", "I")
# Fields of MiningConfig that change the scores (the rest only change the selection).
SCORE_FIELDS = ("method", "steps", "rule", "alpha_chunk", "positions", "target", "site", "layers")
SELECTION_FIELDS = ("selection", "threshold", "frequency", "top_k")

__all__ = ["CONDITIONS", "MiningResult", "mine", "score_path"]


# --- the result ------------------------------------------------------------------------


@dataclass
class MiningResult:
    """Per-example scores of both conditions, their selection statistics and the five sets.

    Attributes:
        scores_R, scores_I: ``[n, layer, d_mlp]`` float32 per-example scores.
        ids_R, ids_I: example ids, one per row.
        sets: ``{"R", "I", "R_excl", "I_excl", "shared"}`` -> :class:`NeuronSet`.
        stats_R, stats_I: additive :class:`SelectionStats` of each condition.
        config: the :class:`MiningConfig` used.
        model_name: the model's name.
        model_shape: ``(n_layers, d_mlp)``.
        excluded: per condition, counts of excluded examples by reason and their ids.
        info: data settings, truncation counts, timings (not part of ``neurons.json``).
    """

    scores_R: Float[torch.Tensor, "n_R layer d_mlp"]
    scores_I: Float[torch.Tensor, "n_I layer d_mlp"]
    ids_R: list[str]
    ids_I: list[str]
    sets: dict[str, NeuronSet]
    stats_R: SelectionStats
    stats_I: SelectionStats
    config: MiningConfig
    model_name: str
    model_shape: tuple[int, int]
    excluded: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    # --- views ------------------------------------------------------------------------
    def scores(self, condition: str) -> torch.Tensor:
        _check_condition(condition)
        return self.scores_R if condition == "R" else self.scores_I

    def mean_scores(self, condition: str = "R") -> Float[torch.Tensor, "layer d_mlp"]:
        s = self.scores(condition)
        if s.shape[0] == 0:
            return torch.zeros(self.model_shape)
        return s.double().mean(0).float()

    def top(self, k: int = 10, condition: str = "R") -> list[tuple[str, float]]:
        """The ``k`` neurons with the highest mean score in ``condition``, as ``("L{l}N{i}", score)``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        mean = self.mean_scores(condition)
        vals, idx = mean.flatten().topk(min(k, mean.numel()))
        d = self.model_shape[1]
        return [(f"L{i // d}N{i % d}", float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]

    def layer_mass(self) -> dict[str, list[float]]:
        """Per-layer sum of mean attribution over each set's neurons.

        ``R`` and ``R_excl`` use the R-condition scores, ``I``, ``I_excl`` the I-condition
        scores; ``shared`` uses the R scores. Stage 2 picks its layers from ``R_excl``.
        """
        L, D = self.model_shape
        means = {"R": self.mean_scores("R"), "I": self.mean_scores("I")}
        out = {}
        for name, cond in (("R", "R"), ("I", "I"), ("R_excl", "R"), ("I_excl", "I"), ("shared", "R")):
            mask = self.sets[name].to_mask(L, D)
            out[name] = (means[cond] * mask).sum(1).tolist()
        return out

    def meta(self) -> dict[str, Any]:
        """The ``meta`` block of ``neurons.json`` (deterministic: no timings)."""
        return {
            "model": self.model_name,
            "model_shape": list(self.model_shape),
            "config": self.config.to_dict(),
            "counts": {name: {str(l): c for l, c in s.counts_per_layer().items()} for name, s in self.sets.items()},
            "totals": {name: len(s) for name, s in self.sets.items()},
            "n_examples": {"R": len(self.ids_R), "I": len(self.ids_I)},
            "layer_mass": self.layer_mass(),
            "excluded": self.excluded,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw scores, JSON-ready."""
        return {
            "sets": {name: s.to_dict() for name, s in self.sets.items()},
            "meta": self.meta(),
            "ids": {"R": list(self.ids_R), "I": list(self.ids_I)},
            "top": {c: self.top(10, c) for c in CONDITIONS},
            "info": self.info,
        }

    # --- persistence --------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``neurons.json``, ``scores_R.safetensors``, ``scores_I.safetensors``, ``mining.json``.

        Returns:
            The path of ``neurons.json``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for cond in CONDITIONS:
            ids = self.ids_R if cond == "R" else self.ids_I
            _write_tensor(out / f"scores_{cond}.safetensors", self.scores(cond).float().contiguous(),
                          {"ids": json.dumps(ids), "condition": cond, "model": self.model_name})
        atomic_write_json(out / "mining.json", {"info": self.info, "ids": {"R": self.ids_R, "I": self.ids_I},
                                                "top": {c: self.top(20, c) for c in CONDITIONS}})
        return save_neuron_sets(out / "neurons.json", self.sets, self.meta())

    @classmethod
    def load(cls, out_dir: str | os.PathLike, model: Model | None = None) -> MiningResult:
        """Read a folder written by :meth:`save` (with ``model``, reject sets that do not fit it)."""
        out = Path(out_dir)
        path = out / "neurons.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (run `neurorit mine` first)")
        sets = load_neuron_sets(path, model)
        meta = read_json(path).get("meta") or {}
        for key in ("model_shape", "config"):
            if key not in meta:
                raise ValueError(f"{path}: meta lacks {key!r}; not written by MiningResult.save")
        cfg = MiningConfig.from_dict(meta["config"])
        shape = (int(meta["model_shape"][0]), int(meta["model_shape"][1]))
        scores, ids = {}, {}
        for cond in CONDITIONS:
            t, md = _read_tensor(out / f"scores_{cond}.safetensors")
            if t.dim() != 3 or tuple(t.shape[1:]) != shape:
                raise ValueError(f"{out}/scores_{cond}.safetensors: shape {tuple(t.shape)} "
                                 f"does not match model shape {shape}")
            scores[cond], ids[cond] = t, json.loads(md.get("ids", "[]"))
        info = {}
        if (out / "mining.json").exists():
            info = read_json(out / "mining.json").get("info", {})
        missing = [n for n in SET_NAMES if n not in sets]
        if missing:
            raise ValueError(f"{path}: missing set(s) {missing}")
        return cls(scores["R"], scores["I"], ids["R"], ids["I"], {n: sets[n] for n in SET_NAMES},
                   SelectionStats.from_scores(scores["R"], cfg.threshold) if len(ids["R"])
                   else SelectionStats(*shape, cfg.threshold),
                   SelectionStats.from_scores(scores["I"], cfg.threshold) if len(ids["I"])
                   else SelectionStats(*shape, cfg.threshold),
                   cfg, str(meta.get("model", "")), shape, meta.get("excluded", {}), info)

    def reselect(self, **changes: Any) -> MiningResult:
        """Redo the selection from the stored scores with new selection settings.

        Args:
            **changes: any of ``selection``, ``threshold``, ``frequency``, ``top_k``.

        Returns:
            A new :class:`MiningResult` (same scores, new sets and stats).
        """
        bad = set(changes) - set(SELECTION_FIELDS)
        if bad:
            raise ValueError(f"reselect changes only {SELECTION_FIELDS}; got {sorted(bad)} (those need recomputing)")
        cfg = self.config.replace(**changes)
        stats = {c: _stats(self.scores(c), cfg, self.model_shape) for c in CONDITIONS}
        sets = _select_sets(stats, cfg)
        return MiningResult(self.scores_R, self.scores_I, list(self.ids_R), list(self.ids_I), sets,
                            stats["R"], stats["I"], cfg, self.model_name, self.model_shape,
                            dict(self.excluded), dict(self.info))


def _check_condition(condition: str) -> None:
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")


def _stats(scores: torch.Tensor, cfg: MiningConfig, shape: tuple[int, int]) -> SelectionStats:
    st = SelectionStats(shape[0], shape[1], cfg.threshold)
    return st.update(scores) if scores.shape[0] else st


def _select_sets(stats: dict[str, SelectionStats], cfg: MiningConfig) -> dict[str, NeuronSet]:
    R = stats["R"].select(cfg.selection, cfg.frequency, cfg.top_k)
    I = stats["I"].select(cfg.selection, cfg.frequency, cfg.top_k)
    return exclusive_sets(R, I)


# --- per-example score files ----------------------------------------------------------------


def score_path(out_dir: str | os.PathLike, condition: str, example_id: str) -> Path:
    """``out_dir/scores/<condition>/<safe id>.safetensors`` (ids with odd characters get a hash suffix)."""
    _check_condition(condition)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(example_id))[:80]
    if safe.startswith("."):
        safe = "_" + safe.lstrip(".")
    if safe != str(example_id):
        safe = f"{safe}-{hashlib.sha1(str(example_id).encode()).hexdigest()[:10]}"
    return Path(out_dir) / "scores" / condition / f"{safe}.safetensors"


def _write_tensor(path: Path, t: torch.Tensor, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    return atomic_write_bytes(path, save({"scores": t.contiguous()}, metadata=metadata))


def _read_tensor(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    from safetensors import safe_open

    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("scores"), dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{path}: not a readable scores file ({e})") from e


def _fingerprint(model_name: str, shape: tuple[int, int], cfg: MiningConfig, tokens: list[int]) -> str:
    obj = {"model": model_name, "shape": list(shape), "tokens": tokens,
           "cfg": {k: getattr(cfg, k) for k in SCORE_FIELDS}}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


def _try_resume(path: Path, fingerprint: str, shape: tuple[int, int]) -> torch.Tensor | None:
    if not path.exists():
        return None
    try:
        t, md = _read_tensor(path)
    except ValueError as e:
        log.warning("recomputing %s: %s", path, e)
        return None
    if md.get("fingerprint") != fingerprint or tuple(t.shape) != shape:
        log.info("recomputing %s: written with other settings, tokens or model", path)
        return None
    return t


# --- the run ---------------------------------------------------------------------------------


@dataclass
class _Item:
    id: str
    prompt: str
    answer: str
    tokens: list[int]


def _condition_items(model: Model, examples: list[QAExample], setting: str, data_cfg: DataConfig
                     ) -> tuple[list[_Item], dict[str, Any], dict[str, Any]]:
    """Prompts + answers of one condition, and what was excluded (by reason, with ids)."""
    ps = build_prompts(examples, setting, model.tokenizer, data_cfg, n_ctx=model.cfg.n_ctx)
    have = set(ps.ids)
    missing = [ex.id for ex in examples if ex.id not in have]
    excluded: dict[str, Any] = {"setting": setting, "missing_passages": len(missing),
                                "reasons": dict(ps.skipped_reasons), "empty_answer": 0, "ids": list(missing)}
    info: dict[str, Any] = {}
    excluded["n"] = len(excluded["ids"])
    if not ps.prompts:
        return [], excluded, info
    info.update({"template": ps.template, "n_truncated": ps.n_truncated,
                 "n_passages_dropped": ps.n_passages_dropped})
    items = []
    for inst_id, prompt, answer in zip(ps.ids, ps.prompts, ps.continuations, strict=True):
        if not encode_answer(model, answer):
            excluded["empty_answer"] += 1
            excluded["ids"].append(inst_id)
            continue
        b = tokenize_with_answers(model, [prompt], [answer], max_len=model.cfg.n_ctx)
        items.append(_Item(inst_id, prompt, answer, b.tokens[0].tolist()))
    excluded["n"] = len(excluded["ids"])
    return items, excluded, info


def mine(
    model: Model,
    examples: list[QAExample],
    cfg: MiningConfig,
    data_cfg: DataConfig,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    show_progress: bool = True,
    shard: tuple[int, int] | None = None,
    model_name: str | None = None,
) -> MiningResult:
    """Attribute every example under the R and I conditions and select the five neuron sets.

    Args:
        model: the HookedTransformer.
        examples: QA examples with labelled passages.
        cfg: attribution and selection settings.
        data_cfg: prompt settings (``n_passages``, ``seed``, ``template``, ``max_prompt_tokens``).
        out_dir: where per-example scores are flushed (and, for an unsharded run, where
            :meth:`MiningResult.save` writes ``neurons.json`` and the raw scores).
        resume: reuse per-example files whose fingerprint matches; ``False`` recomputes.
        show_progress: tqdm bars.
        shard: ``(rank, world)``: process ``examples[rank::world]`` only.
        model_name: recorded in the output (default ``model.cfg.model_name``).

    Returns:
        A :class:`MiningResult`.

    Raises:
        ValueError: bad arguments, duplicate example ids.
    """
    if not isinstance(cfg, MiningConfig):
        raise ValueError(f"cfg must be a MiningConfig, got {type(cfg).__name__}")
    if not isinstance(data_cfg, DataConfig):
        raise ValueError(f"data_cfg must be a DataConfig, got {type(data_cfg).__name__}")
    examples = list(examples)
    ids = [ex.id for ex in examples]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise ValueError(f"duplicate example ids (score files are named by id): {dup[:5]}")
    if shard is not None:
        rank, world = shard
        if not (isinstance(rank, int) and isinstance(world, int) and world >= 1 and 0 <= rank < world):
            raise ValueError(f"bad shard {shard!r}: need (rank, world) with 0 <= rank < world")
        examples = examples[rank::world]
    name = model_name or getattr(model.cfg, "model_name", "") or "model"
    shape = (model.cfg.n_layers, model.cfg.d_mlp)
    t0 = time.time()
    scores: dict[str, torch.Tensor] = {}
    kept_ids: dict[str, list[str]] = {}
    excluded: dict[str, Any] = {}
    info: dict[str, Any] = {"data": data_cfg.to_dict(), "n_input_examples": len(examples), "shard": shard,
                            "conditions": {}}
    n_computed = 0
    for cond, setting in (("R", cfg.relevant_setting), ("I", cfg.irrelevant_setting)):
        items, excl, cinfo = _condition_items(model, examples, setting, data_cfg)
        excluded[cond] = excl
        rows: list[torch.Tensor | None] = [None] * len(items)
        fps = [_fingerprint(name, shape, cfg, it.tokens) for it in items]
        todo = []
        for j, (it, fp) in enumerate(zip(items, fps, strict=True)):
            t = _try_resume(score_path(out_dir, cond, it.id), fp, shape) if (out_dir is not None and resume) else None
            if t is None:
                todo.append(j)
            else:
                rows[j] = t
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"mine {cond} ({setting}, {cfg.method})",
                   disable=not show_progress)
        try:
            for start in range(0, len(todo), cfg.batch_size):
                chunk = todo[start:start + cfg.batch_size]
                batch = tokenize_with_answers(model, [items[j].prompt for j in chunk], [items[j].answer for j in chunk],
                                              max_len=model.cfg.n_ctx)
                s = attribute(model, batch, method=cfg.method, steps=cfg.steps, rule=cfg.rule,
                              alpha_chunk=cfg.alpha_chunk, positions=cfg.positions, target=cfg.target,
                              site=cfg.site, layers=cfg.layers, offload=cfg.offload_scores).float().cpu()
                for r, j in enumerate(chunk):
                    rows[j] = s[r].clone()
                    if out_dir is not None:
                        _write_tensor(score_path(out_dir, cond, items[j].id), rows[j],
                                      {"fingerprint": fps[j], "id": items[j].id, "condition": cond})
                n_computed += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
        scores[cond] = torch.stack(rows) if rows else torch.zeros(0, *shape)  # type: ignore[arg-type]
        kept_ids[cond] = [it.id for it in items]
        cinfo.update({"setting": setting, "n": len(items), "n_resumed": len(items) - len(todo)})
        info["conditions"][cond] = cinfo
        if excl["n"]:
            log.warning("condition %s (%s): %d example(s) excluded (%d lacking passages %s, %d empty answers)",
                        cond, setting, excl["n"], excl["missing_passages"], excl["reasons"], excl["empty_answer"])
    info["seconds"] = round(time.time() - t0, 3)
    info["n_computed"] = n_computed
    stats = {c: _stats(scores[c], cfg, shape) for c in CONDITIONS}
    res = MiningResult(scores["R"], scores["I"], kept_ids["R"], kept_ids["I"], _select_sets(stats, cfg),
                       stats["R"], stats["I"], cfg, name, shape, excluded, info)
    if out_dir is not None and (shard is None or shard[1] == 1):
        res.save(out_dir)
    return res
