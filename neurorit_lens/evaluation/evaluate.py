"""Noise-robustness evaluation: greedy answers per noise setting, scored, with intervals.

For each noise setting (``closed``, ``gold``, ``gold+K``, ``noise=R``, ``irrelevant``,
``counterfactual``; see :func:`neurorit_lens.data.parse_setting`) the examples become RAG
instances (:func:`neurorit_lens.data.build_instances`), the instances become prompts
through the project's one prompt path (:func:`neurorit_lens.data.build.build_prompts`:
chat template for instruct models, non-gold passages cut to fit ``max_prompt_tokens``, capped
at the model's context minus ``max_new_tokens``), the model answers greedily
(:func:`neurorit_lens.models.generation.generate_greedy`). Every answer is first
extracted (:func:`~neurorit_lens.data.answers.extract_answer`: first line, first
sentence, at most five words more than the longest gold alias) and the extract is scored
with accuracy (gold answer contained, InstructRAG's exact presence), EM and F1
(:mod:`neurorit_lens.data.answers`); ``accuracy_raw`` is containment in the whole
output, and ``copy_rate`` the share of outputs that reproduce 8 or more consecutive
normalised tokens of a passage of their prompt. Each setting reports the means, a
percentile-bootstrap 95% interval and a Wilson interval of the accuracy
(:mod:`neurorit_lens.statistics`), what the prompts really held (``label``,
``mean_n_passages``, ``mean_n_irrelevant``) and what the budget did (``n_truncated``,
``n_skipped_budget``, ``n_gold_cut``, 0 by construction). A setting that fits no example is
an error. :meth:`EvalResult.paired_difference` gives the gap between two settings (e.g.
``gold`` vs ``gold+4``) with a paired bootstrap interval over the questions both settings
share, and :meth:`EvalResult.mcnemar` the exact McNemar test of the same pairs.

Hooks on the model (ablations, functional deactivation) stay active during evaluation.
The teacher-forced gold-answer log-prob is :func:`neurorit_lens.objective.answer_logprobs`.

>>> from neurorit_lens.data import embedded_examples
>>> from neurorit_lens.models import tiny_model
>>> res = evaluate(tiny_model(), embedded_examples(3), EvalConfig(settings=("gold",), n_bootstrap=10),
...                DataConfig(template="plain"), show_progress=False)
>>> res.settings["gold"].n
3
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from neurorit_lens.config import DataConfig, EvalConfig
from neurorit_lens.data.answers import (
    accuracy,
    copies_passage,
    exact_match,
    extract_answer,
    f1,
)
from neurorit_lens.data.build import PromptSet, build_prompts, prompt_budget
from neurorit_lens.data.prompts import format_passage
from neurorit_lens.data.schema import QAExample, RAGInstance
from neurorit_lens.io import atomic_write_json, atomic_write_text, read_json
from neurorit_lens.models.generation import encode_for_generation, generate_greedy
from neurorit_lens.precision import autocast
from neurorit_lens.statistics import (
    McNemar,
    bootstrap_ci,
    mcnemar_exact,
    paired_bootstrap_ci,
    wilson_interval,
)
from neurorit_lens.tl_backend import Model

log = logging.getLogger(__name__)

METRICS = ("accuracy", "em", "f1", "accuracy_raw", "copied")
_CI_METRICS = ("accuracy", "em", "f1")


@dataclass
class EvalRecord:
    """One example answered under one setting."""

    id: str
    setting: str
    prompt_tokens: int
    prediction: str
    answers: list[str]
    accuracy: float
    em: float
    f1: float
    gold_positions: list[int] = field(default_factory=list)
    n_passages: int = 0
    extracted: str = ""  # the scored part of the prediction (metrics.extract_answer)
    accuracy_raw: float = float("nan")  # containment in the whole prediction
    copied: float = float("nan")  # 1.0 if the prediction copies 8+ tokens of a passage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalRecord:
        return cls(**d)


@dataclass
class SettingResult:
    """Aggregate scores of one noise setting."""

    name: str
    n: int
    accuracy: float
    em: float
    f1: float
    accuracy_ci: tuple[float, float]
    n_skipped: int = 0
    n_truncated: int = 0
    em_ci: tuple[float, float] = (float("nan"), float("nan"))
    f1_ci: tuple[float, float] = (float("nan"), float("nan"))
    template: str = ""
    mean_prompt_tokens: float = float("nan")
    seconds: float = 0.0
    accuracy_raw: float = float("nan")
    copy_rate: float = float("nan")
    accuracy_wilson: tuple[float, float] = (float("nan"), float("nan"))
    n_skipped_budget: int = 0
    n_gold_cut: int = 0
    label: str = ""
    mean_n_passages: float = float("nan")
    mean_n_irrelevant: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        for k in _INTERVALS:
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> SettingResult:
        d = dict(d)
        for k in _INTERVALS:
            if k in d:
                d[k] = tuple(d[k])
        return cls(name=name, **d)


_INTERVALS = ("accuracy_ci", "em_ci", "f1_ci", "accuracy_wilson")


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    return x


def _none_to_nan(x: Any) -> Any:
    if x is None:
        return float("nan")
    if isinstance(x, list):
        return [_none_to_nan(v) for v in x]
    return x


def aggregate(
    name: str,
    records: Sequence[EvalRecord],
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_skipped: int = 0,
    n_truncated: int = 0,
    template: str = "",
    seconds: float = 0.0,
) -> SettingResult:
    """Means and bootstrap 95% intervals of the per-example scores of one setting (plus a
    Wilson interval of the accuracy, the raw accuracy and the copy rate)."""
    nan = float("nan")
    if not records:
        return SettingResult(name, 0, nan, nan, nan, (nan, nan), n_skipped, n_truncated, template=template,
                             seconds=seconds)
    cols = {m: np.array([getattr(r, m) for r in records], dtype=np.float64) for m in METRICS}
    cis = {m: bootstrap_ci(cols[m], n=n_bootstrap, seed=seed) for m in _CI_METRICS}
    return SettingResult(
        name=name,
        n=len(records),
        accuracy=float(cols["accuracy"].mean()),
        em=float(cols["em"].mean()),
        f1=float(cols["f1"].mean()),
        accuracy_ci=cis["accuracy"],
        n_skipped=n_skipped,
        n_truncated=n_truncated,
        em_ci=cis["em"],
        f1_ci=cis["f1"],
        template=template,
        mean_prompt_tokens=float(np.mean([r.prompt_tokens for r in records])),
        seconds=seconds,
        accuracy_raw=float(cols["accuracy_raw"].mean()),
        copy_rate=float(cols["copied"].mean()),
        accuracy_wilson=wilson_interval(int(round(cols["accuracy"].sum())), len(records)),
    )


@dataclass
class EvalResult:
    """Scores per noise setting plus every per-example record.

    ``to_dict()`` is the ``eval.json`` contract: ``{"model", "data", "settings": {name:
    {"n", "accuracy", "em", "f1", "accuracy_ci", "n_skipped", "n_truncated", ...}}}``.
    """

    model: str
    data: str
    settings: dict[str, SettingResult] = field(default_factory=dict)
    records: list[EvalRecord] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _nan_to_none({
            "model": self.model,
            "data": self.data,
            "settings": {k: v.to_dict() for k, v in self.settings.items()},
            "config": self.config,
        })

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``eval.json`` and ``predictions.jsonl`` into ``out_dir`` (atomically)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "predictions.jsonl",
                          "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in self.records))
        return atomic_write_json(out / "eval.json", self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalResult:
        """Load from a folder (or its ``eval.json``); records come from ``predictions.jsonl`` if present."""
        p = Path(path)
        folder = p if p.is_dir() else p.parent
        d = read_json(folder / "eval.json")
        for key in ("model", "data", "settings"):
            if key not in d:
                raise ValueError(f"{folder / 'eval.json'}: missing key {key!r}")
        settings = {}
        for name, s in d["settings"].items():
            s = {k: _none_to_nan(v) for k, v in s.items()}
            settings[name] = SettingResult.from_dict(name, s)
        records = []
        pred = folder / "predictions.jsonl"
        if pred.exists():
            for i, line in enumerate(pred.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        records.append(EvalRecord.from_dict(json.loads(line)))
                    except (json.JSONDecodeError, TypeError) as e:
                        raise ValueError(f"{pred}:{i}: bad record ({e})") from e
        return cls(model=d["model"], data=d["data"], settings=settings, records=records, config=d.get("config", {}))

    def merge(self, other: EvalResult) -> EvalResult:
        """A new result with ``other``'s settings added (``other`` wins on a name clash)."""
        names = set(other.settings)
        records = [r for r in self.records if r.setting not in names] + list(other.records)
        return EvalResult(self.model or other.model, self.data or other.data, {**self.settings, **other.settings},
                          records, self.config or other.config)

    def records_for(self, setting: str) -> list[EvalRecord]:
        return [r for r in self.records if r.setting == setting]

    def paired_values(self, a: str, b: str, metric: str = "accuracy",
                      other: EvalResult | None = None) -> tuple[list[float], list[float], list[str]]:
        """Per-question ``metric`` of setting ``a`` (here) and ``b`` (in ``other``, default here),
        over the example ids both have, in this result's order: ``(values_a, values_b, ids)``."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
        other = self if other is None else other
        for res, s in ((self, a), (other, b)):
            if s not in res.settings:
                raise ValueError(f"no setting {s!r} in result {res.model!r} (have {sorted(res.settings)})")
        va = {r.id: getattr(r, metric) for r in self.records_for(a)}
        vb = {r.id: getattr(r, metric) for r in other.records_for(b)}
        ids = [i for i in va if i in vb]
        if not ids:
            raise ValueError(f"settings {a!r} and {b!r} share no example ids (records missing?)")
        return [va[i] for i in ids], [vb[i] for i in ids], ids

    def paired_difference(
        self, a: str, b: str, metric: str = "accuracy", n: int = 1000, seed: int = 0,
        other: EvalResult | None = None,
    ) -> tuple[float, tuple[float, float], int]:
        """Mean of ``metric[a] - metric[b]`` over questions in both settings, with a paired bootstrap CI.

        ``other``: take setting ``b`` from another result (e.g. a second method on the same
        questions: ``tuned.paired_difference("gold+4", "gold+4", other=base)``).

        Returns:
            ``(difference, (lo, hi), n_pairs)``.
        """
        va, vb, ids = self.paired_values(a, b, metric, other)
        mean, ci = paired_bootstrap_ci(va, vb, n=n, seed=seed)
        return mean, ci, len(ids)

    def mcnemar(self, a: str, b: str, metric: str = "accuracy", other: EvalResult | None = None) -> McNemar:
        """Exact McNemar test of the 0/1 ``metric`` (accuracy, em, accuracy_raw) of ``a`` vs ``b``
        on the questions both have (``other`` as in :meth:`paired_difference`)."""
        va, vb, _ = self.paired_values(a, b, metric, other)
        return mcnemar_exact(va, vb)

    def table(self) -> str:
        """A fixed-width table: one row per setting (accuracy with its Wilson 95% interval)."""
        head = (f"{'setting':<16}{'n':>6}  {'accuracy':>8}  {'Wilson 95%':<16}{'EM':>7}{'F1':>7}{'raw acc':>8}"
                f"{'copy':>7}{'skipped':>9}{'truncated':>11}  ")
        w = max([len("held")] + [len(s.label) for s in self.settings.values()])
        head += f"{'held':<{w}}"
        lines = [f"model: {self.model}   data: {self.data}", head, "-" * len(head)]

        def fmt(x: float) -> str:
            return "   nan" if x != x else f"{x:6.3f}"

        for name, s in self.settings.items():
            lo, hi = s.accuracy_wilson
            ci = "" if lo != lo else f"[{lo:.3f}, {hi:.3f}]"
            lines.append(f"{name:<16}{s.n:>6}  {fmt(s.accuracy):>8}  {ci:<16}{fmt(s.em):>7}{fmt(s.f1):>7}"
                         f"{fmt(s.accuracy_raw):>8}{fmt(s.copy_rate):>7}{s.n_skipped:>9}{s.n_truncated:>11}"
                         f"  {s.label:<{w}}")
        return "\n".join(lines)

    def top(self, k: int = 5, metric: str = "accuracy") -> list[tuple[str, float]]:
        """The ``k`` settings with the highest ``metric`` (name, value), best first."""
        if metric not in ("accuracy", "em", "f1", "accuracy_raw", "copy_rate"):
            raise ValueError(f"unknown metric {metric!r}; choose from accuracy, em, f1, accuracy_raw, copy_rate")
        vals = [(n, getattr(s, metric)) for n, s in self.settings.items() if getattr(s, metric) == getattr(s, metric)]
        return sorted(vals, key=lambda t: -t[1])[:k]


def score_predictions(
    instances: Sequence[RAGInstance],
    prompts: Sequence[str],
    predictions: Sequence[str],
    prompt_tokens: Sequence[int],
) -> list[EvalRecord]:
    """Per-example records for generated answers: accuracy, EM and F1 of the extracted answer,
    raw containment, and whether the output copies a passage of its prompt."""
    if not (len(instances) == len(prompts) == len(predictions) == len(prompt_tokens)):
        raise ValueError(f"length mismatch: {len(instances)} instances, {len(prompts)} prompts, "
                         f"{len(predictions)} predictions, {len(prompt_tokens)} token counts")
    recs = []
    for inst, pred, nt in zip(instances, predictions, prompt_tokens, strict=True):
        ans = list(inst.answers)
        ext = extract_answer(pred, ans)
        docs = [format_passage(i + 1, p) for i, p in enumerate(inst.passages)]
        recs.append(EvalRecord(
            id=inst.id, setting=inst.setting, prompt_tokens=int(nt), prediction=pred, answers=ans,
            accuracy=accuracy(ext, ans), em=exact_match(ext, ans), f1=f1(ext, ans),
            gold_positions=list(inst.gold_positions), n_passages=len(inst.passages),
            extracted=ext, accuracy_raw=accuracy(pred, ans), copied=float(copies_passage(pred, docs)),
        ))
    return recs


def evaluate_prompts(
    model: Model,
    instances: Sequence[RAGInstance],
    prompts: Sequence[str],
    cfg: EvalConfig,
    show_progress: bool = True,
) -> list[EvalRecord]:
    """Generate greedily for already-rendered ``prompts`` and score against ``instances``."""
    if len(instances) != len(prompts):
        raise ValueError(f"{len(instances)} instances but {len(prompts)} prompts")
    with autocast(cfg.precision, model.cfg.device):
        preds = generate_greedy(model, list(prompts), max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                show_progress=show_progress, backend=cfg.generation_backend,
                                stop_at_newline=cfg.stop_at_newline)
    ntoks = [len(encode_for_generation(model, p)) for p in prompts]
    return score_predictions(instances, prompts, preds, ntoks)


def _no_example_error(setting: str, ps: PromptSet, data_name: str) -> ValueError:
    where = data_name or "the data"
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(ps.skipped_reasons.items())) or "no example given"
    hint = ""
    if "no_context_list" in ps.skipped_reasons:
        hint = (" (the 'retrieved' setting needs a list of retrieved contexts per question: DPR-style 'ctxs' "
                "or a JSONL 'passages' list)")
    elif "gold_over_budget" in ps.skipped_reasons:
        hint = f" (raise max_prompt_tokens above {ps.budget})"
    elif method := next((k[3:-12] for k in ps.skipped_reasons if k.startswith("no_") and k.endswith("_distractors")),
                        None):
        hint = (f" (@{method} draws from the passages mined as {method} distractors: load gold-only data such as "
                f"NQ-open with distractors={method!r}; data with its own irrelevant passages, such as the embedded "
                "set, has no such pool)")
    return ValueError(f"setting {setting!r} fits no example of {where}: {ps.n_skipped} skipped ({reasons}){hint}")


def evaluate_setting(
    model: Model,
    examples: Sequence[QAExample],
    setting: str,
    cfg: EvalConfig,
    data_cfg: DataConfig,
    show_progress: bool = True,
    data_name: str = "",
) -> tuple[list[EvalRecord], SettingResult]:
    """Records and aggregate scores of one setting (prompts from the one prompt path).

    Raises:
        ValueError: the setting fits no example (the message names ``data_name`` and the
            skip reasons).
    """
    t0 = time.perf_counter()
    ps = build_prompts(examples, setting, model.tokenizer, data_cfg, n_ctx=model.cfg.n_ctx,
                       reserve_tokens=cfg.max_new_tokens)
    if not ps.prompts:
        raise _no_example_error(setting, ps, data_name)
    if ps.n_skipped:
        log.warning("setting %s: %d example(s) skipped (%s)", setting, ps.n_skipped, ps.skipped_reasons)
    if ps.n_truncated:
        log.warning("setting %s: %d prompt(s) had non-gold passages truncated to fit %d tokens", setting,
                    ps.n_truncated, ps.budget)
    recs = evaluate_prompts(model, ps.instances, ps.prompts, cfg, show_progress=show_progress)
    summary = aggregate(setting, recs, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, n_skipped=ps.n_skipped,
                        n_truncated=ps.n_truncated, template=ps.template, seconds=time.perf_counter() - t0)
    summary = replace(summary, n_skipped_budget=ps.n_skipped_budget, n_gold_cut=ps.n_gold_cut, label=ps.label,
                      mean_n_passages=ps.mean_n_passages, mean_n_irrelevant=ps.mean_n_irrelevant)
    return recs, summary


def evaluate(
    model: Model,
    examples: list[QAExample],
    cfg: EvalConfig,
    data_cfg: DataConfig | None = None,
    model_name: str = "",
    data_name: str = "",
    show_progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on ``examples`` under every noise setting of ``cfg.settings``.

    Args:
        model: a HookedTransformer with a tokenizer (hooks on it stay active).
        examples: QA examples with labelled passages.
        cfg: settings, generation length, batch size, bootstrap size and seed.
        data_cfg: context building and prompt rendering (``n_passages``, ``seed``,
            ``template``, ``max_prompt_tokens``); defaults to ``DataConfig()``. The prompt
            budget is capped at the model's context minus ``cfg.max_new_tokens``.
        model_name: recorded as ``"model"`` in the result.
        data_name: recorded as ``"data"`` in the result.
        show_progress: tqdm bars.

    Returns:
        An :class:`EvalResult` with one :class:`SettingResult` per setting.

    Raises:
        ValueError: no examples, or a setting that fits no example (e.g. ``counterfactual``
            on data without such passages, ``retrieved`` on data without a context list).
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    data_cfg = data_cfg or DataConfig()
    budget = prompt_budget(data_cfg.max_prompt_tokens, model.cfg.n_ctx, cfg.max_new_tokens)
    if budget < data_cfg.max_prompt_tokens:
        log.info("prompt budget %d -> %d tokens (context %d minus %d new tokens)", data_cfg.max_prompt_tokens,
                 budget, model.cfg.n_ctx, cfg.max_new_tokens)
    result = EvalResult(model=model_name, data=data_name,
                        config=json.loads(json.dumps({"eval": cfg.to_dict(), "data": data_cfg.to_dict()})))
    for setting in tqdm(cfg.settings, desc="settings", unit="setting", disable=not show_progress):
        recs, result.settings[setting] = evaluate_setting(model, examples, setting, cfg, data_cfg, show_progress,
                                                          data_name)
        result.records.extend(recs)
        if recs:
            log.info("%s: n=%d accuracy=%.3f", setting, len(recs), result.settings[setting].accuracy)
    return result
