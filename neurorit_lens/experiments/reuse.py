"""Units of an earlier comparison run reused by a new one (``neurorit compare --reuse DIR``).

A new run folder may take, from earlier run folders, exactly what its own configuration
would have produced, and nothing else:

* every key that fixes the model, data, splits, prompts, mining and evaluation
  (``REUSE_KEYS``; for ``datasets``, each set's data and format, in order) must be equal in
  the earlier run's protocol, else the reuse is refused with the keys named;
* a training run is reused when an earlier folder holds a finished run (``train.json`` and a
  saved model) whose recorded TrainConfig equals the one this run would train, under any run
  name: a ``train_grid`` variant without overrides matches the plain run of that LR and seed;
* that run's dev and test evaluations, from any earlier folder holding the same training,
  and the base model's, are copied unit by unit when this run needs them; the mined neurons
  are copied when this run would mine.

Models are hard-linked where the file system allows, JSON is copied. Each reused unit is
listed with its source in ``reused.json`` of the run folder, and the report names them.
Prompted and cross-set evaluations are never reused. The only difference from computing
a unit again is CPU nondeterminism in training and generation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neurorit_lens.config import TRAIN_LEGACY_VALUES, TrainConfig
from neurorit_lens.experiments.protocol import effective_config, utc_now
from neurorit_lens.io import atomic_write_json, read_json
from neurorit_lens.stages import STAGE_FILE

log = logging.getLogger("neurorit_lens.experiments")
REUSE_KEYS = ("model", "datasets", "split_fractions", "data_seed", "n_passages", "max_prompt_tokens", "template",
              "n_distractors", "train_limit", "dev_limit", "test_limit", "eval", "logprob", "mining", "mine_limit")
REUSED_SPLITS = ("dev", "test")


def _norm(x: Any) -> Any:
    return json.loads(json.dumps(x))


def train_config_key(config: Any) -> Any:
    """A recorded TrainConfig as today's :class:`TrainConfig` would write it: fields added since it was
    recorded take their defaults, except those in :data:`TRAIN_LEGACY_VALUES`, which take the value the
    run really had. A record today's class cannot read (a removed field) stays as it is."""
    if not isinstance(config, Mapping):
        return _norm(config)
    try:
        return _norm(TrainConfig.from_dict({**TRAIN_LEGACY_VALUES, **config}).to_dict())
    except (TypeError, ValueError):
        return _norm(config)


def _data_key(cfg: Mapping[str, Any], key: str) -> Any:
    if key == "datasets":  # settings may differ: a unit is one (data set, setting)
        return [[name, {k: v for k, v in spec.items() if k != "settings"}] for name, spec in cfg["datasets"].items()]
    return _norm(cfg.get(key))


