"""NeuronSet algebra, hooks context manager, targets, configs and CLI plumbing."""

from __future__ import annotations

import json

import pytest
import torch

from neurorit_lens.config import DataConfig, MiningConfig, RunConfig
from neurorit_lens.hooks import neuron_hooks, scale_ablation, zero_ablation
from neurorit_lens.neuron_sets import (
    Neuron,
    NeuronSet,
    exclusive_sets,
    load_neuron_sets,
    save_neuron_sets,
)
from neurorit_lens.objective import answer_target, sft_loss, tokenize_with_answers
from tests.helpers import BAD_CHOICE, cached_tiny_model


def test_set_algebra_matches_python_sets():
    a = NeuronSet({0: [1, 2, 3], 2: [5]})
    b = NeuronSet({0: [3, 4], 1: [7]})
    pa, pb = set(a), set(b)
    assert set(a | b) == pa | pb
    assert set(a & b) == pa & pb
    assert set(a - b) == pa - pb
    s = exclusive_sets(a, b)
    assert s["R_excl"] | s["shared"] == a and s["I_excl"] | s["shared"] == b
    assert not (s["R_excl"] & s["I_excl"])
    assert Neuron(0, 1) in a and "L2N5" in a and (1, 7) not in a


def test_neuron_set_json_roundtrip_and_shape_check(tmp_path):
    model = cached_tiny_model()
    sets = exclusive_sets(NeuronSet({0: [1, 2]}), NeuronSet({1: [2]}))
    p = save_neuron_sets(tmp_path / "neurons.json", sets, {"model_shape": [2, 64]})
    assert load_neuron_sets(p, model) == sets
    NeuronSet({5: [1]}).save(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="out of range"):
        NeuronSet.load(tmp_path / "bad.json").check_model(model)
    (tmp_path / "other.json").write_text(json.dumps({"R": {"0": [1]}, "meta": {"model_shape": [30, 1536]}}))
    with pytest.raises(ValueError, match="another model|shape"):
        load_neuron_sets(tmp_path / "other.json", model)


def test_random_like_keeps_per_layer_counts():
    s = NeuronSet({0: [1, 2, 3], 1: [4]})
    r = s.random_like(d_mlp=64, seed=1, exclude=s)
    assert r.counts_per_layer() == s.counts_per_layer() and not (r & s)
    assert r == s.random_like(d_mlp=64, seed=1, exclude=s)


def test_hooks_removed_after_exception_and_compose():
    model = cached_tiny_model()
    toks = model.to_tokens("The capital of Zarnia")
    base = model(toks)
    ns = NeuronSet({0: list(range(10)), 1: [3]})
    with pytest.raises(RuntimeError):
        with neuron_hooks(model, zero_ablation(ns)):
            raise RuntimeError("boom")
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())
    # zero == scale by 0; nested with TL's own context manager
    with neuron_hooks(model, zero_ablation(ns)):
        z = model(toks)
        with model.hooks(fwd_hooks=[]):
            z2 = model(toks)
    with neuron_hooks(model, scale_ablation(ns, 0.0)):
        s = model(toks)
    torch.testing.assert_close(z, s)
    torch.testing.assert_close(z, z2)
    assert not torch.allclose(z, base)
    torch.testing.assert_close(model(toks), base)


def test_answer_target_matches_naive_loop():
    model = cached_tiny_model()
    prompts, answers = ["Q: capital of Zarnia? A:", "Who?"], [" Velmor", " Sorrel Spire"]
    batch = tokenize_with_answers(model, prompts, answers)
    got = answer_target(model(batch.tokens), batch)
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        ids = model.to_tokens(p)[0].tolist()
        total = 0.0
        for t in model.tokenizer.encode(a, add_special_tokens=False):
            lp = torch.log_softmax(model(torch.tensor([ids]))[0, -1], -1)[t]
            total += lp.item()
            ids.append(t)
        assert abs(got[i].item() - total) < 1e-4
    loss = sft_loss(model(batch.tokens), batch)
    assert abs(loss.item() + got.sum().item() / batch.n_answer_tokens.sum().item()) < 1e-4


def test_configs_validate_and_roundtrip(tmp_path):
    with pytest.raises(BAD_CHOICE, match="nope"):
        MiningConfig(method="nope")
    with pytest.raises(ValueError):
        DataConfig(split_fractions=(0.5, 0.5, 0.5))
    cfg = RunConfig()
    cfg.save(tmp_path / "c.json")
    assert RunConfig.load(tmp_path / "c.json") == cfg


def test_cli_help_lists_subcommands(capsys):
    from neurorit_lens.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


def test_encode_prompt_never_doubles_bos():
    from neurorit_lens.objective import encode_prompt

    model = cached_tiny_model()  # default_prepend_bos=True
    bos = model.tokenizer.bos_token
    plain = encode_prompt(model, "Question: hi")
    assert plain[0] == model.tokenizer.bos_token_id and plain[1] != model.tokenizer.bos_token_id
    assert encode_prompt(model, bos + "Question: hi") == plain
