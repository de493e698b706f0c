"""One config dataclass per stage, nested in :class:`RunConfig`.

Every field where the paper is silent is a field here (see ``docs/design.md``). Each field's
trailing comment is its ``--help`` text on the command line. Each list of choices is a
``Literal`` type defined once below; the modules that implement the choices derive their
tuples from it with ``typing.get_args``. Each class validates in ``__post_init__``
(``ValueError`` naming the allowed values) and round-trips through JSON, so every run
folder can hold the config that made it.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
Positions = Literal["all", "skip_first", "last"]
Target = Literal["logprob", "prob", "logit", "logit_diff"]
Site = Literal["post", "pre"]
SelectionRule = Literal["threshold", "topk", "topk_per_layer"]
AblationMode = Literal["zero", "mean", "scale", "constant", "gate"]
IrrelevantDefinition = Literal["gold", "negative", "distracted", "contrast"]
Deactivation = Literal["zero", "scale", "constant", "gate"]
# Stage 1 may also leave every neuron on (none: the default the causal screen chose, docs/screen.md).
StageDeactivation = Literal["none", "zero", "scale", "constant", "gate"]
RandomExclude = Literal["tested", "all"]
TrainMethod = Literal["neurorit", "stage1", "layers", "full", "random", "clean"]
ControlChoice = Literal[TrainMethod, "none"]
# The methods that train every weight whole: under torchrun FSDP2 shards their weights, gradients
# and AdamW state (TrainConfig.sharding); the others train a few percent and keep DDP.
FSDP_METHODS: tuple[TrainMethod, ...] = ("full", "clean")
LrSchedule = Literal["cosine", "linear", "constant"]
StageSchedule = Literal["per_stage", "continuous", "stage1_extra"]
Stage1Neurons = Literal["r_excl", "random"]
Stage2Data = Literal["continue", "restart"]
IrrelevantTarget = Literal["gold", "abstain", "drop"]
Stage = Literal["eval", "mine", "ablate", "train", "report"]
DistBackend = Literal["auto", "gloo", "nccl"]
Sharding = Literal["auto", "ddp", "fsdp"]
GenerationBackend = Literal["auto", "tl", "hf"]
AblationBackend = Literal["auto", "tl"]
ExportFormat = Literal["hf", "gguf"]
GgufDtype = Literal["float32", "float16", "bfloat16"]
Precision = Literal["fp32", "bf16"]
# Mining alone may leave the choice to the method and device (neurorit_lens.precision.resolve_precision).
MiningPrecision = Literal["auto", Precision]


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

    # The QA data: "embedded[:N[:SEED]]", a file path, or "hf:<name or dir>[:split]".
    data: str = "embedded"
    # File format of --data; auto detects it from the name and the records.
    format: DataFormat = "auto"
    # Use only the first N questions of the chosen split (none = all of them).
    limit: int | None = None
    # Which part of the question-level train/dev/test split to use (all = no split).
    split: SplitChoice = "test"
    # Train, dev and test shares of the questions, summing to 1.
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    # Random seed for the split, the noisy contexts and every later random draw.
    seed: int = 0
    # Passages in a noise=R, irrelevant or counterfactual context (an example with fewer relevant
    # passages than noise=R needs keeps the ratio instead, e.g. one gold passage: noise=0.8 is gold+4).
    n_passages: int = 5
    # Prompt format: the model's chat template (chat), plain text, or chat when the tokenizer has
    # one (auto).
    template: Template = "auto"
    # Token budget of a prompt: non-gold passages are shortened or dropped to fit; the gold passage
    # and the question are never cut (an example they alone overflow is skipped and counted).
    max_prompt_tokens: int = 512
    # Stop with an error on a bad record instead of skipping it.
    strict: bool = False
    # How to mine irrelevant passages for gold-only data such as NQ-open (none = don't).
    distractors: DistractorChoice = "random"
    # Mined irrelevant passages per example that has none of its own.
    n_distractors: int = 10
    # Instruction line before the documents (none = "Answer the question using the documents
    # below. Reply with a short phrase only.").
    instruction: str | None = None
    # System line of the chat template (none = "You answer questions with a short phrase only.").
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        _check(self.instruction is None or bool(self.instruction.strip()), "instruction must not be empty")
        _check(self.system_prompt is None or bool(self.system_prompt.strip()), "system_prompt must not be empty")
        _check(self.limit is None or self.limit > 0, "limit must be positive")
        _one_of(self.format, DataFormat, "format")
        _one_of(self.distractors, DistractorChoice, "distractors")
        _check(self.n_distractors >= 0, "n_distractors must be >= 0")
        _one_of(self.split, SplitChoice, "split")
        _check(len(self.split_fractions) == 3 and all(f >= 0 for f in self.split_fractions)
               and abs(sum(self.split_fractions) - 1) < 1e-6,
               "split_fractions must be 3 non-negative numbers summing to 1")
        _check(self.n_passages >= 1, "n_passages must be >= 1")
        _one_of(self.template, Template, "template")
        _check(self.max_prompt_tokens >= 32, "max_prompt_tokens must be >= 32")


DEFAULT_SETTINGS = ("closed", "gold", "gold+4", "noise=0.4", "noise=0.8", "irrelevant")


@dataclass
class EvalConfig(ConfigBase):
    """Greedy generation and metrics per noise setting."""

    # Noise settings to evaluate: closed, gold, gold+K, noise=R, irrelevant, counterfactual, retrieved.
    settings: tuple[str, ...] = DEFAULT_SETTINGS
    # Greedy generation length of each answer, in tokens (room for a chatty answer; only its
    # first line or sentence is scored).
    max_new_tokens: int = 48
    # Prompts generated per forward pass.
    batch_size: int = 8
    # Bootstrap resamples for the percentile 95% intervals of accuracy, EM and F1 (accuracy is
    # also given a Wilson interval, the one tables print).
    n_bootstrap: int = 1000
    # Random seed of the bootstrap.
    seed: int = 0
    # Greedy decoding path: auto (the transformers twin of a hook-free Llama-style or GPT-2
    # model, TransformerLens otherwise), tl (always TransformerLens) or hf (always the twin).
    generation_backend: GenerationBackend = "auto"
    # End each answer at its first newline token (kept), and a batch once every row has ended
    # (faster; the scored first line is unchanged).
    stop_at_newline: bool = False
    # Forward passes in fp32, or under bf16 autocast (matrix products in bfloat16, weights and
    # sums kept in fp32; about 2x faster on CPUs with AVX512-BF16; see docs/evaluation.md).
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        _one_of(self.generation_backend, GenerationBackend, "generation_backend")
        _one_of(self.precision, Precision, "precision")
        self.settings = _split_commas(self.settings)
        _check(len(self.settings) > 0, "at least one setting is needed")
        _check(self.max_new_tokens > 0, "max_new_tokens must be positive")
        _check(self.batch_size > 0, "batch_size must be positive")
        _check(self.n_bootstrap >= 0, "n_bootstrap must be >= 0")


@dataclass
class MiningConfig(ConfigBase):
    """Attribution and neuron selection (docs/design.md, 'Neurons and attribution', 'Selection and the sets')."""

    # Attribution: per-layer Integrated Gradients (ig, the paper's), IG over all layers at once
    # (ig_joint), or gradient x activation (one backward pass).
    method: AttributionMethod = "grad_x_act"
    # Integration steps of IG (ignored by grad_x_act).
    steps: int = 20
    # Riemann rule placing the IG steps along the path from zero to the activation.
    rule: RiemannRule = "midpoint"
    # IG steps evaluated in one batched forward/backward pass (memory vs speed).
    alpha_chunk: int = 5
    # Token positions whose neuron activations are attributed: every prompt token, every one but the
    # first (the attention-sink token, the same in every prompt; see docs/mining.md), or the last.
    positions: Positions = "all"
    # Quantity attributed: the gold answer's log-prob, prob, logit, or logit difference.
    target: Target = "logprob"
    # Where a neuron is read: after the MLP nonlinearity (post) or before it (pre).
    site: Site = "post"
    # Layers to mine, comma-separated (none = every layer).
    layers: tuple[int, ...] | None = None
    # How neurons are kept per example: score >= threshold x max, the top-k overall, or top-k per
    # layer.
    selection: SelectionRule = "threshold"
    # Keep a neuron whose score is at least this fraction of the example's maximum score.
    threshold: float = 0.2
    # Keep a neuron selected in at least this fraction of the examples.
    frequency: float = 0.5
    # Neurons kept per example (overall or per layer) by the topk selections.
    top_k: int = 100
    # Noise setting that builds the relevant-context (R) prompts.
    relevant_setting: str = "gold"
    # Noise setting that builds the irrelevant-context (I) prompts of the gold definition.
    irrelevant_setting: str = "irrelevant"
    # What makes a neuron irrelevant-context (I): positive attribution to log p(gold) under
    # --irrelevant-setting (gold), most negative attribution to it under --noisy-setting
    # (negative), attribution to log p(wrong) - log p(gold) under --noisy-setting (distracted), or
    # IG from the activations under the --relevant-setting prompt to those under the --noisy-setting
    # prompt on the suffix both share, negated (contrast: the noise-induced change lowers log p(gold)).
    irrelevant_definition: IrrelevantDefinition = "gold"
    # Noise setting that builds the I prompts of the negative, distracted and contrast definitions.
    noisy_setting: str = "noise=0.8"
    # negative only: score each question by score(noisy) - score(relevant-only) (paired).
    paired: bool = False
    # Keep a selected neuron only if its score has the wanted sign in at least this fraction of
    # the examples (0 = off).
    sign_consistency: float = 0.0
    # Divide scores by each neuron's mean |activation| over the mined prompts before selecting.
    normalize: bool = False
    # Also store each neuron's mean activation at the answer-predicting positions of the
    # relevant-only prompts (the value that constant deactivation holds it at).
    answer_means: bool = False
    # Keep cached residuals and scores on the CPU to save accelerator memory.
    offload_scores: bool = True
    # Examples per attribution call (rows = batch_size x alpha_chunk).
    batch_size: int = 1
    # Memory budget (GB) of one attribution pass's activations: fewer alphas per pass than
    # --alpha-chunk where the estimate would exceed it, the same scores (none = no budget).
    max_memory_gb: float | None = None
    # Forward passes in fp32, or under bf16 autocast (matrix products in bfloat16, weights and
    # sums kept in fp32; about 2x faster on CPUs with AVX512-BF16); auto = bf16 for ig and ig_joint
    # where the device runs bf16 natively, else fp32 (grad_x_act: fp32); see docs/mining.md.
    precision: MiningPrecision = "auto"

    def __post_init__(self) -> None:
        _one_of(self.method, AttributionMethod, "method")
        _one_of(self.precision, MiningPrecision, "precision")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.steps >= 1, "steps must be >= 1")
        _one_of(self.rule, RiemannRule, "rule")
        _check(self.alpha_chunk >= 1, "alpha_chunk must be >= 1")
        _check(self.max_memory_gb is None or self.max_memory_gb > 0, "max_memory_gb must be positive")
        _one_of(self.positions, Positions, "positions")
        _one_of(self.target, Target, "target")
        _one_of(self.site, Site, "site")
        _one_of(self.selection, SelectionRule, "selection")
        _check(0 < self.threshold <= 1, "threshold must be in (0, 1]")
        _check(0 < self.frequency <= 1, "frequency must be in (0, 1]")
        _check(self.top_k >= 1, "top_k must be >= 1")
        _one_of(self.irrelevant_definition, IrrelevantDefinition, "irrelevant_definition")
        _check(0 <= self.sign_consistency <= 1, "sign_consistency must be in [0, 1]")
        _check(not self.paired or self.irrelevant_definition == "negative",
               "paired applies to irrelevant_definition='negative' only")
        if self.layers is not None:
            self.layers = tuple(int(x) for x in _split_commas(self.layers))


@dataclass
class AblationConfig(ConfigBase):
    """Causal tests of neuron sets against random controls."""

    # Neuron sets of neurons.json to ablate, comma-separated.
    sets: tuple[str, ...] = ("R_excl", "I_excl", "shared")
    # Ablation: set the neurons to zero, to their mean activation, multiply them by --scale, set
    # them to their mean at the answer-predicting positions of the relevant-only contexts
    # (constant), or multiply them by gates learned per set on noisy train items (gate).
    mode: AblationMode = "zero"
    # Factor applied to the neurons' activations in scale mode.
    scale: float = 0.0
    # Random control sets (same per-layer counts, distinct seeds) per tested set; at least 5.
    n_random: int = 5
    # Noise setting of the relevant-only contexts.
    relevant_setting: str = "gold"
    # Noise setting of the noisy contexts.
    noisy_setting: str = "noise=0.8"
    # Also measure the change in accuracy by greedy generation (slower).
    measure_accuracy: bool = True
    # Bootstrap resamples for the 95% intervals.
    n_bootstrap: int = 1000
    # Random seed of the control sets and the bootstrap.
    seed: int = 0
    # Where neurons are ablated; must match the site they were mined at.
    site: Site = "post"
    # Sequences per forward pass (log-probs and generation).
    batch_size: int = 8
    # Greedy generation length for accuracy, in tokens.
    max_new_tokens: int = 16
    # Measure accuracy on the first N examples only, as generation is costly (none = all).
    accuracy_limit: int | None = None
    # Random controls avoid the tested set only, or every set in neurons.json.
    random_exclude: RandomExclude = "tested"
    # Mode gate: optimizer steps of each set's gates (every model weight frozen).
    gate_steps: int = 25
    # Mode gate: learning rate of the gates (AdamW, constant, no warmup, no weight decay).
    gate_lr: float = 0.05
    # Mode gate: L1 coefficient on the mean |gate| (stage 1's penalty).
    gate_penalty: float = 0.01
    # Mode gate: train items per gate step.
    gate_batch_size: int = 4
    # Mode gate: clamp the gates to [0, 1], so that they can only switch neurons off.
    gate_clamp: bool = False
    # Greedy decoding path of the accuracy test: auto (zero and scale ablation at the post site
    # scaled into the transformers twin's output weights, the baseline decoded by the twin too,
    # where the model has one; TransformerLens hooks otherwise) or tl (always hooks).
    generation_backend: AblationBackend = "auto"
    # Forward passes in fp32, or under bf16 autocast (matrix products in bfloat16, weights and
    # sums kept in fp32; about 2x faster on CPUs with AVX512-BF16; see docs/ablation.md).
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        _one_of(self.precision, Precision, "precision")
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
        _one_of(self.generation_backend, AblationBackend, "generation_backend")
        _check(self.n_bootstrap >= 0, "n_bootstrap must be >= 0")
        _check(self.scale == self.scale and abs(self.scale) != float("inf"), "scale must be a finite number")
        _check(self.gate_steps >= 1 and self.gate_batch_size >= 1, "gate_steps and gate_batch_size must be >= 1")
        _check(math.isfinite(self.gate_lr) and self.gate_lr > 0, "gate_lr must be > 0")
        _check(math.isfinite(self.gate_penalty) and self.gate_penalty >= 0, "gate_penalty must be >= 0")


@dataclass
class TrainConfig(ConfigBase):
    """The trainer and the two Neuro-RIT stages; baselines are other ``method`` values."""

    # What is tuned: Neuro-RIT's two stages, stage 1 only, the target layers' MLPs, every weight,
    # random neurons, or every weight on gold-only contexts (clean, the format control).
    method: TrainMethod = "neurorit"
    # Total optimizer steps for every method (neurorit splits them, see --stage1-fraction).
    steps: int = 100
    # Peak learning rate of AdamW.
    lr: float = 1e-4
    # Learning rates to search on dev loss, comma-separated (empty = use --lr).
    lr_grid: tuple[float, ...] = ()
    # Training items per micro-batch.
    batch_size: int = 4
    # Micro-batches accumulated per optimizer step.
    grad_accum: int = 1
    # Linear warmup steps before the decay (per_stage: at the start of each of neurorit's stages).
    warmup_steps: int = 10
    # Gradient-norm clipping threshold (0 = no clipping).
    max_grad_norm: float = 1.0
    # AdamW weight decay.
    weight_decay: float = 0.0
    # Stage 2 takes the number of target layers whose trainable parameters come nearest to this
    # share of the model's.
    target_fraction: float = 0.066
    # Number of stage-2 target layers; overrides --target-fraction (none = use it).
    n_target_layers: int | None = None
    # Also train the target layers' attention weights in stage 2.
    train_attention: bool = False
    # Share of training contexts made of irrelevant passages only.
    irrelevant_only_fraction: float = 0.2
    # Irrelevant-passage ratios of the noisy training contexts, comma-separated.
    noise_ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    # Steps between dev-loss evaluations (0 = only at the end).
    eval_every: int = 50
    # Steps between resumable checkpoints (one is always written at the end; 0 = only then).
    checkpoint_every: int = 25
    # Random seed of the training data order and initialisation.
    seed: int = 0
    # Learning-rate decay after the linear warmup.
    lr_schedule: LrSchedule = "cosine"
    # Floor of the decay, as a fraction of --lr.
    min_lr_ratio: float = 0.0
    # Share of --steps that neurorit spends in stage 1 (the rest goes to stage 2).
    stage1_fraction: float = 0.5
    # Noisy-context training instances built per question.
    examples_per_question: int = 1
    # Dev items used for the teacher-forced dev loss.
    max_dev_items: int = 64
    # AdamW's beta1 and beta2, comma-separated.
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    # Epsilon added to AdamW's denominator for numerical stability.
    adam_eps: float = 1e-8
    # How I_excl neurons are switched off in training: not at all (none; the default, since no
    # definition of I passed the causal screen, docs/screen.md), set to 0, multiplied by
    # --deactivation-scale, set to their mean at the answer-predicting positions of gold-only
    # contexts (constant), or multiplied by a learned gate (starts at 1, trained with stage 1
    # under --gate-penalty).
    deactivation: StageDeactivation = "none"
    # Factor applied to deactivated neurons in scale mode.
    deactivation_scale: float = 0.5
    # Optimizer steps of neurorit's stage 1; overrides --stage1-fraction (none = use it).
    stage1_steps: int | None = None
    # Peak learning rate of neurorit's stage 1 (none = the same as stage 2: --lr, or each value
    # of --lr-grid).
    stage1_lr: float | None = None
    # Learning-rate schedule of neurorit's two stages: each its own warmup and decay, splitting
    # --steps (per_stage); one warmup and decay over --steps, so stage 2 gets only the tail of the
    # decay (continuous); or stage 2 gets --steps on its own schedule, exactly layers' steps,
    # warmup and decay, and stage 1 comes as --stage1-steps (or --stage1-fraction x --steps) extra
    # steps before it (stage1_extra).
    stage_schedule: StageSchedule = "per_stage"
    # Data order of neurorit's stage 2: continue where stage 1 stopped, so no item is seen twice
    # before every item was seen once (continue), or start again from the first item (restart, the
    # order of runs made before this option existed).
    stage2_data: Stage2Data = "continue"
    # Neurons that neurorit's stage 1 trains: R_excl, or random neurons with R_excl's per-layer
    # counts (the neuron-identity control; stage 2 keeps the layers chosen from R_excl).
    stage1_neurons: Stage1Neurons = "r_excl"
    # Target of the irrelevant-only training items: the gold answer, --abstain-answer, or no such
    # items at all (drop).
    irrelevant_target: IrrelevantTarget = "gold"
    # The abstain phrase that irrelevant-only items are trained to answer with --irrelevant-target
    # abstain.
    abstain_answer: str = "I don't know."
    # Coefficient of the L1 penalty (times the mean |gate| over the deactivated neurons) that pulls
    # the learned gates of --deactivation gate toward 0.
    gate_penalty: float = 0.01
    # Clamp each learned gate to [0, 1] in the forward pass and in the export, so a gate can only
    # switch its neuron off, partly or fully (off: a gate may end anywhere, amplifying its neuron).
    gate_clamp: bool = False
    # Keep only each block's input in the forward pass and recompute the block in backward
    # (activation checkpointing): less memory, about one more forward pass per step.
    activation_checkpointing: bool = False
    # Forward passes in fp32, or under bf16 autocast (matrix products in bfloat16, weights and
    # sums kept in fp32; about 2x faster on CPUs with AVX512-BF16; see docs/training.md).
    precision: Precision = "fp32"
    # How the model is split over ranks under torchrun: every rank keeps the whole model and the
    # trained tensors' gradients are summed (ddp), every weight, gradient and AdamW state is sharded
    # per block with FSDP2 (fsdp; only full and clean, which train every weight), or fsdp for full
    # and clean and ddp for the others (auto). No effect in one process (docs/distributed.md).
    sharding: Sharding = "auto"

    def __post_init__(self) -> None:
        _one_of(self.method, TrainMethod, "method")
        _one_of(self.sharding, Sharding, "sharding")
        _check(self.sharding != "fsdp" or self.method in FSDP_METHODS,
               f"sharding 'fsdp' is for the methods that train every weight ({', '.join(FSDP_METHODS)}), not "
               f"{self.method!r}, which trains a few percent: its gradients and AdamW state are small (DDP "
               "replicates only frozen weights), and the neuron masks, compact AdamW and neuron-only gradients "
               "of the neuron-level stages index plain local tensors, not FSDP shards; use sharding 'ddp' or 'auto'")
        _one_of(self.precision, Precision, "precision")
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
        _check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
               "adam_betas must be 2 values in [0, 1)")
        _check(self.adam_eps > 0, "adam_eps must be positive")
        _one_of(self.deactivation, StageDeactivation, "deactivation")
        _check(math.isfinite(self.deactivation_scale), "deactivation_scale must be a finite number")
        _check(self.steps >= 1, "steps must be >= 1")
        _check(self.lr > 0, "lr must be positive")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1")
        _check(0 < self.target_fraction < 1, "target_fraction must be in (0, 1)")
        _check(0 <= self.irrelevant_only_fraction <= 1, "irrelevant_only_fraction must be in [0, 1]")
        _check(self.stage1_steps is None or self.stage1_steps >= 1, "stage1_steps must be >= 1")
        _check(self.stage1_lr is None or self.stage1_lr > 0, "stage1_lr must be positive")
        _one_of(self.stage_schedule, StageSchedule, "stage_schedule")
        _one_of(self.stage2_data, Stage2Data, "stage2_data")
        _one_of(self.stage1_neurons, Stage1Neurons, "stage1_neurons")
        _one_of(self.irrelevant_target, IrrelevantTarget, "irrelevant_target")
        _check(bool(self.abstain_answer.strip()), "abstain_answer must not be empty")
        _check(math.isfinite(self.gate_penalty) and self.gate_penalty >= 0, "gate_penalty must be >= 0")


# TrainConfig fields added with a default that differs from what the runs recorded before them did:
# a record that lacks the field was made with this value (stage 2 re-read stage 1's items then).
TRAIN_LEGACY_VALUES: dict[str, Any] = {"stage2_data": "restart"}


@dataclass
class RunConfig(ConfigBase):
    """The whole pipeline: eval -> mine -> ablate -> train -> eval -> report."""

    # Model name (smollm2-135m-instruct, gemma-3-270m, tiny, ...) or a local checkpoint folder.
    model: str = "smollm2-135m-instruct"
    # Run folder; stages already done there are skipped, so a killed run resumes.
    out: str = "runs/default"
    # Seed recorded in environment.json (the stages use --data.seed, --eval.seed, ...).
    seed: int = 0
    # Which QA data, how it is split, and how prompts are built.
    data: DataConfig = field(default_factory=DataConfig)
    # Greedy generation and the metrics per noise setting, before and after training.
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Attribution of the answer to neurons, and the selection of the sets.
    mining: MiningConfig = field(default_factory=MiningConfig)
    # The causal test: which sets, how they are ablated, and the random controls.
    ablation: AblationConfig = field(default_factory=AblationConfig)
    # The training method, its schedule and budget.
    train: TrainConfig = field(default_factory=TrainConfig)
    # Training methods compared in one run, comma-separated.
    methods: tuple[TrainMethod, ...] = ("neurorit",)
    # Control methods trained beside --methods with the same --train section (same items, steps and
    # LR schedule) and evaluated on the same questions; the report gives each method minus each
    # control, paired per question (none = no control).
    controls: tuple[ControlChoice, ...] = ("layers",)
    # Test questions evaluated before and after training (none = all).
    eval_limit: int | None = 40
    # Train questions used for mining (none = all).
    mine_limit: int | None = 40
    # Dev questions used for the causal test (none = all).
    ablate_limit: int | None = 30
    # Train questions used for tuning (none = all).
    train_limit: int | None = None
    # Pipeline stages to run, comma-separated, always in pipeline order.
    stages: tuple[Stage, ...] = typing.get_args(Stage)
    # Torch device: cpu, cuda, cuda:1, mps, ...
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.methods = _split_commas(self.methods)
        self.controls = tuple(m for m in _split_commas(self.controls) if m != "none")
        self.stages = _split_commas(self.stages)
        for m in self.methods:
            _one_of(m, TrainMethod, "method")
        for m in self.controls:
            _one_of(m, TrainMethod, "control method")

    def trained_methods(self) -> tuple[str, ...]:
        """``methods`` then the ``controls`` not among them: every method the train stage tunes."""
        return self.methods + tuple(m for m in dict.fromkeys(self.controls) if m not in self.methods)
        for s in self.stages:
            _one_of(s, Stage, "stage")
