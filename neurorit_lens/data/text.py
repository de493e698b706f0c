"""Text normalisation shared by the loaders, the distractor miner and the answer metrics (``answers``).

``normalize_answer`` is the SQuAD v1.1 normalisation (lower-case, drop punctuation, drop
the articles a/an/the, collapse whitespace). ``contains_answer`` is the "exact presence"
test InstructRAG uses for accuracy: a normalised gold answer is a substring of the
normalised text (one-character answers, e.g. "S", must be a whole word). The data stage
uses it (conservatively, as a plain substring test) to label passages and to keep
answer-bearing passages out of the irrelevant pool.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_PUNCT = set(string.punctuation)
SHORT_ANSWER_CHARS = 2
_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)
_WORD = re.compile(r"\w+", flags=re.UNICODE)

# A small English stop-word list for BM25 (kept tiny on purpose: questions are short).
STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been being who whom whose "
    "what which when where why how did does do has have had it its this that these those as into "
    "than then there their they he she his her i you we us our your got get gets many much".split()
)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower, remove punctuation and articles, collapse whitespace.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    if not isinstance(s, str):
        raise ValueError(f"answer must be a string, got {type(s).__name__}")
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def normalize_question(s: str) -> str:
    """Key used to detect the same question twice (for leak-free splits)."""
    return normalize_answer(s)


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """True if any normalised answer is a substring of the normalised ``text``.

    Empty answers (after normalisation) never match. Answers shorter than
    ``SHORT_ANSWER_CHARS`` (2) characters after normalisation must match whole words
    (otherwise the answer "S" would be "in" every text).

    >>> contains_answer("It was founded by Ilsa Varnoth in 1801.", ["ilsa varnoth"])
    True
    """
    return contains_normalized(normalize_answer(text), [normalize_answer(a) for a in answers])


def contains_normalized(norm_text: str, norm_answers: Iterable[str]) -> bool:
    """:func:`contains_answer` on already-normalised text and answers (for hot loops)."""
    padded = f" {norm_text} "
    for na in norm_answers:
        if not na:
            continue
        if len(na) < SHORT_ANSWER_CHARS:
            if f" {na} " in padded:
                return True
        elif na in norm_text:
            return True
    return False


def tokenize_words(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lower-cased word tokens without stop words (the BM25 analyser)."""
    return [w for w in _WORD.findall(text.lower()) if w not in stopwords]
