"""The ``prompted`` baseline and the ``cross_test`` sets of the method comparison (``neurorit compare``).

* ``prompted`` (format control): the untuned base model with a prompt
  (instruction, system line, template) and a generation length (``max_new_tokens``,
  ``stop_at_newline``) chosen on dev from the declared ``prompted_variants``, by the same
  rule as the LR choice: highest pooled dev accuracy at the selection settings; ties: the
  first declared. Each variant is the run ``prompted/<name>``; only the chosen one is
  evaluated on test (``OUT/selection/prompted.json`` holds the choice and every dev score).
* ``cross_test``: test-only data sets. Every question of each set is a
  test question (no split, no limit); none is ever trained or mined on (the training and
  mining pools hold only the ``datasets``' training questions). Each evaluated method's
  first-seed run (base, the chosen prompted variant, each trained method's chosen LR) is
  evaluated on every set (``OUT/eval/<run>/cross/<set>/<setting>.json``) at the declared
  settings the set can build; a declared setting the set's data cannot build (e.g.
  ``counterfactual`` without such passages) is skipped and logged, unless the set lists it
  in its own ``settings`` (then it is an error), and a setting that fits no example after
  the prompt budget is an error (``evaluate_setting``). A cross set without its own list
  inherits the settings of the configuration *first* declared: settings added by amendment
  are evaluated on the training data sets only.
* settings added by amendment (``--amend``; :func:`neurorit_lens.experiments.protocol.amendment`):
  evaluated at test only, after every declared unit, on every run of the report (base, the
  chosen prompted variant, each trained method's chosen run at every seed): no dev pass, no
  training, no new choice. A setting a data set's test questions cannot build is skipped
  and counted (``skipped_settings``) when it came from the global list, an error when the
  data set lists it itself. Their rows are exploratory (:mod:`neurorit_lens.experiments.report`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neurorit_lens.data.settings import build_instances
from neurorit_lens.data.text import normalize_question
from neurorit_lens.experiments.protocol import (
    PROMPTED_RULE,
    VARIANT_DATA,
    VARIANT_EVAL,
    chosen_run,
    dataset_settings,
    declared_settings,
)
from neurorit_lens.io import atomic_write_json, read_json

log = logging.getLogger("neurorit_lens.experiments")
PROMPTED = "prompted"


def prompted_run(variant: str) -> str:
    return f"{PROMPTED}/{variant}"


class ExtrasMixin:
    """Prompted variants and cross-data-set evaluation for :class:`~neurorit_lens.experiments.harness.Harness`
    (uses its ``data_cfg``, ``dev_score``, ``eval_unit``, ``eval_path`` and ``settings_of``)."""

    cfg: dict[str, Any]
    first_cfg: dict[str, Any]  # the configuration first declared (protocol.json), else cfg
    amended: dict[str, list[str]]  # data set -> settings added by amendment that it can build
    skipped: dict[str, dict[str, dict[str, int]]]  # data set -> amended setting it cannot build -> reasons
    out: Path
    examples: dict[str, dict[str, list]]
    cross: dict[str, list]
    cross_cfgs: dict[str, Any]
    cross_settings: dict[str, list[str]]
    cross_skipped: dict[str, dict[str, dict[str, int]]]

    # --- prompted ---------------------------------------------------------------------------
    def variant_of(self, run: str) -> dict[str, Any] | None:
        """The declared variant of a ``prompted/<name>`` run (``None`` for other runs)."""
        if not run.startswith(PROMPTED + "/"):
            return None
        name = run.split("/", 1)[1]
        for v in self.cfg.get("prompted_variants", []):
            if v["name"] == name:
                return v
        raise ValueError(f"run {run!r}: no prompted variant named {name!r}")

    def variant_inputs(self, run: str, dcfg: Any, ecfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The data and eval configuration of ``run``: a prompted variant's overrides applied."""
        v = self.variant_of(run)
        if v is None:
            return dcfg, ecfg
        dcfg = dataclasses.replace(dcfg, **{k: v[k] for k in VARIANT_DATA if k in v})
        return dcfg, {**ecfg, **{k: v[k] for k in VARIANT_EVAL if k in v}}

    def same_as_base(self, run: str, split: str, dataset: str, setting: str) -> dict[str, Any] | None:
        """A prompted variant without overrides prompts and decodes exactly as ``base`` does, so
        its unit is base's finished one, copied (``same_as``); None when that does not apply."""
        v = self.variant_of(run)
        path = self.eval_path("base", split, dataset, setting)
        if v is None or set(v) != {"name"} or not path.exists():
            return None
        blob = read_json(path) | {"run": run, "same_as": "base"}
        atomic_write_json(self.eval_path(run, split, dataset, setting), blob)
        log.info("%s %s %s %s: the base model's unit (no prompt or length override)", run, split, dataset, setting)
        return blob

    def select_prompted(self, bar: Callable[[], None]) -> dict[str, Any]:
        """Dev-evaluate every variant; the declared rule picks one (redone only when variants
        were added, reusing every dev evaluation on disk)."""
        variants = self.cfg["prompted_variants"]
        names = [v["name"] for v in variants]
        path = self.out / "selection" / f"{PROMPTED}.json"
        if path.exists():
            sel = read_json(path)
            if sel.get("names") == names:
                return sel
        scores: dict[str, float] = {}
        for name in names if len(names) > 1 else []:  # one variant: nothing to choose, no dev pass
            scores[name] = self.dev_score(prompted_run(name))
            bar()
        best = max(names, key=lambda n: (scores.get(n, 0.0), -names.index(n)))  # ties: the first declared
        sel = {"method": PROMPTED, "names": names, "dev_scores": scores, "chosen": best, "variants": variants,
               "rule": PROMPTED_RULE, "settings": self.cfg["selection"]["settings"]}
        atomic_write_json(path, sel)
        return sel


    # --- cross-data-set test sets -----------------------------------------------------------
    def load_cross(self) -> None:
        """Every ``cross_test`` set, whole, as test questions (see module docstring)."""
        from neurorit_lens.data.splits import load_splits

        self.cross, self.cross_cfgs, self.cross_settings, self.cross_skipped = {}, {}, {}, {}
        for name, spec in self.cfg.get("cross_test", {}).items():
            dcfg = dataclasses.replace(self.data_cfg(spec), split_fractions=(0.0, 0.0, 1.0))
            if not dcfg.data.startswith(("embedded", "hf:")) and not Path(dcfg.data).exists():
                raise FileNotFoundError(f"cross_test set {name!r}: {dcfg.data} not found (set NEURORIT_SHARED_DATA)")
            _, splits = load_splits(dcfg)  # fractions (0, 0, 1): every question is test
            self.cross[name], self.cross_cfgs[name] = splits["test"], dcfg
            self.cross_settings[name], self.cross_skipped[name] = self._cross_settings(name, spec)
            log.info("cross_test %s: %d questions, settings %s (skipped: %s)", name, len(self.cross[name]),
                     self.cross_settings[name], self.cross_skipped[name] or "none")


    def _cross_settings(self, name: str, spec: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, int]]]:
        """The settings of a cross set: its own list (each must build) or every declared
        setting its data can build (the others skipped and logged with their reasons)."""
        own = spec.get("settings")
        exs, dcfg = self.cross[name], self.cross_cfgs[name]
        keep, skipped = [], {}
        for s in own or declared_settings(self.first_cfg):
            built = build_instances(exs, s, dcfg.n_passages, dcfg.seed)
            if built.instances:
                keep.append(s)
            elif own:
                raise ValueError(f"cross_test set {name!r}: setting {s!r} fits no example ({built.skipped_reasons})")
            else:
                skipped[s] = dict(built.skipped_reasons)
                log.warning("cross_test %s: setting %s skipped, the data cannot build it (%s)", name, s,
                            built.skipped_reasons)
        if not keep:
            raise ValueError(f"cross_test set {name!r}: no declared setting fits any example ({skipped})")
        return keep, skipped

    def cross_runs(self, selection: dict[str, Any]) -> dict[str, str]:
        """``{method: run}`` evaluated on the cross sets: each method's first-seed run."""
        seed0, out = self.cfg["seeds"][0], {}
        for m in self.cfg["methods"]:
            if m == "base":
                out[m] = "base"
            elif m == PROMPTED and PROMPTED in selection:
                out[m] = prompted_run(selection[PROMPTED]["chosen"])
            elif m in selection and m != PROMPTED:
                out[m] = chosen_run(selection[m], seed0)
        return out

    def cross_units(self, selection: dict[str, Any], bar: Callable[[], None]) -> None:
        for m, run in self.cross_runs(selection).items():
            if not self.owns(m):  # another worker's method (--methods)
                continue
            for name in self.cross:
                for s in self.cross_settings[name]:
                    self.eval_unit(run, "cross", name, s)
            bar()


    def cross_overlap(self, name: str) -> dict[str, int]:
        """Questions of cross set ``name`` whose normalised text is also a question of a
        training data set's split (a check that the set is new to the model)."""
        mine = {normalize_question(ex.question) for ex in self.cross[name]}
        return {split: sum(normalize_question(ex.question) in mine
                           for d in self.examples for ex in self.examples[d][split])
                for split in ("train", "dev", "test")}

    def extras_plan(self) -> dict[str, Any]:
        """Sizes of the prompted and cross units (``--plan``); ``done``: unit files on disk."""
        out: dict[str, Any] = {}
        sel_settings = self.cfg["selection"]["settings"]
        if self.cfg.get("prompted_variants"):
            names = [v["name"] for v in self.cfg["prompted_variants"]]
            n_dev = sum(len(self.examples[d]["dev"]) for d in self.examples) * len(sel_settings)
            n_test = sum(len(self.examples[d]["test"]) * len(self.settings_of(d)) for d in self.examples)
            done = sum(self.eval_path(prompted_run(n), "dev", d, s).exists()
                       for n in names for d in self.examples for s in sel_settings)
            out[PROMPTED] = {"variants": names, "dev_generations": n_dev * len(names) if len(names) > 1 else 0,
                             "dev_units_done": done, "test_generations": n_test}
        if self.cross:
            n_runs = len(self.cfg["methods"])
            sizes = {name: {s: len(build_instances(self.cross[name], s, self.cross_cfgs[name].n_passages,
                                                   self.cross_cfgs[name].seed).instances)
                            for s in self.cross_settings[name]} for name in self.cross}
            out["cross_test"] = {
                name: {"questions": len(self.cross[name]), "examples_per_setting": sizes[name],
                       "skipped_settings": self.cross_skipped[name], "runs": n_runs,
                       "generations": n_runs * sum(sizes[name].values()),
                       "units_done": sum(1 for _ in (self.out / "eval").glob(f"**/cross/{name}/*.json")),
                       "overlap_with_training_data": self.cross_overlap(name)} for name in self.cross}
        return out

    def cross_report(self, selection: dict[str, Any], amended: list[str]) -> dict[str, Any] | None:
        """The finished cross-set evaluations for :func:`build_report` (``None``: no cross set)."""
        if not self.cross:
            return None
        runs = self.cross_runs(selection)
        sets = {}
        for name in self.cross:
            evals = {(run, name, s): read_json(p) for run in runs.values() for s in self.cross_settings[name]
                     if (p := self.eval_path(run, "cross", name, s)).exists()}
            sets[name] = {"settings": self.cross_settings[name], "skipped_settings": self.cross_skipped[name],
                          "n_questions": len(self.cross[name]), "exploratory": name in amended,
                          "overlap_with_training_data": self.cross_overlap(name), "evals": evals}
        return {"train_sets": list(self.cfg["datasets"]), "seed": self.cfg["seeds"][0],
                "runs": {m: {self.cfg["seeds"][0]: r} for m, r in runs.items()}, "sets": sets}

    # --- settings added by amendment --------------------------------------------------------
    def declared_of(self, dataset: str) -> list[str]:
        """The settings first declared for training data set ``dataset`` (the Holm family's; a data set
        the first configuration lacks is left to the protocol check, which refuses it)."""
        return dataset_settings(self.first_cfg if dataset in self.first_cfg["datasets"] else self.cfg, dataset)

    def load_amended_settings(self) -> None:
        """``self.amended``: per training data set, the settings added by amendment that its test
        questions can build; ``self.skipped``: the others (see module docstring)."""
        self.amended, self.skipped = {}, {}
        for d, dcfg in self.data_cfgs.items():
            for s in dataset_settings(self.cfg, d):
                if s in self.declared_of(d):
                    continue
                built = build_instances(self.examples[d]["test"], s, dcfg.n_passages, dcfg.seed)
                if built.instances:
                    self.amended.setdefault(d, []).append(s)
                elif s in self.cfg["datasets"][d].get("settings", []):
                    raise ValueError(f"data set {d!r}: setting {s!r} (added by amendment) fits no test question "
                                     f"({built.skipped_reasons})")
                else:
                    self.skipped.setdefault(d, {})[s] = dict(built.skipped_reasons)
                    log.warning("%s: setting %s (added by amendment) skipped, the data cannot build it (%s)", d, s,
                                built.skipped_reasons)

    def amended_units(self, runs: dict[str, dict[int, str]], bar: Callable[[], None]) -> None:
        """Test evaluations of every run at the settings added by amendment (no dev, no training)."""
        for by_seed in runs.values():
            for run in by_seed.values():
                for d, settings in self.amended.items():
                    for s in settings:
                        self.eval_unit(run, "test", d, s)
            bar()

    def amended_plan(self, n_runs: int) -> dict[str, Any]:
        """Sizes of the units of the settings added by amendment (``--plan``; empty: none)."""
        if not self.amended and not self.skipped:
            return {}
        sizes = {d: {s: len(self.examples[d]["test"]) for s in v} for d, v in self.amended.items()}
        return {"amended_settings": {"settings": self.amended, "skipped_settings": self.skipped, "runs": n_runs,
                                     "test_generations": n_runs * sum(n for v in sizes.values() for n in v.values()),
                                     "units_done": sum(1 for d, v in self.amended.items() for s in v
                                                       for _ in (self.out / "eval").glob(f"**/test/{d}/{s}.json"))}}
