"""Registries: each kind of choice is one table of (name, implementation, description); the
config's Literal (the command line's choices) and the docs list exactly its names, and a new
entry needs one registration."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import torch

from neurorit_lens.ablation.controls import ABLATION_MODES
from neurorit_lens.config import AblationMode, Deactivation, IrrelevantDefinition, TrainConfig, TrainMethod
from neurorit_lens.hooks import DEACTIVATION_MODES
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.neurons.irrelevant import I_DEFINITIONS
from neurorit_lens.registry import Registry
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.masks import layer_param_masks
from neurorit_lens.training.methods import train
from neurorit_lens.training.plans import TRAIN_METHODS, PlanInputs, StagePlan

ROOT = Path(__file__).resolve().parents[2]
REGISTRIES = {"training method": (TRAIN_METHODS, TrainMethod, "docs/training.md"),
              "I definition": (I_DEFINITIONS, IrrelevantDefinition, "docs/mining.md"),
              "deactivation mode": (DEACTIVATION_MODES, Deactivation, "docs/training.md"),
              "ablation mode": (ABLATION_MODES, AblationMode, "docs/ablation.md")}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_the_literal_and_the_docs_list_the_registered_names(kind):
    registry, literal, doc = REGISTRIES[kind]
    assert registry.kind == kind
    assert get_args(literal) == registry.names()
    text = (ROOT / doc).read_text()
    assert registry.table() in text, f"{doc} lacks the table of {kind}s; paste Registry.table():\n{registry.table()}"
    for e in registry:
        assert e.description and "\n" not in e.description and e.impl is not None


def test_registry_rejects_duplicates_and_names_the_choices():
    reg: Registry[int] = Registry("colour")
    reg.register("red", "warm", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("red", "again", 2)
    reg.register("red", "again", 2, replace=True)
    assert reg.get("red") == 2 and "red" in reg and len(reg) == 1
    with pytest.raises(ValueError, match="unknown colour 'blue'; choose from red"):
        reg.get("blue")
    with pytest.raises(ValueError, match="one line"):
        reg.register("green", "two\nlines", 3)


def test_a_registered_toy_method_trains_on_the_tiny_model(tmp_path):
    """A new training method is one registration: here, the MLP of the last layer only."""

    @TRAIN_METHODS.register("last_mlp", "the MLP of the last layer")
    def last_mlp(p: PlanInputs):
        layer = p.model.cfg.n_layers - 1
        masks = layer_param_masks(p.model, [layer], False)
        return p.plan([StagePlan("last_mlp", NeuronSet(), masks, p.cfg.steps)], NeuronSet(), NeuronSet(), [layer],
                      masks)

    try:
        m = tiny_model(seed=3)
        before = {n: t.detach().clone() for n, t in m.named_parameters()}
        cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=0, checkpoint_every=0, eval_every=0)
        cfg.method = "last_mlp"  # type: ignore[assignment]  (the Literal lists the built-in methods)
        items = [TrainItem(f"Question: What is the capital of Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}")
                 for i in range(4)]
        res = train(m, items, items[:2], None, None, cfg, out_dir=tmp_path, progress=False, save_model=False)
        assert res.method == "last_mlp" and res.steps == 2 and res.target_layers == [1]
        changed = {n for n, t in m.named_parameters() if not torch.equal(t, before[n])}
        assert changed and all(n.startswith("blocks.1.mlp.") for n in changed), changed
    finally:
        TRAIN_METHODS.unregister("last_mlp")
    assert "last_mlp" not in TRAIN_METHODS
