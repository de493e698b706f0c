"""Train/dev/test splits by question, with no question text in two splits.

Examples are grouped by normalised question text (SQuAD normalisation), so the same
question asked twice (duplicates, paraphrase-free copies) always lands in one split. The
groups are shuffled with ``seed`` and cut by ``fractions`` (dev and test sizes are
``round(f * n_groups)``, train takes the rest); each split keeps the input order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import get_args

from neurorit_lens.config import DataConfig, Split
from neurorit_lens.data.loaders import load_examples
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


def load_split(cfg: DataConfig) -> list[QAExample]:
    """Load ``cfg.data``, split it by question, return ``cfg.split`` (or ``all``), first ``cfg.limit``.

    Args:
        cfg: the data config (``data, format, strict, split, split_fractions, seed, limit``).

    Returns:
        The examples of the requested split.
    """
    if not isinstance(cfg, DataConfig):
        raise ValueError(f"load_split needs a DataConfig, got {type(cfg).__name__}")
    extra = {}
    for name in ("distractors", "n_distractors"):
        if hasattr(cfg, name):
            extra[name] = getattr(cfg, name)
    res = load_examples(cfg.data, format=cfg.format, strict=cfg.strict, seed=cfg.seed, **extra)
    exs = res.examples
    if cfg.split != "all":
        exs = split_examples(exs, cfg.split_fractions, cfg.seed)[cfg.split]
    return exs[: cfg.limit] if cfg.limit is not None else exs
