"""evaluate(), EvalResult, answer_logprobs and the `neurorit eval` command on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neurorit_lens.evaluation.evaluate as ev
from neurorit_lens.cli.main import main
from neurorit_lens.config import DataConfig, EvalConfig
from neurorit_lens.data import build_instances, render_prompts
from neurorit_lens.data.answers import accuracy, exact_match, extract_answer, f1
from neurorit_lens.data.build import context_label
from neurorit_lens.evaluation.evaluate import EvalResult, aggregate, evaluate
from neurorit_lens.hooks import neuron_hooks, zero_ablation
from neurorit_lens.models.generation import encode_for_generation, generate_greedy
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.statistics import bootstrap_ci, wilson_interval
from tests.helpers import cached_tiny_model, make_examples

SETTINGS = ("closed", "gold", "gold+2", "irrelevant")




@pytest.fixture(scope="module")
def tiny_result():
    model = cached_tiny_model()
    cfg = EvalConfig(settings=SETTINGS, max_new_tokens=6, batch_size=4, n_bootstrap=200)
    dcfg = DataConfig(max_prompt_tokens=256)
    return evaluate(model, make_examples(5, n_irrelevant=5), cfg, dcfg, model_name="tiny", data_name="helpers",
                    show_progress=False), cfg, dcfg


def test_evaluate_matches_direct_pipeline(tiny_result):
    res, cfg, dcfg = tiny_result
    model = cached_tiny_model()
    assert list(res.settings) == list(SETTINGS)
    for setting in ("closed", "gold", "gold+2", "irrelevant"):
        built = build_instances(make_examples(5, n_irrelevant=5), setting, n_passages=dcfg.n_passages, seed=dcfg.seed)
        rendered = render_prompts(built.instances, model.tokenizer, template=dcfg.template,
                                  max_prompt_tokens=256)
        preds = generate_greedy(model, rendered.prompts, max_new_tokens=6, batch_size=1, show_progress=False)
        recs = res.records_for(setting)
        assert [r.prediction for r in recs] == preds
        assert [r.id for r in recs] == [i.id for i in built.instances]
        assert [r.prompt_tokens for r in recs] == [len(encode_for_generation(model, p)) for p in rendered.prompts]
        s = res.settings[setting]
        assert s.n == 5
        ext = [extract_answer(p, i.answers) for p, i in zip(preds, built.instances, strict=True)]
        acc = [accuracy(p, i.answers) for p, i in zip(ext, built.instances, strict=True)]
        assert s.accuracy == pytest.approx(np.mean(acc))
        assert s.em == pytest.approx(np.mean([exact_match(p, i.answers)
                                              for p, i in zip(ext, built.instances, strict=True)]))
        assert s.f1 == pytest.approx(np.mean([f1(p, i.answers) for p, i in zip(ext, built.instances, strict=True)]))
        assert s.accuracy_raw == pytest.approx(np.mean([accuracy(p, i.answers)
                                                        for p, i in zip(preds, built.instances, strict=True)]))
        assert s.accuracy_ci == bootstrap_ci(acc, n=200, seed=cfg.seed)
        assert s.accuracy_wilson == wilson_interval(int(sum(acc)), 5)
        assert s.n_truncated == rendered.n_truncated and s.n_gold_cut == 0 and s.n_skipped_budget == 0
        assert s.label == context_label(rendered.instances)  # what the prompts held, after the budget
        if setting != "irrelevant":
            assert s.label == setting
        assert 0 <= s.copy_rate <= 1


def test_a_setting_that_fits_no_example_is_an_error():
    model = cached_tiny_model()
    cfg = EvalConfig(settings=("gold", "counterfactual"), max_new_tokens=4, n_bootstrap=10)
    with pytest.raises(ValueError, match=r"'counterfactual' fits no example of helpers\.jsonl.*no_counterfactual: 5"):
        evaluate(model, make_examples(5), cfg, data_name="helpers.jsonl", show_progress=False)


def test_scores_and_gap_with_known_predictions(monkeypatch):
    """Replace the model's answers by known strings: the aggregates follow exactly."""
    exs = make_examples(6)

    def fake_generate(model, prompts, max_new_tokens, batch_size, show_progress, backend="auto", stop_at_newline=False):
        out = []
        for p in prompts:
            i = next(k for k in range(6) if f"Zarnia{k}?" in p)
            has_doc = "Document" in p
            out.append(f"It is Velmor{i}." if (has_doc and i % 2 == 0) else ("Velmor" + str(i) if has_doc else "no"))
        return out

    monkeypatch.setattr(ev, "generate_greedy", fake_generate)
    res = evaluate(cached_tiny_model(), exs, EvalConfig(settings=("closed", "gold"), n_bootstrap=100),
                   show_progress=False)
    assert res.settings["gold"].accuracy == 1.0 and res.settings["gold"].em == 0.5
    # "it is velmorX" vs "velmorX": P=1/3, R=1
    assert res.settings["gold"].f1 == pytest.approx((3 * 2 * (1 / 3) / (1 + 1 / 3) + 3) / 6)
    assert res.settings["gold"].copy_rate == 0.0 and res.settings["gold"].accuracy_raw == 1.0
    assert res.mcnemar("gold", "closed").p_value == pytest.approx(2 / 2**6)  # 6 discordant pairs, all one way
    assert res.settings["closed"].accuracy == 0.0
    diff, (lo, hi), n = res.paired_difference("gold", "closed")
    assert (diff, lo, hi, n) == (1.0, 1.0, 1.0, 6)
    assert res.top(1) == [("gold", 1.0)]
    with pytest.raises(ValueError, match="no setting"):
        res.paired_difference("gold", "gold+4")


