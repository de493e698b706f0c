"""One config dataclass per stage, nested in :class:`RunConfig`.

Every field where the paper is silent is a field here (see ``DESIGN.md``). Each class
validates in ``__post_init__`` (``ValueError`` on bad values) and round-trips through
JSON, so every run folder can hold the config that made it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from neurorit_lens.io import atomic_write_json, read_json

T = TypeVar("T", bound="ConfigBase")


class ConfigBase:
    """JSON round trip for (possibly nested) config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
        kwargs = {}
        for k, v in d.items():
            hint = hints[k]
            if isinstance(hint, type) and issubclass(hint, ConfigBase) and isinstance(v, dict):
                v = hint.from_dict(v)
            elif isinstance(v, list) and typing.get_origin(hint) is tuple:
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        return cls.from_dict(read_json(path))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class DataConfig(ConfigBase):
    """Which QA data, how it is split, and how prompts are built."""

    data: str = "embedded"  # "embedded", a file path, or "hf:<name>[:split]"
    format: str = "auto"  # auto | rgb | noiserbench | dpr | jsonl | hf | embedded
    limit: int | None = None  # questions used after the split
    split: str = "test"  # train | dev | test | all
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    n_passages: int = 5  # total passages for noise=R settings
    template: str = "auto"  # auto | plain | chat
    max_prompt_tokens: int = 512  # passages are truncated (never the question) past this
    strict: bool = False  # error instead of skipping bad records
    distractors: str = "random"  # random | bm25 | none: mined irrelevant passages for gold-only data (NQ-open)
    n_distractors: int = 10  # how many, per example that has no irrelevant passage

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit > 0, "limit must be positive")
        _check(self.distractors in ("random", "bm25", "none"), f"unknown distractors {self.distractors!r}")
        _check(self.n_distractors >= 0, "n_distractors must be >= 0")
        _check(self.split in ("train", "dev", "test", "all"), f"unknown split {self.split!r}")
        _check(len(self.split_fractions) == 3 and all(f >= 0 for f in self.split_fractions)
               and abs(sum(self.split_fractions) - 1) < 1e-6,
               "split_fractions must be 3 non-negative numbers summing to 1")
        _check(self.n_passages >= 1, "n_passages must be >= 1")
        _check(self.template in ("auto", "plain", "chat"), f"unknown template {self.template!r}")
        _check(self.max_prompt_tokens >= 32, "max_prompt_tokens must be >= 32")


DEFAULT_SETTINGS = ("closed", "gold", "gold+4", "noise=0.4", "noise=0.8", "irrelevant")


@dataclass
class EvalConfig(ConfigBase):
    """Greedy generation and metrics per noise setting."""

    settings: tuple[str, ...] = DEFAULT_SETTINGS
    max_new_tokens: int = 16
    batch_size: int = 8
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.settings, str):
            self.settings = tuple(s.strip() for s in self.settings.split(",") if s.strip())
        _check(len(self.settings) > 0, "at least one setting is needed")
        _check(self.max_new_tokens > 0, "max_new_tokens must be positive")
        _check(self.batch_size > 0, "batch_size must be positive")
        _check(self.n_bootstrap >= 0, "n_bootstrap must be >= 0")


@dataclass
class MiningConfig(ConfigBase):
    """Attribution and neuron selection (DESIGN.md, 'Neurons' to 'Exclusive sets')."""

    method: str = "grad_x_act"  # ig | ig_joint | grad_x_act
    steps: int = 20
    rule: str = "midpoint"  # midpoint | right
    alpha_chunk: int = 5
    positions: str = "all"  # all | last
    target: str = "logprob"  # logprob | prob | logit | logit_diff
    site: str = "post"  # post | pre
    layers: tuple[int, ...] | None = None  # None = every layer
    selection: str = "threshold"  # threshold | topk | topk_per_layer
    threshold: float = 0.2
    frequency: float = 0.5
    top_k: int = 100
    relevant_setting: str = "gold"
    irrelevant_setting: str = "irrelevant"
    offload_scores: bool = True
    batch_size: int = 1  # examples per attribution call (rows = batch_size * alpha_chunk)

    def __post_init__(self) -> None:
        _check(self.method in ("ig", "ig_joint", "grad_x_act"), f"unknown method {self.method!r}")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.steps >= 1, "steps must be >= 1")
        _check(self.rule in ("midpoint", "right"), f"unknown rule {self.rule!r}")
        _check(self.alpha_chunk >= 1, "alpha_chunk must be >= 1")
        _check(self.positions in ("all", "last"), f"unknown positions {self.positions!r}")
        _check(self.target in ("logprob", "prob", "logit", "logit_diff"), f"unknown target {self.target!r}")
        _check(self.site in ("post", "pre"), f"unknown site {self.site!r}")
        _check(self.selection in ("threshold", "topk", "topk_per_layer"), f"unknown selection {self.selection!r}")
        _check(0 < self.threshold <= 1, "threshold must be in (0, 1]")
        _check(0 < self.frequency <= 1, "frequency must be in (0, 1]")
        _check(self.top_k >= 1, "top_k must be >= 1")
        if self.layers is not None:
            self.layers = tuple(int(x) for x in self.layers)


