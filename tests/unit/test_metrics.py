"""EM/F1 against the official SQuAD v1.1 metric, accuracy against InstructRAG."""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurorit_lens.data.answers import accuracy, exact_match, f1
from neurorit_lens.data.text import normalize_answer
from tests.helpers import unchecked


# ---------------------------------------------------------------------------------------
# REFERENCE: the functions of the official SQuAD v1.1 evaluation script
# (evaluate-v1.1.py, Rajpurkar et al.), reproduced here as an independent peer
# implementation. Only used by these tests.
def ref_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def ref_f1_score(prediction, ground_truth):
    prediction_tokens = ref_normalize_answer(prediction).split()
    ground_truth_tokens = ref_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def ref_exact_match_score(prediction, ground_truth):
    return ref_normalize_answer(prediction) == ref_normalize_answer(ground_truth)


def ref_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


# REFERENCE: InstructRAG's exact presence (accuracy), the plain-substring test.
def ref_exact_presence(short_answers, context):
    n_short_answers = [ref_normalize_answer(sa) for sa in short_answers]
    n_context = ref_normalize_answer(context)
    for ans in n_short_answers:
        if ans in n_context:
            return True
    return False
# ---------------------------------------------------------------------------------------

_WORDS = ["the", "a", "an", "The", "Paris", "paris", "Eiffel", "tower", "1945", "4", "Mr.", "U.S.",
          "an-apple", "theatre", "ANSWER", "answer", ",", "!", "  ", "\n", "élan", "São", "x", "Ünïcode"]
text = st.one_of(
    st.lists(st.sampled_from(_WORDS), max_size=8).map(" ".join),
    st.text(max_size=25),
)
answers = st.lists(text.filter(lambda s: s.strip() != ""), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(pred=text, golds=answers)
def test_em_f1_match_official_squad(pred, golds):
    assert normalize_answer(pred) == ref_normalize_answer(pred)
    assert exact_match(pred, golds) == float(ref_metric_max_over_ground_truths(ref_exact_match_score, pred, golds))
    assert f1(pred, golds) == pytest.approx(ref_metric_max_over_ground_truths(ref_f1_score, pred, golds))


@settings(max_examples=300, deadline=None)
@given(pred=text, golds=answers)
def test_accuracy_matches_instructrag_exact_presence(pred, golds):
    expected = ref_exact_presence(golds, pred)
    if all(ref_normalize_answer(g) == "" for g in golds):
        expected = False  # documented difference: an empty normalised gold never counts
    elif any(ref_normalize_answer(g) == "" for g in golds):
        expected = ref_exact_presence([g for g in golds if ref_normalize_answer(g)], pred)
    assert accuracy(pred, golds) == float(expected)


def test_metric_examples():
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("It is the Eiffel Tower", ["Eiffel Tower"]) == 0.0
    assert accuracy("It is the Eiffel Tower", ["Eiffel Tower"]) == 1.0
    assert accuracy("Rome", ["Paris", "Rome"]) == 1.0
    assert accuracy("nothing", ["Paris"]) == 0.0
    assert accuracy("anything", ["The"]) == 0.0
    assert f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert f1("x", "x") == 1.0  # a single string counts as one answer
    with pytest.raises(ValueError, match="at least one"):
        f1("x", [])
    with pytest.raises(ValueError, match="string"):
        unchecked(normalize_answer)(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- extraction and copy rate

from neurorit_lens.data.answers import copies_passage, extract_answer, first_sentence  # noqa: E402


@pytest.mark.parametrize("output,gold,want", [
    # a copied passage keeps len(gold) + 5 words of its first sentence: the answer is in it
    ("Document [2] Tim Pawlenty was the Governor of Minnesota during the 2000s.", ["Tim Pawlenty"],
     "Document [2] Tim Pawlenty was the Governor"),
    # ... but an answer further into the copy is cut away
    ("Document [1] (Title: Minnesota) Minnesota is a state whose governor was Tim Pawlenty.", ["Tim Pawlenty"],
     "Document [1] (Title: Minnesota) Minnesota is a"),
    (" Quelmet\nQuestion: What is the capital of Zarnia?\nAnswer: Velmor", ["Quelmet"], "Quelmet"),
    ("\n\n  Quelmet.  More text.", ["Quelmet"], "Quelmet."),
    ("J. K. Rowling wrote it. Then more.", ["J. K. Rowling"], "J. K. Rowling wrote it."),
    ("The U.S. Army did. Yes.", ["U.S. Army"], "The U.S. Army did."),
    ("It is 3.5 metres. Yes!", ["3.5 metres"], "It is 3.5 metres."),
    ("", ["x"], ""),
    ("one two three four five six seven eight", ["a b", "x"], "one two three four five six seven"),
])
def test_extract_answer_hand_cases(output, gold, want):
    assert extract_answer(output, gold) == want


def test_extracted_accuracy_is_not_fooled_by_a_long_copy():
    out = "Document [1] (Title: Minnesota) Minnesota is a state whose governor was Tim Pawlenty."
    assert accuracy(out, ["Tim Pawlenty"]) == 1.0  # raw containment: fooled
    assert accuracy(extract_answer(out, ["Tim Pawlenty"]), ["Tim Pawlenty"]) == 0.0
    assert first_sentence("No end") == "No end" and first_sentence("Mr. Smith left. Ok") == "Mr. Smith left."
    with pytest.raises(ValueError):
        extract_answer("x", [])


def ref_copies(output, passages, span=8):
    """Brute force: compare every window of the output with every window of every passage."""
    o = ref_normalize_answer(output).split()
    for p in passages:
        t = ref_normalize_answer(p).split()
        for i in range(len(o) - span + 1):
            for j in range(len(t) - span + 1):
                if all(o[i + k] == t[j + k] for k in range(span)):
                    return True
    return False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "The", "x.", "Y"]), max_size=14),
       st.lists(st.lists(st.sampled_from(["a", "b", "c", "the", "x", "y!"]), max_size=14), max_size=3),
       st.integers(1, 9))
def test_copies_passage_matches_brute_force(out, passages, span):
    o, ps = " ".join(out), [" ".join(p) for p in passages]
    assert copies_passage(o, ps, span) == ref_copies(o, ps, span)


def test_copies_passage_hand_cases():
    doc = "Tim Pawlenty was the Governor of Minnesota during the 2000s, serving two terms."
    assert copies_passage("Document [2] Tim Pawlenty was the Governor of Minnesota during the 2000s", [doc])
    assert not copies_passage("Tim Pawlenty was the Governor of Minnesota during", [doc])  # 7 ("the" dropped)
    assert not copies_passage("Tim Pawlenty", [doc])
    assert not copies_passage("", [doc]) and not copies_passage(doc, [])
