"""Fresh questions: examples that no earlier run has seen, for a confirmatory test.

A question is *seen* when its normalised text (the key :mod:`neurorit_lens.data.splits`
groups by) is the text of any earlier question, or, for the generated embedded set, when its
subject is an earlier question's subject: a new draw of the fictional world can reuse a
name, and a name a model was trained or tested on is not fresh even if its facts differ.

>>> from neurorit_lens.data import embedded_examples
>>> old, new = embedded_examples(1000, 0), embedded_examples(1000, 7)
>>> kept = unseen(new, old)
>>> len(kept) < len(new) and not {question_key(e) for e in kept} & {question_key(e) for e in old}
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from neurorit_lens.data.schema import QAExample
from neurorit_lens.data.text import normalize_question

__all__ = ["draw", "fresh_draw", "overlap", "question_key", "split_fresh", "subject_key", "unseen"]


def question_key(ex: QAExample) -> str:
    """The normalised question text."""
    return normalize_question(ex.question)


def subject_key(ex: QAExample) -> str | None:
    """The generated subject's name (embedded set), else ``None``."""
    subject = (ex.meta or {}).get("subject")
    return None if subject is None else str(subject).strip().lower()


def overlap(candidates: Iterable[QAExample], seen: Iterable[QAExample]) -> list[QAExample]:
    """The candidates that share a question text or a generated subject with ``seen``."""
    seen = list(seen)
    texts = {question_key(e) for e in seen}
    subjects = {s for s in map(subject_key, seen) if s is not None}
    return [e for e in candidates if question_key(e) in texts or subject_key(e) in subjects]


def unseen(candidates: Sequence[QAExample], seen: Iterable[QAExample]) -> list[QAExample]:
    """``candidates`` without those that :func:`overlap` ``seen``, in their order."""
    hit = {id(e) for e in overlap(candidates, seen)}
    return [e for e in candidates if id(e) not in hit]


def draw(spec: str) -> list[QAExample]:
    """The questions of an embedded draw ``embedded:N[:SEED]``, as :func:`~neurorit_lens.data.load_examples` reads."""
    from neurorit_lens.data.loaders import load_examples

    if not spec.startswith("embedded"):
        raise ValueError(f"a seen draw must be embedded:N[:SEED], got {spec!r}")
    return load_examples(spec).examples


def fresh_draw(candidates: Sequence[QAExample], seen_draws: Iterable[str], limit: int,
               start: int = 0) -> tuple[list[QAExample], list[QAExample]]:
    """``(fresh, seen)``: the candidates :func:`unseen` keeps against every question of ``seen_draws``
    (``embedded:N[:SEED]`` specs), ``[start:start + limit]``, and those seen questions."""
    seen = [e for s in seen_draws for e in draw(s)]
    return unseen(candidates, seen)[start: start + limit], seen


def split_fresh(splits: Mapping[str, Sequence[QAExample]], split: str, start: int,
                limit: int) -> tuple[list[QAExample], list[QAExample]]:
    """``(fresh, seen)`` of a data set split by question: ``split[start:start + limit]``, and every
    question of the other splits plus ``split[:start]`` (those earlier runs may have trained on or scored)."""
    fresh = list(splits[split][start: start + limit])
    seen = [e for s, exs in splits.items() if s != split for e in exs] + list(splits[split][:start])
    return fresh, seen
