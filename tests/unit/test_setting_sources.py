"""Settings with a distractor source (``gold+4@bm25``): parsed, built from that method's mined
distractors only, and a clear error on data without such a pool."""

from __future__ import annotations

import gzip
import json

import pytest

from neurorit_lens.config import DataConfig, EvalConfig
from neurorit_lens.data import embedded_examples, load_examples, parse_setting
from neurorit_lens.data.settings import build_instances
from neurorit_lens.evaluation.evaluate import evaluate_setting
from tests.helpers import cached_tiny_model


def test_the_suffix_parses_and_is_refused_where_it_means_nothing():
    st = parse_setting("gold+4@bm25")
    assert (st.name, st.kind, st.k, st.distractors) == ("gold+4@bm25", "gold+k", 4, "bm25")
    assert parse_setting("noise=0.8@random").ratio == 0.8 and parse_setting("gold+4").distractors is None
    with pytest.raises(ValueError, match="unknown distractor method 'tfidf'"):
        parse_setting("gold+4@tfidf")
    for bad in ("gold@bm25", "closed@bm25", "gold+4@bm25@bm25"):
        with pytest.raises(ValueError, match="applies to gold\\+K, noise=R or irrelevant"):
            parse_setting(bad)


def _dpr(tmp_path, n: int = 20):
    rows = [{"question": e.question, "answers": e.answers,
             "ctxs": [{"title": e.relevant[0].title, "text": e.relevant[0].text, "hasanswer": True, "isgold": True}]}
            for e in embedded_examples(n)]
    p = tmp_path / "nq.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return p


def test_bm25_settings_draw_only_bm25_distractors(tmp_path):
    p = _dpr(tmp_path)
    bm = load_examples(p, distractors="bm25", n_distractors=6, seed=0).examples
    built = build_instances(bm, "gold+4@bm25", n_passages=5, seed=0)
    assert len(built) == 20 and built.n_skipped == 0
    for inst in built:
        others = [q for q in inst.passages if not q.has_answer]
        assert len(inst.passages) == 5 and len(others) == 4 and {q.kind for q in others} == {"distractor:bm25"}
    rnd = load_examples(p, distractors="random", n_distractors=6, seed=0).examples
    none = build_instances(rnd, "gold+4@bm25", n_passages=5)
    assert len(none) == 0 and none.skipped_reasons == {"no_bm25_distractors": 20}
    assert len(build_instances(rnd, "gold+4@random", n_passages=5)) == 20
    own = build_instances(embedded_examples(5), "gold+4@bm25", n_passages=5)  # its own irrelevant passages
    assert own.skipped_reasons == {"no_bm25_distractors": 5}


def test_evaluation_without_a_bm25_pool_says_why():
    with pytest.raises(ValueError, match=r"fits no example of embedded.*no_bm25_distractors.*distractors='bm25'"):
        evaluate_setting(cached_tiny_model(), embedded_examples(3), "gold+4@bm25",
                         EvalConfig(settings=("gold",), max_new_tokens=2), DataConfig(template="plain"),
                         show_progress=False, data_name="embedded")
