"""The comparison's configuration as typed dataclasses, read from JSON or TOML.

:class:`CompareConfig` lists every key a comparison configuration may hold, with its type and
default; nested blocks are dataclasses too (:class:`DatasetSpec`, :class:`SelectionSpec`,
:class:`PromptedVariant`, :class:`CrossSet`), and ``train``, ``eval`` and ``mining`` are
partial :class:`~neurorit_lens.config.TrainConfig`, ``EvalConfig`` and ``MiningConfig``
blocks checked field by field against those classes. :meth:`CompareConfig.from_dict` gives
one ``ValueError`` per problem, naming the key (``datasets.nq.format``, ``train.stpes``):
a missing or unknown key, a value of the wrong type, or a bad value.

The dict as written (``CompareConfig.declared``) is what ``protocol.json`` records and what
the harness reads: an amendment or a resumed run compares configurations as declared, so a
key left out stays out (its default is not written in).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from neurorit_lens.config import ConfigBase, DataConfig, DataFormat, EvalConfig, MiningConfig, Template, TrainConfig

_PARTIAL = {"train": TrainConfig, "eval": EvalConfig, "mining": MiningConfig}  # blocks of overrides


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML (``.toml``) file as a dict.

    Raises:
        ValueError: TOML on Python 3.10 without the ``tomli`` package, or a file that does not parse.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".toml":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as e:
            raise ValueError(f"{path}: reading TOML on Python 3.10 needs the tomli package "
                             "(pip install tomli), or write the configuration as JSON") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from e


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_value(key: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the type ``hint`` (lists read as tuples); the converted value.

    Raises:
        ValueError: ``"<key>: expected <type>, got <value>"`` at the first part that does not fit.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return check_value(key, rest[0], value)
        for a in rest:
            try:
                return check_value(key, a, value)
            except ValueError:
                continue
        raise ValueError(f"{key}: expected {' or '.join(map(_type_name, rest))}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key}: unknown value {value!r}; choose from {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(check_value(f"{key}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a table {{name: ...}}, got {value!r}")
        return {check_value(f"{key} (a name)", args[0], k): check_value(f"{key}.{k}", args[1], v)
                for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return typed_from_dict(hint, value, key)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"{key}: no check for type {hint!r}")


def check_partial(key: str, cls: type, d: Any) -> dict[str, Any]:
    """A block of overrides of the dataclass ``cls`` (e.g. ``train``): each field type-checked,
    then ``cls`` built from it, so a bad value is refused with the block's key in front."""
    if not isinstance(d, dict):
        raise ValueError(f"{key}: expected a table of {cls.__name__} fields, got {d!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; not fields of {cls.__name__}")
    for k, v in d.items():
        check_value(f"{key}.{k}", hints[k], v)
    try:
        cls.from_dict(dict(d))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{key}: {e}") from e
    return d


def typed_from_dict(cls: type, d: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``d`` with every key checked (see the module docstring)."""
    prefix = f"{where}." if where else ""
    if not isinstance(d, dict):
        raise ValueError(f"{where or cls.__name__}: expected a table, got {d!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {[prefix + k for k in unknown]}; allowed: "
                         f"{list(fields)}")
    missing = [k for k, f in fields.items() if k not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where or cls.__name__}: missing key(s) {[prefix + k for k in missing]}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = check_partial(prefix + k, _PARTIAL[k], v) if cls is CompareConfig and k in _PARTIAL \
            else check_value(prefix + k, hints[k], v)
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}" if where else str(e)) from e


def _positive(key: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{key}: must be >= 1 (or left out), got {value}")


@dataclass
class DatasetSpec(ConfigBase):
    """A training data set: split train/dev/test by question."""

    data: str  # a path ({shared} = the shared data folder), embedded:N[:seed] or hf:NAME
    format: DataFormat = "auto"
    settings: tuple[str, ...] | None = None  # its own settings (default: the configuration's)


@dataclass
class SelectionSpec(ConfigBase):
    """The dev choice: the settings whose pooled dev accuracy picks each method's candidate."""

    settings: tuple[str, ...]
    rule: str | None = None  # written by the harness: the rule in words


@dataclass
class PromptedVariant(ConfigBase):
    """A prompt and generation length of the untuned model (the ``prompted`` baseline)."""

    name: str
    instruction: str | None = None
    system_prompt: str | None = None
    template: Template | None = None
    max_new_tokens: int | None = None
    stop_at_newline: bool | None = None


@dataclass
class CrossSet(ConfigBase):
    """A test-only data set: every question a test question."""

    data: str
    format: DataFormat = "auto"
    settings: tuple[str, ...] | None = None


@dataclass
class CompareConfig(ConfigBase):
    """Every key of a comparison configuration (see ``docs/evaluation.md``)."""

    name: str  # names the results
    model: str
    datasets: dict[str, DatasetSpec]
    settings: tuple[str, ...]  # evaluation settings of every data set without its own list
    methods: tuple[str, ...]  # base, prompted and training methods
    contrasts: tuple[tuple[str, str], ...]  # declared (a, b) pairs: the Holm family
    seeds: tuple[int, ...]  # the first chooses; the others replicate
    lr_grid: dict[str, tuple[float, ...]]  # per method, or "default"
    train: dict[str, Any]  # TrainConfig fields shared by every training
    selection: SelectionSpec
    description: str = ""
    device: str = "cpu"
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    data_seed: int = 0
    n_passages: int = 5
    max_prompt_tokens: int = 512
    template: Template = "auto"
    n_distractors: int = 10
    train_limit: int | None = None
    dev_limit: int | None = None
    test_limit: int | None = None
    extra_seeds: tuple[int, ...] = ()  # seeds of neurorit and the strongest baseline at the chosen candidate
    mining: dict[str, Any] = field(default_factory=dict)  # MiningConfig fields
    mine_limit: int | None = None
    eval: dict[str, Any] = field(default_factory=dict)  # EvalConfig fields
    logprob: bool = True  # teacher-forced log p(gold) per test question
    n_bootstrap: int = 2000
    planning_discordance: float = 0.2
    keep_checkpoints: bool = False
    prompted_variants: tuple[PromptedVariant, ...] = ()
    cross_test: dict[str, CrossSet] = field(default_factory=dict)
    train_grid: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)  # TrainConfig variants
    dev_only: bool = False  # choose on dev only; no test question
    declared: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("n_passages", "max_prompt_tokens", "train_limit", "dev_limit", "test_limit", "mine_limit"):
            _positive(key, getattr(self, key))
        if self.n_distractors < 0 or self.n_bootstrap < 0:
            raise ValueError("n_distractors and n_bootstrap: must be >= 0")
        if not 0 < self.planning_discordance <= 1:
            raise ValueError(f"planning_discordance: must be in (0, 1], got {self.planning_discordance}")
        try:
            DataConfig(split_fractions=self.split_fractions)
        except ValueError as e:
            raise ValueError(f"split_fractions: {e}") from e

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareConfig:
        cfg = typed_from_dict(cls, d)
        cfg.declared = json.loads(json.dumps(d))
        return cfg
