"""The component study's confirmatory questions overlap no question an earlier run scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurorit_lens.config import DataConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.data.fresh import draw, fresh_draw, overlap, question_key, split_fresh
from neurorit_lens.data.splits import load_splits
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
CONFIRM = json.loads((ROOT / "benchmarks/configs/study_dev.json").read_text())["confirmatory"]


def fresh_embedded():
    spec = CONFIRM["questions"]["embedded"]
    return fresh_draw(draw(spec["data"]), CONFIRM["seen"]["embedded"], spec["limit"])


def test_draw_reads_the_generated_set():
    assert [e.question for e in draw("embedded:30:7")] == [e.question for e in embedded_examples(30, 7)]


def test_fresh_embedded_questions_are_new_texts_and_new_subjects():
    fresh, seen = fresh_embedded()
    assert len(fresh) == CONFIRM["questions"]["embedded"]["limit"] >= 300
    assert overlap(fresh, seen) == []
    assert not {question_key(e) for e in fresh} & {question_key(e) for e in seen}
    # the check can fail: the new draw does reuse a seed-0 name
    assert overlap(draw(CONFIRM["questions"]["embedded"]["data"]), seen)


@pytest.mark.real_data
def test_fresh_nq_questions_were_never_trained_on_nor_scored():
    spec = CONFIRM["questions"]["nq"]
    path = Path(spec["data"].replace("{shared}", str(SHARED_DATA)))
    if not path.exists():
        pytest.skip(f"{path} not found")
    _, splits = load_splits(DataConfig(data=str(path), format=spec["format"], split="all"))
    fresh, scored = split_fresh(splits, "test", spec["start"], spec["limit"])
    assert len(scored) == len(splits["train"]) + len(splits["dev"]) + spec["start"]
    assert len(fresh) == spec["limit"] >= 300
    assert overlap(fresh, scored) == []
    assert not {question_key(e) for e in fresh} & {question_key(e) for e in scored}
