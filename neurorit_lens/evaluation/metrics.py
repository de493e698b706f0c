"""Answer metrics for open-domain QA and a bootstrap interval for their mean.

- :func:`normalize_answer`: the SQuAD v1.1 normalisation (lower case, drop punctuation,
  drop the articles a/an/the, collapse white space).
- :func:`exact_match`: normalised prediction equals a normalised gold answer (max over
  aliases), as in the official SQuAD v1.1 script.
- :func:`f1`: token-level F1 between normalised prediction and gold, max over aliases.
- :func:`accuracy`: InstructRAG's "exact presence": some normalised gold answer is
  contained in the normalised prediction. This is the headline metric of Neuro-RIT,
  robust to a chatty model that wraps the answer in a sentence. Like InstructRAG's
  ``exact_presence`` it is a plain substring test on the normalised strings (so "4" is
  found in "1945"); one deliberate difference: a gold answer that normalises to the
  empty string (e.g. "The") never counts, where a plain ``"" in s`` would always be true.
- :func:`bootstrap_ci`: percentile bootstrap interval of the mean, vectorised.

>>> normalize_answer("The  Eiffel Tower!")
'eiffel tower'
>>> accuracy("It is the Eiffel Tower, in Paris.", ["Eiffel Tower"])
1.0
>>> f1("the big red ball", ["red ball"])
0.8
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from neurorit_lens.data.text import normalize_answer as _normalize


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    if not isinstance(s, str):
        raise ValueError(f"answer must be a string, got {type(s).__name__}")
    return _normalize(s)


def _check_answers(answers: Sequence[str]) -> Sequence[str]:
    if isinstance(answers, str):
        return [answers]
    if not answers:
        raise ValueError("at least one gold answer is needed")
    return answers


def exact_match(pred: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals some normalised gold answer, else 0.0."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(a) for a in _check_answers(answers)))


def _f1_single(pred: str, gold: str) -> float:
    p_toks = normalize_answer(pred).split()
    g_toks = normalize_answer(gold).split()
    common = Counter(p_toks) & Counter(g_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(p_toks)
    recall = same / len(g_toks)
    return 2 * precision * recall / (precision + recall)


def f1(pred: str, answers: Sequence[str]) -> float:
    """Token-level F1 (SQuAD v1.1), max over gold aliases."""
    return max(_f1_single(pred, a) for a in _check_answers(answers))


def accuracy(pred: str, answers: Sequence[str]) -> float:
    """1.0 if some (non-empty) normalised gold answer is a substring of the normalised prediction."""
    p = normalize_answer(pred)
    for a in _check_answers(answers):
        g = normalize_answer(a)
        if g and g in p:
            return 1.0
    return 0.0


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` interval of the mean of ``values``.

    Draws ``n`` resamples of size ``len(values)`` with replacement in one vectorised call
    (``numpy.random.default_rng(seed)``), takes each resample's mean, and returns the
    ``alpha/2`` and ``1 - alpha/2`` quantiles.

    Args:
        values: per-example scores (e.g. 0/1 accuracies).
        n: number of bootstrap resamples; 0 gives the degenerate interval (mean, mean).
        seed: RNG seed.
        alpha: 1 - coverage (0.05 for a 95% interval).

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` for empty ``values``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if v.size == 0:
        return (float("nan"), float("nan"))
    if n == 0:
        m = float(v.mean())
        return (m, m)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n, v.size))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))
