"""The component study's configuration (docs/study.md) as typed dataclasses, read from JSON or TOML.

:class:`StudyConfig` lists every key of a study configuration
(``benchmarks/configs/study_dev.json``) with its type; :meth:`StudyConfig.from_dict` gives one
``ValueError`` per problem, naming the key (``arms.zero.deactivation``,
``mining.sets.ig.threshold``, ``contrasts[2].b``), in the style of
:class:`~neurorit_lens.experiments.config.CompareConfig`.

An arm is one training: ``sets`` names the mining set it trains with (its ``R_excl`` for
stage 1 and the layer ranking, its ``I_excl`` for a deactivation), ``base`` the TrainConfig
block it starts from (``fair_neurorit``), ``i_excl_from`` another set whose ``I_excl`` it
deactivates, ``train_distractors`` the distractors of its gold-only training data (``bm25``);
every other key is a :class:`~neurorit_lens.config.TrainConfig` field. Its TrainConfig is
``train``, then its base block, then its own fields (:meth:`StudyConfig.train_config`).

The ``confirmatory`` block (:class:`ConfirmatorySpec`) declares the later test on fresh
questions: per data set the fresh questions (``data``, ``format``, ``split``, ``start``,
``limit``), the draws already seen, the seeds, the arms (``chosen`` and baseline methods), their
learning rates, the settings and the contrasts; ``neurorit study --confirmatory`` runs it
(:mod:`neurorit_lens.experiments.confirmatory`).

The dict as written (``StudyConfig.declared``) is what ``protocol.json`` records.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from neurorit_lens.config import (
    ConfigBase,
    DataConfig,
    DataFormat,
    DistractorMethod,
    EvalConfig,
    MiningConfig,
    SplitChoice,
    Template,
    TrainConfig,
    TrainMethod,
)
from neurorit_lens.data.settings import parse_setting
from neurorit_lens.experiments.config import DatasetSpec, check_partial, check_value, read_config_file, typed_from_dict

__all__ = ["CHOSEN", "Arm", "ConfirmatorySpec", "ContrastSpec", "FreshQuestions", "MiningSpec", "StudyConfig",
           "load_study_config"]

Metric = Literal["logprob_gold", "accuracy"]
ARM_KEYS = ("base", "sets", "train_distractors", "i_excl_from")  # an arm's keys that are not TrainConfig fields
BASES = ("fair_neurorit",)  # TrainConfig blocks an arm may start from
SET_DATA_KEYS = ("n_passages", "max_prompt_tokens")  # a mining set's keys that are DataConfig fields
RULE_SETTINGS = ("gold", "gold+4")  # the settings the declared rule reads, in every data set
CHOSEN = "chosen"  # the confirmatory arm that trains the configuration chosen.json names


@dataclass
class ContrastSpec(ConfigBase):
    """One declared contrast: arm ``a`` minus arm ``b``, paired per question."""

    name: str
    a: str
    b: str


@dataclass
class MiningSpec(ConfigBase):
    """What the shared mining folders hold: per set, the mining flags and the declared selection."""

    sets: dict[str, dict[str, Any]]  # set name -> MiningConfig fields (and n_passages, max_prompt_tokens)
    questions: str = ""  # in words
    n_passages: int = 1  # passages of the mining prompts (a set may give its own)
    stability: str = ""  # in words


@dataclass
class FreshQuestions(ConfigBase):
    """One data set's fresh questions: ``split`` of ``data`` (split as the study splits), ``[start:start+limit]``;
    for ``split: all`` the first ``limit`` questions past ``start`` that no seen draw holds."""

    data: str  # a path ({shared} = the shared data folder) or embedded:N[:seed]
    limit: int
    format: DataFormat = "auto"
    split: SplitChoice = "all"
    start: int = 0
    why: str = ""  # in words


@dataclass
class ConfirmatorySpec(ConfigBase):
    """The confirmatory run, declared with the dev study (docs/study.md, "The confirmatory run")."""

    questions: dict[str, FreshQuestions]  # data set -> its fresh questions
    seeds: tuple[int, ...]  # TrainConfig.seed of each training
    arms: tuple[str, ...]  # ``chosen`` and baseline TrainConfig methods
    lrs: dict[str, float]  # baseline arm -> its learning rate (``chosen`` keeps train.lr)
    settings: dict[str, tuple[str, ...]]  # data set -> settings
    contrasts: tuple[tuple[str, str], ...]  # (a, b): arm a minus arm b
    seen: dict[str, tuple[str, ...] | str] = field(default_factory=dict)  # data set -> seen draws (or in words)


@dataclass(frozen=True)
class Arm:
    """One arm, parsed: its set, base block, distractors and TrainConfig overrides."""

    name: str
    sets: str
    base: str | None
    train_distractors: str
    i_excl_from: str | None
    overrides: dict[str, Any]


@dataclass
class StudyConfig(ConfigBase):
    """Every key of a component study's configuration (docs/study.md)."""

    name: str
    model: str
    datasets: dict[str, DatasetSpec]
    train: dict[str, Any]  # TrainConfig fields shared by every arm
    arms: dict[str, dict[str, Any]]  # arm name -> ARM_KEYS and TrainConfig fields
    contrasts: tuple[ContrastSpec, ...]
    settings: dict[str, tuple[str, ...]]  # data set -> dev settings
    mining: MiningSpec
    kind: Literal["component_study"] = "component_study"
    description: str = ""
    device: str = "cpu"
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    data_seed: int = 0
    n_passages: int = 5
    max_prompt_tokens: int = 512
    template: Template = "auto"
    n_distractors: int = 10
    train_limit: int = 300  # train questions per data set
    dev_limit: int = 150  # dev questions per data set
    fair_neurorit: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields of the fair baseline
    metrics: tuple[Metric, ...] = ("logprob_gold", "accuracy")
    eval: dict[str, Any] = field(default_factory=dict)  # EvalConfig fields
    n_bootstrap: int = 2000
    target_halfwidth_nats: float = 0.2
    confirmatory: ConfirmatorySpec | None = None  # the later run on fresh questions (``--confirmatory``)
    declared: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    arm_specs: dict[str, Arm] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("n_passages", "max_prompt_tokens", "train_limit", "dev_limit"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.n_distractors < 0 or self.n_bootstrap < 0:
            raise ValueError("n_distractors and n_bootstrap: must be >= 0")
        if not (math.isfinite(self.target_halfwidth_nats) and self.target_halfwidth_nats > 0):
            raise ValueError(f"target_halfwidth_nats: must be > 0, got {self.target_halfwidth_nats}")
        try:
            DataConfig(split_fractions=self.split_fractions)
        except ValueError as e:
            raise ValueError(f"split_fractions: {e}") from e
        if not self.datasets:
            raise ValueError("datasets: at least one data set is needed")
        for name, spec in self.datasets.items():
            if spec.settings is not None:
                raise ValueError(f"datasets.{name}.settings: the study's settings are the top-level 'settings' table")
        self._check_settings()
        check_partial("train", TrainConfig, self.train)
        check_partial("fair_neurorit", TrainConfig, self.fair_neurorit)
        check_partial("eval", EvalConfig, self.eval)
        self._check_mining()
        if not self.arms:
            raise ValueError("arms: at least one arm is needed")
        self.arm_specs = {name: self._arm(name, spec) for name, spec in self.arms.items()}
        self._check_contrasts()
        if self.confirmatory is not None:
            self._check_confirmatory(self.confirmatory)

    def _check_settings(self) -> None:
        missing = sorted(set(self.datasets) - set(self.settings))
        unknown = sorted(set(self.settings) - set(self.datasets))
        if missing or unknown:
            raise ValueError(f"settings: one list per data set {sorted(self.datasets)}; missing {missing}, "
                             f"unknown {unknown}")
        for d, names in self.settings.items():
            for i, s in enumerate(names):
                try:
                    parse_setting(s)
                except ValueError as e:
                    raise ValueError(f"settings.{d}[{i}]: {e}") from e
            lacking = [s for s in RULE_SETTINGS if s not in names]
            if lacking:
                raise ValueError(f"settings.{d}: the study's metrics read {list(RULE_SETTINGS)} in every data set; "
                                 f"missing {lacking}")

    def _check_mining(self) -> None:
        if self.mining.n_passages < 1:
            raise ValueError(f"mining.n_passages: must be >= 1, got {self.mining.n_passages}")
        if not self.mining.sets:
            raise ValueError("mining.sets: at least one set is needed")
        hints = typing.get_type_hints(MiningConfig) | {k: typing.get_type_hints(DataConfig)[k] for k in SET_DATA_KEYS}
        for name, spec in self.mining.sets.items():
            key = f"mining.sets.{name}"
            unknown = sorted(set(spec) - set(hints))
            if unknown:
                raise ValueError(f"{key}: unknown key(s) {unknown}; not fields of MiningConfig (or {SET_DATA_KEYS})")
            for k, v in spec.items():
                check_value(f"{key}.{k}", hints[k], v)
            try:
                MiningConfig.from_dict({k: v for k, v in spec.items() if k not in SET_DATA_KEYS})
                DataConfig(**{k: v for k, v in spec.items() if k in SET_DATA_KEYS})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{key}: {e}") from e

    def _arm(self, name: str, spec: dict[str, Any]) -> Arm:
        key = f"arms.{name}"
        if "sets" not in spec:
            raise ValueError(f"{key}.sets: missing; name one of the mining sets {sorted(self.mining.sets)}")
        for k in ("sets", "i_excl_from"):
            if k in spec and spec[k] not in self.mining.sets:
                raise ValueError(f"{key}.{k}: unknown set {spec[k]!r}; choose from {sorted(self.mining.sets)}")
        base = spec.get("base")
        if base is not None and base not in BASES:
            raise ValueError(f"{key}.base: unknown value {base!r}; choose from {', '.join(BASES)} (or leave it out)")
        dist = check_value(f"{key}.train_distractors", DistractorMethod, spec.get("train_distractors", "random"))
        overrides = {k: v for k, v in spec.items() if k not in ARM_KEYS}
        check_partial(key, TrainConfig, overrides)
        arm = Arm(name, spec["sets"], base, dist, spec.get("i_excl_from"), overrides)
        try:
            self.train_config(arm)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{key}: {e}") from e
        return arm

    def _check_contrasts(self) -> None:
        names = [c.name for c in self.contrasts]
        if len(set(names)) != len(names):
            raise ValueError(f"contrasts: names must be unique, got {names}")
        for i, c in enumerate(self.contrasts):
            for side in ("a", "b"):
                if getattr(c, side) not in self.arms:
                    raise ValueError(f"contrasts[{i}].{side}: unknown arm {getattr(c, side)!r}; choose from "
                                     f"{list(self.arms)}")
            if c.a == c.b:
                raise ValueError(f"contrasts[{i}]: a and b are the same arm {c.a!r}")

    def _check_confirmatory(self, c: ConfirmatorySpec) -> None:
        k = "confirmatory"
        for d in c.questions:
            if d not in self.datasets:
                raise ValueError(f"{k}.questions.{d}: not a data set of the study; choose from {list(self.datasets)}")
        for d in self.datasets:
            if d not in c.questions:
                raise ValueError(f"{k}.questions.{d}: missing; every data set the arms train on needs fresh questions")
        for d, q in c.questions.items():
            if q.start < 0:
                raise ValueError(f"{k}.questions.{d}.start: must be >= 0, got {q.start}")
            if q.limit < 1:
                raise ValueError(f"{k}.questions.{d}.limit: must be >= 1, got {q.limit}")
        if not c.seeds or len(set(c.seeds)) != len(c.seeds):
            raise ValueError(f"{k}.seeds: at least one seed, each once; got {list(c.seeds)}")
        if CHOSEN not in c.arms or len(set(c.arms)) != len(c.arms):
            raise ValueError(f"{k}.arms: must hold {CHOSEN!r} and each arm once; got {list(c.arms)}")
        methods = typing.get_args(TrainMethod)
        for i, a in enumerate(c.arms):
            if a != CHOSEN and (a not in methods or a == "neurorit"):
                raise ValueError(f"{k}.arms[{i}]: unknown arm {a!r}; {CHOSEN!r} or a baseline method "
                                 f"{[m for m in methods if m != 'neurorit']}")
            if a != CHOSEN and a not in c.lrs:
                raise ValueError(f"{k}.lrs.{a}: missing; every baseline arm trains at its declared learning rate")
        for a, lr in c.lrs.items():
            if a not in c.arms or a == CHOSEN:
                raise ValueError(f"{k}.lrs.{a}: not a baseline arm of {k}.arms (chosen keeps train.lr)")
            if lr <= 0:
                raise ValueError(f"{k}.lrs.{a}: must be > 0, got {lr}")
        if set(c.settings) != set(c.questions):
            raise ValueError(f"{k}.settings: one list per data set {sorted(c.questions)}, got {sorted(c.settings)}")
        for d, names in c.settings.items():
            if not names:
                raise ValueError(f"{k}.settings.{d}: at least one setting")
            for i, s in enumerate(names):
                try:
                    parse_setting(s)
                except ValueError as e:
                    raise ValueError(f"{k}.settings.{d}[{i}]: {e}") from e
        if not c.contrasts or len(set(c.contrasts)) != len(c.contrasts):
            raise ValueError(f"{k}.contrasts: at least one, each once")
        for i, (a, b) in enumerate(c.contrasts):
            for j, arm in enumerate((a, b)):
                if arm not in c.arms:
                    raise ValueError(f"{k}.contrasts[{i}][{j}]: unknown arm {arm!r}; choose from {list(c.arms)}")
            if a == b:
                raise ValueError(f"{k}.contrasts[{i}]: a and b are the same arm {a!r}")
        for d in c.seen:
            if d not in c.questions:
                raise ValueError(f"{k}.seen.{d}: not a data set of {k}.questions")

    # --- what the runner reads --------------------------------------------------------------
    def train_config(self, arm: Arm | str) -> TrainConfig:
        """``train``, then the arm's base block, then its own fields."""
        arm = self.arm_specs[arm] if isinstance(arm, str) else arm
        base = getattr(self, arm.base) if arm.base else {}
        return TrainConfig.from_dict({**self.train, **base, **arm.overrides})

    def set_spec(self, name: str) -> dict[str, Any]:
        """A mining set's declared flags, with its passages and prompt budget filled in."""
        spec = self.mining.sets[name]
        return {"n_passages": self.mining.n_passages, "max_prompt_tokens": self.max_prompt_tokens, **spec}

    def with_limits(self, train_limit: int | None = None, dev_limit: int | None = None) -> StudyConfig:
        """The configuration with smaller question limits (smoke runs); ``declared`` records them."""
        d = json.loads(json.dumps(self.declared))
        d |= {k: v for k, v in (("train_limit", train_limit), ("dev_limit", dev_limit)) if v is not None}
        return StudyConfig.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyConfig:
        cfg = typed_from_dict(cls, d)
        cfg.declared = json.loads(json.dumps(d))
        return cfg


def load_study_config(path: str | Path) -> StudyConfig:
    """Read (JSON or TOML) and check a study configuration; errors name the file and the key."""
    try:
        return StudyConfig.from_dict(read_config_file(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
