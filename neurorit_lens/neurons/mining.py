"""Neuron mining over QA examples: attribution under relevant (R) and irrelevant (I) contexts.

For every example, two prompts are built with :mod:`neurorit_lens.data`: the *R* condition
(``cfg.relevant_setting``, default ``gold``: the relevant passage(s) only) and the *I*
condition (``cfg.irrelevant_setting``, default ``irrelevant``: irrelevant passages only).
Each prompt is teacher-forced with the gold answer and every MLP neuron is scored with
:func:`neurorit_lens.neurons.attribution.attribute` (F = the answer's log-prob). Selection
(:mod:`neurorit_lens.neurons.selection`) turns the per-example scores of each condition into the
sets R and I, and the Neuro-RIT sets follow: ``R_excl = R - I``, ``I_excl = I - R``,
``shared = R & I``.

Definitions of I (``cfg.irrelevant_definition``). Every stored I score is *oriented*: larger
means more irrelevant-context, so the same selection rules apply to every definition.

``gold`` (default, the first definition)
    Attribution to log p(gold) under ``cfg.irrelevant_setting`` (irrelevant passages only);
    neurons that push the gold answer with no evidence present.
``negative``
    Attribution to log p(gold) under ``cfg.noisy_setting`` (default ``noise=0.8``), negated,
    so the most negative attributions are selected. With ``cfg.paired`` each question's
    score is ``-(score(noisy) - score(relevant-only))``, the R-condition score of the same
    question (questions without an R score are excluded, reason ``unpaired``).
``distracted``
    Attribution to F = log p(y_wrong) - log p(gold) under ``cfg.noisy_setting``: the neurons
    through which the noise pulls the answer away from the evidence. IG, ``ig_joint`` and
    ``grad_x_act`` are linear in F, so the score is ``attribute(y_wrong) - attribute(gold)``,
    each teacher-forced on its own continuation (two passes). ``y_wrong`` is the data's
    counterfactual answer (``meta["counterfactual_answer"]``) or else the model's own wrong
    greedy answer (:func:`neurorit_lens.neurons.irrelevant.wrong_answers`); examples answered
    correctly without a counterfactual answer are excluded (reason ``model_correct``).

``contrast``
    IG from each neuron's activations under the relevant-only prompt to those under the
    noisy prompt, on the suffix both share, F = log p(gold)
    (:mod:`neurorit_lens.neurons.contrast`; ``cfg.method`` picks per-layer ``ig``,
    ``ig_joint`` or ``grad_x_act``, ``cfg.positions`` does not apply), negated: larger = the
    noise-induced change lowers F. Questions without a relevant-only prompt are excluded
    (reason ``unpaired``); both prompts' tokens go into the fingerprint.

Selection variants for every definition: ``cfg.sign_consistency`` and
``cfg.normalize`` (scores divided by each neuron's mean ``|activation|`` over the mined
prompts, stored as ``act_scale.safetensors``); see :mod:`neurorit_lens.neurons.selection`.
``cfg.answer_means`` also stores each neuron's mean activation at the answer-predicting
positions of the R prompts (``answer_means.safetensors``, the value of ``constant``
deactivation).

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

import json
import logging
import os
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
from neurorit_lens.io import atomic_write_json, read_json
from neurorit_lens.neuron_sets import (
    SET_NAMES,
    NeuronSet,
    check_sets_fit,
    exclusive_sets,
    read_neurons_file,
    save_neuron_sets,
)
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.contrast import contrast_scores
from neurorit_lens.neurons.irrelevant import (
    I_DEFINITIONS,
    activation_stats,
    load_answer_means,
    orient_scores,
)
from neurorit_lens.neurons.score_files import (
    CONDITIONS,
    check_condition,
    fingerprint,
    read_tensor,
    score_path,
    try_resume,
    write_tensor,
)
from neurorit_lens.neurons.selection import SelectionStats, normalize_scores
from neurorit_lens.objective import encode_answer, tokenize_with_answers
from neurorit_lens.precision import resolve_precision
from neurorit_lens.tl_backend import Model

log = logging.getLogger(__name__)

# Fields of MiningConfig that change the scores (the rest only change the selection).
SCORE_FIELDS = ("method", "steps", "rule", "alpha_chunk", "positions", "target", "site", "layers")
SELECTION_FIELDS = ("selection", "threshold", "frequency", "top_k", "sign_consistency", "normalize")
# Fields that change the I scores only (stamped into the I fingerprints when not the default).
I_FIELDS = ("irrelevant_definition", "noisy_setting", "paired")

__all__ = ["CONDITIONS", "MiningResult", "load_answer_means", "mine", "score_path"]



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
        act_scale: ``[layer, d_mlp]`` mean ``|activation|`` over the mined prompts (``normalize``).
        answer_means: ``[layer, d_mlp]`` mean activation at the R prompts' answer-predicting
            positions (``answer_means``).
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
    act_scale: Float[torch.Tensor, "layer d_mlp"] | None = None
    answer_means: Float[torch.Tensor, "layer d_mlp"] | None = None

    # --- views ------------------------------------------------------------------------
    def scores(self, condition: str) -> torch.Tensor:
        check_condition(condition)
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
            write_tensor(out / f"scores_{cond}.safetensors", self.scores(cond).float().contiguous(),
                          {"ids": json.dumps(ids), "condition": cond, "model": self.model_name})
        atomic_write_json(out / "mining.json", {"info": self.info, "ids": {"R": self.ids_R, "I": self.ids_I},
                                                "top": {c: self.top(20, c) for c in CONDITIONS}})
        for key in ("act_scale", "answer_means"):
            if getattr(self, key) is not None:
                write_tensor(out / f"{key}.safetensors", getattr(self, key).float(), {"model": self.model_name})
        return save_neuron_sets(out / "neurons.json", self.sets, self.meta())

    @classmethod
    def load(cls, out_dir: str | os.PathLike, model: Model | None = None) -> MiningResult:
        """Read a folder written by :meth:`save` (with ``model``, reject sets that do not fit it)."""
        out = Path(out_dir)
        path = out / "neurons.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (run `neurorit mine` first)")
        sets, meta = read_neurons_file(path)
        if model is not None:
            check_sets_fit(path, sets, meta, model)
        for key in ("model_shape", "config"):
            if getattr(meta, key) is None:
                raise ValueError(f"{path}: meta lacks {key!r}; not written by MiningResult.save")
        cfg = MiningConfig.from_dict(meta.config)
        shape = meta.model_shape
        scores, ids = {}, {}
        for cond in CONDITIONS:
            t, md = read_tensor(out / f"scores_{cond}.safetensors")
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
        extra = {k: read_tensor(out / f"{k}.safetensors")[0] if (out / f"{k}.safetensors").exists() else None
                 for k in ("act_scale", "answer_means")}
        stats = {c: _stats(scores[c], cfg, shape, extra["act_scale"]) for c in CONDITIONS}
        return cls(scores["R"], scores["I"], ids["R"], ids["I"], {n: sets[n] for n in SET_NAMES},
                   stats["R"], stats["I"], cfg, str(meta.model), shape, meta.excluded, info,
                   **extra)

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
        stats = {c: _stats(self.scores(c), cfg, self.model_shape, self.act_scale) for c in CONDITIONS}
        sets = _select_sets(stats, cfg)
        return MiningResult(self.scores_R, self.scores_I, list(self.ids_R), list(self.ids_I), sets,
                            stats["R"], stats["I"], cfg, self.model_name, self.model_shape,
                            dict(self.excluded), dict(self.info), self.act_scale, self.answer_means)


def _stats(scores: torch.Tensor, cfg: MiningConfig, shape: tuple[int, int],
           act_scale: torch.Tensor | None = None) -> SelectionStats:
    st = SelectionStats(shape[0], shape[1], cfg.threshold)
    if cfg.normalize:
        if act_scale is None:
            raise ValueError("normalize=True needs the activation scale, which is computed by mine(normalize=True)")
        scores = normalize_scores(scores, act_scale) if scores.shape[0] else scores
    return st.update(scores) if scores.shape[0] else st


def _select_sets(stats: dict[str, SelectionStats], cfg: MiningConfig) -> dict[str, NeuronSet]:
    R = stats["R"].select(cfg.selection, cfg.frequency, cfg.top_k, cfg.sign_consistency)
    I = stats["I"].select(cfg.selection, cfg.frequency, cfg.top_k, cfg.sign_consistency)
    return exclusive_sets(R, I)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class _Item:
    id: str
    prompt: str
    answer: str
    tokens: list[int]
    wrong: str | None = None  # y_wrong continuation (distracted)
    gold_prompt: str | None = None  # the same question's relevant-only prompt (contrast)


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


def _attribute(model: Model, items: list[_Item], cfg: MiningConfig, wrong: bool = False,
               contrast: bool = False) -> torch.Tensor:
    answers = [it.wrong if wrong else it.answer for it in items]
    batch = tokenize_with_answers(model, [it.prompt for it in items], answers, max_len=model.cfg.n_ctx)
    if contrast:
        return contrast_scores(model, batch, [it.gold_prompt for it in items], answers, cfg)
    return attribute(model, batch, method=cfg.method, steps=cfg.steps, rule=cfg.rule, alpha_chunk=cfg.alpha_chunk,
                     positions=cfg.positions, target=cfg.target, site=cfg.site, layers=cfg.layers,
                     offload=cfg.offload_scores, precision=cfg.precision,
                     max_memory_gb=cfg.max_memory_gb).float().cpu()


def _score_items(model: Model, items: list[_Item], cond: str, cfg: MiningConfig, name: str,
                 shape: tuple[int, int], out_dir: str | os.PathLike | None, resume: bool,
                 show_progress: bool, setting: str) -> tuple[list[torch.Tensor], int]:
    """Per-item raw scores of one condition (resumed from files where the fingerprint matches)."""
    definition = I_DEFINITIONS.get(cfg.irrelevant_definition) if cond == "I" else None
    extra = {k: getattr(cfg, k) for k in I_FIELDS} if definition is not None and definition.own_fields else None
    rows: list[torch.Tensor | None] = [None] * len(items)
    fields = {k: getattr(cfg, k) for k in SCORE_FIELDS}
    if cfg.precision != "fp32":  # bf16 (cfg is resolved by mine) is stamped, fp32 not: old fp32 files stay valid
        fields["precision"] = cfg.precision
    fps = [fingerprint(name, shape, fields, it.tokens, extra) for it in items]
    todo = []
    for j, (it, fp) in enumerate(zip(items, fps, strict=True)):
        t = try_resume(score_path(out_dir, cond, it.id), fp, shape) if (out_dir is not None and resume) else None
        if t is None:
            todo.append(j)
        else:
            rows[j] = t
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"mine {cond} ({setting}, {cfg.method})",
               disable=not show_progress)
    try:
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            sub = [items[j] for j in chunk]
            s = definition.score(_attribute, model, sub, cfg) if definition is not None else _attribute(model, sub, cfg)
            for r, j in enumerate(chunk):
                rows[j] = s[r].clone()
                if out_dir is not None:
                    write_tensor(score_path(out_dir, cond, items[j].id), rows[j],
                                  {"fingerprint": fps[j], "id": items[j].id, "condition": cond})
            bar.update(len(chunk))
    finally:
        bar.close()
    return rows, len(todo)  # type: ignore[return-value]


def _batches(model: Model, items: list[_Item], size: int):
    for s in range(0, len(items), size):
        chunk = items[s:s + size]
        yield tokenize_with_answers(model, [it.prompt for it in chunk], [it.answer for it in chunk],
                                    max_len=model.cfg.n_ctx)


def _check_args(cfg: MiningConfig, data_cfg: DataConfig, examples: list[QAExample],
                shard: tuple[int, int] | None) -> None:
    if not isinstance(cfg, MiningConfig):
        raise ValueError(f"cfg must be a MiningConfig, got {type(cfg).__name__}")
    if not isinstance(data_cfg, DataConfig):
        raise ValueError(f"data_cfg must be a DataConfig, got {type(data_cfg).__name__}")
    ids = [ex.id for ex in examples]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise ValueError(f"duplicate example ids (score files are named by id): {dup[:5]}")
    if shard is not None:
        rank, world = shard
        if not (isinstance(rank, int) and isinstance(world, int) and world >= 1 and 0 <= rank < world):
            raise ValueError(f"bad shard {shard!r}: need (rank, world) with 0 <= rank < world")


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
        cfg: attribution, I definition and selection settings; its ``precision="auto"`` is
            resolved (:func:`neurorit_lens.precision.resolve_precision`: bf16 for IG where the
            device runs it natively, else fp32) and the result records the resolved value.
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
        ValueError: bad arguments, duplicate example ids, ``distracted`` without any wrong answer.
    """
    examples = list(examples)
    _check_args(cfg, data_cfg, examples, shard)
    # auto -> fp32 or bf16 here, so the score files, neurons.json and mining.json record what ran
    cfg = cfg.replace(precision=resolve_precision(cfg.precision, cfg.method, model.cfg.device))
    if shard is not None:
        examples = examples[shard[0]::shard[1]]
    name = model_name or getattr(model.cfg, "model_name", "") or "model"
    shape = (model.cfg.n_layers, model.cfg.d_mlp)
    t0 = time.time()
    scores: dict[str, torch.Tensor] = {}
    kept: dict[str, list[_Item]] = {}
    excluded: dict[str, Any] = {}
    info: dict[str, Any] = {"data": data_cfg.to_dict(), "n_input_examples": len(examples), "shard": shard,
                            "conditions": {}}
    definition = I_DEFINITIONS.get(cfg.irrelevant_definition)
    i_setting = getattr(cfg, definition.setting_field)
    n_computed = 0
    for cond, setting in (("R", cfg.relevant_setting), ("I", i_setting)):
        items, excl, cinfo = _condition_items(model, examples, setting, data_cfg)
        if cond == "I" and definition.prepare is not None:
            items = definition.prepare(model, items, examples, cinfo.get("template", "plain"), data_cfg.data, excl,
                                       kept["R"])
        excluded[cond] = excl
        rows, n_new = _score_items(model, items, cond, cfg, name, shape, out_dir, resume, show_progress, setting)
        n_computed += n_new
        scores[cond] = torch.stack(rows) if rows else torch.zeros(0, *shape)
        kept[cond] = items
        cinfo.update({"setting": setting, "n": len(items), "n_resumed": len(items) - n_new})
        info["conditions"][cond] = cinfo
        if excl["n"]:
            log.warning("condition %s (%s): %d example(s) excluded (%d lacking passages %s, %d empty answers)",
                        cond, setting, excl["n"], excl["missing_passages"], excl["reasons"], excl["empty_answer"])
    ids = {c: [it.id for it in kept[c]] for c in CONDITIONS}
    scores["I"], ids["I"] = orient_scores(scores["I"], ids["I"], cfg.irrelevant_definition, cfg.paired,
                                          scores["R"], ids["R"], excluded["I"])
    act_scale = answer_means = None
    if cfg.normalize and (kept["R"] or kept["I"]):
        act_scale = activation_stats(model, _batches(model, kept["R"] + kept["I"], cfg.batch_size), cfg.site,
                                     "all", absolute=True)
    if cfg.answer_means and kept["R"]:
        answer_means = activation_stats(model, _batches(model, kept["R"], cfg.batch_size), cfg.site, "answer")
    info["seconds"] = round(time.time() - t0, 3)
    info["n_computed"] = n_computed
    stats = {c: _stats(scores[c], cfg, shape, act_scale) for c in CONDITIONS}
    res = MiningResult(scores["R"], scores["I"], ids["R"], ids["I"], _select_sets(stats, cfg),
                       stats["R"], stats["I"], cfg, name, shape, excluded, info, act_scale, answer_means)
    if out_dir is not None and (shard is None or shard[1] == 1):
        res.save(out_dir)
    return res
