"""The report of a comparison run folder: which runs count, their cost, ``results.json``/``.md``.

:class:`ResultsMixin` gives :class:`~neurorit_lens.experiments.harness.Harness` the report
phase: each method's runs (base, the chosen prompted variant, each trained method's chosen
candidate at every seed whose training is on disk), their cost (trainable parameters, steps,
LR schedule mass, wall time, peak memory) and the tables of
:mod:`neurorit_lens.experiments.report`, written to the run folder (and ``results``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neurorit_lens.config import TrainConfig
from neurorit_lens.experiments.extras import PROMPTED, prompted_run
from neurorit_lens.experiments.grid import candidates, overrides, variant_named
from neurorit_lens.experiments.protocol import chosen_run, run_name
from neurorit_lens.experiments.report import build_report, render_markdown
from neurorit_lens.io import atomic_write_json, atomic_write_text, read_json


def record_peak(train_json: Path, peak_mb: float | None) -> None:
    """Add the resident high-water mark of the training process (MiB; of the last resumed
    stretch when a run was resumed) to a run's ``train.json``."""
    if train_json.exists():
        atomic_write_json(train_json, {**read_json(train_json), "peak_rss_mb": peak_mb})


def schedule_mass(tcfg: TrainConfig, stage_steps: dict[str, int]) -> float:
    """Sum over every optimizer step of the LR multiplier (per_stage: stages restart the
    schedule; continuous: one schedule over all steps)."""
    from neurorit_lens.training.trainer import lr_factor

    spans = [sum(stage_steps.values())] if tcfg.stage_schedule == "continuous" else list(stage_steps.values())
    return float(sum(lr_factor(s, n, tcfg.warmup_steps, tcfg.lr_schedule, tcfg.min_lr_ratio)
                     for n in spans for s in range(n)))


def _clean(x: Any) -> Any:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class ResultsMixin:
    """The report phase of :class:`~neurorit_lens.experiments.harness.Harness` (uses its ``cfg``,
    ``out``, ``results``, ``examples``, ``settings_of``, ``eval_path`` and the extras' reports)."""

    cfg: dict[str, Any]
    out: Path
    results: Path | None
    examples: dict[str, dict[str, list]]
    amended: dict[str, list[str]]
    skipped: dict[str, dict[str, dict[str, int]]]
    exploratory: tuple[list[list[str]], list[str]]
    amendments: list[dict[str, Any]]
    settings_of: Callable[[str], list[str]]
    eval_path: Callable[[str, str, str, str], Path]
    cross_report: Callable[[dict[str, Any], list[str]], dict[str, Any] | None]
    reused_units: Callable[[], list[dict[str, Any]]]

    def report_dirs(self) -> list[Path]:
        """Where ``results.json``/``results.md`` go: the run folder, and ``results`` when given."""
        return [self.out] + ([self.results] if self.results is not None else [])

    def runs(self, selection: dict[str, Any]) -> dict[str, dict[int, str]]:
        out: dict[str, dict[int, str]] = {}
        for m in self.cfg["methods"]:
            if m == "base":
                out[m] = {s: "base" for s in self.cfg["seeds"][:1]}
                continue
            if m == PROMPTED and m in selection:
                out[m] = {s: prompted_run(selection[m]["chosen"]) for s in self.cfg["seeds"][:1]}
                continue
            if m not in selection:
                continue
            seeds = [self.cfg["seeds"][0], *self.cfg.get("extra_seeds", [])]
            out[m] = {s: chosen_run(selection[m], s) for s in seeds
                      if (self.out / "train" / chosen_run(selection[m], s)).exists()}
        return out

    def cost(self, method: str, runs: dict[int, str], selection: dict[str, Any]) -> dict[str, Any]:
        evals = [read_json(p)["wall_s"] for run in runs.values()
                 for p in (self.out / "eval" / run / "test").rglob("*.json")]
        if method in ("base", PROMPTED):
            return {"trainable_params": 0, "trainable_fraction": 0.0, "eval_wall_s": sum(evals)}
        trains = {s: read_json(j) for s, r in runs.items() if (j := self.out / "train" / r / "train.json").exists()}
        t = trains.get(next(iter(runs)), {})
        peaks = {s: tr["peak_rss_mb"] for s, tr in trains.items()
                 if tr.get("peak_rss_mb") is not None}  # recorded since the harness measured it
        grid = [self.out / "train" / run_name(method, lr, selection["seed"], v and v["name"]) / "train.json"
                for lr, v in candidates(self.cfg, method)]
        variant = variant_named(self.cfg, method, selection.get("chosen_variant"))
        tcfg = TrainConfig.from_dict({**self.cfg["train"], **overrides(variant), "method": method})
        return {k: t.get(k) for k in ("trainable_params", "total_params", "trainable_fraction", "steps",
                                       "stage_steps", "target_layers", "n_train_items")} | {
            "schedule_mass": schedule_mass(tcfg, t["stage_steps"]) if t else None,
            "train_wall_s": t.get("wall_s", 0.0), "eval_wall_s": sum(evals),
            "train_peak_rss_mb": max(peaks.values(), default=None), "train_peak_rss_mb_per_seed": peaks,
            "grid_wall_s": sum(read_json(p)["wall_s"] for p in grid if p.exists()),
            "train_wall_s_per_seed": {s: tr["wall_s"] for s, tr in trains.items()}}

    def report_so_far(self) -> dict[str, Any]:
        """``--report``: :meth:`write_report` over the methods whose dev choice is on disk
        (``selection/<method>.json``) and every test unit finished so far."""
        return self.write_report(self.selections_on_disk())

    def selections_on_disk(self) -> dict[str, Any]:
        """``{method: selection/<method>.json}`` for the methods whose dev choice is made."""
        sel_dir = self.out / "selection"
        return {m: read_json(sel_dir / f"{m}.json") for m in self.cfg["methods"] if (sel_dir / f"{m}.json").exists()}

    def write_report(self, selection: dict[str, Any]) -> dict[str, Any]:
        """Collect every finished test evaluation into ``results.json`` and ``results.md``."""
        runs = self.runs(selection)
        evals = {}
        for by_seed in runs.values():
            for run in by_seed.values():
                for d in self.cfg["datasets"]:
                    for s in self.settings_of(d):
                        p = self.eval_path(run, "test", d, s)
                        if p.exists():
                            evals[(run, d, s)] = read_json(p)
        costs = {m: self.cost(m, by, selection.get(m, {})) for m, by in runs.items() if by}
        contrasts, cross_sets = self.exploratory
        rep = build_report(self.cfg, runs, evals, costs, selection, exploratory=contrasts, cross=self.cross_report(
            selection, cross_sets), settings={d: self.settings_of(d) for d in self.cfg["datasets"]},
            amended=self.amended, skipped=self.skipped)
        rep["n_questions"] = {d: {k: len(v) for k, v in self.examples[d].items()} for d in self.examples}
        if self.amendments:
            rep["amendments"] = self.amendments
        if units := self.reused_units():
            rep["reused"] = units
        for rdir in self.report_dirs():
            atomic_write_json(rdir / "results.json", _clean(rep))
            atomic_write_text(rdir / "results.md", render_markdown(rep))
        return rep