def test_save_load_roundtrip_and_table(tiny_result, tmp_path):
    res, _, _ = tiny_result
    res.save(tmp_path)
    d = json.loads((tmp_path / "eval.json").read_text())
    assert set(d) >= {"model", "data", "settings"} and d["model"] == "tiny"
    for s in d["settings"].values():
        assert set(s) >= {"n", "accuracy", "em", "f1", "accuracy_ci", "n_skipped", "n_truncated"}
    for key in ("accuracy_raw", "copy_rate", "accuracy_wilson", "n_gold_cut", "n_skipped_budget", "label",
                "mean_n_irrelevant"):
        assert key in d["settings"]["gold"]
    assert d["settings"]["closed"]["mean_n_irrelevant"] == 0
    back = EvalResult.load(tmp_path)
    assert back.to_dict() == res.to_dict()
    assert [r.to_dict() for r in back.records] == [r.to_dict() for r in res.records]
    table = res.table()
    for name in SETTINGS:
        assert name in table
    assert len({len(line) for line in table.splitlines()[1:]}) == 1  # fixed width
    merged = EvalResult("tiny", "x", {}, []).merge(back)
    assert list(merged.settings) == list(SETTINGS)
    (tmp_path / "predictions.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="predictions.jsonl:1"):
        EvalResult.load(tmp_path)


def test_aggregate_empty_and_hooks_respected():
    s = aggregate("x", [])
    assert s.n == 0 and s.accuracy != s.accuracy
    model = cached_tiny_model()
    exs = make_examples(3)
    cfg = EvalConfig(settings=("gold",), max_new_tokens=5, n_bootstrap=10)
    plain = evaluate(model, exs, cfg, show_progress=False)
    ns = NeuronSet({0: list(range(64)), 1: list(range(64))})
    with neuron_hooks(model, zero_ablation(ns)):
        ablated = evaluate(model, exs, cfg, show_progress=False)
    assert [r.prediction for r in plain.records] != [r.prediction for r in ablated.records]
    with pytest.raises(ValueError, match="no examples"):
        evaluate(model, [], cfg)


def naive_answer_logprob(model, prompt: str, answer: str) -> float:
    ids = model.to_tokens(prompt)[0].tolist()
    total = 0.0
    for t in model.tokenizer.encode(answer, add_special_tokens=False):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1]
        total += float(torch.log_softmax(logits, -1)[t])
        ids.append(t)
    return total


def test_answer_logprobs_matches_naive_loop():
    from neurorit_lens.data.build import build_prompts
    from neurorit_lens.objective import answer_logprobs

    model = cached_tiny_model(gated=True)
    prompts = ["Q: capital of Zarnia? A:", "Who?\n", "The Sorrel Spire is 300 metres"]
    answers = [" Velmor", "Alice wrote it", " tall"]
    got = answer_logprobs(model, prompts, answers, batch_size=2)
    want = [naive_answer_logprob(model, p, a) for p, a in zip(prompts, answers, strict=True)]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=1e-4)
    # the one prompt path: rendered prompts and the data module's answer continuations
    ps = build_prompts(make_examples(2), "gold", model.tokenizer)
    got = answer_logprobs(model, ps.prompts, ps.continuations)
    # chat: no space
    want = [naive_answer_logprob(model, p, i.answers[0]) for p, i in zip(ps.prompts, ps.instances, strict=True)]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="continuations are required"):
        answer_logprobs(model, prompts)
    with pytest.raises(ValueError, match="2 answers"):
        answer_logprobs(model, prompts, answers[:2])


def test_eval_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--model", "tiny", "--data", "embedded", "--limit", "3", "--settings", "closed,gold,gold+1",
               "--max-new-tokens", "4", "--n-bootstrap", "50", "--out", str(out)])
    assert rc == 0
    d = json.loads((out / "eval.json").read_text())
    assert d["model"] == "tiny" and d["data"] == "embedded"
    assert list(d["settings"]) == ["closed", "gold", "gold+1"]
    assert all(d["settings"][s]["n"] == 3 for s in d["settings"])
    for f in ("config.json", "environment.json", "predictions.jsonl"):
        assert (out / f).exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eval"]["max_new_tokens"] == 4 and cfg["data"]["limit"] == 3
    printed = capsys.readouterr().out
    assert "gold+1" in printed and "accuracy" in printed
    assert main(["eval", "--model", "tiny", "--settings", "bogus", "--limit", "2", "--out", str(tmp_path / "b")]) == 2
    assert main(["eval", "--model", "tiny", "--data", str(tmp_path / "missing.jsonl"), "--out",
                 str(tmp_path / "c")]) == 2
