"""benchmarks/setting_behaviour.py on hand-made records with known counts."""

from __future__ import annotations

import json

import pytest

from benchmarks import setting_behaviour as sb
from neurorit_lens.data.schema import Label, Passage, QAExample


def _ex(qid: str) -> QAExample:
    return QAExample(id=qid, question="Where was Velmor founded?", answers=["Zarnia"],
                     passages=[Passage("Velmor was founded in Zarnia.", label=Label.RELEVANT),
                               Passage("Velmor was founded in Quurkwick, by the river.", label=Label.COUNTERFACTUAL)])


def _rec(qid: str, extracted: str, acc: float, pos: int, prediction: str | None = None) -> dict:
    return {"id": qid, "extracted": extracted, "prediction": prediction or extracted, "accuracy": acc,
            "gold_positions": [pos]}


def test_counterfactual_counts_right_counterfactual_other_and_position():
    exs = {q: _ex(q) for q in "abcd"}
    recs = [_rec("a", "Zarnia", 1.0, 0), _rec("b", "quurkwick!", 0.0, 1), _rec("c", "Paris", 0.0, 1),
            _rec("d", "", 0.0, 0)]
    got = sb.counterfactual_counts(recs, exs)
    assert (got["n"], got["right"], got["counterfactual"], got["other"]) == (4, 1, 1, 2)  # "" is not a hit
    assert got["accuracy_by_gold_position"] == {"0": {"n": 2, "accuracy": 0.5}, "1": {"n": 2, "accuracy": 0.0}}


def test_abstain_count_and_the_folder_walk(tmp_path):
    recs = [_rec("a", "Unknown", 0.0, 0, "Unknown."), _rec("b", "", 0.0, 0, "The documents do not mention it."),
            _rec("c", "Noneville", 0.0, 0), _rec("d", "I cannot tell", 0.0, 0)]
    assert sb.abstain_count(recs) == {"n": 4, "abstain": 2, "empty": 1}  # "not mention" is not in the list
    for setting, rs in (("irrelevant", recs), ("counterfactual", [_rec("a", "Quurkwick", 0.0, 1)]),
                        ("gold", recs)):
        p = tmp_path / "eval" / "m" / "lr=1" / "seed=0" / "test" / "emb" / f"{setting}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"records": rs}))
    res = sb.collect(tmp_path, {"emb": {q: _ex(q) for q in "abcd"}})
    assert res["irrelevant"] == {"m/lr=1/seed=0": {"emb": {"n": 4, "abstain": 2, "empty": 1}}}
    assert res["counterfactual"]["m/lr=1/seed=0"]["emb"]["counterfactual"] == 1
    assert "| m/lr=1/seed=0 | emb | 4 | 2 | 1 |" in sb.render(res, "t")


def test_not_a_run_folder_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        sb.main(["--config", "benchmarks/configs/cpu_main.json", "--out", str(tmp_path)])
