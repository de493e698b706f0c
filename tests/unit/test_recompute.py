"""Activation checkpointing (training/recompute.py): every method's losses, gradients and trained
weights equal the plain path's to float rounding, hooks included (deactivation, learned gates,
neuron-only gradients), and the blocks are left as they were."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.models import tiny_model
from neurorit_lens.neurons.sets import NeuronSet
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.methods import run_plan
from neurorit_lens.training.plans import plan_method
from neurorit_lens.training.recompute import checkpointed_blocks
from neurorit_lens.training.trainer import tokenize_items

ITEMS = [TrainItem(f"Question: What is the capital of Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}")
         for i in range(6)]
DEV = [TrainItem("Question: Where is Brindle? Answer:", " Quell", id="d0")]
R = NeuronSet({0: [1, 5, 9], 1: [3, 4], 2: [7, 60]})
I = NeuronSet({0: [2, 3], 2: [8]})


def _model(gated: bool):
    kw = dict(gated=True, normalization_type="RMS", act_fn="silu") if gated else {}
    return tiny_model(n_layers=3, d_model=32, d_mlp=64, seed=3, **kw)


def _train(method: str, deactivation: str, gated: bool, checkpointing: bool):
    """Losses, gradient norms, each step's (clipped) gradients and the final weights."""
    cfg = TrainConfig(method=method, steps=4, batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=1, seed=0,
                      weight_decay=0.1, deactivation=deactivation, n_target_layers=1, eval_every=2,
                      activation_checkpointing=checkpointing)
    model = _model(gated)
    plan = plan_method(model, method, {"R_excl": R, "I_excl": I}, None, cfg)
    grads: list[dict[str, torch.Tensor]] = []

    def keep_grads(_out) -> None:
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    log = run_plan(model, plan, ITEMS, DEV, cfg, None, progress=False, callbacks=[keep_grads])
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    return log, grads, weights


CASES = [(m, "zero", False) for m in ("neurorit", "stage1", "layers", "full", "random", "clean")]
CASES += [("neurorit", "zero", True), ("stage1", "zero", True), ("neurorit", "gate", False),
          ("random", "gate", True), ("stage1", "none", False)]


@pytest.mark.parametrize(("method", "deactivation", "gated"), CASES)
def test_checkpointing_gives_the_plain_paths_losses_and_gradients(method, deactivation, gated):
    plain_log, plain_grads, plain_w = _train(method, deactivation, gated, False)
    ckpt_log, ckpt_grads, ckpt_w = _train(method, deactivation, gated, True)
    assert len(plain_log) == len(ckpt_log) == 4
    for a, b in zip(plain_log, ckpt_log, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-6, abs=1e-7)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-5, abs=1e-7)
        assert (a.dev_loss is None) == (b.dev_loss is None)
        if a.dev_loss is not None:
            assert b.dev_loss == pytest.approx(a.dev_loss, rel=1e-6)
    for ga, gb in zip(plain_grads, ckpt_grads, strict=True):
        assert ga.keys() == gb.keys() and ga
        assert any(g.abs().max() > 0 for g in ga.values())
        for n in ga:
            torch.testing.assert_close(gb[n], ga[n], rtol=1e-5, atol=1e-7, msg=n)
    for n in plain_w:
        torch.testing.assert_close(ckpt_w[n], plain_w[n], rtol=1e-5, atol=1e-7, msg=n)


def test_blocks_are_recomputed_under_grad_only_and_restored():
    model = tiny_model(n_layers=2, d_model=32, d_mlp=64)
    model.requires_grad_(True)
    batch = tokenize_items(model, ITEMS[:2])
    calls = []
    model.blocks[0].hook_resid_pre.add_hook(lambda act, hook: calls.append(1))
    try:
        with checkpointed_blocks(model):
            model(batch.tokens).sum().backward()
            assert len(calls) == 2  # the forward, then the recomputation in backward
            with torch.no_grad():
                model(batch.tokens)
            assert len(calls) == 3  # no checkpoint without autograd
        model(batch.tokens).sum().backward()
        assert len(calls) == 4
    finally:
        model.reset_hooks(including_permanent=True)
    assert all("forward" not in b.__dict__ for b in model.blocks)
    with pytest.raises(RuntimeError, match="boom"), checkpointed_blocks(model):
        raise RuntimeError("boom")
    assert all("forward" not in b.__dict__ for b in model.blocks)
    with checkpointed_blocks(model, enabled=False):
        assert all("forward" not in b.__dict__ for b in model.blocks)


def test_neuron_only_gradients_keep_the_memory_checkpointing_saves():
    """The neuron-gradient hooks keep each layer's last MLP input; holding its graph kept every
    recomputed block alive (the peak of the plain path). Peak resident memory of forward + backward,
    neuron-only gradients vs dense masked gradients, both checkpointed: about the same."""
    from neurorit_lens.memory import PeakRSS, status_kb
    from neurorit_lens.objective import AnswerBatch, answer_sft_loss
    from neurorit_lens.training.masks import neuron_param_masks
    from neurorit_lens.training.optim import MaskedParams
    from neurorit_lens.training.sparse_grads import NeuronGrads

    model = tiny_model(n_layers=6, d_model=256, d_mlp=1024, n_heads=4, gated=True, normalization_type="RMS",
                       act_fn="silu", n_ctx=1024)
    masks = neuron_param_masks(model, NeuronSet({layer: list(range(5)) for layer in range(6)}))
    n, t = 4, 1024
    tokens = torch.randint(0, model.cfg.d_vocab, (n, t), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(n, t, dtype=torch.bool)
    mask[:, -4:-1] = True
    target = torch.zeros(n, t, dtype=torch.long)
    target[:, :-1] = tokens[:, 1:]
    batch = AnswerBatch(tokens=tokens, target_ids=target, answer_mask=mask, lengths=torch.full((n,), t),
                        prompt_lengths=torch.full((n,), t - 3), n_answer_tokens=torch.full((n,), 3))
    peaks = {}
    for sparse in (False, True):
        with MaskedParams(model, masks).trainable(), NeuronGrads(model, masks if sparse else {}).active([]), \
                checkpointed_blocks(model):
            base = status_kb("VmRSS") / 1024
            with PeakRSS() as mem:
                answer_sft_loss(model, batch).backward()
        if mem.peak_mb is None:
            pytest.skip("peak resident memory cannot be measured here")
        peaks[sparse] = mem.peak_mb - base
    assert peaks[True] < 1.5 * peaks[False], peaks  # 2.5x before the fix
