"""Parameter masks, neuron-parameter counting, stage planning and baked deactivation."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.hooks import neuron_hooks, zero_ablation
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.training.masks import (
    count_trainable,
    full_param_masks,
    layer_param_masks,
    merge_masks,
    neuron_param_masks,
    total_params,
)
from neurorit_lens.training.plans import (
    bake_deactivation,
    layer_ranking,
    plan_method,
    select_target_layers,
)
from tests.helpers import cached_tiny_model


@pytest.mark.parametrize("gated", [False, True])
def test_neuron_masks_select_exactly_the_neurons_entries(gated):
    m = cached_tiny_model(gated=gated)
    ns = NeuronSet({0: [3, 7], 1: [0]})
    masks = neuron_param_masks(m, ns)
    # naive reference: loop over every entry of every MLP weight
    d_model = m.cfg.d_model
    for name, mask in masks.items():
        layer = int(name.split(".")[1])
        want = {n.index for n in ns if n.layer == layer}
        suffix = name.split(".")[-1]
        all_idx = (torch.cartesian_prod(*[torch.arange(s) for s in mask.shape]) if mask.dim() > 1
                   else torch.arange(mask.shape[0]).unsqueeze(1))
        for idx in all_idx:
            idx = tuple(idx.tolist())
            neuron = idx[0] if suffix in ("W_out", "b_in") else idx[1]
            assert bool(mask[idx]) == (neuron in want), (name, idx)
    per_neuron = 2 * d_model + 1 + (d_model if gated else 0)
    assert count_trainable(m, masks) == len(ns) * per_neuron
    assert ("blocks.0.mlp.W_gate" in masks) == gated


def test_layer_masks_merge_and_counts():
    m = cached_tiny_model()
    params = dict(m.named_parameters())
    lm = layer_param_masks(m, [1])
    assert all(n.startswith("blocks.1.mlp.") for n in lm)
    assert count_trainable(m, lm) == sum(p.numel() for n, p in params.items() if n.startswith("blocks.1.mlp."))
    la = layer_param_masks(m, [1], attention=True)
    assert count_trainable(m, la) == sum(p.numel() for n, p in params.items()
                                         if n.startswith(("blocks.1.mlp.", "blocks.1.attn.")))
    nm = neuron_param_masks(m, NeuronSet({1: [2], 0: [5]}))
    merged = merge_masks(nm, lm)
    assert merged["blocks.1.mlp.W_in"] is None and merged["blocks.0.mlp.W_in"].sum() == m.cfg.d_model
    n5 = count_trainable(m, neuron_param_masks(m, NeuronSet({0: [5]})))
    assert count_trainable(m, merged) == count_trainable(m, lm) + n5
    assert count_trainable(m, full_param_masks(m)) == total_params(m) == sum(p.numel() for p in m.parameters())
    with pytest.raises(ValueError, match="out of range"):
        layer_param_masks(m, [5])
    with pytest.raises(ValueError, match="out of range"):
        neuron_param_masks(m, NeuronSet({0: [999]}))


def test_layer_ranking_and_target_layer_choice_match_brute_force():
    m = tiny_model(n_layers=4, d_mlp=64)
    r = NeuronSet({0: [1], 2: [1, 2, 3], 3: [4, 5]})
    assert layer_ranking(4, r) == [2, 3, 0, 1]  # fallback: counts
    assert layer_ranking(4, r, {"R_excl": [0.5, 3.0, 0.1, 3.0]}) == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="entries"):
        layer_ranking(4, r, {"R_excl": [1.0]})
    with pytest.raises(ValueError, match="cannot choose"):
        layer_ranking(4, NeuronSet())
    base = neuron_param_masks(m, r)
    ranking = layer_ranking(4, r)
    total = total_params(m)
    for target in (0.01, 0.05, 0.1, 0.2, 0.5):
        cfg = TrainConfig(target_fraction=target)
        got = select_target_layers(m, ranking, cfg, base)
        gaps = [abs(count_trainable(m, merge_masks(base, layer_param_masks(m, ranking[:k]))) / total - target)
                for k in range(1, 5)]
        assert len(got) == 1 + gaps.index(min(gaps)), (target, gaps)
        assert got == sorted(ranking[: len(got)])
    assert select_target_layers(m, ranking, TrainConfig(n_target_layers=2)) == [2, 3]


def test_plans_of_every_method_sum_to_the_same_steps():
    m = cached_tiny_model()
    sets = {"R_excl": NeuronSet({0: [1, 2], 1: [3]}), "I_excl": NeuronSet({0: [4], 1: [5, 6]})}
    cfg = TrainConfig(steps=7, n_target_layers=1, deactivation="zero")
    plans = {meth: plan_method(m, meth, sets, None, cfg) for meth in ("neurorit", "stage1", "layers", "full", "random")}
    assert {k: sum(s.steps for s in p.stages) for k, p in plans.items()} == dict.fromkeys(plans, 7)
    assert [s.name for s in plans["neurorit"].stages] == ["stage1", "stage2"]
    assert plans["layers"].target_layers == plans["neurorit"].target_layers == [0]  # layer 0 has most R_excl
    rnd = plans["random"]
    assert rnd.trained_neurons.counts_per_layer() == sets["R_excl"].counts_per_layer()
    assert rnd.deactivated.counts_per_layer() == sets["I_excl"].counts_per_layer()
    assert not (rnd.trained_neurons & (sets["R_excl"] | sets["I_excl"])) and not (rnd.deactivated & rnd.trained_neurons)
    assert plans["full"].trainable_fraction == 1.0
    assert plans["stage1"].deactivated == sets["I_excl"] and plans["layers"].deactivated == NeuronSet()
    with pytest.raises(ValueError, match="R_excl"):
        plan_method(m, "stage1", {}, None, cfg)
    with pytest.raises(ValueError, match="out of range"):
        plan_method(m, "stage1", {"R_excl": NeuronSet({9: [1]}), "I_excl": NeuronSet()}, None, cfg)


@pytest.mark.parametrize("gated", [False, True])
def test_baked_deactivation_gives_the_hooked_logits(gated):
    m = tiny_model(gated=gated, seed=3)
    toks = m.to_tokens(["The capital of Zarnia is", "Trains in Brindle run"])
    ns = NeuronSet({0: [0, 5, 9, 33], 1: [2, 63]})
    base = m(toks)
    with neuron_hooks(m, zero_ablation(ns)):
        hooked = m(toks)
    bake_deactivation(m, ns)
    baked = m(toks)
    assert not torch.allclose(base, hooked)
    torch.testing.assert_close(baked, hooked, rtol=0, atol=1e-6)
    assert not any(hp.fwd_hooks for hp in m.hook_dict.values())
    # the neurons are off at hook_post with no hook
    _, cache = m.run_with_cache(toks, names_filter=lambda n: n.endswith("mlp.hook_post"))
    for layer, idx in ns.by_layer().items():
        assert cache[f"blocks.{layer}.mlp.hook_post"][..., idx].abs().max() == 0


def test_default_deactivation_is_none_and_trains_r_excl_only():
    """The causal screen found no definition of I to switch off (docs/screen.md): by default
    stage 1 deactivates nothing, and trains the same R_excl neurons as with deactivation."""
    m = cached_tiny_model()
    sets = {"R_excl": NeuronSet({0: [1, 2], 1: [3]}), "I_excl": NeuronSet({0: [4], 1: [5, 6]})}
    assert TrainConfig().deactivation == "none"
    off = plan_method(m, "neurorit", sets, None, TrainConfig(steps=6, n_target_layers=1))
    on = plan_method(m, "neurorit", sets, None, TrainConfig(steps=6, n_target_layers=1, deactivation="zero"))
    assert not off.deactivated and all(not s.deactivate for s in off.stages) and off.hooks(off.deactivated) == []
    assert on.deactivated == sets["I_excl"]
    assert off.trained_neurons == on.trained_neurons == sets["R_excl"]
    assert off.trainable_params == on.trainable_params
