"""Ablation hooks and the causal-test experiment, checked against closed forms and naive loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformer_lens.hook_points import HookPoint

from neurorit_lens.ablation.controls import ablation_hooks, neuron_means, random_controls
from neurorit_lens.ablation.measure import ContextPrompts, measure_ablation
from neurorit_lens.ablation.result import AblationResult
from neurorit_lens.config import AblationConfig
from neurorit_lens.data.answers import accuracy
from neurorit_lens.hooks import mlp_hook_name, neuron_hooks, set_neurons_hook, zero_ablation
from neurorit_lens.models import tiny_model
from neurorit_lens.models.generation import generate_greedy
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import answer_logprobs, prepare_answers, tokenize_with_answers
from tests.helpers import BAD_CHOICE, cached_tiny_model, unchecked

PROMPTS = [
    "Question: What is the capital of Zarnia? Answer:",
    "The river Quell flows",
    "Passages: Document 1 says the tallest tower in Brindle is the Sorrel Spire. Question: tallest tower? Answer:",
    "Who wrote the report?",
    "Irrelevant text about weather and trains. What is the capital of Zarnia?",
]
ANSWERS = [" Velmor", " north", " the Sorrel Spire", " Alice", " Velmor"]
SET = NeuronSet({0: [1, 5, 9, 33], 1: [2, 3, 60]})


def _no_hooks(model) -> bool:
    return not any(hp.fwd_hooks or hp.bwd_hooks for hp in model.hook_dict.values())


def _cfg(**kw) -> AblationConfig:
    base = dict(sets=("R_excl",), n_random=5, measure_accuracy=False, n_bootstrap=200)
    base.update(kw)
    return AblationConfig(**base)


# --------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("gated", [False, True])
def test_zero_ablation_equals_zeroed_W_out_rows(gated):
    model = tiny_model(gated=gated, seed=1)
    toks = model.to_tokens(PROMPTS[2])
    with neuron_hooks(model, ablation_hooks(SET, "zero")):
        hooked = model(toks)
    assert _no_hooks(model)
    with torch.no_grad():
        for layer, idx in SET.by_layer().items():
            model.blocks[layer].mlp.W_out[idx, :] = 0.0
    torch.testing.assert_close(hooked, model(toks), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_mean_ablation_equals_closed_form(gated):
    """Setting neuron i to m_i == zeroing its W_out row and adding m_i * W_out[i] to b_out."""
    model = tiny_model(gated=gated, seed=2)
    toks = model.to_tokens(PROMPTS[0])
    means = torch.randn(model.cfg.n_layers, model.cfg.d_mlp)
    with neuron_hooks(model, ablation_hooks(SET, "mean", means=means)):
        hooked = model(toks)
    with torch.no_grad():
        for layer, idx in SET.by_layer().items():
            mlp = model.blocks[layer].mlp
            mlp.b_out += means[layer, idx] @ mlp.W_out[idx, :]
            mlp.W_out[idx, :] = 0.0
    torch.testing.assert_close(hooked, model(toks), rtol=1e-5, atol=1e-5)


def test_scale_ablation_equals_scaled_W_out_rows():
    model = tiny_model(seed=3)
    toks = model.to_tokens(PROMPTS[1])
    with neuron_hooks(model, ablation_hooks(SET, "scale", scale=2.5)):
        hooked = model(toks)
    with neuron_hooks(model, ablation_hooks(SET, "scale", scale=0.0)):
        zero_by_scale = model(toks)
    with neuron_hooks(model, ablation_hooks(SET, "zero")):
        zero = model(toks)
    torch.testing.assert_close(zero, zero_by_scale)
    with torch.no_grad():
        for layer, idx in SET.by_layer().items():
            model.blocks[layer].mlp.W_out[idx, :] *= 2.5
    torch.testing.assert_close(hooked, model(toks), rtol=1e-5, atol=1e-5)


def test_set_neurons_hook_keeps_index_value_pairs():
    """Unsorted indices keep their own values (the hook sorts pairs, not just indices)."""
    act = torch.zeros(1, 2, 8)
    out = set_neurons_hook([5, 1, 3], torch.tensor([50.0, 10.0, 30.0]))(act, hook=HookPoint())
    assert out[0, 0, 5] == 50 and out[0, 0, 1] == 10 and out[0, 1, 3] == 30
    assert act.abs().sum() == 0  # the input is not modified in place
    with pytest.raises(ValueError, match="values for"):
        set_neurons_hook([1, 2], torch.tensor([1.0]))
    with pytest.raises(ValueError, match="duplicate"):
        set_neurons_hook([1, 1], torch.tensor([1.0, 2.0]))


def test_ablation_hooks_validate():
    with pytest.raises(ValueError, match="mode"):
        ablation_hooks(SET, "nope")
    with pytest.raises(ValueError, match="needs means"):
        ablation_hooks(SET, "mean")
    with pytest.raises(ValueError, match="shape|out of range"):
        ablation_hooks(SET, "mean", means=torch.zeros(2, 16))
    with pytest.raises(ValueError, match="NeuronSet"):
        unchecked(ablation_hooks)({0: [1]}, "zero")
    with pytest.raises(ValueError, match="site"):
        ablation_hooks(SET, "zero", site="resid")
    names = [n for n, _ in ablation_hooks(SET, "zero", site="pre")]
    assert names == [mlp_hook_name(0, "pre"), mlp_hook_name(1, "pre")]


# --------------------------------------------------------------------------- hook lifecycle
def test_hooks_removed_on_error_and_compose_with_tl_and_nested_blocks():
    model = cached_tiny_model()
    toks = model.to_tokens(PROMPTS[0])
    base = model(toks)
    A, B = NeuronSet({0: [1, 2, 3]}), NeuronSet({0: [7], 1: [4, 5]})
    bwd = [(mlp_hook_name(1), lambda g, hook: None)]
    with pytest.raises(RuntimeError, match="boom"):
        with neuron_hooks(model, ablation_hooks(A, "zero"), bwd):
            raise RuntimeError("boom")
    assert _no_hooks(model)
    with pytest.raises(KeyError):  # a bad name half-way: the hooks added before it are removed
        with neuron_hooks(model, ablation_hooks(A, "zero") + [("blocks.9.mlp.hook_post", lambda a, hook: a)]):
            pass
    assert _no_hooks(model)
    with neuron_hooks(model, ablation_hooks(A | B, "zero")):
        both = model(toks)
    # outer block = a training deactivation hook, inner block = an ablation
    with neuron_hooks(model, ablation_hooks(A, "zero")):
        with neuron_hooks(model, ablation_hooks(B, "zero")):
            nested = model(toks)
            model.reset_hooks()  # TL's reset (non-permanent) leaves ours in place
            nested_after_reset = model(toks)
        only_a = model(toks)
        seen = []
        with model.hooks(fwd_hooks=[(mlp_hook_name(0), lambda a, hook: seen.append(a.clone()))]):
            with_tl = model(toks)
        assert len(seen) == 1 and (seen[0][..., [1, 2, 3]] == 0).all()  # TL hook sees our ablation
    torch.testing.assert_close(nested, both)
    torch.testing.assert_close(nested_after_reset, both)
    torch.testing.assert_close(with_tl, only_a)
    with neuron_hooks(model, ablation_hooks(A, "zero")):
        torch.testing.assert_close(model(toks), only_a)
    assert _no_hooks(model)
    torch.testing.assert_close(model(toks), base)


# --------------------------------------------------------------------------- neuron means
@pytest.mark.parametrize("site", ["post", "pre"])
def test_neuron_means_match_naive_loop(site):
    model = cached_tiny_model()
    got = neuron_means(model, PROMPTS, site=site, batch_size=2)
    name = lambda layer: mlp_hook_name(layer, site)  # noqa: E731
    total = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.float64)
    count = 0
    for p in PROMPTS:  # one prompt at a time: no padding at all
        _, cache = model.run_with_cache(model.to_tokens(p))
        for layer in range(model.cfg.n_layers):
            total[layer] += cache[name(layer)][0].double().sum(0)
        count += cache[name(0)].shape[1]
    torch.testing.assert_close(got, (total / count).float(), rtol=1e-5, atol=1e-6)
    assert got.shape == (model.cfg.n_layers, model.cfg.d_mlp)
    assert _no_hooks(model)


def test_neuron_means_on_answer_batch_counts_real_positions_only():
    model = cached_tiny_model()
    batch = tokenize_with_answers(model, PROMPTS, ANSWERS)
    got = neuron_means(model, batch, batch_size=3)
    total, count = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.float64), 0
    for b in range(len(batch)):
        toks = batch.tokens[b : b + 1, : int(batch.lengths[b])]
        _, cache = model.run_with_cache(toks)
        for layer in range(model.cfg.n_layers):
            total[layer] += cache[mlp_hook_name(layer)][0].double().sum(0)
        count += toks.shape[1]
    torch.testing.assert_close(got, (total / count).float(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        neuron_means(model, [])


# --------------------------------------------------------------------------- random controls
def test_random_controls_match_counts_and_are_disjoint():
    union = SET | NeuronSet({0: list(range(10, 30)), 1: list(range(40, 50))})
    ctrl = random_controls(SET, d_mlp=64, n=6, seed=3)
    assert len({s for s, _ in ctrl}) == 6
    assert len({r for _, r in ctrl}) == 6  # distinct seeds give distinct sets here
    for _, r in ctrl:
        assert r.counts_per_layer() == SET.counts_per_layer()
        assert not (r & SET)
    for _, r in random_controls(SET, 64, 5, seed=3, exclude=union):
        assert not (r & union) and r.counts_per_layer() == SET.counts_per_layer()
    assert random_controls(SET, 64, 6, seed=3) == ctrl  # deterministic


# --------------------------------------------------------------------------- the experiment
def _naive_logprob(model, prompt: str, answer: str, hooks=()) -> float:
    """log p(answer | prompt), one token at a time, one example alone (no batching, no padding)."""
    ids = model.to_tokens(prompt)[0].tolist()
    total = 0.0
    with model.hooks(fwd_hooks=list(hooks)):
        for t in model.tokenizer.encode(answer, add_special_tokens=False):
            total += torch.log_softmax(model(torch.tensor([ids]))[0, -1], -1)[t].item()
            ids.append(t)
    return total


def test_logprob_effects_match_naive_loop_and_random_controls_are_disjoint():
    model = cached_tiny_model()
    sets = {"R_excl": SET, "I_excl": NeuronSet({1: [7, 8]}), "shared": NeuronSet()}
    cfg = _cfg(sets=("R_excl", "I_excl", "shared"), batch_size=2)
    ctx = ContextPrompts("relevant", "gold", PROMPTS, ANSWERS)
    noisy = ContextPrompts("noisy", "noise=0.8", [p + " trains trains" for p in PROMPTS[:2]], ANSWERS[:2])
    res = measure_ablation(model, [ctx, noisy], sets, cfg, show_progress=False)
    assert _no_hooks(model)
    base = [_naive_logprob(model, p, a) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    np.testing.assert_allclose(res.per_example["relevant"]["base_logprob"], base, atol=1e-4)
    abl = [_naive_logprob(model, p, a, zero_ablation(SET)) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    eff = np.array(abl) - np.array(base)
    pe = res.per_example["relevant"]["sets"]["R_excl"]["logprob"]
    np.testing.assert_allclose(pe["effect"], eff, atol=1e-4)
    row = res.row("R_excl", "relevant", "logprob")
    assert row.n == 5 and row.n_neurons == len(SET) and abs(row.effect.mean - eff.mean()) < 1e-5
    # random controls: recorded seeds regenerate the sets; their effects match the naive loop too
    seeds = res.sets["R_excl"]["random_seeds"]
    assert len(seeds) == 5 and len(set(seeds)) == 5
    first = None
    for k, s in enumerate(seeds):
        r = SET.random_like(model.cfg.d_mlp, seed=s, exclude=SET)
        assert r.counts_per_layer() == SET.counts_per_layer() and not (r & SET)
        if k == 0:
            first = r
    r_eff = np.array([_naive_logprob(model, p, a, zero_ablation(first))
                      for p, a in zip(PROMPTS, ANSWERS, strict=True)]) - base
    np.testing.assert_allclose(pe["random"][0], r_eff, atol=1e-4)
    rnd_mean = np.array(pe["random"]).mean(0)
    assert abs(row.random.mean - rnd_mean.mean()) < 1e-6
    assert abs(row.diff.mean - (eff - rnd_mean).mean()) < 1e-6
    assert row.diff.ci_low <= row.diff.mean <= row.diff.ci_high
    # the I_excl controls come from other seeds than R_excl's
    assert set(res.sets["I_excl"]["random_seeds"]).isdisjoint(seeds)
    # empty set: reported, not measured
    empty = res.row("shared", "noisy", "logprob")
    assert empty.n_neurons == 0 and empty.n == 0 and "no neurons" in empty.verdict
    assert {r.context for r in res.rows} == {"relevant", "noisy"}
    assert all("R_excl" in v for v in res.verdicts() if v.startswith("R_excl"))


@pytest.mark.parametrize("gated", [False, True])
def test_answer_logprobs_equal_answer_target_on_full_logits(gated):
    from neurorit_lens.objective import answer_target

    model = cached_tiny_model(gated=gated)
    batches = prepare_answers(model, PROMPTS, ANSWERS, batch_size=3)
    got = answer_logprobs(model, batches)
    want = torch.empty(len(PROMPTS))
    for idx, b in batches.batches:
        want[idx] = answer_target(model(b.tokens), b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_answer_logprobs_batched_equals_unbatched():
    model = cached_tiny_model()

    b1 = prepare_answers(model, PROMPTS, ANSWERS, batch_size=1)
    b4 = prepare_answers(model, PROMPTS, ANSWERS, batch_size=4)
    hooks = ablation_hooks(SET, "zero")
    torch.testing.assert_close(answer_logprobs(model, b4, hooks=hooks), answer_logprobs(model, b1, hooks=hooks),
                               rtol=1e-5, atol=1e-5)
    # strings: the same pairs, tokenised inside
    torch.testing.assert_close(answer_logprobs(model, PROMPTS, ANSWERS, batch_size=2, hooks=hooks),
                               answer_logprobs(model, b1, hooks=hooks), rtol=1e-5, atol=1e-5)


def test_accuracy_effects_match_naive_generation():
    model = cached_tiny_model()
    # gold answers = what the unablated model itself generates, so the base accuracy is 1
    gen = generate_greedy(model, PROMPTS, max_new_tokens=4, batch_size=1, show_progress=False)
    golds = [[g.strip() or "x"] for g in gen]
    big = NeuronSet({0: list(range(0, 64, 2)), 1: list(range(0, 64, 3))})
    cfg = _cfg(measure_accuracy=True, max_new_tokens=4, batch_size=3, accuracy_limit=4)
    ctx = ContextPrompts("relevant", "gold", PROMPTS, [" " + g[0] for g in golds], answers=golds)
    res = measure_ablation(model, [ctx], {"R_excl": big}, cfg, show_progress=False)
    row = res.row("R_excl", "relevant", "accuracy")
    assert row.n == 4
    base = np.array([accuracy(g, a) for g, a in zip(gen[:4], golds[:4], strict=True)])
    with neuron_hooks(model, zero_ablation(big)):
        abl_gen = [generate_greedy(model, [p], 4, 1, show_progress=False)[0] for p in PROMPTS[:4]]
    abl = np.array([accuracy(g, a) for g, a in zip(abl_gen, golds[:4], strict=True)])
    assert res.per_example["relevant"]["base_correct"] == base.tolist()
    np.testing.assert_allclose(res.per_example["relevant"]["sets"]["R_excl"]["accuracy"]["effect"], abl - base)
    assert abs(row.effect.mean - (abl - base).mean()) < 1e-9 and abs(row.base - base.mean()) < 1e-9
    assert _no_hooks(model)


@pytest.mark.parametrize("mode", ["zero", "scale"])
def test_accuracy_through_the_twin_equals_accuracy_through_hooks(tmp_path, mode):
    """generation_backend auto (ablation scaled into the transformers twin) gives the accuracy
    rows of tl (TransformerLens hooks) on a model with a twin."""
    from tests.unit.test_generation import _tiny_hf_twin_model

    model = _tiny_hf_twin_model("llama", tmp_path)
    gen = generate_greedy(model, PROMPTS, max_new_tokens=4, batch_size=1, show_progress=False, backend="tl")
    golds = [[g.strip() or "x"] for g in gen]
    ctx = ContextPrompts("relevant", "gold", PROMPTS, [" " + g[0] for g in golds], answers=golds)
    sets = {"R_excl": NeuronSet({0: list(range(0, 128, 2)), 1: list(range(0, 128, 3))})}
    rows = {}
    for backend in ("auto", "tl"):
        cfg = _cfg(measure_accuracy=True, max_new_tokens=4, batch_size=3, mode=mode, scale=0.25,
                   generation_backend=backend)
        res = measure_ablation(model, [ctx], sets, cfg, show_progress=False)
        rows[backend] = res.per_example["relevant"]
    assert rows["auto"] == rows["tl"]
    assert rows["tl"]["base_correct"] == [1.0] * len(PROMPTS)
    assert any(e != 0 for e in rows["tl"]["sets"]["R_excl"]["accuracy"]["effect"])  # the ablation bites
    assert _no_hooks(model)


def test_mean_mode_and_result_roundtrip(tmp_path):
    model = cached_tiny_model()
    ctx = ContextPrompts("relevant", "gold", PROMPTS[:3], ANSWERS[:3])
    res = measure_ablation(model, [ctx], {"R_excl": SET}, _cfg(mode="mean"), show_progress=False,
                           meta={"model": "tiny"})
    means = neuron_means(model, tokenize_with_answers(model, PROMPTS[:3], ANSWERS[:3]))
    want = np.array([_naive_logprob(model, p, a, ablation_hooks(SET, "mean", means)) - _naive_logprob(model, p, a)
                     for p, a in zip(PROMPTS[:3], ANSWERS[:3], strict=True)])
    np.testing.assert_allclose(res.per_example["relevant"]["sets"]["R_excl"]["logprob"]["effect"], want, atol=1e-4)
    path = res.save(tmp_path)
    assert path.name == "ablation.json" and json.loads(path.read_text())["config"]["mode"] == "mean"
    back = AblationResult.load(tmp_path)
    assert back.to_dict() == json.loads(json.dumps(res.to_dict()))
    table = back.table()
    assert "R_excl" in table and "set - random" in table and "relevant (gold)" in table
    assert back.top(1)[0].set_name == "R_excl"


def test_measure_ablation_rejects_bad_input():
    model = cached_tiny_model()
    ctx = ContextPrompts("relevant", "gold", PROMPTS[:2], ANSWERS[:2])
    with pytest.raises(ValueError, match="not found"):
        measure_ablation(model, [ctx], {"I_excl": SET}, _cfg(), show_progress=False)
    with pytest.raises(ValueError, match="out of range"):
        measure_ablation(model, [ctx], {"R_excl": NeuronSet({5: [1]})}, _cfg(), show_progress=False)
    with pytest.raises(ValueError, match="shape"):
        measure_ablation(model, [ctx], {"R_excl": SET}, _cfg(mode="mean"), means=torch.zeros(3, 3),
                         show_progress=False)
    with pytest.raises(ValueError, match="prompts but"):
        ContextPrompts("relevant", "gold", PROMPTS[:2], ANSWERS[:1])
    with pytest.raises(ValueError, match="n_random"):
        AblationConfig(n_random=2)
    with pytest.raises(BAD_CHOICE, match="random_exclude"):
        AblationConfig(random_exclude="some")
    assert _no_hooks(model)


# --------------------------------------------------------------------------- CLI
def test_cli_ablate_end_to_end_on_tiny_model(tmp_path, capsys):
    from neurorit_lens.cli.main import main
    from neurorit_lens.neuron_sets import exclusive_sets, save_neuron_sets

    sets = exclusive_sets(NeuronSet({0: [1, 2, 3, 4], 1: [5, 6]}), NeuronSet({0: [4, 9], 1: [10, 11, 12]}))
    neurons = save_neuron_sets(tmp_path / "mine" / "neurons.json", sets, {"model_shape": [2, 64], "site": "post"})
    out = tmp_path / "abl"
    common = ["--model", "tiny", "--limit", "3", "--max-prompt-tokens", "320", "--n-passages", "3",
              "--n-bootstrap", "100", "--batch-size", "4", "--no-plot"]
    rc = main(["ablate", "--neurons", str(neurons), "--out", str(out), "--accuracy-limit", "2",
               "--max-new-tokens", "2", "--sets", "R_excl,I_excl"] + common)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| R_excl |" in printed and "set - random" in printed
    res = AblationResult.load(out / "ablation.json")
    assert {(r.set_name, r.context, r.metric) for r in res.rows} == {
        (s, c, m) for s in ("R_excl", "I_excl") for c in ("relevant", "noisy") for m in ("logprob", "accuracy")}
    assert res.row("R_excl", "noisy").setting == "noise=0.8" and res.row("R_excl", "relevant").n == 3
    assert res.row("I_excl", "relevant", "accuracy").n == 2
    assert res.sets["R_excl"]["counts_per_layer"] == {"0": 3, "1": 2}
    # a neuron file from another model is rejected with a clear error
    save_neuron_sets(tmp_path / "other.json", {"R_excl": NeuronSet({20: [1000]})}, {"model_shape": [30, 1536]})
    rc = main(["ablate", "--neurons", str(tmp_path / "other.json"), "--out", str(tmp_path / "x")] + common)
    assert rc == 2
    assert "shape [30, 1536]" in capsys.readouterr().err
    save_neuron_sets(tmp_path / "nometa.json", {"R_excl": NeuronSet({5: [1]})})  # no shape in meta
    rc = main(["ablate", "--neurons", str(tmp_path / "nometa.json"), "--out", str(tmp_path / "x")] + common)
    assert rc == 2 and "another model" in capsys.readouterr().err
    assert not (tmp_path / "x" / "ablation.json").exists()


def test_constant_mode_holds_answer_position_means_of_the_relevant_context():
    from neurorit_lens.ablation.controls import answer_position_means

    model = cached_tiny_model()
    ctx = ContextPrompts("relevant", "gold", PROMPTS[:3], ANSWERS[:3])
    res = measure_ablation(model, [ctx], {"R_excl": SET}, _cfg(mode="constant", measure_accuracy=False),
                           show_progress=False)
    # naive: mean of hook_post over the positions that predict an answer token
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    sums, n = torch.zeros(L, D, dtype=torch.float64), 0
    for p, a in zip(PROMPTS[:3], ANSWERS[:3], strict=True):
        b = tokenize_with_answers(model, [p], [a])
        _, cache = model.run_with_cache(b.tokens)
        for t in torch.nonzero(b.answer_mask[0]).flatten().tolist():
            n += 1
            for layer in range(L):
                sums[layer] += cache[mlp_hook_name(layer)][0, t].double()
    means = (sums / n).float()
    torch.testing.assert_close(answer_position_means(model, PROMPTS[:3], ANSWERS[:3], batch_size=2), means,
                               rtol=1e-4, atol=1e-6)
    want = np.array([_naive_logprob(model, p, a, ablation_hooks(SET, "constant", means)) - _naive_logprob(model, p, a)
                     for p, a in zip(PROMPTS[:3], ANSWERS[:3], strict=True)])
    np.testing.assert_allclose(res.per_example["relevant"]["sets"]["R_excl"]["logprob"]["effect"], want, atol=1e-4)
    with pytest.raises(ValueError, match="constant"):
        ablation_hooks(SET, "constant")


def test_cli_ablate_gate_mode_learns_gates_on_the_train_split(tmp_path):
    from neurorit_lens.cli.main import main
    from neurorit_lens.neuron_sets import save_neuron_sets

    neurons = save_neuron_sets(tmp_path / "neurons.json", {"R_excl": NeuronSet({0: [1, 2, 3], 1: [5]})},
                               {"model_shape": [2, 64], "site": "post"})
    out = tmp_path / "abl"
    argv = ["ablate", "--model", "tiny", "--neurons", str(neurons), "--out", str(out), "--limit", "3",
            "--max-prompt-tokens", "320", "--n-passages", "3", "--n-bootstrap", "50", "--batch-size", "4", "--no-plot",
            "--sets", "R_excl", "--mode", "gate", "--gate-steps", "1", "--gate-batch-size", "2",
            "--no-measure-accuracy"]
    assert main(argv) == 0
    res = AblationResult.load(out / "ablation.json")
    assert res.config["mode"] == "gate" and res.meta["n_gate_items"] > 0
    assert {(r.set_name, r.context) for r in res.rows} == {("R_excl", "relevant"), ("R_excl", "noisy")}
    assert len(list((out / "gates").glob("R_excl_*.safetensors"))) == 6  # the set and its 5 random sets


def test_runner_ablation_stage_in_gate_mode_depends_on_the_train_questions():
    from neurorit_lens.config import RunConfig
    from neurorit_lens.runner import Runner

    def inputs(mode: str, train_limit: int | None) -> dict:
        cfg = RunConfig(ablation=AblationConfig(mode=mode), train_limit=train_limit, out="unused")
        return Runner(cfg, model=object()).stage_inputs("ablation")

    assert "train_limit" not in inputs("zero", 5) and inputs("zero", 5) == inputs("zero", 6)
    assert inputs("gate", 5)["train_limit"] == 5 and inputs("gate", 5) != inputs("gate", 6)
