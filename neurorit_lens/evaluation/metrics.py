"""Answer metrics for open-domain QA (intervals: :mod:`neurorit_lens.evaluation.statistics`).

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
