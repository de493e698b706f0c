"""Mining over QA examples: per-example scores, exclusions, resume, shards, save/load, CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import neurorit_lens.neurons.mining as mining
from neurorit_lens.cli.main import main
from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data import (
    Label,
    answer_continuation,
    build_instances,
    embedded_examples,
    render_prompts,
)
from neurorit_lens.neuron_sets import exclusive_sets, load_neuron_sets
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.mining import MiningResult, mine, score_path
from neurorit_lens.neurons.selection import select
from neurorit_lens.objective import tokenize_with_answers
from tests.helpers import cached_tiny_model

DATA = DataConfig(max_prompt_tokens=320, n_passages=2)
FAST = MiningConfig(method="grad_x_act")


def examples(n=4):
    return embedded_examples()[:n]


class CountingAttribute:
    """Wraps ``attribute``; optionally raises after ``fail_after`` calls (an interruption)."""

    def __init__(self, fail_after=None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, *a, **k):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return attribute(*a, **k)


def test_scores_equal_direct_attribution_and_sets_follow_selection():
    model = cached_tiny_model()
    exs = examples(3)
    # fp32: compared with fp32 attribute() at fp32 tolerance (auto would run IG in bf16)
    cfg = MiningConfig(method="ig", steps=3, alpha_chunk=2, threshold=0.3, frequency=0.6, precision="fp32")
    res = mine(model, exs, cfg, DATA, show_progress=False)
    assert res.scores_R.shape == (3, 2, 64) and res.scores_R.dtype == torch.float32
    for cond, setting in (("R", "gold"), ("I", "irrelevant")):
        built = build_instances(exs, setting, DATA.n_passages, DATA.seed)
        rp = render_prompts(built.instances, model.tokenizer, DATA.template, DATA.max_prompt_tokens)
        ans = [answer_continuation(i.example.answer, rp.template) for i in rp.instances]
        ref = attribute(model, tokenize_with_answers(model, rp.prompts, ans), "ig", steps=3, alpha_chunk=2)
        torch.testing.assert_close(res.scores(cond), ref.float(), rtol=1e-4, atol=1e-6)
        assert getattr(res, f"ids_{cond}") == [e.id for e in exs]
    R = select(res.scores_R, "threshold", 0.3, 0.6)
    I = select(res.scores_I, "threshold", 0.3, 0.6)
    assert res.sets == exclusive_sets(R, I)
    # layer mass: per-layer sum of mean scores over the set's neurons (naive loop)
    mass = res.layer_mass()
    meanR = res.scores_R.double().mean(0)
    for l in range(2):
        ref_mass = sum(meanR[n.layer, n.index].item() for n in res.sets["R_excl"] if n.layer == l)
        assert mass["R_excl"][l] == pytest.approx(ref_mass, rel=1e-5, abs=1e-7)


def test_batched_examples_equal_one_at_a_time():
    model = cached_tiny_model()
    exs = examples(3)
    a = mine(model, exs, FAST, DATA, show_progress=False)
    b = mine(model, exs, dataclasses.replace(FAST, batch_size=3), DATA, show_progress=False)
    torch.testing.assert_close(a.scores_R, b.scores_R, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.scores_I, b.scores_I, rtol=1e-4, atol=1e-5)


def test_examples_lacking_passages_or_answer_tokens_are_excluded_and_counted(monkeypatch):
    model = cached_tiny_model()
    exs = examples(4)
    no_rel = dataclasses.replace(exs[1], passages=[p for p in exs[1].passages if p.label != Label.RELEVANT])
    exs[1] = no_rel
    real_encode = mining.encode_answer
    monkeypatch.setattr(mining, "encode_answer",
                        lambda m, a: [] if exs[2].answer in a else real_encode(m, a))
    res = mine(model, exs, FAST, DATA, show_progress=False)
    assert res.ids_R == [exs[0].id, exs[3].id]
    assert res.ids_I == [exs[0].id, exs[1].id, exs[3].id]
    assert res.excluded["R"]["missing_passages"] == 1 and res.excluded["R"]["empty_answer"] == 1
    assert res.excluded["I"]["missing_passages"] == 0 and res.excluded["I"]["empty_answer"] == 1
    assert sorted(res.excluded["R"]["ids"]) == sorted([exs[1].id, exs[2].id])


def test_interrupted_run_resumes_and_matches_uninterrupted(tmp_path, monkeypatch):
    model = cached_tiny_model()
    exs = examples(4)
    cfg = MiningConfig(method="ig_joint", steps=2)
    full = mine(model, exs, cfg, DATA, out_dir=tmp_path / "full", show_progress=False)
    crash = CountingAttribute(fail_after=5)  # 4 R examples + 1 I example written
    monkeypatch.setattr(mining, "attribute", crash)
    with pytest.raises(KeyboardInterrupt):
        mine(model, exs, cfg, DATA, out_dir=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "neurons.json").exists()
    assert len(list((tmp_path / "run" / "scores" / "R").iterdir())) == 4
    again = CountingAttribute()
    monkeypatch.setattr(mining, "attribute", again)
    res = mine(model, exs, cfg, DATA, out_dir=tmp_path / "run", show_progress=False)
    assert again.calls == 3 and res.info["conditions"]["R"]["n_resumed"] == 4
    assert (tmp_path / "run" / "neurons.json").read_text() == (tmp_path / "full" / "neurons.json").read_text()
    torch.testing.assert_close(res.scores_I, full.scores_I)
    # other attribution settings: nothing is reused; resume=False: nothing is reused either
    again.calls = 0
    mine(model, exs, dataclasses.replace(cfg, steps=3), DATA, out_dir=tmp_path / "run", show_progress=False)
    assert again.calls == 8
    again.calls = 0
    mine(model, exs, dataclasses.replace(cfg, steps=3), DATA, out_dir=tmp_path / "run", show_progress=False)
    assert again.calls == 0
    mine(model, exs, dataclasses.replace(cfg, steps=3), DATA, out_dir=tmp_path / "run", resume=False,
         show_progress=False)
    assert again.calls == 8


def test_shards_cover_all_examples_and_combine_to_the_full_run(tmp_path, monkeypatch):
    model = cached_tiny_model()
    exs = examples(5)
    for rank in range(2):
        part = mine(model, exs, FAST, DATA, out_dir=tmp_path, shard=(rank, 2), show_progress=False)
        assert part.ids_R == [e.id for e in exs[rank::2]]
    assert not (tmp_path / "neurons.json").exists()
    counter = CountingAttribute()
    monkeypatch.setattr(mining, "attribute", counter)
    res = mine(model, exs, FAST, DATA, out_dir=tmp_path, show_progress=False)
    assert counter.calls == 0 and res.ids_R == [e.id for e in exs]
    with pytest.raises(ValueError, match="bad shard"):
        mine(model, exs, FAST, DATA, shard=(2, 2))


def test_save_load_reselect_and_top(tmp_path, monkeypatch):
    model = cached_tiny_model()
    res = mine(model, examples(4), FAST, DATA, out_dir=tmp_path, show_progress=False)
    back = MiningResult.load(tmp_path, model)
    assert back.sets == res.sets and back.ids_I == res.ids_I and back.config == res.config
    torch.testing.assert_close(back.scores_R, res.scores_R)
    meta = json.loads((tmp_path / "neurons.json").read_text())["meta"]
    assert meta["model_shape"] == [2, 64] and set(meta["layer_mass"]) >= {"R", "I", "R_excl", "I_excl"}
    assert len(meta["layer_mass"]["R_excl"]) == 2
    assert load_neuron_sets(tmp_path / "neurons.json", model) == res.sets
    # reselect from stored scores equals mining afresh with those settings, without attributing
    counter = CountingAttribute()
    monkeypatch.setattr(mining, "attribute", counter)
    re = back.reselect(selection="topk_per_layer", top_k=5)
    fresh = mine(model, examples(4), dataclasses.replace(FAST, selection="topk_per_layer", top_k=5), DATA,
                 out_dir=tmp_path, show_progress=False)
    assert counter.calls == 0 and re.sets == fresh.sets
    assert all(c <= 5 for c in re.sets["R"].counts_per_layer().values())
    with pytest.raises(ValueError, match="recomputing"):
        back.reselect(steps=3)
    top = res.top(3, "I")
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and top[0][0].startswith("L")
    mean = res.scores_I.double().mean(0)
    assert top[0][1] == pytest.approx(mean.max().item(), rel=1e-5)
    other = cached_tiny_model(n_layers=1)
    with pytest.raises(ValueError, match="shape|out of range"):
        MiningResult.load(tmp_path, other)


def test_score_path_is_safe_for_odd_ids(tmp_path):
    p = score_path(tmp_path, "R", "../a b/c")
    assert p.parent == tmp_path / "scores" / "R" and "/" not in p.name[:-12] and not p.name.startswith(".")
    assert score_path(tmp_path, "I", "q-1").name == "q-1.safetensors"
    with pytest.raises(ValueError, match="condition"):
        score_path(tmp_path, "X", "q")


def test_duplicate_ids_rejected():
    exs = examples(2)
    exs[1] = dataclasses.replace(exs[1], id=exs[0].id)
    with pytest.raises(ValueError, match="duplicate"):
        mine(cached_tiny_model(), exs, FAST, DATA, show_progress=False)


def test_cli_mine_end_to_end_with_interruption(tmp_path, monkeypatch, capsys):
    args = ["mine", "--model", "tiny", "--data", "embedded", "--split", "all", "--limit", "4", "--method", "ig",
            "--steps", "2", "--layers", "1", "--max-prompt-tokens", "320", "--n-passages", "2", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "R_excl" in out and "wrote" in out
    sets = load_neuron_sets(tmp_path / "a" / "neurons.json")
    assert set(sets) == {"R", "I", "R_excl", "I_excl", "shared"}
    assert all(n.layer == 1 for s in sets.values() for n in s)
    assert (tmp_path / "a" / "scores_R.safetensors").exists() and (tmp_path / "a" / "config.json").exists()
    crash = CountingAttribute(fail_after=3)
    monkeypatch.setattr(mining, "attribute", crash)
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--out", str(tmp_path / "b")])
    again = CountingAttribute()
    monkeypatch.setattr(mining, "attribute", again)
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert again.calls == 5
    assert (tmp_path / "b" / "neurons.json").read_text() == (tmp_path / "a" / "neurons.json").read_text()
    assert main(["mine", "--model", "tiny", "--method", "nope", "--out", str(tmp_path / "c")]) == 2
    assert "grad_x_act" in capsys.readouterr().err  # the allowed values are listed
