"""Definitions of I (negative, paired, distracted), normalised selection and activation stats,
each against a naive reference built from the prompts by hand on the tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import neurorit_lens.neurons.irrelevant as irrelevant
from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data import answer_continuation, build_instances, embedded_examples, render_prompts
from neurorit_lens.hooks import mlp_hook_name
from neurorit_lens.neuron_sets import exclusive_sets
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.irrelevant import activation_stats
from neurorit_lens.neurons.mining import MiningResult, mine
from neurorit_lens.neurons.selection import select
from neurorit_lens.objective import tokenize_with_answers
from tests.helpers import BAD_CHOICE, cached_tiny_model

# the tiny byte-level tokenizer needs ~220-280 tokens for a gold-only prompt, and gold is never cut
DATA = DataConfig(max_prompt_tokens=400, n_passages=2)


def _prompts(model, exs, setting):
    built = build_instances(exs, setting, DATA.n_passages, DATA.seed)
    rp = render_prompts(built.instances, model.tokenizer, DATA.template, DATA.max_prompt_tokens)
    return rp, [i.example.id for i in rp.instances]


def _ref_scores(model, prompts, answers, cfg):
    rows = [attribute(model, tokenize_with_answers(model, [p], [a]), cfg.method, steps=cfg.steps,
                      alpha_chunk=cfg.alpha_chunk)[0] for p, a in zip(prompts, answers, strict=True)]
    return torch.stack(rows).float()


@pytest.mark.parametrize("method", ["grad_x_act", "ig"])
def test_negative_and_paired_match_naive_reference(method):
    model = cached_tiny_model()
    exs = embedded_examples()[:3]
    cfg = MiningConfig(method=method, steps=3, alpha_chunk=2, irrelevant_definition="negative",
                       precision="fp32")  # the reference is fp32 (auto would run IG in bf16)
    res = mine(model, exs, cfg, DATA, show_progress=False)
    rp, ids = _prompts(model, exs, "noise=0.8")
    gold = [answer_continuation(i.example.answer, rp.template) for i in rp.instances]
    noisy = _ref_scores(model, rp.prompts, gold, cfg)
    assert res.ids_I == ids
    torch.testing.assert_close(res.scores_I, -noisy, rtol=1e-4, atol=1e-6)
    assert res.sets == exclusive_sets(select(res.scores_R), select(-noisy))
    paired = mine(model, exs, cfg.replace(paired=True), DATA, show_progress=False)
    rg, _ = _prompts(model, exs, "gold")
    ref_R = _ref_scores(model, rg.prompts, [answer_continuation(i.example.answer, rg.template)
                                            for i in rg.instances], cfg)
    torch.testing.assert_close(paired.scores_I, -(noisy - ref_R), rtol=1e-4, atol=1e-5)


def test_paired_needs_negative():
    with pytest.raises(ValueError, match="paired"):
        MiningConfig(paired=True)
    with pytest.raises(BAD_CHOICE, match="nonsense"):
        MiningConfig(irrelevant_definition="nonsense")


def test_distracted_is_wrong_minus_gold_attribution():
    model = cached_tiny_model()
    exs = embedded_examples()[:3]
    cfg = MiningConfig(method="grad_x_act", irrelevant_definition="distracted")
    res = mine(model, exs, cfg, DATA, show_progress=False)
    rp, ids = _prompts(model, exs, "noise=0.8")
    gold = [answer_continuation(i.example.answer, rp.template) for i in rp.instances]
    wrong = [answer_continuation(i.example.meta["counterfactual_answer"], rp.template) for i in rp.instances]
    ref = _ref_scores(model, rp.prompts, wrong, cfg) - _ref_scores(model, rp.prompts, gold, cfg)
    assert res.ids_I == ids
    torch.testing.assert_close(res.scores_I, ref, rtol=1e-4, atol=1e-5)
    assert res.excluded["I"]["wrong_answers"] == {"from_data": 3, "from_model": 0}


def test_distracted_uses_wrong_greedy_answers_and_excludes_correct_ones(monkeypatch):
    model = cached_tiny_model()
    exs = [dataclasses.replace(e, meta={}) for e in embedded_examples()[:3]]
    # the model answers the first question correctly and the others wrongly
    monkeypatch.setattr(irrelevant, "_greedy_texts",
                        lambda m, prompts, n: [exs[0].answer + " indeed", "Quux\nmore", "Blorp"])
    cfg = MiningConfig(method="grad_x_act", irrelevant_definition="distracted")
    res = mine(model, exs, cfg, DATA, show_progress=False)
    assert res.ids_I == [exs[1].id, exs[2].id]
    assert res.excluded["I"]["model_correct"] == 1 and exs[0].id in res.excluded["I"]["ids"]
    rp, _ = _prompts(model, exs[1:], "noise=0.8")
    gold = [answer_continuation(i.example.answer, rp.template) for i in rp.instances]
    wrong = [answer_continuation(w, rp.template) for w in ("Quux", "Blorp")]
    ref = _ref_scores(model, rp.prompts, wrong, cfg) - _ref_scores(model, rp.prompts, gold, cfg)
    torch.testing.assert_close(res.scores_I, ref, rtol=1e-4, atol=1e-5)


def test_distracted_without_any_wrong_answer_is_a_clear_error(monkeypatch):
    model = cached_tiny_model()
    exs = [dataclasses.replace(e, meta={}) for e in embedded_examples()[:2]]
    monkeypatch.setattr(irrelevant, "_greedy_texts", lambda m, prompts, n: [e.answer for e in exs])
    cfg = MiningConfig(method="grad_x_act", irrelevant_definition="distracted")
    with pytest.raises(ValueError, match="counterfactual_answer.*all 2 noisy prompts correctly"):
        mine(model, exs, cfg, DATA.replace(data="mydata.jsonl"), show_progress=False)
    with pytest.raises(ValueError, match="mydata.jsonl"):
        mine(model, exs, cfg, DATA.replace(data="mydata.jsonl"), show_progress=False)


def naive_stats(model, batch, positions, absolute):
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    _, cache = model.run_with_cache(batch.tokens)
    sums, n = torch.zeros(L, D, dtype=torch.float64), 0
    for b in range(len(batch)):
        for t in range(int(batch.lengths[b])):
            if positions == "answer" and not batch.answer_mask[b, t]:
                continue
            n += 1
            for l in range(L):
                a = cache[mlp_hook_name(l)][b, t].double()
                sums[l] += a.abs() if absolute else a
    return (sums / n).float()


@pytest.mark.parametrize("positions,absolute", [("all", True), ("answer", False), ("all", False)])
def test_activation_stats_match_naive_loop(positions, absolute):
    model = cached_tiny_model()
    batch = tokenize_with_answers(model, ["The capital of Zarnia is", "Q: who? A:"], [" Velmor", " Ann Lee"])
    got = activation_stats(model, [batch.select([0]), batch.select([1])], positions=positions, absolute=absolute)
    torch.testing.assert_close(got, naive_stats(model, batch, positions, absolute), rtol=1e-4, atol=1e-6)


def test_normalize_and_answer_means_are_stored_and_reselectable(tmp_path):
    model = cached_tiny_model()
    exs = embedded_examples()[:3]
    cfg = MiningConfig(method="grad_x_act", normalize=True, answer_means=True, sign_consistency=0.5)
    res = mine(model, exs, cfg, DATA, out_dir=tmp_path, show_progress=False)
    rg, _ = _prompts(model, exs, "gold")
    ri, _ = _prompts(model, exs, "irrelevant")
    b = [tokenize_with_answers(model, [p], [answer_continuation(i.example.answer, r.template)])
         for r in (rg, ri) for p, i in zip(r.prompts, r.instances, strict=True)]
    scale = activation_stats(model, b, positions="all", absolute=True)
    torch.testing.assert_close(res.act_scale, scale, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.answer_means, activation_stats(model, b[:3], positions="answer"),
                               rtol=1e-4, atol=1e-6)
    norm_R = res.scores_R / scale
    assert res.sets["R"] == select(norm_R, sign_consistency=0.5)
    back = MiningResult.load(tmp_path)
    torch.testing.assert_close(back.act_scale, res.act_scale)
    assert back.sets == res.sets
    plain = back.reselect(normalize=False, sign_consistency=0.0)
    assert plain.sets["R"] == select(res.scores_R)


def test_load_answer_means(tmp_path):
    from neurorit_lens.neurons.mining import load_answer_means

    with pytest.raises(FileNotFoundError, match="answer-means"):
        load_answer_means(tmp_path)
    model = cached_tiny_model()
    res = mine(model, embedded_examples()[:2], MiningConfig(method="grad_x_act", answer_means=True), DATA,
               out_dir=tmp_path, show_progress=False)
    torch.testing.assert_close(load_answer_means(tmp_path), res.answer_means)


def test_distracted_whose_wrong_answers_all_tokenise_to_nothing_is_a_clear_error(monkeypatch):
    import neurorit_lens.objective as objective

    model = cached_tiny_model()
    exs = embedded_examples()[:2]
    real = objective.encode_answer
    wrong = {answer_continuation(e.meta["counterfactual_answer"], "plain") for e in exs}
    wrong |= {answer_continuation(e.meta["counterfactual_answer"], "chat") for e in exs}
    monkeypatch.setattr(objective, "encode_answer", lambda m, a: [] if a in wrong else real(m, a))
    cfg = MiningConfig(method="grad_x_act", irrelevant_definition="distracted")
    with pytest.raises(ValueError, match="distracted.*mydata.jsonl.*tokenises to nothing"):
        mine(model, exs, cfg, DATA.replace(data="mydata.jsonl"), show_progress=False)
