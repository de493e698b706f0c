"""Train/dev/test splits by question, with no question text in two splits.

Examples are grouped by normalised question text (SQuAD normalisation), so the same
question asked twice (duplicates, paraphrase-free copies) always lands in one split. The
groups are shuffled with ``seed`` and cut by ``fractions`` (dev and test sizes are
``round(f * n_groups)``, train takes the rest); each split keeps the input order.

Distractors for gold-only data (NQ-open) are mined *within* each split
(:func:`add_distractors_within_splits`): a training question's irrelevant passages come
from other training questions' gold passages, a test question's from other test
questions', so no test gold passage reaches a training prompt. :func:`load_splits` and
:func:`load_split` load that way (``split="all"`` returns every example with its
within-split distractors, so a later :func:`split_examples` with the same fractions and
seed stays leak-free).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import get_args

from neurorit_lens.config import DataConfig, Split
from neurorit_lens.data.distractors import add_distractors
from neurorit_lens.data.loaders import LoadResult, load_examples
from neurorit_lens.data.schema import QAExample
from neurorit_lens.data.text import normalize_question

SPLITS = get_args(Split)


def split_examples(
    examples: Sequence[QAExample],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, list[QAExample]]:
    """Split by question into ``{"train", "dev", "test"}``, deterministically.

    Args:
        examples: the examples.
        fractions: (train, dev, test), non-negative, summing to 1.
        seed: shuffle seed.

    Returns:
        A dict of three lists (input order kept within each).

    Raises:
        ValueError: bad fractions, or too few distinct questions for a split with a
            positive fraction to be non-empty.
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(normalize_question(ex.question), []).append(i)
    keys = sorted(groups)
    random.Random(f"split:{seed}").shuffle(keys)
    g = len(keys)
    n_dev, n_test = round(fr[1] * g), round(fr[2] * g)
    n_train = g - n_dev - n_test
    if n_train < 0:  # rounding both up past g
        n_test += n_train
        n_train = 0
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for name, f in zip(SPLITS, fr, strict=True):
        if f > 0 and sizes[name] == 0:
            raise ValueError(f"too few distinct questions ({g}) for fractions {fr}: split {name!r} would be empty")
    assign: dict[int, str] = {}
    bounds = (("train", 0, n_train), ("dev", n_train, n_train + n_dev), ("test", n_train + n_dev, g))
    for name, lo, hi in bounds:
        for key in keys[lo:hi]:
            for i in groups[key]:
                assign[i] = name
    out: dict[str, list[QAExample]] = {s: [] for s in SPLITS}
    for i, ex in enumerate(examples):
        out[assign[i]].append(ex)
    return out


def add_distractors_within_splits(
    examples: Sequence[QAExample],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    method: str = "random",
    k: int = 10,
) -> tuple[list[QAExample], int]:
    """Mine ``k`` irrelevant passages for every example that has none, from its own split only.

    The examples are split as :func:`split_examples` splits them; each split's gold passages
    form that split's pool (:func:`~neurorit_lens.data.distractors.add_distractors`).

    Returns:
        ``(examples in input order, number of examples that got distractors)``.
    """
    examples = list(examples)
    need = [i for i, ex in enumerate(examples) if not ex.irrelevant]
    if not need or k == 0:
        return examples, 0
    where = {id(ex): name for name, part in split_examples(examples, fractions, seed).items() for ex in part}
    parts = {name: [i for i, ex in enumerate(examples) if where[id(ex)] == name] for name in SPLITS}
    for idx in parts.values():
        if not any(i in need for i in idx):
            continue
        mined = add_distractors([examples[i] for i in idx], k=k, method=method, seed=seed)
        for i, ex in zip(idx, mined, strict=True):
            if not examples[i].irrelevant:
                examples[i] = ex
    return examples, len(need)


def _load_mined(cfg: DataConfig) -> LoadResult:
    """``cfg.data`` loaded, with distractors mined within splits for gold-only DPR data."""
    if not isinstance(cfg, DataConfig):
        raise ValueError(f"loading splits needs a DataConfig, got {type(cfg).__name__}")
    res = load_examples(cfg.data, format=cfg.format, strict=cfg.strict, seed=cfg.seed, distractors="none")
    if res.format != "dpr" or cfg.distractors == "none":
        return res
    exs, n_with = add_distractors_within_splits(res.examples, cfg.split_fractions, cfg.seed, cfg.distractors,
                                                cfg.n_distractors)
    return dataclasses.replace(res, examples=exs, n_with_distractors=n_with)


def load_splits(cfg: DataConfig) -> tuple[LoadResult, dict[str, list[QAExample]]]:
    """Load ``cfg.data``, mine distractors within splits, and split it by question.

    Returns:
        ``(the load result with every example, {"train", "dev", "test"} examples)``.
    """
    res = _load_mined(cfg)
    return res, split_examples(res.examples, cfg.split_fractions, cfg.seed)


def load_split(cfg: DataConfig) -> list[QAExample]:
    """Load ``cfg.data``, split it by question, return ``cfg.split`` (or ``all``), first ``cfg.limit``.

    Distractors are mined within each split (:func:`add_distractors_within_splits`), also
    for ``all``.

    Args:
        cfg: the data config (``data, format, strict, split, split_fractions, seed, limit,
            distractors, n_distractors``).

    Returns:
        The examples of the requested split.
    """
    exs = _load_mined(cfg).examples
    if cfg.split != "all":
        exs = split_examples(exs, cfg.split_fractions, cfg.seed)[cfg.split]
    return exs[: cfg.limit] if cfg.limit is not None else exs
