"""One config dataclass per stage, nested in :class:`RunConfig`.

Every field where the paper is silent is a field here (see ``DESIGN.md``). Each field's
trailing comment is its ``--help`` text on the command line. Each list of choices is a
``Literal`` type defined once below; the modules that implement the choices derive their
tuples from it with ``typing.get_args``. Each class validates in ``__post_init__``
(``ValueError`` naming the allowed values) and round-trips through JSON, so every run
folder can hold the config that made it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from neurorit_lens.io import atomic_write_json, read_json

T = TypeVar("T", bound="ConfigBase")

# ---------------------------------------------------------------- lists of choices (defined once)
DataFormat = Literal["auto", "rgb", "noiserbench", "dpr", "jsonl", "hf", "embedded"]
Split = Literal["train", "dev", "test"]
SplitChoice = Literal[Split, "all"]
Template = Literal["auto", "plain", "chat"]
DistractorMethod = Literal["random", "bm25"]
DistractorChoice = Literal[DistractorMethod, "none"]
AttributionMethod = Literal["ig", "ig_joint", "grad_x_act"]
RiemannRule = Literal["midpoint", "right", "left"]
Positions = Literal["all", "last"]
Target = Literal["logprob", "prob", "logit", "logit_diff"]
Site = Literal["post", "pre"]
SelectionRule = Literal["threshold", "topk", "topk_per_layer"]
AblationMode = Literal["zero", "mean", "scale"]
RandomExclude = Literal["tested", "all"]
TrainMethod = Literal["neurorit", "stage1", "layers", "full", "random"]
LrSchedule = Literal["cosine", "linear", "constant"]
Stage = Literal["eval", "mine", "ablate", "train", "report"]
DistBackend = Literal["auto", "gloo", "nccl"]


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
            elif isinstance(v, list) and _is_tuple_hint(hint):
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


def _is_tuple_hint(hint: Any) -> bool:
    """``tuple[...]`` or ``tuple[...] | None``."""
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _one_of(value: Any, literal: Any, what: str) -> None:
    """Raise ``ValueError("unknown <what> 'x'; choose from a, b, c")`` unless ``value`` is allowed."""
    allowed = typing.get_args(literal)
    _check(value in allowed, f"unknown {what} {value!r}; choose from {', '.join(allowed)}")


def _split_commas(value: Any) -> Any:
    """``"a,b"`` -> ``("a", "b")`` (tuple fields given as one string); anything else unchanged."""
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return value


@dataclass
class DataConfig(ConfigBase):
    """Which QA data, how it is split, and how prompts are built."""

    data: str = "embedded"  # The QA data: "embedded[:N[:SEED]]", a file path, or "hf:<name or dir>[:split]".
    format: DataFormat = "auto"  # File format of --data; auto detects it from the name and the records.
    limit: int | None = None  # Use only the first N questions of the chosen split (none = all of them).
    split: SplitChoice = "test"  # Which part of the question-level train/dev/test split to use (all = no split).
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # Train, dev and test shares of the questions, summing to 1.
    seed: int = 0  # Random seed for the split, the noisy contexts and every later random draw.
    n_passages: int = 5  # Total passages in a noise=R context (relevant plus irrelevant).
    template: Template = "auto"  # Prompt format: the model's chat template (chat), plain text, or chat when the tokenizer has one (auto).
    max_prompt_tokens: int = 512  # Token budget of a prompt; passages are truncated past it, never the question.
    strict: bool = False  # Stop with an error on a bad record instead of skipping it.
    distractors: DistractorChoice = "random"  # How to mine irrelevant passages for gold-only data such as NQ-open (none = don't).
    n_distractors: int = 10  # Mined irrelevant passages per example that has none of its own.

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit > 0, "limit must be positive")
        _one_of(self.format, DataFormat, "format")
        _one_of(self.distractors, DistractorChoice, "distractors")
        _check(self.n_distractors >= 0, "n_distractors must be >= 0")
        _one_of(self.split, SplitChoice, "split")
        _check(len(self.split_fractions) == 3 and all(f >= 0 for f in self.split_fractions)
               and abs(sum(self.split_fractions) - 1) < 1e-6, "split_fractions must be 3 non-negative numbers summing to 1")
        _check(self.n_passages >= 1, "n_passages must be >= 1")
        _one_of(self.template, Template, "template")
        _check(self.max_prompt_tokens >= 32, "max_prompt_tokens must be >= 32")


DEFAULT_SETTINGS = ("closed", "gold", "gold+4", "noise=0.4", "noise=0.8", "irrelevant")


@dataclass
class EvalConfig(ConfigBase):
    """Greedy generation and metrics per noise setting."""

    settings: tuple[str, ...] = DEFAULT_SETTINGS  # Noise settings to evaluate: closed, gold, gold+K, noise=R, irrelevant, counterfactual.
    max_new_tokens: int = 16  # Greedy generation length of each answer, in tokens.
    batch_size: int = 8  # Prompts generated per forward pass.
    n_bootstrap: int = 1000  # Bootstrap resamples for the 95% intervals (0 = no intervals).
    seed: int = 0  # Random seed of the bootstrap.

    def __post_init__(self) -> None:
        self.settings = _split_commas(self.settings)
        _check(len(self.settings) > 0, "at least one setting is needed")
        _check(self.max_new_tokens > 0, "max_new_tokens must be positive")
        _check(self.batch_size > 0, "batch_size must be positive")
        _check(self.n_bootstrap >= 0, "n_bootstrap must be >= 0")


@dataclass
class MiningConfig(ConfigBase):
    """Attribution and neuron selection (DESIGN.md, 'Neurons' to 'Exclusive sets')."""

    method: AttributionMethod = "grad_x_act"  # Attribution: per-layer Integrated Gradients (ig, the paper's), IG over all layers at once (ig_joint), or gradient x activation (one backward pass).
    steps: int = 20  # Integration steps of IG (ignored by grad_x_act).
    rule: RiemannRule = "midpoint"  # Riemann rule placing the IG steps along the path from zero to the activation.
    alpha_chunk: int = 5  # IG steps evaluated in one batched forward/backward pass (memory vs speed).
    positions: Positions = "all"  # Token positions whose neuron activations are attributed: every prompt token or the last only.
    target: Target = "logprob"  # Quantity attributed: the gold answer's log-prob, prob, logit, or logit difference.
    site: Site = "post"  # Where a neuron is read: after the MLP nonlinearity (post) or before it (pre).
    layers: tuple[int, ...] | None = None  # Layers to mine, comma-separated (none = every layer).
    selection: SelectionRule = "threshold"  # How neurons are kept per example: score >= threshold x max, the top-k overall, or top-k per layer.
    threshold: float = 0.2  # Keep a neuron whose score is at least this fraction of the example's maximum score.
    frequency: float = 0.5  # Keep a neuron selected in at least this fraction of the examples.
    top_k: int = 100  # Neurons kept per example (overall or per layer) by the topk selections.
    relevant_setting: str = "gold"  # Noise setting that builds the relevant-context (R) prompts.
    irrelevant_setting: str = "irrelevant"  # Noise setting that builds the irrelevant-context (I) prompts.
    offload_scores: bool = True  # Keep per-example scores on the CPU to save accelerator memory.
    batch_size: int = 1  # Examples per attribution call (rows = batch_size x alpha_chunk).

    def __post_init__(self) -> None:
        _one_of(self.method, AttributionMethod, "method")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.steps >= 1, "steps must be >= 1")
        _one_of(self.rule, RiemannRule, "rule")
        _check(self.alpha_chunk >= 1, "alpha_chunk must be >= 1")
        _one_of(self.positions, Positions, "positions")
        _one_of(self.target, Target, "target")
        _one_of(self.site, Site, "site")
        _one_of(self.selection, SelectionRule, "selection")
        _check(0 < self.threshold <= 1, "threshold must be in (0, 1]")
        _check(0 < self.frequency <= 1, "frequency must be in (0, 1]")
        _check(self.top_k >= 1, "top_k must be >= 1")
        if self.layers is not None:
            self.layers = tuple(int(x) for x in _split_commas(self.layers))


@dataclass
class AblationConfig(ConfigBase):
    """Causal tests of neuron sets against random controls."""

    sets: tuple[str, ...] = ("R_excl", "I_excl", "shared")  # Neuron sets of neurons.json to ablate, comma-separated.
    mode: AblationMode = "zero"  # Ablation: set the neurons to zero, to their mean activation, or multiply them by --scale.
    scale: float = 0.0  # Factor applied to the neurons' activations in scale mode.
    n_random: int = 5  # Random control sets (same per-layer counts, distinct seeds) per tested set; at least 5.
    relevant_setting: str = "gold"  # Noise setting of the relevant-only contexts.
    noisy_setting: str = "noise=0.8"  # Noise setting of the noisy contexts.
    measure_accuracy: bool = True  # Also measure the change in accuracy by greedy generation (slower).
    n_bootstrap: int = 1000  # Bootstrap resamples for the 95% intervals (0 = no intervals).
    seed: int = 0  # Random seed of the control sets and the bootstrap.
    site: Site = "post"  # Where neurons are ablated; must match the site they were mined at.
    batch_size: int = 8  # Sequences per forward pass (log-probs and generation).
    max_new_tokens: int = 16  # Greedy generation length for accuracy, in tokens.
    accuracy_limit: int | None = None  # Measure accuracy on the first N examples only, as generation is costly (none = all).
    random_exclude: RandomExclude = "tested"  # Random controls avoid the tested set only, or every set in neurons.json.

    def __post_init__(self) -> None:
        self.sets = _split_commas(self.sets)
        _one_of(self.mode, AblationMode, "mode")
        _check(self.n_random >= 5, f"n_random must be >= 5 (random controls with distinct seeds), got {self.n_random}")
        _check(len(self.sets) > 0, "at least one set is needed")
        _check(len(set(self.sets)) == len(self.sets), f"duplicate set names in {self.sets}")
        _one_of(self.site, Site, "site")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        _check(self.accuracy_limit is None or self.accuracy_limit >= 1, "accuracy_limit must be >= 1")
        _one_of(self.random_exclude, RandomExclude, "random_exclude")
        _check(self.n_bootstrap >= 0, "n_bootstrap must be >= 0")
        _check(self.scale == self.scale and abs(self.scale) != float("inf"), "scale must be a finite number")


@dataclass
class TrainConfig(ConfigBase):
    """The trainer and the two Neuro-RIT stages; baselines are other ``method`` values."""

    method: TrainMethod = "neurorit"  # What is tuned: Neuro-RIT's two stages, stage 1 only, the target layers' MLPs, every weight, or random neurons.
    steps: int = 100  # Total optimizer steps for every method (neurorit splits them, see --stage1-fraction).
    lr: float = 1e-4  # Peak learning rate of AdamW.
    lr_grid: tuple[float, ...] = ()  # Learning rates to search on dev loss, comma-separated (empty = use --lr).
    batch_size: int = 4  # Training items per micro-batch.
    grad_accum: int = 1  # Micro-batches accumulated per optimizer step.
    warmup_steps: int = 10  # Linear warmup steps before the schedule.
    max_grad_norm: float = 1.0  # Gradient-norm clipping threshold (0 = no clipping).
    weight_decay: float = 0.0  # AdamW weight decay.
    target_fraction: float = 0.066  # Stage 2 trains the fewest top layers whose MLPs hold at least this share of the parameters.
    n_target_layers: int | None = None  # Number of stage-2 target layers; overrides --target-fraction (none = use it).
    train_attention: bool = False  # Also train the target layers' attention weights in stage 2.
    irrelevant_only_fraction: float = 0.2  # Share of training contexts made of irrelevant passages only.
    noise_ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)  # Irrelevant-passage ratios of the noisy training contexts, comma-separated.
    eval_every: int = 50  # Steps between dev-loss evaluations (0 = only at the end).
    checkpoint_every: int = 25  # Steps between resumable checkpoints (0 = none).
    seed: int = 0  # Random seed of the training data order and initialisation.
    lr_schedule: LrSchedule = "cosine"  # Learning-rate decay after the linear warmup.
    min_lr_ratio: float = 0.0  # Floor of the decay, as a fraction of --lr.
    stage1_fraction: float = 0.5  # Share of --steps that neurorit spends in stage 1 (the rest goes to stage 2).
    examples_per_question: int = 1  # Noisy-context training instances built per question.
    max_dev_items: int = 64  # Dev items used for the teacher-forced dev loss.
    adam_betas: tuple[float, ...] = (0.9, 0.999)  # AdamW's beta1 and beta2, comma-separated.
    adam_eps: float = 1e-8  # Epsilon added to AdamW's denominator for numerical stability.

    def __post_init__(self) -> None:
        _one_of(self.method, TrainMethod, "method")
        _one_of(self.lr_schedule, LrSchedule, "lr_schedule")
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
        _check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "adam_betas must be 2 values in [0, 1)")
        _check(self.adam_eps > 0, "adam_eps must be positive")
        _check(self.steps >= 1, "steps must be >= 1")
        _check(self.lr > 0, "lr must be positive")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1")
        _check(0 < self.target_fraction < 1, "target_fraction must be in (0, 1)")
        _check(0 <= self.irrelevant_only_fraction <= 1, "irrelevant_only_fraction must be in [0, 1]")


@dataclass
class RunConfig(ConfigBase):
    """The whole pipeline: eval -> mine -> ablate -> train -> eval -> report."""

    model: str = "smollm2-135m-instruct"  # Model name (smollm2-135m-instruct, gemma-3-270m, tiny, ...) or a local checkpoint folder.
    out: str = "runs/default"  # Run folder; stages already done there are skipped, so a killed run resumes.
    seed: int = 0  # Seed recorded in environment.json (the stages use --data.seed, --eval.seed, ...).
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: tuple[TrainMethod, ...] = ("neurorit",)  # Training methods compared in one run, comma-separated.
    eval_limit: int | None = 40  # Test questions evaluated before and after training (none = all).
    mine_limit: int | None = 40  # Train questions used for mining (none = all).
    ablate_limit: int | None = 30  # Dev questions used for the causal test (none = all).
    train_limit: int | None = None  # Train questions used for tuning (none = all).
    stages: tuple[Stage, ...] = typing.get_args(Stage)  # Pipeline stages to run, comma-separated, always in pipeline order.
    device: str = "cpu"  # Torch device: cpu, cuda, cuda:1, mps, ...

    def __post_init__(self) -> None:
        self.methods = _split_commas(self.methods)
        self.stages = _split_commas(self.stages)
        for m in self.methods:
            _one_of(m, TrainMethod, "method")
        for s in self.stages:
            _one_of(s, Stage, "stage")