@dataclass
class AblationConfig(ConfigBase):
    """Causal tests of neuron sets against random controls."""

    sets: tuple[str, ...] = ("R_excl", "I_excl", "shared")
    mode: str = "zero"  # zero | mean | scale
    scale: float = 0.0
    n_random: int = 5
    relevant_setting: str = "gold"
    noisy_setting: str = "noise=0.8"
    measure_accuracy: bool = True
    n_bootstrap: int = 1000
    seed: int = 0
    site: str = "post"  # post | pre: must match the site the neurons were mined at
    batch_size: int = 8  # sequences per forward pass (log-probs and generation)
    max_new_tokens: int = 16  # greedy generation length for accuracy
    accuracy_limit: int | None = None  # accuracy on the first N examples only (generation is costly)
    random_exclude: str = "tested"  # tested | all: random controls avoid the tested set or every loaded set

    def __post_init__(self) -> None:
        if isinstance(self.sets, str):
            self.sets = tuple(s.strip() for s in self.sets.split(",") if s.strip())
        _check(self.mode in ("zero", "mean", "scale"), f"unknown mode {self.mode!r}")
        _check(self.n_random >= 5, f"n_random must be >= 5 (random controls with distinct seeds), got {self.n_random}")
        _check(len(self.sets) > 0, "at least one set is needed")
        _check(len(set(self.sets)) == len(self.sets), f"duplicate set names in {self.sets}")
        _check(self.site in ("post", "pre"), f"unknown site {self.site!r}")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        _check(self.accuracy_limit is None or self.accuracy_limit >= 1, "accuracy_limit must be >= 1")
        _check(self.random_exclude in ("tested", "all"), f"unknown random_exclude {self.random_exclude!r}")
        _check(self.n_bootstrap >= 0, "n_bootstrap must be >= 0")
        _check(self.scale == self.scale and abs(self.scale) != float("inf"), "scale must be a finite number")


@dataclass
class TrainConfig(ConfigBase):
    """The trainer and the two Neuro-RIT stages; baselines are other ``method`` values."""

    method: str = "neurorit"  # neurorit | stage1 | layers | full | random
    steps: int = 100  # total optimizer steps for every method (neurorit splits them, see stage1_fraction)
    lr: float = 1e-4
    lr_grid: tuple[float, ...] = ()  # optional learning-rate search on dev
    batch_size: int = 4
    grad_accum: int = 1
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    target_fraction: float = 0.066  # stage-2 trainable-parameter target
    n_target_layers: int | None = None  # overrides target_fraction
    train_attention: bool = False
    irrelevant_only_fraction: float = 0.2
    noise_ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    eval_every: int = 50
    checkpoint_every: int = 25
    seed: int = 0
    lr_schedule: str = "cosine"  # cosine | linear | constant (after linear warmup)
    min_lr_ratio: float = 0.0  # floor of the decay, as a fraction of lr
    stage1_fraction: float = 0.5  # neurorit: share of `steps` spent in stage 1 (rest: stage 2)
    examples_per_question: int = 1  # noisy-context training instances per question
    max_dev_items: int = 64  # dev items used for the teacher-forced dev loss
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        _check(self.method in ("neurorit", "stage1", "layers", "full", "random"), f"unknown method {self.method!r}")
        _check(self.lr_schedule in ("cosine", "linear", "constant"), f"unknown lr_schedule {self.lr_schedule!r}")
        _check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
        _check(0 < self.stage1_fraction < 1, "stage1_fraction must be in (0, 1)")
        _check(self.examples_per_question >= 1, "examples_per_question must be >= 1")
        _check(self.max_dev_items >= 1, "max_dev_items must be >= 1")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _check(self.max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 = no clipping)")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(len(self.noise_ratios) > 0 and all(0 <= r <= 1 for r in self.noise_ratios),
               "noise_ratios must be non-empty values in [0, 1]")
        _check(all(lr > 0 for lr in self.lr_grid), "lr_grid values must be positive")
        _check(self.n_target_layers is None or self.n_target_layers >= 1, "n_target_layers must be >= 1")
        _check(self.checkpoint_every >= 0 and self.eval_every >= 0, "checkpoint_every and eval_every must be >= 0")
        _check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
               "adam_betas must be 2 values in [0, 1)")
        _check(self.adam_eps > 0, "adam_eps must be positive")
        _check(self.steps >= 1, "steps must be >= 1")
        _check(self.lr > 0, "lr must be positive")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1")
        _check(0 < self.target_fraction < 1, "target_fraction must be in (0, 1)")
        _check(0 <= self.irrelevant_only_fraction <= 1, "irrelevant_only_fraction must be in [0, 1]")


@dataclass
class RunConfig(ConfigBase):
    """The whole pipeline: eval -> mine -> ablate -> train -> eval -> report."""

    model: str = "smollm2-135m-instruct"
    out: str = "runs/default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: tuple[str, ...] = ("neurorit",)  # training methods compared in one run
    eval_limit: int | None = 40  # test questions evaluated before/after training
    mine_limit: int | None = 40  # train questions used for mining
    ablate_limit: int | None = 30  # dev questions used for the causal test
    train_limit: int | None = None  # train questions used for tuning
    stages: tuple[str, ...] = ("eval", "mine", "ablate", "train", "report")
    device: str = "cpu"

    def __post_init__(self) -> None:
        for m in self.methods:
            _check(m in ("neurorit", "stage1", "layers", "full", "random"), f"unknown method {m!r}")
        known = ("eval", "mine", "ablate", "train", "report")
        for s in self.stages:
            _check(s in known, f"unknown stage {s!r}; choose from {known}")
