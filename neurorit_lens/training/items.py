"""Training examples for robust instruction tuning, built from QA examples.

Neuro-RIT tunes on *noisy-context* instruction data: every training question appears
with its relevant passage(s) mixed among irrelevant ones, at random positions and at a
noise ratio drawn from ``TrainConfig.noise_ratios``, plus a share
(``TrainConfig.irrelevant_only_fraction`` of the final mix) of examples whose context
holds irrelevant passages only. The target is the gold answer (the first of the example's
answers), appended to the prompt as the data module's answer continuation; for the
irrelevant-only items ``TrainConfig.irrelevant_target`` chooses: the gold answer (``gold``,
default), ``TrainConfig.abstain_answer`` (``abstain``; on fictional data the gold answer
cannot be known without the evidence, so training on it teaches guessing), or no such items
(``drop``: the noisy items stay as they are, the irrelevant-only ones are left out and
counted in ``TrainData.n_dropped``).

Contexts and prompts come from the project's one prompt path
(:func:`neurorit_lens.data.build.build_prompts` with the settings ``noise=R``, ``gold+K``
and ``irrelevant``), so training prompts are byte-identical in form to evaluation prompts.

With ``gold_only`` (the ``clean`` method) every instance is the ``gold`` setting instead:
the primary relevant passage alone, ``TrainConfig.examples_per_question`` times per
question, and no irrelevant-only instance (:func:`gold_only_settings`).

A :class:`TrainItem` is just ``(prompt, answer continuation)``: the trainer needs
nothing else, and tests can build items from plain strings.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.data.schema import QAExample


@dataclass(frozen=True)
class TrainItem:
    """One supervised example: the model sees ``prompt`` and is trained to continue with ``answer``."""

    prompt: str
    answer: str
    id: str = ""
    setting: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.answer, str):
            raise ValueError(f"train item {self.id!r}: prompt and answer must be strings")
        if not self.answer.strip():
            raise ValueError(f"train item {self.id!r}: empty answer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainItem:
        return cls(**d)


@dataclass
class TrainData:
    """Built training (or dev) items and what happened while building them."""

    items: list[TrainItem]
    n_questions: int
    n_skipped: int = 0
    n_truncated: int = 0
    settings: dict[str, int] = field(default_factory=dict)
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"n_items": len(self.items), "n_questions": self.n_questions, "n_skipped": self.n_skipped,
                "n_truncated": self.n_truncated, "settings": dict(self.settings), "n_dropped": self.n_dropped}


def assign_settings(n_questions: int, cfg: TrainConfig, seed: int) -> list[tuple[int, str]]:
    """Which (question index, setting) pairs make the training mix.

    Each question gets ``cfg.examples_per_question`` noisy instances whose noise ratios
    cycle through ``cfg.noise_ratios`` in a seeded random order (so ratios are balanced);
    then irrelevant-only instances are added for randomly drawn questions until they make
    ``cfg.irrelevant_only_fraction`` of the mix.

    Returns:
        ``(question index, setting)`` pairs, sorted by question index.
    """
    if n_questions < 1:
        raise ValueError("no training questions")
    rng = random.Random(seed)
    pairs: list[tuple[int, str]] = []
    f = cfg.irrelevant_only_fraction
    epq = cfg.examples_per_question
    if f < 1:
        ratios = [cfg.noise_ratios[k % len(cfg.noise_ratios)] for k in range(n_questions * epq)]
        rng.shuffle(ratios)
        pairs = [(k // epq, f"noise={r:g}") for k, r in enumerate(ratios)]
        n_irr = round(f * len(pairs) / (1 - f))
    else:
        n_irr = n_questions * epq
    order: list[int] = []
    while len(order) < n_irr:
        block = list(range(n_questions))
        rng.shuffle(block)
        order += block
    pairs += [(q, "irrelevant") for q in order[:n_irr]]
    return sorted(pairs, key=lambda p: (p[0], p[1]))


def gold_only_settings(n_questions: int, cfg: TrainConfig) -> list[tuple[int, str]]:
    """The ``clean`` mix: ``cfg.examples_per_question`` ``gold`` instances per question, nothing else."""
    if n_questions < 1:
        raise ValueError("no training questions")
    return [(q, "gold") for q in range(n_questions) for _ in range(cfg.examples_per_question)]


def instance_setting(example: QAExample, setting: str, n_passages: int) -> tuple[str, int] | None:
    """The data-module setting that realises a training ``setting`` for one example.

    ``noise=R`` needs ``n_passages - round(R * n_passages)`` relevant passages; an example
    with fewer (NQ-open has one gold passage) gets ``gold+K`` instead, with the same number
    ``K`` of irrelevant passages as ``noise=R`` asks for (capped by what it has). An
    ``irrelevant`` instance uses at most as many passages as the example has irrelevant
    ones. ``None``: the example cannot take part (no relevant, or no irrelevant passage).

    Returns:
        ``(setting name, n_passages)`` for :func:`neurorit_lens.data.build_instances`.
    """
    from neurorit_lens.data import parse_setting

    n_rel_have, n_irr_have = len(example.relevant), len(example.irrelevant)
    st = parse_setting(setting)
    if st.kind == "gold":
        return ("gold", n_passages) if n_rel_have else None
    if st.kind == "irrelevant":
        return ("irrelevant", min(n_passages, n_irr_have)) if n_irr_have else None
    if st.kind != "noise":
        raise ValueError(f"training settings are noise=R, irrelevant and gold, got {setting!r}")
    if not n_rel_have:
        return None
    n_rel, n_irr = st.counts(n_passages)
    if n_rel_have >= n_rel and n_irr_have >= n_irr:
        return setting, n_passages
    return f"gold+{min(n_irr, n_irr_have)}", n_passages


def build_train_items(
    examples: Sequence[QAExample],
    tokenizer: Any,
    cfg: TrainConfig,
    data_cfg: DataConfig,
    seed: int | None = None,
    n_ctx: int | None = None,
    gold_only: bool = False,
) -> TrainData:
    """Noisy-context training items for ``examples`` (see module docstring).

    Args:
        examples: the training (or dev) questions.
        tokenizer: the model's tokenizer (prompt rendering and truncation).
        cfg: noise ratios, irrelevant-only share and target, examples per question.
        data_cfg: passages per context, template, prompt token budget.
        seed: seed for ratio assignment and passage order (default ``cfg.seed``).
        n_ctx: the model's context; caps the prompt budget at it (``None``: the budget is
            ``data_cfg.max_prompt_tokens``; see :func:`neurorit_lens.data.build.prompt_budget`).
        gold_only: build every item with the gold passage alone (the ``clean`` method;
            :func:`gold_only_settings`) instead of the noisy mix of :func:`assign_settings`.

    Returns:
        A :class:`TrainData`; examples that cannot take part in a setting (see
        :func:`instance_setting`) or that the data module skips are counted in ``n_skipped``;
        irrelevant-only instances left out by ``cfg.irrelevant_target="drop"`` in ``n_dropped``.
    """
    if not examples:
        raise ValueError("no examples to build training items from")
    seed = cfg.seed if seed is None else seed
    pairs = gold_only_settings(len(examples), cfg) if gold_only else assign_settings(len(examples), cfg, seed)
    if cfg.irrelevant_target == "drop" and all(s == "irrelevant" for _, s in pairs):
        raise ValueError("irrelevant_target='drop' with irrelevant_only_fraction=1 leaves no training items")
    groups: dict[tuple[str, int], list[int]] = {}
    n_skipped = 0
    for q, setting in pairs:
        key = instance_setting(examples[q], setting, data_cfg.n_passages)
        if key is None:
            n_skipped += 1
        else:
            groups.setdefault(key, []).append(q)
    data = _build_groups(examples, groups, tokenizer, cfg, data_cfg, seed, n_ctx)
    data.n_skipped += n_skipped
    if not data.items:
        raise ValueError(f"no training items could be built from {len(examples)} examples "
                         f"({data.n_skipped} skipped: do they have relevant and irrelevant passages?)")
    return data


def _build_groups(examples: Sequence[QAExample], groups: dict[tuple[str, int], list[int]], tokenizer: Any,
                  cfg: TrainConfig, data_cfg: DataConfig, seed: int, n_ctx: int | None) -> TrainData:
    """Items of each ``(setting, n_passages)`` group of question indices, sorted by question."""
    from neurorit_lens.data.build import build_prompts
    from neurorit_lens.data.prompts import answer_continuation

    items: list[tuple[int, TrainItem]] = []
    counts: Counter[str] = Counter()
    n_skipped = n_truncated = n_dropped = 0
    for k, ((setting, n_passages), qs) in enumerate(sorted(groups.items())):
        if setting == "irrelevant" and cfg.irrelevant_target == "drop":
            n_dropped += len(qs)  # skipped after k is counted, so the other groups' seeds stay the same
            continue
        ps = build_prompts([examples[q] for q in qs], setting, tokenizer, data_cfg, n_ctx=n_ctx,
                           n_passages=n_passages, seed=seed * 1000 + k)
        n_skipped += ps.n_skipped
        n_truncated += ps.n_truncated
        abstain = setting == "irrelevant" and cfg.irrelevant_target == "abstain"
        q_of_id: dict[str, list[int]] = {}
        for q in qs:
            q_of_id.setdefault(examples[q].id, []).append(q)
        for inst_id, prompt, ans in zip(ps.ids, ps.prompts, ps.continuations, strict=True):
            q = q_of_id[inst_id].pop(0) if q_of_id.get(inst_id) else len(examples)
            if abstain:
                ans = answer_continuation(cfg.abstain_answer, ps.template)
            items.append((q, TrainItem(prompt=prompt, answer=ans, id=inst_id, setting=setting)))
            counts[setting] += 1
    items.sort(key=lambda t: (t[0], t[1].setting))
    return TrainData([it for _, it in items], len(examples), n_skipped, n_truncated, dict(sorted(counts.items())),
                     n_dropped)


def split_for_training(
    examples: Sequence[QAExample], data_cfg: DataConfig, min_train: int = 1, min_dev: int = 1
) -> tuple[list[QAExample], list[QAExample]]:
    """Train and dev questions (split by question, never by instance).

    Uses the data module's ``split_examples`` with ``data_cfg.split_fractions`` and
    ``data_cfg.seed``; ``data_cfg.limit`` caps the number of training questions.

    Raises:
        ValueError: when the split leaves fewer than ``min_train`` training or
            ``min_dev`` dev questions.
    """
    from neurorit_lens.data import split_examples

    try:
        splits = split_examples(list(examples), data_cfg.split_fractions, data_cfg.seed)
    except ValueError as e:
        raise ValueError(f"not enough examples for training: {e}") from e
    train, dev = list(splits["train"]), list(splits["dev"])
    if data_cfg.limit is not None:
        train = train[: data_cfg.limit]
    if len(train) < min_train or len(dev) < min_dev:
        raise ValueError(
            f"not enough examples for training: {len(examples)} questions split "
            f"{tuple(data_cfg.split_fractions)} gives {len(train)} train and {len(dev)} dev "
            f"(need at least {min_train} and {min_dev}); use more data or change --split-fractions")
    return train, dev
