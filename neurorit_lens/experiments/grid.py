"""TrainConfig variants chosen on dev (``train_grid``) and dev-only selection runs (``dev_only``)
for the method comparison (``neurorit compare``) (stage schedule and data chosen on dev).

* ``train_grid``: ``{method: [{"name", <TrainConfig field>: value, ...}]}``; each entry is a
  named set of TrainConfig overrides on top of the shared ``train`` block. A method's
  candidates are the product ``lr_grid x train_grid`` in a fixed order: LRs ascending, then
  the variants as declared. The dev rule is today's LR rule over the candidates (highest
  pooled dev accuracy at the selection settings; ties: the first candidate in that order,
  i.e. the smaller LR, then the first declared variant), written as ``RULE_GRID``. A
  candidate's run is ``train/<method>/lr=<lr>+<variant>/seed=<seed>``; a method without
  variants keeps ``lr=<lr>`` (a configuration without ``train_grid`` keeps today's run
  names, rule text and selection files). Overrides may not change what every method
  shares: ``GRID_FORBIDDEN`` (method, seed, steps, batch size, the LR and its schedule).
* ``dev_only``: no test question is evaluated. Every trained method makes its dev pass
  (even with one candidate), ``base`` is evaluated on dev at the selection settings as a
  reference, nothing else runs (no extra seeds, prompted or cross sets), and
  ``results.{json,md}`` hold the dev scores and choices only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from neurorit_lens.config import TrainConfig
from neurorit_lens.experiments.config import check_partial
from neurorit_lens.io import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger("neurorit_lens.experiments")
GRID_FORBIDDEN = ("method", "seed", "steps", "batch_size", "grad_accum", "lr", "lr_grid", "warmup_steps",
                  "lr_schedule", "min_lr_ratio")
RULE_GRID = ("for each trained method, at the first seed: the candidate (an LR of its lr_grid with a variant of its "
             "train_grid; LRs ascending, then variants as declared) with the highest accuracy on the dev questions "
             "of every data set pooled, at the selection settings; ties: the first candidate in that order (the "
             "smaller LR, then the first declared variant); later seeds reuse it")
Candidate = tuple[float, dict[str, Any] | None]  # (LR, variant or None)
UNTRAINED = ("base", "prompted")  # evaluated methods without a training run


def trained(cfg: Mapping[str, Any]) -> list[str]:
    """The configuration's methods that train (every one but ``base`` and ``prompted``)."""
    return [m for m in cfg["methods"] if m not in UNTRAINED]


def check_train_grid(path: Any, cfg: Mapping[str, Any], name_ok: Callable[[str], bool]) -> None:
    """Each ``train_grid`` method is a trained method of the run, each variant a uniquely named
    set of TrainConfig overrides (no key of ``GRID_FORBIDDEN``) that builds a TrainConfig.

    Raises:
        ValueError: naming the method, variant and key at fault.
    """
    grid = cfg.get("train_grid", {})
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: 'train_grid' must be a dict {{method: [{{'name', <TrainConfig field>: value}}]}}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    trained_methods = trained(cfg)
    for method, variants in grid.items():
        if method not in trained_methods:
            raise ValueError(f"{path}: train_grid method {method!r} is not a trained method of 'methods' "
                             f"{trained_methods}")
        if not isinstance(variants, list) or not variants:
            raise ValueError(f"{path}: train_grid[{method!r}] must be a non-empty list of variants")
        names = [v.get("name") if isinstance(v, dict) else None for v in variants]
        for v, name in zip(variants, names, strict=True):
            if not isinstance(name, str) or not name_ok(name):
                raise ValueError(f"{path}: train_grid[{method!r}]: each variant needs a 'name' of letters, digits "
                                 f"and _.+=-, got {v!r}")
            for key in sorted(set(v) - {"name"}):
                if key not in fields:
                    raise ValueError(f"{path}: train_grid[{method!r}] variant {name!r}: {key!r} is not a "
                                     "TrainConfig field")
                if key in GRID_FORBIDDEN:
                    raise ValueError(f"{path}: train_grid[{method!r}] variant {name!r}: {key!r} may not vary (every "
                                     f"method shares {list(GRID_FORBIDDEN)}; LRs go in 'lr_grid')")
            check_partial(f"train_grid.{method}.{name}", TrainConfig, overrides(v))
            TrainConfig.from_dict({**cfg["train"], **overrides(v), "method": method})
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: train_grid[{method!r}] variant names must be unique, got {names}")


def overrides(variant: Mapping[str, Any] | None) -> dict[str, Any]:
    """The TrainConfig overrides of a variant (``{}`` for none)."""
    return {k: v for k, v in (variant or {}).items() if k != "name"}