def reuse_mismatch(src_cfg: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """The ``REUSE_KEYS`` whose values differ between two configurations (empty: reusable)."""
    return [k for k in REUSE_KEYS if _data_key(src_cfg, k) != _data_key(cfg, k)]


class ReuseMixin:
    """``--reuse`` for :class:`~neurorit_lens.experiments.harness.Harness` (uses its ``cfg``, ``out``,
    ``eval_path``)."""

    cfg: dict[str, Any]
    out: Path
    reuse_from: list[Path]
    eval_path: Any  # Harness.eval_path(run, split, dataset, setting) -> Path
    train_config: Any  # Harness.train_config(method, lr, seed, variant) -> TrainConfig

    def check_reuse(self) -> None:
        """Refuse an earlier folder whose protocol differs in a ``REUSE_KEYS`` key.

        Raises:
            ValueError: naming the folder and the keys, or a folder without ``protocol.json``.
        """
        for src in self.reuse_from:
            proto = src / "protocol.json"
            if src.resolve() == self.out.resolve():
                raise ValueError(f"--reuse {src}: that is this run's own folder")
            if not proto.exists():
                raise ValueError(f"--reuse {src}: no protocol.json there (not a comparison run folder)")
            bad = reuse_mismatch(effective_config(read_json(proto)), self.cfg)
            if bad:
                raise ValueError(f"--reuse {src}: its protocol differs in {bad}; only a run with the same model, "
                                 f"data, splits, prompts, mining and evaluation can be reused")

    def reused_units(self) -> list[dict[str, Any]]:
        """The units of ``reused.json`` (empty when nothing was reused)."""
        path = self.out / "reused.json"
        return read_json(path)["units"] if path.exists() else []

    def _record(self, kind: str, unit: str, source: Path) -> None:
        units = [*self.reused_units(), {"kind": kind, "unit": unit, "from": str(source), "at": utc_now()}]
        atomic_write_json(self.out / "reused.json", {"units": units})
        log.info("reused %s %s from %s", kind, unit, source)

    def reuse_mining(self, mdir: Path) -> bool:
        """Copy the first earlier ``mining/`` folder (same mining keys: ``check_reuse``)."""
        for src in self.reuse_from:
            if (src / "mining" / "neurons.json").exists():
                shutil.copytree(src / "mining", mdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(STAGE_FILE))
                self._record("mining", "mining", src / "mining")
                return True
        return False

    def same_runs(self, config: Mapping[str, Any]) -> list[tuple[Path, str]]:
        """Every ``(earlier folder, run name)`` of a finished run trained with exactly ``config``
        (both read through :func:`train_config_key`, so a field added since with its default matches)."""
        want = train_config_key(config)
        return [(src, tj.parent.relative_to(src / "train").as_posix()) for src in self.reuse_from
                for tj in sorted((src / "train").glob("**/train.json"))
                if (tj.parent / "model" / "neurorit_model.json").exists()
                and train_config_key(read_json(tj).get("config")) == want]

    def reusable_run(self, tcfg: TrainConfig) -> tuple[Path, str] | None:
        """The first ``(earlier folder, run name)`` trained with exactly ``tcfg``, if any."""
        found = self.same_runs(tcfg.to_dict())
        return found[0] if found else None

    def reuse_plan(self) -> dict[str, Any]:
        """``--plan``: which first-seed trainings an earlier folder already holds (``{run: source}``)."""
        from neurorit_lens.experiments.grid import candidates, trained
        from neurorit_lens.experiments.protocol import run_name

        seed = self.cfg["seeds"][0]
        runs = {run_name(m, lr, seed, v and v["name"]): self.train_config(m, lr, seed, v)
                for m in trained(self.cfg) for lr, v in candidates(self.cfg, m)}
        found = {name: self.reusable_run(t) for name, t in runs.items()}
        return {"first_seed_trainings": len(runs),
                "reusable": {name: f"{f[0]}/train/{f[1]}" for name, f in found.items() if f is not None}}

    def reuse_train(self, name: str, tcfg: TrainConfig) -> bool:
        """Link an earlier finished run trained with exactly ``tcfg`` into ``train/<name>``."""
        found = self.reusable_run(tcfg)
        if found is None:
            return False
        src, src_run = found
        dest = self.out / "train" / name
        if dest.exists():  # a partial training of our own: the finished one replaces it
            shutil.rmtree(dest)
        shutil.copytree(src / "train" / src_run, dest, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(STAGE_FILE))
        atomic_write_json(dest / "reused_from.json", {"folder": str(src), "run": src_run})
        self._record("train", name, src / "train" / src_run)
        return True

    def reuse_eval(self, run: str, split: str, dataset: str, setting: str) -> dict[str, Any] | None:
        """Copy an earlier evaluation of the same run (``base``, or a reused training run)."""
        if split not in REUSED_SPLITS:
            return None
        if run == "base":
            sources = [(src, "base") for src in self.reuse_from]
        else:  # a reused training: its evaluation in any earlier folder that holds the same training
            if not (self.out / "train" / run / "reused_from.json").exists():
                return None
            sources = self.same_runs(read_json(self.out / "train" / run / "train.json")["config"])
        for src, src_run in sources:
            p = src / "eval" / src_run / split / dataset / f"{setting}.json"
            if p.exists():
                blob = read_json(p) | {"run": run, "reused_from": {"folder": str(src), "run": src_run}}
                atomic_write_json(self.eval_path(run, split, dataset, setting), blob)
                self._record("eval", f"{run} {split} {dataset} {setting}", p)
                return blob
        return None


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
