"""Property-based tests of every loader.

Random and malformed records (wrong types, missing fields, empty strings, huge passages,
non-UTF-8 bytes, malformed JSON, duplicated ids, answers absent from all passages) must
give either valid examples, with every record accounted for (kept + skipped = records),
or a ``ValueError`` that names the file (and the line, for record-level problems): never
another exception, never a silent drop. Prompts built from whatever loads must fit the
token budget without crashing in tokenisation.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurorit_lens.data import (
    Label,
    build_instances,
    contains_answer,
    embedded_examples,
    load_examples,
    normalize_answer,
    render_prompts,
)
from neurorit_lens.data.prompts import count_tokens
from neurorit_lens.models.tiny import tiny_tokenizer

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ strategies

junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
huge = st.integers(2_000, 30_000).map(lambda n: ("lorem ipsum dolor " * (n // 18 + 1))[:n])
txt = st.one_of(st.just(""), st.just("   "), st.text(max_size=25),
                st.sampled_from(["Velmor", "the answer is Velmor", "Tampa, Florida", "1812", "S"]), huge)
answers = st.one_of(txt, st.lists(txt, max_size=3), st.lists(st.lists(txt, max_size=3), max_size=2),
                    st.integers(0, 3000))
passage_items = st.lists(st.one_of(txt, st.fixed_dictionaries({"title": txt, "text": txt}), junk), max_size=4)
good_ids = st.one_of(st.integers(0, 2), st.sampled_from(["a", "b"]))  # small pools -> duplicates
ids = st.one_of(good_ids, st.just(""), junk)


def maybe(s):
    """Usually ``s``, sometimes a value of the wrong type."""
    return st.one_of(s, s, s, junk)


valid_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                     max_size=40).filter(str.strip)
valid_answer = st.sampled_from(["Velmor", "Quelmet 1812", "Tampa, Florida", "S", "Ilsa Varnoth"])

rgb_random = st.fixed_dictionaries({}, optional={
    "id": ids, "query": maybe(txt), "answer": maybe(answers), "positive": maybe(passage_items),
    "negative": maybe(passage_items), "positive_wrong": maybe(passage_items), "fakeanswer": junk})
rgb_valid = st.fixed_dictionaries({
    "id": good_ids, "query": valid_text, "answer": valid_answer,
    "positive": st.lists(st.one_of(valid_text, valid_answer.map(lambda a: f"It is {a}.")), min_size=1, max_size=3),
    "negative": st.lists(valid_text, max_size=4), "positive_wrong": st.lists(valid_text, max_size=2)})

nb_passages = st.lists(st.one_of(st.fixed_dictionaries({"id": st.integers(), "title": txt, "text": txt}), txt, junk),
                       max_size=3)
nb_random = st.fixed_dictionaries({}, optional={
    "id": ids, "question": maybe(txt), "gold_answers": maybe(answers), "gold_text": maybe(txt),
    "semantic noise": maybe(nb_passages), "illegal sentence noise": maybe(nb_passages),
    "supportive noise": maybe(nb_passages), "counterfactual noise": maybe(txt), "counterfactual noise2": maybe(txt),
    "orthographic noise": junk})
nb_valid = st.fixed_dictionaries({
    "id": ids, "question": valid_text, "gold_answers": st.lists(valid_answer, min_size=1, max_size=2),
    "gold_text": valid_answer.map(lambda a: f"Indeed {a}."),
    "semantic noise": st.lists(st.fixed_dictionaries({"title": valid_text, "text": valid_text}), max_size=3),
    "counterfactual noise": valid_text})

ctx = st.fixed_dictionaries({"title": maybe(txt), "text": maybe(txt)}, optional={
    "has_answer": maybe(st.booleans()), "hasanswer": maybe(st.booleans()), "isgold": maybe(st.booleans())})
dpr_random = st.fixed_dictionaries({}, optional={
    "id": ids, "question": maybe(txt), "answers": maybe(answers), "ctxs": maybe(st.lists(st.one_of(ctx, junk),
                                                                                         max_size=4))})
dpr_valid = st.fixed_dictionaries({
    "question": valid_text, "answers": st.lists(valid_answer, min_size=1, max_size=2),
    "ctxs": st.lists(st.fixed_dictionaries({"title": valid_text, "text": valid_text,
                                            "hasanswer": st.booleans(), "isgold": st.booleans()}),
                     min_size=1, max_size=3)})

jl_passage = st.one_of(txt, junk, st.fixed_dictionaries({"text": maybe(txt)}, optional={
    "title": maybe(txt),
    "label": st.one_of(st.sampled_from(["relevant", "irrelevant", "counterfactual", "unlabelled", "gold", "bogus"]),
                       junk),
    "has_answer": maybe(st.booleans())}))
jl_random = st.fixed_dictionaries({}, optional={
    "id": ids, "question": maybe(txt), "answers": maybe(answers), "passages": maybe(st.lists(jl_passage, max_size=4))})
jl_valid = st.fixed_dictionaries({
    "id": ids, "question": valid_text, "answers": st.lists(valid_answer, min_size=1, max_size=2),
    "passages": st.lists(st.fixed_dictionaries({"text": valid_text,
                                                "label": st.sampled_from(["relevant", "irrelevant"])}),
                         min_size=1, max_size=3)})

STRATEGIES = {"rgb": (rgb_random, rgb_valid), "noiserbench": (nb_random, nb_valid), "dpr": (dpr_random, dpr_valid),
              "jsonl": (jl_random, jl_valid)}


def records_for(fmt):
    rnd, valid = STRATEGIES[fmt]
    return st.lists(st.one_of(valid, valid, rnd, junk), min_size=1, max_size=6)


# ------------------------------------------------------------------ helpers

def write(path: Path, records, as_list: bool) -> None:
    lines = [json.dumps(r) for r in records]
    text = ("[\n" + ",\n".join(lines) + "\n]\n") if as_list else "".join(line + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")


def check_example(ex) -> None:
    assert isinstance(ex.question, str) and ex.question.strip()
    assert ex.answers and all(isinstance(a, str) and a.strip() for a in ex.answers)
    assert ex.passages and all(isinstance(p.text, str) and p.text.strip() for p in ex.passages)
    assert all(isinstance(p.title, str) and isinstance(p.has_answer, bool) for p in ex.passages)
    for p in ex.irrelevant:  # "irrelevant" never carries a gold answer
        assert not contains_answer(p.title + " " + p.text, ex.answers)


def load_and_check(path: Path, fmt: str, n_records: int, strict: bool):
    """Load; either every record is accounted for and examples are valid, or a located ValueError."""
    try:
        res = load_examples(path, format=fmt, strict=strict, n_distractors=2)
    except ValueError as e:
        msg = str(e)
        assert msg.startswith(f"{path}:") or msg.startswith(f"{path} "), msg
        if strict and not any(m in msg for m in ("no usable example", "no records", "file is empty")):
            assert re.match(re.escape(str(path)) + r":\d+: ", msg), msg  # record-level: names the line
        return None
    assert len(res.examples) + res.n_skipped == n_records  # no silent drop
    assert sum(res.skipped_reasons.values()) == res.n_skipped
    assert not strict or res.n_skipped == 0
    for ex in res.examples:
        check_example(ex)
    ids = [ex.id for ex in res.examples]
    assert len(set(ids)) == len(ids)
    return res


@pytest.fixture(scope="module")
def tmpdir_module():
    with tempfile.TemporaryDirectory(prefix="neurorit_data_props_") as d:
        yield Path(d)


# ------------------------------------------------------------------ per-loader properties

@pytest.mark.parametrize("fmt,as_list", [("rgb", False), ("noiserbench", True), ("dpr", False), ("jsonl", False),
                                         ("jsonl", True)])
@SETTINGS
@given(data=st.data(), strict=st.booleans())
def test_loader_random_records(tmpdir_module, fmt, as_list, data, strict):
    records = data.draw(records_for(fmt))
    path = tmpdir_module / f"{fmt}_{'list' if as_list else 'lines'}.json"
    write(path, records, as_list)
    res = load_and_check(path, fmt, len(records), strict)
    if res is not None:
        # duplicated ids are made unique and counted
        raw_ids = [str(r["id"]).strip() for r in records if isinstance(r, dict) and isinstance(r.get("id"), (str, int))
                   and not isinstance(r.get("id"), bool) and str(r["id"]).strip()]
        if len(raw_ids) == len(records) == len(res.examples):
            assert res.n_duplicate_ids == len(raw_ids) - len(set(raw_ids))


@pytest.mark.parametrize("fmt", ["rgb", "dpr", "jsonl"])
@SETTINGS
@given(data=st.data())
def test_auto_detect_never_crashes(tmpdir_module, fmt, data):
    records = data.draw(records_for(fmt))
    path = tmpdir_module / f"auto_{fmt}.jsonl"
    write(path, records, as_list=False)
    load_and_check(path, "auto", len(records), strict=False)


BAD_LINES = [b'{"query": "unterminated', b"{bad json}", b"[1,,2]", b'{"a": 1}}', b"nul",
             b'{"query": "caf\xe9"}', b'\xff\xfe{"x": 1}', b'{"question": "ok", "answers": ["\xc3"]}']


@pytest.mark.parametrize("fmt", ["rgb", "dpr", "jsonl"])
@SETTINGS
@given(data=st.data())
def test_malformed_or_non_utf8_line_is_located(tmpdir_module, fmt, data):
    records = data.draw(st.lists(STRATEGIES[fmt][1], min_size=1, max_size=5))
    k = data.draw(st.integers(0, len(records)))
    bad = data.draw(st.sampled_from(BAD_LINES))
    lines = [json.dumps(r).encode() for r in records]
    lines.insert(k, bad)
    path = tmpdir_module / f"bad_{fmt}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError) as ei:
        load_examples(path, format=fmt)
    assert str(ei.value).startswith(f"{path}:{k + 1}: "), str(ei.value)
    assert "malformed JSON" in str(ei.value) or "UTF-8" in str(ei.value)


@SETTINGS
@given(data=st.data())
def test_json_list_malformed_is_located(tmpdir_module, data):
    records = data.draw(st.lists(nb_valid, min_size=2, max_size=5))
    k = data.draw(st.integers(0, len(records) - 1))
    lines = [json.dumps(r).encode() for r in records]
    lines[k] = data.draw(st.sampled_from([b'{"question": "x",}', b'{"question": "caf\xe9"}', b"{oops"]))
    path = tmpdir_module / "bad_list.json"
    path.write_bytes(b"[\n" + b",\n".join(lines) + b"\n]\n")
    with pytest.raises(ValueError) as ei:
        load_examples(path, format="noiserbench")
    assert str(ei.value).startswith(f"{path}:{k + 2}: "), str(ei.value)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hf_loader_random_rows(tmpdir_module, data):
    import datasets

    row = st.fixed_dictionaries({
        "question": st.one_of(st.just(""), valid_text), "answers": st.lists(st.one_of(st.just(""), valid_answer),
                                                                            max_size=2),
        "ctxs": st.lists(st.fixed_dictionaries({"title": st.text(max_size=10),
                                                "text": st.one_of(st.just(""), valid_text),
                                                "has_answer": st.booleans()}), min_size=1, max_size=3)})
    rows = data.draw(st.lists(row, min_size=1, max_size=5))
    d = tmpdir_module / f"hf_{data.draw(st.integers(0, 10**9))}"
    datasets.Dataset.from_list(rows).save_to_disk(str(d))
    try:
        res = load_examples(f"hf:{d}", n_distractors=2)
    except ValueError as e:
        assert str(e).startswith(f"hf:{d}"), str(e)
        return
    assert len(res) + res.n_skipped == len(rows)
    for ex in res.examples:
        check_example(ex)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_embedded_invariants(n, seed):
    exs = embedded_examples(n, seed)
    assert len(exs) == n and len({normalize_answer(e.question) for e in exs}) == n
    for e in exs:
        check_example(e)
        assert len(e.relevant) == 5 and len(e.irrelevant) == 8 and len(e.counterfactual) == 1
        assert all(contains_answer(p.text, e.answers) for p in e.relevant)
        assert not contains_answer(e.counterfactual[0].text, e.answers)


# ------------------------------------------------------------------ downstream: prompts never crash

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(records=st.lists(rgb_valid, min_size=1, max_size=3), budget=st.integers(48, 200),
       template=st.sampled_from(["plain", "chat"]),
       passage=st.one_of(st.integers(500, 3000).map(lambda n: "lorem ipsum " * n), st.text(max_size=200)))
def test_prompts_from_loaded_records_fit(tmpdir_module, records, budget, template, passage):
    for r in records:
        r["negative"] = list(r["negative"]) + [passage]  # odd unicode / huge passages
    path = tmpdir_module / "prompts.jsonl"
    write(path, records, as_list=False)
    res = load_examples(path, format="rgb")
    tok = tiny_tokenizer()
    insts = build_instances(res.examples, "gold+1").instances + build_instances(res.examples, "gold").instances
    try:
        out = render_prompts(insts, tok, template, max_prompt_tokens=budget)
    except ValueError as e:
        assert "question alone" in str(e)
        return
    for p, inst in zip(out.prompts, out.instances, strict=True):
        assert count_tokens(tok, p) <= budget
        assert inst.question in p
        assert all(q.label in (Label.RELEVANT, Label.IRRELEVANT) for q in inst.passages)
