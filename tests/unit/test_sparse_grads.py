"""Neuron-only weight gradients (training/sparse_grads.py) against the dense autograd path:
same gradients and same trained weights to float rounding, frozen entries untouched, the
dense path kept wherever a layer is not purely neuron-masked, and nothing left on the model."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.hooks import zero_ablation
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import sft_loss
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.masks import layer_param_masks, merge_masks, neuron_param_masks
from neurorit_lens.training.optim import MaskedParams
from neurorit_lens.training.plans import plan_method
from neurorit_lens.training.sparse_grads import NeuronGrads, neuron_mask_indices, sparse_layers
from neurorit_lens.training.trainer import Trainer, tokenize_items

ITEMS = [TrainItem(f"Question: What is the capital of Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}")
         for i in range(6)]
R = NeuronSet({0: [1, 5, 9], 1: [3, 4], 2: [7, 60]})
I = NeuronSet({0: [2, 3], 2: [8]})


def _model(gated: bool):
    kw = dict(gated=True, normalization_type="RMS", act_fn="silu") if gated else {}
    return tiny_model(n_layers=3, d_model=32, d_mlp=64, seed=3, **kw)


def _grads(model, masks, sparse: bool) -> dict[str, torch.Tensor]:
    batch = tokenize_items(model, ITEMS[:2])
    mp = MaskedParams(model, masks)
    ng = NeuronGrads(model, masks if sparse else {})
    with mp.trainable(), ng.active(zero_ablation(I)):
        sft_loss(model(batch.tokens), batch).backward()
        mp.mask_grads()
        out = {n: p.grad.clone() for n, p in zip(mp.names, mp.params, strict=True)}
    return out


@pytest.mark.parametrize("gated", [True, False])
def test_neuron_grads_equal_the_dense_masked_grads(gated):
    model = _model(gated)
    masks = neuron_param_masks(model, R)
    assert sorted(NeuronGrads(model, masks).layers) == [0, 1, 2]
    dense, sparse = _grads(model, masks, False), _grads(model, masks, True)
    assert dense.keys() == sparse.keys()
    for n in dense:
        assert dense[n].abs().max() > 0, n
        torch.testing.assert_close(sparse[n], dense[n], rtol=1e-5, atol=1e-7)
        assert not sparse[n][~masks[n]].any(), n  # nothing outside the trained neurons


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("method", ["stage1", "random"])
def test_training_with_neuron_grads_gives_the_dense_paths_weights(gated, method):
    """2 steps of 2 accumulated micro-batches, decay and clipping: the trained weights of the
    new path equal the old (dense) path's to float rounding; frozen entries are bit-identical."""
    cfg = TrainConfig(steps=2, batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=0, seed=0, weight_decay=0.1,
                      max_grad_norm=1.0)
    out = []
    for neuron_grads in (False, True):
        model = _model(gated)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        stage = plan_method(model, method, {"R_excl": R, "I_excl": I}, None, cfg).stages[0]
        tr = Trainer(model, ITEMS, cfg, hooks=zero_ablation(stage.deactivate), param_masks=stage.masks,
                     progress=False, neuron_grads=neuron_grads)
        assert bool(tr.neuron_grads) is neuron_grads
        log = tr.fit()
        out.append(({n: p.detach().clone() for n, p in model.named_parameters()}, log, stage.masks))
    (old, old_log, masks), (new, new_log, _) = out
    for n in old:
        torch.testing.assert_close(new[n], old[n], rtol=1e-5, atol=1e-6)
        frozen = torch.ones_like(old[n], dtype=torch.bool) if n not in masks else ~masks[n]
        assert torch.equal(new[n][frozen], before[n][frozen]), n
    moved = sum(int((new[n] != before[n]).sum()) for n in new)
    assert moved == sum(int(m.sum()) for m in masks.values())  # every trainable entry moved
    for a, b in zip(old_log, new_log, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-5) and a.grad_norm == pytest.approx(b.grad_norm, rel=1e-5)


def test_layers_with_whole_tensors_keep_the_dense_path():
    model = _model(True)
    neuron = neuron_param_masks(model, R)
    assert neuron_mask_indices(neuron["blocks.0.mlp.W_in"], 1).tolist() == [1, 5, 9]
    assert neuron_mask_indices(None, 0) is None
    mixed = merge_masks(neuron, layer_param_masks(model, [1]))  # stage 2 style: layer 1 whole
    assert sorted(sparse_layers(model, mixed)) == [0, 2]
    odd = dict(neuron)
    odd["blocks.0.mlp.W_in"] = odd["blocks.0.mlp.W_in"].clone()
    odd["blocks.0.mlp.W_in"][0, 1] = False  # not a whole column: not a neuron mask
    assert 0 not in sparse_layers(model, odd)
    odd = {k: v for k, v in neuron.items() if k != "blocks.2.mlp.b_in"}  # b_in frozen in layer 2
    assert 2 not in sparse_layers(model, odd)


def test_nothing_is_left_on_the_model_after_an_error():
    model = _model(True)
    masks = neuron_param_masks(model, R)
    ng = NeuronGrads(model, masks)
    with pytest.raises(RuntimeError, match="boom"), ng.active(zero_ablation(I)):
        assert not model.blocks[0].mlp.W_in.requires_grad
        raise RuntimeError("boom")
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():  # evaluation under the hooks builds no graph and needs no gradient
        with ng.active([]):
            model(model.to_tokens("hello"))
    assert model.blocks[0].mlp.W_in.grad is None
