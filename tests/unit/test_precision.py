"""bf16 autocast (neurorit_lens/precision.py) against fp32 on tiny models: IG scores, completeness,
the selected neurons, training losses and weights, and each stage's config reaching the forward passes.

Stated tolerances (bf16 has an 8-bit mantissa, relative rounding ~4e-3 per product): IG scores
within 5% relative (Frobenius) of fp32, completeness within 5% of ``F(a) - F(a_l := 0)``, the
top-10% neurons overlapping with Jaccard >= 0.8, training losses within 2% per step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import neurorit_lens.evaluation.evaluate as evaluate_mod
import neurorit_lens.neurons.mining as mining
from neurorit_lens.config import AblationConfig, EvalConfig, MiningConfig, TrainConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.models import tiny_model
from neurorit_lens.neurons.attribution import attribute, baseline_target
from neurorit_lens.neurons.sets import NeuronSet
from neurorit_lens.objective import tokenize_with_answers
from neurorit_lens.precision import autocast
from neurorit_lens.training.items import TrainItem
from neurorit_lens.training.methods import run_plan
from neurorit_lens.training.plans import plan_method
from tests.helpers import BAD_CHOICE, cached_tiny_model

PROMPTS = ["The capital of Zarnia is a city called", "Trains in Brindle run on time, the conductor said",
           "Question: who wrote the letter? Answer:"]
ANSWERS = [" Velmor", " yes", " Quell"]


def _model(gated: bool):
    kw = dict(gated=True, normalization_type="RMS", act_fn="silu") if gated else {}
    return tiny_model(n_layers=3, d_model=64, d_mlp=128, seed=2, **kw)


def test_autocast_is_a_no_op_in_fp32_and_bf16_matmuls_in_bf16():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    with autocast("bf16", torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast("fp16")
    for cfg in (EvalConfig, MiningConfig, AblationConfig, TrainConfig):
        assert cfg().precision == ("auto" if cfg is MiningConfig else "fp32")  # auto: test_precision_default.py
        with pytest.raises(BAD_CHOICE):
            cfg(precision="fp8")
    for cfg in (EvalConfig, AblationConfig, TrainConfig):  # auto is mining's alone
        with pytest.raises(BAD_CHOICE):
            cfg(precision="auto")


def _jaccard(a: torch.Tensor, b: torch.Tensor, frac: float = 0.1) -> float:
    k = max(1, int(frac * a.numel()))
    sa, sb = set(a.flatten().topk(k).indices.tolist()), set(b.flatten().topk(k).indices.tolist())
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("method", ["ig", "ig_joint", "grad_x_act"])
def test_bf16_ig_scores_are_close_to_fp32_and_complete(gated, method):
    model = _model(gated)
    batch = tokenize_with_answers(model, PROMPTS, ANSWERS)
    s32 = attribute(model, batch, method, steps=16)
    s16 = attribute(model, batch, method, steps=16, precision="bf16")
    assert s16.dtype == torch.float32  # the sum over integration points is accumulated in fp32
    rel = float((s16 - s32).norm() / s32.norm())
    assert rel < 0.05, rel
    for i in range(len(PROMPTS)):
        assert _jaccard(s16[i], s32[i]) >= 0.8
    if method == "ig":  # completeness per layer, against F computed in fp32
        f1 = baseline_target(model, batch)
        for layer in range(model.cfg.n_layers):
            delta = f1 - baseline_target(model, batch, [layer])
            gap = s16[:, layer].sum(-1) - delta
            assert (gap.abs() <= 0.05 * delta.abs() + 0.02).all(), (layer, gap, delta)


def test_mining_passes_precision_and_stamps_it_into_the_score_files(tmp_path, monkeypatch):
    seen = []

    def spy(*a, **k):
        seen.append(k["precision"])
        return attribute(*a, **k)

    monkeypatch.setattr(mining, "attribute", spy)
    from neurorit_lens.config import DataConfig

    data, cfg = DataConfig(max_prompt_tokens=320, n_passages=2), MiningConfig(method="grad_x_act")
    exs = embedded_examples()[:2]
    model = cached_tiny_model()
    mining.mine(model, exs, cfg, data, out_dir=tmp_path, show_progress=False)
    n32 = len(seen)
    mining.mine(model, exs, dataclasses.replace(cfg, precision="bf16"), data, out_dir=tmp_path, show_progress=False)
    assert set(seen[:n32]) == {"fp32"} and set(seen[n32:]) == {"bf16"} and len(seen) == 2 * n32  # nothing reused
    mining.mine(model, exs, cfg, data, out_dir=tmp_path, show_progress=False)
    assert len(seen) == 2 * n32 + n32  # fp32 again: its files were overwritten by bf16's, so recomputed


ITEMS = [TrainItem(f"Question: What is the capital of Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}")
         for i in range(6)]
R = NeuronSet({0: [1, 5, 9], 1: [3, 4], 2: [7, 60]})
I = NeuronSet({0: [2, 3], 2: [8]})


@pytest.mark.parametrize("method", ["neurorit", "full", "random"])
def test_bf16_training_tracks_fp32_with_fp32_master_weights(method):
    out = []
    for precision in ("fp32", "bf16"):
        model = _model(True)
        cfg = TrainConfig(method=method, steps=4, batch_size=2, lr=1e-3, warmup_steps=0, seed=0,
                          deactivation="zero", n_target_layers=1, precision=precision, eval_every=2)
        plan = plan_method(model, method, {"R_excl": R, "I_excl": I}, None, cfg)
        grads = []
        log = run_plan(model, plan, ITEMS, ITEMS[:2], cfg, None, progress=False,
                       callbacks=[lambda _o, m=model, g=grads: g.append(
                           {n: p.grad.dtype for n, p in m.named_parameters() if p.grad is not None})])
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(d == torch.float32 for g in grads for d in g.values())
        out.append(log)
    for a, b in zip(*out, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=0.02)
        if a.dev_loss is not None:
            assert b.dev_loss == pytest.approx(a.dev_loss, rel=0.02)


def test_bf16_training_with_checkpointing_equals_bf16_without():
    logs = []
    for ckpt in (False, True):
        model = _model(True)
        cfg = TrainConfig(method="neurorit", steps=2, batch_size=2, lr=1e-3, warmup_steps=0, n_target_layers=1,
                          precision="bf16", activation_checkpointing=ckpt, deactivation="zero")
        logs.append(run_plan(model, plan_method(model, "neurorit", {"R_excl": R, "I_excl": I}, None, cfg), ITEMS,
                             None, cfg, None, progress=False))
    assert [o.loss for o in logs[0]] == pytest.approx([o.loss for o in logs[1]], rel=1e-5)


def test_evaluation_generates_under_the_configs_precision(monkeypatch):
    seen = []

    def fake(model, prompts, **k):
        seen.append(torch.is_autocast_enabled("cpu"))
        return ["x"] * len(prompts)

    monkeypatch.setattr(evaluate_mod, "generate_greedy", fake)
    model = cached_tiny_model()
    for precision in ("fp32", "bf16"):
        evaluate_mod.evaluate_prompts(model, [], [], EvalConfig(precision=precision), show_progress=False)
    assert seen == [False, True]
