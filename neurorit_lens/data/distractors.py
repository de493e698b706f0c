"""Irrelevant passages for data that only has gold passages (NQ-open oracle).

A question's irrelevant passages are drawn from the OTHER questions' relevant passages,
never one that contains any of this question's gold answers (normalised substring test,
:func:`~neurorit_lens.data.text.contains_answer`, conservative on purpose) and never one
already attached to the question. Two ways to choose them:

* ``random``: uniformly at random (seeded per question);
* ``bm25``: "hard" distractors, the passages that score highest for the question under
  Okapi BM25 (``k1 = 1.5``, ``b = 0.75``, idf ``log(1 + (N - df + 0.5) / (df + 0.5))``,
  each distinct query term counted once), over title + text; ties and any remaining
  slots (when fewer than ``k`` passages share a term with the question) are filled in a
  seeded random order.

:class:`BM25` is a small inverted-index implementation (no dependency); its scores are
tested against the formula evaluated naively.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import get_args

from tqdm.auto import tqdm

from neurorit_lens.config import DistractorMethod
from neurorit_lens.data.schema import Label, Passage, QAExample
from neurorit_lens.data.text import contains_normalized, normalize_answer, tokenize_words

log = logging.getLogger(__name__)

DISTRACTOR_METHODS = get_args(DistractorMethod)


class BM25:
    """Okapi BM25 over pre-tokenised documents.

    Args:
        docs: one token list per document.
        k1: term-frequency saturation.
        b: length normalisation.

    >>> bm = BM25([["red", "fox"], ["blue", "fox", "fox"], ["green"]])
    >>> [round(s, 3) for s in bm.scores(["fox"])]
    [0.47, 0.578, 0.0]
    """

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75):
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = k1, b
        self.n_docs = len(docs)
        self.doc_len = [len(d) for d in docs]
        self.avgdl = (sum(self.doc_len) / self.n_docs) if self.n_docs else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, d in enumerate(docs):
            for term, tf in Counter(d).items():
                self.postings[term].append((i, tf))

    def idf(self, term: str) -> float:
        df = len(self.postings.get(term, ()))
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    def scores(self, query: Sequence[str]) -> list[float]:
        """BM25 score of every document for ``query`` (distinct terms, each counted once)."""
        out = [0.0] * self.n_docs
        if self.n_docs == 0 or self.avgdl == 0:
            return out
        k1, b, avgdl = self.k1, self.b, self.avgdl
        for term in dict.fromkeys(query):
            plist = self.postings.get(term)
            if not plist:
                continue
            idf = self.idf(term)
            for i, tf in plist:
                out[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * self.doc_len[i] / avgdl))
        return out


def _pool(examples: Sequence[QAExample]):
    """Distinct relevant passages across examples: (passage, normalised text, owner indices)."""
    index: dict[tuple[str, str], int] = {}
    passages: list[Passage] = []
    owners: list[set[int]] = []
    for i, ex in enumerate(examples):
        for p in ex.relevant:
            key = (p.title, p.text)
            j = index.get(key)
            if j is None:
                index[key] = j = len(passages)
                passages.append(p)
                owners.append(set())
            owners[j].add(i)
    norm = [normalize_answer(p.title + " " + p.text) for p in passages]
    # the title is included: a title naming the answer counts as containing it
    return passages, norm, owners


def add_distractors(
    examples: Sequence[QAExample],
    k: int = 10,
    method: str = "random",
    seed: int = 0,
    progress: bool = True,
) -> list[QAExample]:
    """Give every example at least ``k`` irrelevant passages, mined from the other examples' gold passages.

    Examples that already have ``k`` irrelevant passages are returned unchanged; the
    others get ``k - len(example.irrelevant)`` new passages (label ``irrelevant``,
    ``has_answer=False``, ``kind="distractor:<method>"``). The result is deterministic
    given the same examples (same order) and ``seed``. If the pool runs out, an example gets fewer
    (logged).

    Args:
        examples: the examples; their relevant passages form the pool.
        k: irrelevant passages wanted per example.
        method: ``"random"`` or ``"bm25"`` (hard distractors).
        seed: random seed.
        progress: show a progress bar.

    Returns:
        New examples (the inputs are not modified).
    """
    if method not in DISTRACTOR_METHODS:
        raise ValueError(f"unknown distractor method {method!r}; valid: {', '.join(DISTRACTOR_METHODS)}")
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    examples = list(examples)
    pool, norm, owners = _pool(examples)
    n = len(pool)
    bm25 = BM25([tokenize_words(p.title + " " + p.text) for p in pool]) if method == "bm25" and n else None
    out: list[QAExample] = []
    short = 0
    for i, ex in enumerate(tqdm(examples, desc=f"distractors ({method})", disable=not progress or len(examples) < 200)):
        need = k - len(ex.irrelevant)
        if need <= 0 or n == 0:
            out.append(ex)
            short += need > 0
            continue
        answers = [a for a in (normalize_answer(x) for x in ex.answers) if a]
        own = {(p.title, p.text) for p in ex.passages}

        def ok(j: int, i: int = i, own: set = own, answers: list = answers) -> bool:
            if i in owners[j] or (pool[j].title, pool[j].text) in own:
                return False
            return not contains_normalized(norm[j], answers)

        ranked = _bm25_ranking(bm25, ex.question) if bm25 is not None else []
        chosen = _choose(n, need, ok, ranked, random.Random(f"{seed}:{ex.id}:{method}"))
        short += len(chosen) < need
        new = [Passage(pool[j].text, title=pool[j].title, label=Label.IRRELEVANT, has_answer=False,
                       kind=f"distractor:{method}") for j in chosen]
        out.append(dataclasses.replace(ex, passages=list(ex.passages) + new, meta=dict(ex.meta)))
    if short:
        log.warning("add_distractors: %d of %d examples got fewer than %d irrelevant passages (pool too small)",
                    short, len(examples), k)
    return out


def _bm25_ranking(bm25: BM25, question: str) -> list[int]:
    """Pool indices with a positive BM25 score for ``question``, best first (ties: lower index)."""
    sc = bm25.scores(tokenize_words(question))
    return sorted((j for j in range(len(sc)) if sc[j] > 0), key=lambda j: (-sc[j], j))


def _choose(n: int, need: int, ok: Callable[[int], bool], ranked: Sequence[int], rng: random.Random) -> list[int]:
    """Up to ``need`` acceptable pool indices: the ranked ones first (BM25), then a random fill
    by rejection sampling, then a full permutation if the pool is tight."""
    chosen: list[int] = []
    taken: set[int] = set()
    for j in ranked:
        if len(chosen) == need:
            break
        taken.add(j)
        if ok(j):
            chosen.append(j)
    tries = 0
    while len(chosen) < need and tries < 20 * need:
        j = rng.randrange(n)
        tries += 1
        if j in taken:
            continue
        taken.add(j)
        if ok(j):
            chosen.append(j)
    for j in (rng.sample(range(n), n) if len(chosen) < need else ()):
        if len(chosen) == need:
            break
        if j not in taken:
            taken.add(j)
            if ok(j):
                chosen.append(j)
    return chosen
