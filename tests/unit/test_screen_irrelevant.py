"""The causal screen's second list (neurorit_lens.experiments.screen, screen_report, and the ablation
mode gate of neurorit_lens.ablation.gate), tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from neurorit_lens.ablation import gate as ablation_gate
from neurorit_lens.ablation.gate import train_gates
from neurorit_lens.ablation.measure import build_context_prompts, run_ablation
from neurorit_lens.cli.main import main as cli_main
from neurorit_lens.config import AblationConfig, DataConfig
from neurorit_lens.data.splits import load_splits
from neurorit_lens.experiments.screen import (
    CANDIDATES,
    SCREENS,
    ScreenConfig,
    ablate_combo,
    candidate_result,
    combo_path,
    mine_candidates,
    parse_combo,
)
from neurorit_lens.experiments.screen_report import passes
from neurorit_lens.hooks import mlp_hook_name, neuron_hooks
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.neurons.score_files import read_tensor
from neurorit_lens.neurons.selection import normalize_scores
from neurorit_lens.objective import answer_logprobs, prepare_answers
from neurorit_lens.training.gate import GATE_PARAM
from neurorit_lens.training.items import TrainItem

DATA = DataConfig(data="embedded:40", n_passages=5, max_prompt_tokens=512, seed=0)


@pytest.fixture(scope="module")
def splits():
    _, s = load_splits(DATA)
    return s["train"][:6], s["dev"][:3]


@pytest.fixture(scope="module")
def mined(splits, tmp_path_factory):
    cfg = ScreenConfig(top_k=10, noisy="noise=0.8")
    out = tmp_path_factory.mktemp("screen") / "emb"
    out.mkdir()
    return mine_candidates(tiny_model(seed=3), splits[0], DATA, out, cfg, SCREENS[2]), out


def _no_hooks(model) -> bool:
    return not any(hp.fwd_hooks or hp.bwd_hooks for hp in model.hook_dict.values())


def test_parse_combo():
    assert parse_combo("negative_paired:scale0.5") == ("negative_paired", "scale", 0.5)
    assert parse_combo("contrast:gate") == ("contrast", "gate", 0.0)
    assert parse_combo("contrast:gate01") == ("contrast", "gate01", 0.0)
    for bad in ("nope:zero", "contrast", "contrast:scaleX", "contrast:off"):
        with pytest.raises(ValueError, match="bad combo"):
            parse_combo(bad)


def test_second_screen_candidates_mine_and_yield_sets(mined):
    res, out = mined
    assert set(res) == {"negative_paired", "contrast"}  # the variants reuse negative_paired's folder
    assert (out / "mine_contrast" / "neurons.json").exists() and not (out / "mine_negative_paired_norm").exists()
    for cand in {c for c, _, _ in SCREENS[2]}:
        r = candidate_result(res, cand)
        assert set(r.sets) == {"R", "I", "R_excl", "I_excl", "shared"}
        assert len(r.sets["I"]) > 0
    assert res["contrast"].config.irrelevant_definition == "contrast"
    base = res["negative_paired"]
    assert not base.config.normalize and base.act_scale is not None
    sign = candidate_result(res, "negative_paired_sign0.7")
    assert sign.config.sign_consistency == 0.7 and set(sign.sets["I"].labels()) <= set(base.sets["I"].labels())
    # sign consistency by a naive count: a kept I neuron is > 0 in at least 70% of the questions
    pos = (base.scores_I > 0).float().mean(0)
    assert all(pos[layer, i] >= 0.7 - 1e-9 for layer, idx in sign.sets["I"].by_layer().items() for i in idx)
    # the normalised variant: top-k of the mean of the scores divided by the activation scale
    norm = candidate_result(res, "negative_paired_norm")
    mean = normalize_scores(base.scores_I, base.act_scale).double().mean(0).flatten()
    want = {int(j) for j in torch.argsort(-mean, stable=True)[:10] if mean[j] > 0}
    d = base.model_shape[1]
    assert {layer * d + i for layer, idx in norm.sets["I"].by_layer().items() for i in idx} == want


def test_train_gates_moves_gates_and_leaves_the_model(splits):
    model = tiny_model(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    neurons = NeuronSet({0: [1, 5, 9], 1: [2, 40]})
    items = [TrainItem("Question: capital of Zarnia? Answer:", " Velmor")] * 4
    g = train_gates(model, neurons, items, AblationConfig(gate_steps=4, gate_lr=0.05, gate_penalty=0.01,
                                                          gate_batch_size=2))
    mask = neurons.to_mask(*g.shape)
    assert (g[mask] - 1).abs().min() > 1e-3  # every gate moved away from 1
    assert torch.equal(g[~mask], torch.ones_like(g[~mask]))  # the others are exactly 1
    assert GATE_PARAM not in dict(model.named_parameters()) and _no_hooks(model)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="at least one neuron"):
        train_gates(model, NeuronSet(), items, AblationConfig())


def test_clamped_gate_training_gets_no_sft_gradient_outside_the_range():
    """With clamp, a gate outside [0, 1] sees no SFT gradient (the clamp is flat there), so
    the same steps give other gates than free training."""
    model = tiny_model(seed=3)
    neurons = NeuronSet({0: [1, 5, 9], 1: [2, 40]})
    items = [TrainItem("Question: capital of Zarnia? Answer:", " Velmor")] * 4
    free = train_gates(model, neurons, items, AblationConfig(gate_steps=6, gate_lr=0.2, gate_penalty=0.0,
                                                             gate_batch_size=2))
    clamped = train_gates(model, neurons, items, AblationConfig(gate_steps=6, gate_lr=0.2, gate_penalty=0.0,
                                                                gate_batch_size=2, gate_clamp=True))
    mask = neurons.to_mask(*free.shape)
    assert not torch.allclose(free[mask], clamped[mask])  # the flag reaches the training hooks
    assert torch.equal(clamped[~mask], torch.ones_like(clamped[~mask]))


def test_gate_ablation_random_sets_and_exact_deltas(splits, mined, tmp_path, monkeypatch):
    model = tiny_model(seed=3)
    dev = splits[1]
    ns = candidate_result(mined[0], "negative_paired").sets["I_excl"]
    assert ns
    cfg = AblationConfig(sets=("c",), mode="gate", n_random=5, measure_accuracy=False, batch_size=4, gate_steps=2,
                         gate_batch_size=2)
    res = run_ablation(model, dev, {"c": ns}, cfg, DATA, show_progress=False, train_examples=splits[0],
                       gate_dir=tmp_path)
    assert res.config["mode"] == "gate" and _no_hooks(model)
    counts = ns.counts_per_layer()
    files = sorted(tmp_path.glob("c_*.safetensors"))
    assert len(files) == 6
    tested = read_tensor(tmp_path / "c_set.safetensors")[0]
    for f in files:  # each set's gates differ from 1 exactly on its own neurons: the same per-layer counts
        g = read_tensor(f)[0]
        moved = NeuronSet.from_mask(g != 1)
        assert moved.counts_per_layer() == counts
        if f.name != "c_set.safetensors":
            assert not (moved & ns)
    # Δ log p(gold | noisy) of the tested set, recomputed with its saved gates
    ctx = build_context_prompts(model, dev, "noise=0.8", "noisy", DATA, cfg.max_new_tokens)
    prep = prepare_answers(model, ctx.prompts, ctx.continuations, 4)
    base = answer_logprobs(model, prep)
    def naive(layer, idx):  # multiply neuron by neuron, the reference of gate_hooks
        def hook(act, hook):
            act = act.clone()
            for i in idx:
                act[..., i] = act[..., i] * tested[layer, i]
            return act
        return hook

    hooks = [(mlp_hook_name(layer), naive(layer, idx)) for layer, idx in ns.by_layer().items()]
    with neuron_hooks(model, hooks):
        gated = answer_logprobs(model, prep)
    got = res.per_example["noisy"]["sets"]["c"]["logprob"]["effect"]
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), (gated - base).double(), rtol=1e-5, atol=1e-5)
    # resume: trained gates are read back, nothing is trained again
    monkeypatch.setattr(ablation_gate, "train_gates", lambda *a, **k: pytest.fail("trained again"))
    again = run_ablation(model, dev, {"c": ns}, cfg, DATA, show_progress=False, train_examples=splits[0],
                         gate_dir=tmp_path)
    assert again.per_example["noisy"]["sets"]["c"]["logprob"] == res.per_example["noisy"]["sets"]["c"]["logprob"]


def test_resume_skips_finished_combos(tmp_path):
    path = combo_path(tmp_path, "contrast", "gate", 0.0, screen=2)
    assert path == tmp_path / "screen2" / "ablation_contrast_gate.json"
    assert combo_path(tmp_path, "gold", "zero", 0.0) == tmp_path / "ablation_gold_zero.json"  # screen 1 unchanged
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"rows": [], "done": 1}))
    cfg = ScreenConfig(name="x", noisy="noise=0.8")
    # no model, no data: a finished combo is read back, not run
    assert ablate_combo(None, [], [], {}, DATA, "contrast", "gate", 0.0, tmp_path, cfg, screen=2)["done"] == 1


def test_cli_second_screen_with_accuracy_and_summary(tmp_path, capsys):
    argv = ["screen", "--screen", "2", "--combos", "contrast:scale0.5", "--model", "tiny", "--data", "embedded:40",
            "--name", "emb", "--results", str(tmp_path), "--train-limit", "4", "--dev-limit", "2", "--top-k", "8",
            "--threads", "1"]
    assert cli_main(argv) == 0
    d = json.loads((tmp_path / "emb" / "screen2" / "ablation_contrast_scale0.5.json").read_text())
    assert {r["metric"] for r in d["rows"]} == {"logprob", "accuracy"}  # accuracy on by default in screen 2
    assert json.loads((tmp_path / "emb" / "screen2" / "config.json").read_text())["accuracy"] is True
    assert not list((tmp_path / "emb").glob("ablation_*.json"))  # the first screen's files untouched
    assert cli_main(["screen", "--summarize", "emb", "--results", str(tmp_path)]) == 0
    md = (tmp_path / "screen2.md").read_text()
    assert "| emb | contrast | scale0.5 |" in md and "Δ acc, noisy − random" in md
    assert "Causal screen 2" in capsys.readouterr().out


def test_selection_rule_and_candidates():
    assert passes({"mean": 0.1}, {"ci_low": 0.01}) and not passes({"mean": -0.25}, {"ci_low": 0.5})
    assert not passes({"mean": 0.0}, {"ci_low": -0.01}) and not passes({"mean": None}, {"ci_low": None})
    assert all(c in CANDIDATES for s in SCREENS.values() for c, _, _ in s)


def test_gate_is_an_ablation_mode_that_needs_train_questions(splits):
    from neurorit_lens.ablation.controls import ablation_hooks
    from neurorit_lens.ablation.measure import measure_ablation
    from neurorit_lens.experiments.screen import ablation_config

    model = tiny_model(seed=3)
    ns = NeuronSet({0: [1, 2]})
    cfg = AblationConfig(sets=("c",), mode="gate", measure_accuracy=False)
    with pytest.raises(ValueError, match="no fixed hooks"):
        ablation_hooks(ns, "gate")
    with pytest.raises(ValueError, match="needs train_examples"):
        run_ablation(model, splits[1], {"c": ns}, cfg, DATA, show_progress=False)
    ctx = build_context_prompts(model, splits[1], "gold", "relevant", DATA, cfg.max_new_tokens)
    with pytest.raises(ValueError, match="hooks_for"):
        measure_ablation(model, [ctx], {"c": ns}, cfg, show_progress=False)
    for bad in ({"gate_steps": 0}, {"gate_lr": 0.0}, {"gate_penalty": -1.0}):
        with pytest.raises(ValueError, match="gate"):
            AblationConfig(**bad)
    one, clamped = (ablation_config("contrast", m, 0.0, ScreenConfig()) for m in ("gate", "gate01"))
    assert (one.mode, one.gate_clamp, clamped.mode, clamped.gate_clamp) == ("gate", False, "gate", True)
    with pytest.raises(ValueError, match="bad combo"):
        ScreenConfig(combos=("contrast:off",))
    assert cli_main(["screen", "--screen", "4"]) == 2
