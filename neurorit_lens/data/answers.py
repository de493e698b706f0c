"""Answer metrics for open-domain QA (intervals: :mod:`neurorit_lens.statistics`).

They score answers and text only, so every stage that scores an answer (mining, ablation,
evaluation) uses them from here, below the model.

- :func:`~neurorit_lens.data.text.normalize_answer`: the SQuAD v1.1 normalisation (lower
  case, drop punctuation, drop the articles a/an/the, collapse white space).
- :func:`exact_match`: normalised prediction equals a normalised gold answer (max over
  aliases), as in the official SQuAD v1.1 script.
- :func:`f1`: token-level F1 between normalised prediction and gold, max over aliases.
- :func:`accuracy`: InstructRAG's "exact presence": some normalised gold answer is
  contained in the normalised prediction. This is the headline metric of Neuro-RIT,
  robust to a chatty model that wraps the answer in a sentence. Like InstructRAG's
  ``exact_presence`` it is a plain substring test on the normalised strings (so "4" is
  found in "1945"); one deliberate difference: a gold answer that normalises to the
  empty string (e.g. "The") never counts, where a plain ``"" in s`` would always be true.
- :func:`extract_answer`: the part of an output that is scored (so that copying a
  passage does not count as answering): the first non-empty line, then its first
  sentence, then at most ``max(words of a gold alias) + EXTRA_WORDS`` whitespace words.
  Evaluation scores accuracy, EM and F1 on this extract; accuracy on the whole output is
  kept as ``accuracy_raw``.
- :func:`copies_passage`: whether an output reproduces a span of ``COPY_SPAN`` (8) or
  more consecutive SQuAD-normalised tokens of a passage (the copy rate).

>>> normalize_answer("The  Eiffel Tower!")
'eiffel tower'
>>> accuracy("It is the Eiffel Tower, in Paris.", ["Eiffel Tower"])
1.0
>>> f1("the big red ball", ["red ball"])
0.8
>>> extract_answer("Tim Pawlenty. He was the governor.", ["Tim Pawlenty"])
'Tim Pawlenty.'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from neurorit_lens.data.text import normalize_answer


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


#: Words an extracted answer may have beyond the longest gold alias.
EXTRA_WORDS = 5
#: Consecutive normalised tokens of a passage that make an output a copy.
COPY_SPAN = 8
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_INITIALS = re.compile(r"^\(?(?:[A-Za-z]\.)+$")  # "J.", "U.S.": not a sentence end
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "no.", "mt.", "ft."})


def first_sentence(text: str) -> str:
    """The first sentence of ``text``: up to and including the first ``.``, ``!`` or ``?``
    followed by white space or the end, where a period closing an initial or initialism
    (``J.``, ``U.S.``) or a common abbreviation (``Mr.``, ``St.``) does not end a sentence.

    >>> first_sentence("J. K. Rowling wrote it. Then more.")
    'J. K. Rowling wrote it.'
    """
    for m in _SENTENCE_END.finditer(text):
        word = text[: m.end()].split()[-1]
        if m.group() == "." and (_INITIALS.match(word) or word.lower() in _ABBREVIATIONS):
            continue
        return text[: m.end()]
    return text


def extract_answer(output: str, answers: Sequence[str], extra_words: int = EXTRA_WORDS) -> str:
    """The scored part of a generated ``output``.

    1. the first line that is not blank (leading blank lines skipped), stripped;
    2. its first sentence (:func:`first_sentence`);
    3. at most ``L + extra_words`` whitespace-separated words, ``L`` the word count of the
       longest gold alias.

    A copied passage thus keeps only its first few words: ``"Document [2] Tim Pawlenty was
    the Governor of Minnesota during ..."`` for the gold ``"Tim Pawlenty"`` (2 words) becomes
    ``"Document [2] Tim Pawlenty was the Governor"`` (7 words).
    """
    if not isinstance(output, str):
        raise ValueError(f"output must be a string, got {type(output).__name__}")
    if extra_words < 0:
        raise ValueError(f"extra_words must be >= 0, got {extra_words}")
    limit = max(len(a.split()) for a in _check_answers(answers)) + extra_words
    line = next((ln.strip() for ln in output.splitlines() if ln.strip()), "")
    return " ".join(first_sentence(line).split()[:limit])


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def copies_passage(output: str, passages: Iterable[str], span: int = COPY_SPAN) -> bool:
    """Whether ``output`` contains ``span`` consecutive tokens that also occur consecutively
    in one of ``passages`` (both SQuAD-normalised, :func:`normalize_answer`, then split on
    white space).

    >>> doc = "The capital of Zarnia has been Velmor since 1801."
    >>> copies_passage("It says: the capital of Zarnia has been Velmor since 1801", [doc])
    True
    >>> copies_passage("The capital of Zarnia has been Velmor", [doc])  # 7 tokens ("the" dropped)
    False
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    out = _ngrams(normalize_answer(output).split(), span)
    if not out:
        return False
    return any(out & _ngrams(normalize_answer(p).split(), span) for p in passages)