def candidates(cfg: Mapping[str, Any], method: str) -> list[Candidate]:
    """A method's (LR, variant) candidates in rule order: LRs ascending, then variants as declared."""
    lrs = sorted(float(x) for x in cfg["lr_grid"].get(method, cfg["lr_grid"].get("default", [])))
    variants = cfg.get("train_grid", {}).get(method) or [None]
    return [(lr, v) for lr in lrs for v in variants]


def candidate_key(lr: float, variant: Mapping[str, Any] | None = None) -> str:
    """``"<lr>"`` or ``"<lr>+<variant name>"``: the dev-score key and the ``lr=`` part of a run name."""
    return f"{lr:g}" if variant is None else f"{lr:g}+{variant['name']}"


def variant_named(cfg: Mapping[str, Any], method: str, name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    for v in cfg.get("train_grid", {}).get(method, []):
        if v["name"] == name:
            return v
    raise ValueError(f"method {method!r}: no train_grid variant named {name!r}")


def choose(cands: list[Candidate], scores: Mapping[str, float]) -> int:
    """Index of the candidate with the highest dev score; ties: the first in rule order."""
    return max(range(len(cands)), key=lambda i: (scores.get(candidate_key(*cands[i]), 0.0), -i))


class GridMixin:
    """Dev-only runs for :class:`~neurorit_lens.experiments.harness.Harness` (uses its ``dev_score``,
    ``select``, ``eval_unit`` and ``out``)."""

    cfg: dict[str, Any]
    out: Path
    report_dirs: Callable[[], list[Path]]
    dev_score: Callable[[str], float]
    select: Callable[[str, int, Callable[[], None]], dict[str, Any]]
    reused_units: Callable[[], list[dict[str, Any]]]

    def run_dev_only(self, bar: Callable[[], None]) -> dict[str, Any]:
        """Base on dev (a reference), then every trained method's dev choice; no test question."""
        selection: dict[str, Any] = {}
        base = None
        if "base" in self.cfg["methods"]:
            base = self.dev_score("base")
            bar()
        for m in trained(self.cfg):
            selection[m] = self.select(m, self.cfg["seeds"][0], bar)
            self.write_dev_report(selection, base)
        return self.write_dev_report(selection, base)

    def dev_only_plan(self, dev_runs: int, n_dev: int) -> dict[str, Any]:
        """``--plan`` of a dev-only run: no test generation, base on dev too (empty otherwise)."""
        if not self.cfg.get("dev_only"):
            return {}
        return {"dev_only": True, "test_generations": 0, "teacher_forced_passes": 0,
                "dev_generations": (dev_runs + ("base" in self.cfg["methods"])) * n_dev}

    def write_dev_report(self, selection: dict[str, Any], base: float | None) -> dict[str, Any]:
        """``results.json`` / ``results.md`` of a dev-only run: every candidate's dev score and the choice."""
        rep = {"name": self.cfg["name"], "model": self.cfg["model"], "dev_only": True,
               "selection_rule": self.cfg["selection"]["rule"], "selection_settings": self.cfg["selection"]["settings"],
               "base_dev_score": base, "selection": selection, "train_wall_s": {
                   m: {k: read_json(p)["wall_s"] for k in sel["dev_scores"]
                       if (p := self.out / "train" / m / f"lr={k}" / f"seed={sel['seed']}" / "train.json").exists()}
                   for m, sel in selection.items()}}
        lines = [f"# Dev-only selection `{rep['name']}` ({rep['model']})", "",
                 f"Rule (declared before the run): {rep['selection_rule']}.", "",
                 f"Dev settings: {', '.join(rep['selection_settings'])}. No test question was evaluated.", "",
                 "| method | candidate (LR+variant) | overrides | dev accuracy | train wall s | chosen |",
                 "|---|---|---|---|---|---|"]
        if base is not None:
            lines.append(f"| base | - | - | {100 * base:.1f} | - | |")
        for m, sel in selection.items():
            for lr, v in candidates(self.cfg, m):
                k = candidate_key(lr, v)
                score = sel["dev_scores"].get(k)
                wall = rep["train_wall_s"][m].get(k)
                lines.append(f"| {m} | {k} | {overrides(v) or '-'} | {'n/a' if score is None else f'{100 * score:.1f}'}"
                             f" | {'-' if wall is None else f'{wall:.0f}'} | {'yes' if k == sel['chosen'] else ''} |")
        if units := self.reused_units():
            from neurorit_lens.experiments.report import reused_md

            rep["reused"] = units
            lines += ["", reused_md(units)]
        for rdir in self.report_dirs():
            atomic_write_json(rdir / "results.json", rep)
            atomic_write_text(rdir / "results.md", "\n".join(lines) + "\n")
        return rep
