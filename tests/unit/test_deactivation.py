"""Deactivation modes (zero, scale, constant): hooks, exact baking into the weights, training."""

from __future__ import annotations

import copy

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.hooks import deactivation_hooks, neuron_hooks
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.methods import train
from neurorit_lens.training.plans import bake_deactivation, plan_method
from tests.helpers import BAD_CHOICE

SET = NeuronSet({0: [3, 7, 10], 1: [0, 63]})
ITEMS = [TrainItem(f"Question: What is the capital of Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}") for i in range(6)]
DEV = [TrainItem(f"Question: Where is Brindle{i}? Answer:", f" Quell{i}", id=f"d{i}") for i in range(3)]


def _values(model):
    return torch.randn(model.cfg.n_layers, model.cfg.d_mlp, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("mode,scale", [("zero", 0.0), ("scale", 0.5), ("scale", -1.5), ("constant", 0.0)])
def test_baked_model_equals_hooked_model(mode, scale, gated):
    model = tiny_model(gated=gated, seed=3)
    with torch.no_grad():  # a non-zero output bias, so that `constant` adds to something
        for b in model.blocks:
            b.mlp.b_out.normal_()
    values = _values(model) if mode == "constant" else None
    toks = model.to_tokens(["The capital of Zarnia is Velmor.", "Q: who wrote it? A:"])
    with torch.no_grad(), neuron_hooks(model, deactivation_hooks(SET, mode, scale, values)):
        hooked = model(toks)
    plain = model(toks)
    baked = copy.deepcopy(model)
    bake_deactivation(baked, SET, mode, scale, values)
    with torch.no_grad():
        torch.testing.assert_close(baked(toks), hooked, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hooked, plain)


def test_naive_reference_of_the_hooks():
    model = tiny_model(seed=4)
    values = _values(model)
    toks = model.to_tokens("hello there")
    _, cache = model.run_with_cache(toks)
    seen = {}

    def record(a, hook):
        seen[0] = a.clone()

    for mode, scale in (("zero", 0.0), ("scale", 0.25), ("constant", 0.0)):
        hooks = deactivation_hooks(SET, mode, scale, values)
        rec = [("blocks.0.mlp.hook_post", record)]
        with torch.no_grad(), neuron_hooks(model, hooks + rec):
            model(toks, stop_at_layer=1)  # layer 0 only: its input is not changed by the hooks
        a = cache["blocks.0.mlp.hook_post"].clone()
        for i in SET.by_layer()[0]:
            a[..., i] = {"zero": 0.0, "scale": a[..., i] * scale, "constant": values[0, i]}[mode]
        torch.testing.assert_close(seen[0], a)


def test_bad_modes_and_missing_values():
    with pytest.raises(BAD_CHOICE, match="gatey"):
        TrainConfig(deactivation="gatey")
    model = tiny_model()
    with pytest.raises(ValueError, match="constant"):
        deactivation_hooks(SET, "constant")
    with pytest.raises(ValueError, match="constant"):
        bake_deactivation(model, SET, "constant")
    sets = {"R_excl": NeuronSet({0: [1]}), "I_excl": SET}
    with pytest.raises(ValueError, match="answer_means"):
        plan_method(model, "stage1", sets, None, TrainConfig(method="stage1", deactivation="constant"))


@pytest.mark.parametrize("mode", ["scale", "constant"])
def test_train_with_a_deactivation_mode_bakes_exactly(mode, tmp_path):
    model = tiny_model(seed=8)
    sets = {"R_excl": NeuronSet({0: [1, 2], 1: [4]}), "I_excl": SET}
    cfg = TrainConfig(method="neurorit", steps=4, n_target_layers=1, batch_size=2, warmup_steps=0, eval_every=1,
                      checkpoint_every=0, lr=1e-2, deactivation=mode, deactivation_scale=0.3)
    res = train(model, ITEMS, DEV, sets, {"R_excl": [0.1, 2.0]}, cfg, out_dir=tmp_path, progress=False,
                save_model=False, deactivation_values=_values(model))
    # the baked, hook-free model gives the dev loss the hooked model had at the last step
    assert res.final_dev["dev_loss"] == pytest.approx(res.log[-1].dev_loss, rel=1e-5)
