"""Learned gates (TrainConfig.deactivation='gate'): penalty gradient, frozen in stage 2, exact bake."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.hooks import deactivation_hooks, neuron_hooks
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import sft_loss
from neurorit_lens.training.gate import GATE_PARAM, attach_gates, bake_gates, gate_hooks
from neurorit_lens.training.methods import run_plan, train
from neurorit_lens.training.plans import plan_method
from neurorit_lens.training.trainer import Trainer, tokenize_items
from tests.unit.test_training import DEV, I_EXCL, ITEMS, R_EXCL

SETS = {"R_excl": R_EXCL, "I_excl": I_EXCL}


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, lr=1e-2, warmup_steps=0, checkpoint_every=0, eval_every=0, seed=0,
                n_target_layers=1, deactivation="gate", gate_penalty=0.5, max_grad_norm=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _gated_model(gated: bool):
    """A tiny model with gates attached: 0.3 and -0.7 on layer 0, 1.9 on layer 1 (I_EXCL), and a prompt."""
    m = tiny_model(seed=4, gated=gated)
    gates = attach_gates(m)
    with torch.no_grad():
        gates[0, [10, 11]] = torch.tensor([0.3, -0.7])
        gates[1, 12] = 1.9
    return m, gates, m.to_tokens(DEV[0].prompt)


@pytest.mark.parametrize("gated", [False, True])
def test_bake_gates_gives_the_hooked_logits(gated):
    m, gates, toks = _gated_model(gated)
    with neuron_hooks(m, gate_hooks(gates, I_EXCL)):
        hooked = m(toks)
    bake_gates(m, I_EXCL)
    assert GATE_PARAM not in dict(m.named_parameters())
    torch.testing.assert_close(m(toks), hooked, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gated", [False, True])
def test_clamped_gates_bake_to_the_hooked_logits_and_equal_a_naive_clamp(gated):
    m, gates, toks = _gated_model(gated)
    naive = torch.ones(2, 64)  # the clamped values written out by hand
    naive[0, 10], naive[0, 11], naive[1, 12] = 0.3, 0.0, 1.0
    with neuron_hooks(m, gate_hooks(gates, I_EXCL, clamp=True)):
        hooked = m(toks)
    with neuron_hooks(m, gate_hooks(naive, I_EXCL)):
        reference = m(toks)
    with neuron_hooks(m, gate_hooks(gates, I_EXCL)):
        unclamped = m(toks)
    torch.testing.assert_close(hooked, reference)
    assert not torch.allclose(hooked, unclamped, atol=1e-4)
    bake_gates(m, I_EXCL, clamp=True)
    torch.testing.assert_close(m(toks), hooked, rtol=1e-5, atol=1e-6)


def test_first_step_gate_gradient_is_sft_plus_penalty_gradient():
    cfg = _cfg(method="stage1")
    m = tiny_model(seed=5)
    plan = plan_method(m, "stage1", SETS, None, cfg)
    assert plan.trainable_params == 5 * (2 * 32 + 1) + len(I_EXCL)  # R_excl neurons + one gate per I_excl neuron
    st = plan.stages[0]
    # the naive reference: autograd of SFT loss (gate hooks on) + coef * mean |g| at the initial weights
    ref_model = tiny_model(seed=5)
    g = torch.ones(2, 64, requires_grad=True)
    trainer = Trainer(m, ITEMS, cfg, hooks=plan.hooks(st.deactivate), param_masks=st.masks, steps=1,
                      penalty=st.penalty, progress=False)
    batch = tokenize_items(ref_model, [ITEMS[i] for i in trainer.batch_indices(0)])
    with neuron_hooks(ref_model, gate_hooks(g, I_EXCL)):
        loss = sft_loss(ref_model(batch.tokens), batch)
    mask = I_EXCL.to_mask(2, 64)
    (loss + 0.5 * g[mask].abs().mean()).backward()
    want = torch.where(mask, g.grad, torch.zeros(()))
    seen = {}
    trainer.callbacks.append(lambda out: seen.setdefault("grad", plan.gates.grad.clone()))
    trainer.fit()
    torch.testing.assert_close(seen["grad"], want, rtol=1e-4, atol=1e-7)
    # only the candidates moved, and they moved
    assert torch.equal(plan.gates[~mask], torch.ones(int((~mask).sum())))
    assert (plan.gates[mask] != 1).all()


def test_neurorit_gates_train_in_stage1_stay_frozen_in_stage2_and_bake_exactly():
    cfg = _cfg(method="neurorit", stage1_lr=5e-2, gate_penalty=2.0)
    m = tiny_model(seed=6)
    plan = plan_method(m, "neurorit", SETS, None, cfg)
    assert plan.stages[0].penalty is not None and plan.stages[1].penalty is None
    after: dict[str, torch.Tensor] = {}

    def snap(out):
        after[out.stage] = plan.gates.detach().clone()

    run_plan(m, plan, ITEMS, None, cfg, None, progress=False, callbacks=[snap])
    mask = I_EXCL.to_mask(2, 64)
    assert (after["stage1"][mask] < 1).all()  # a strong penalty pulls them down
    torch.testing.assert_close(after["stage2"], after["stage1"], rtol=0, atol=0)
    toks = m.to_tokens(DEV[1].prompt)
    with neuron_hooks(m, plan.hooks(plan.deactivated)):
        hooked = m(toks)
    plan.bake(m)
    assert GATE_PARAM not in dict(m.named_parameters()) and plan.gates is None
    torch.testing.assert_close(m(toks), hooked, rtol=1e-5, atol=1e-6)


def test_gate_clamp_in_training_uses_and_bakes_the_clamped_gates():
    cfg = _cfg(method="neurorit", gate_clamp=True)
    m = tiny_model(seed=6)
    plan = plan_method(m, "neurorit", SETS, None, cfg)
    assert plan.gate_clamp
    with torch.no_grad():  # as training could leave them: one below 0, one above 1
        plan.gates[0, [10, 11]] = torch.tensor([-0.4, 0.6])
        plan.gates[1, 12] = 1.7
    naive = torch.ones(2, 64)
    naive[0, 10], naive[0, 11], naive[1, 12] = 0.0, 0.6, 1.0
    toks = m.to_tokens(DEV[0].prompt)
    with neuron_hooks(m, gate_hooks(naive, I_EXCL)):
        reference = m(toks)
    with neuron_hooks(m, plan.hooks(plan.deactivated)):
        hooked = m(toks)
    torch.testing.assert_close(hooked, reference)
    plan.bake(m)
    torch.testing.assert_close(m(toks), reference, rtol=1e-5, atol=1e-6)


def test_train_with_gates_exports_a_hook_free_model(tmp_path):
    from neurorit_lens.models.saved import load_saved_model

    m = tiny_model(seed=7)
    res = train(m, ITEMS, DEV, SETS, None, _cfg(method="random", lr_grid=(1e-3, 1e-2), checkpoint_every=1),
                out_dir=tmp_path, progress=False)
    assert res.final_dev["dev_loss"] == pytest.approx(res.log[-1].dev_loss, rel=1e-5)
    loaded = load_saved_model(tmp_path / "model")
    assert GATE_PARAM not in dict(loaded.named_parameters())
    toks = m.to_tokens(DEV[0].prompt)
    torch.testing.assert_close(loaded(toks), m(toks), rtol=0, atol=0)


def test_gate_bad_inputs():
    with pytest.raises(ValueError, match="gate_penalty"):
        TrainConfig(gate_penalty=-1.0)
    with pytest.raises(ValueError, match="learned in training"):
        deactivation_hooks(NeuronSet({0: [1]}), "gate")
    with pytest.raises(ValueError, match="no neurorit_gates"):
        bake_gates(tiny_model(), NeuronSet({0: [1]}))
