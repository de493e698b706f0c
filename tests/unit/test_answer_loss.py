"""The trainer's loss, unembedded at answer positions only (objective.answer_sft_loss), against
the reference that builds the logits of every position (sft_loss(model(tokens))): the same
loss bit for bit, the same gradients bit for bit for every weight before the final norm and
to float rounding for the final norm and unembedding (their sums run over fewer rows), with
hooks active, and a 2-step trained model equal to one trained with the reference loss."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.hooks import neuron_hooks, zero_ablation
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import answer_position_logprobs, answer_sft_loss, sft_loss, token_logprobs
from neurorit_lens.training import trainer as trainer_mod
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.masks import layer_param_masks
from neurorit_lens.training.trainer import Trainer, tokenize_items

# different prompt and answer lengths, so rows are padded and answer spans sit at different positions
ITEMS = [TrainItem("Question: What is the capital of Zarnia? Answer:", " Velmor", id="a"),
         TrainItem("Q: who?", " Sorrel Spire of the North", id="b"),
         TrainItem("Documents: [1] a b c d e f g h. Question: which letter comes first? Answer:", " a", id="c")]
HEAD = ("ln_final.", "unembed.")


def _model(gated: bool):
    kw = dict(gated=True, normalization_type="RMS", act_fn="silu") if gated else {}
    return tiny_model(n_layers=3, d_model=32, d_mlp=64, seed=5, **kw)


@pytest.mark.parametrize("gated", [False, True])
def test_answer_positions_match_the_full_logits(gated):
    m = _model(gated)
    batch = tokenize_items(m, ITEMS)
    rows, lp = answer_position_logprobs(m, batch)
    full = token_logprobs(m(batch.tokens), batch)
    r, p = torch.nonzero(batch.answer_mask, as_tuple=True)
    assert torch.equal(rows, r)
    assert lp.shape == (int(batch.answer_mask.sum()),)
    torch.testing.assert_close(lp, full[r, p], rtol=0, atol=1e-6)
    assert float(lp.max()) < 0


@pytest.mark.parametrize("gated", [False, True])
def test_loss_and_gradients_match_the_reference(gated):
    m = _model(gated)
    batch = tokenize_items(m, ITEMS)
    params = dict(m.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    try:
        with neuron_hooks(m, zero_ablation(NeuronSet({1: [2, 7]}))):
            ref = sft_loss(m(batch.tokens), batch)
            g_ref = torch.autograd.grad(ref, list(params.values()))
            got = answer_sft_loss(m, batch)
            g_got = torch.autograd.grad(got, list(params.values()))
    finally:
        for p in params.values():
            p.requires_grad_(False)
    assert torch.equal(got, ref)
    for name, a, b in zip(params, g_ref, g_got, strict=True):
        if name.startswith(HEAD):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8)
        else:
            assert torch.equal(b, a), name
    assert any(float(g.abs().sum()) > 0 for g in g_got)


def test_trainer_uses_it_and_trains_as_the_reference(monkeypatch):
    """Two AdamW steps on blocks 1-2 (not the head): bit-identical weights and losses whether the
    trainer's loss unembeds the answer positions or every position."""
    cfg = TrainConfig(steps=2, batch_size=3, lr=1e-3, warmup_steps=0, seed=0, lr_schedule="constant")
    out, calls = {}, []

    def spy(model, b):
        calls.append(len(b))
        return answer_sft_loss(model, b)

    for kind in ("answer", "reference"):
        m = _model(gated=True)
        monkeypatch.setattr(trainer_mod, "answer_sft_loss", spy if kind == "answer" else
                            lambda model, b: sft_loss(model(b.tokens), b))
        log = Trainer(m, ITEMS, cfg, param_masks=layer_param_masks(m, [1, 2]), progress=False).fit()
        out[kind] = ([o.loss for o in log], {n: p.detach().clone() for n, p in m.named_parameters()})
    assert calls == [3, 3]  # the trainer's loss is this function, once per micro-batch
    assert out["answer"][0] == out["reference"][0]
    for n, w in out["answer"][1].items():
        assert torch.equal(w, out["reference"][1][n]), n
    assert not torch.equal(out["answer"][1]["blocks.1.mlp.W_in"], _model(gated=True).blocks[1].mlp.W_in)


def test_empty_answer_mask_gives_zero_loss():
    m = _model(gated=False)
    batch = tokenize_items(m, ITEMS[:1])
    batch.answer_mask = torch.zeros_like(batch.answer_mask)
    assert float(answer_sft_loss(m, batch)) == 0.0
