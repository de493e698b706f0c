"""Trainer, schedule, masked AdamW, resume after a kill, stages end to end, training data."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from neurorit_lens.config import DataConfig, TrainConfig
from neurorit_lens.hooks import neuron_hooks, zero_ablation
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.objective import sft_loss, tokenize_with_answers
from neurorit_lens.training.checkpoint import read_train_log
from neurorit_lens.training.items import (
    TrainItem,
    assign_settings,
    build_train_items,
    split_for_training,
)
from neurorit_lens.training.masks import count_trainable, layer_param_masks, neuron_param_masks
from neurorit_lens.training.methods import TrainResult, train
from neurorit_lens.training.trainer import Trainer, evaluate_dev, lr_factor
from tests.helpers import make_examples

ITEMS = [TrainItem(f"Question: What is the capital of Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}") for i in range(6)]
DEV = [TrainItem(f"Question: Where is Brindle{i}? Answer:", f" Quell{i}", id=f"d{i}") for i in range(3)]
R_EXCL = NeuronSet({0: [1, 2, 3], 1: [4, 5]})
I_EXCL = NeuronSet({0: [10, 11], 1: [12]})




def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=2, lr=1e-2, warmup_steps=2, checkpoint_every=2, eval_every=3, seed=0,
                deactivation="zero")
    base.update(kw)
    return TrainConfig(**base)


def _params(m) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in m.named_parameters()}


# --- schedule ------------------------------------------------------------------------
def test_lr_factor_matches_closed_form():
    # warmup 4 of 10: 0.25, 0.5, 0.75, 1, then cosine over 6 steps
    want = [0.25, 0.5, 0.75, 1.0] + [0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]
    got = [lr_factor(s, 10, 4, "cosine") for s in range(10)]
    assert got == pytest.approx(want, abs=1e-12)
    want = [0.1 + 0.9 * (1 - t / 5) for t in range(5)]
    assert [lr_factor(s, 5, 0, "linear", 0.1) for s in range(5)] == pytest.approx(want)
    assert lr_factor(7, 10, 2, "constant") == 1.0


# --- masked AdamW --------------------------------------------------------------------
@pytest.mark.parametrize("gated", [False, True])
def test_masked_entries_are_bit_identical_after_training_with_weight_decay(gated):
    m = tiny_model(gated=gated, seed=1)
    before = _params(m)
    masks = neuron_param_masks(m, R_EXCL)
    masks.update(layer_param_masks(m, [1]))  # a fully trainable layer too, decayed
    Trainer(m, ITEMS, _cfg(weight_decay=0.5, steps=4), hooks=zero_ablation(I_EXCL), param_masks=masks,
            progress=False).fit()
    after = _params(m)
    for n in before:
        mask = masks.get(n, "frozen")
        if isinstance(mask, str) or mask is None:
            if isinstance(mask, str):
                assert torch.equal(before[n], after[n]), n
            continue
        assert torch.equal(before[n][~mask], after[n][~mask]), f"masked entries of {n} moved"
        assert not torch.equal(before[n][mask], after[n][mask]), f"trainable entries of {n} did not move"
    assert not torch.equal(before["blocks.1.mlp.b_out"], after["blocks.1.mlp.b_out"])
    # hooks removed, requires_grad restored
    assert not any(hp.fwd_hooks for hp in m.hook_dict.values())
    assert not any(p.requires_grad for p in m.parameters())


def test_one_step_matches_closed_form_adamw():
    """First AdamW step: p1 = p0 * (1 - lr*wd) - lr * g / (|g| + eps) on trainable entries."""
    m = tiny_model(seed=2)
    masks = neuron_param_masks(m, R_EXCL)
    lr, wd, eps = 1e-3, 0.1, 1e-8
    cfg = _cfg(steps=1, batch_size=len(ITEMS), warmup_steps=0, lr=lr, weight_decay=wd, adam_eps=eps,
               max_grad_norm=0.0, lr_schedule="constant")
    p0 = _params(m)
    # independent gradient: one forward on all items with the hook, autograd.grad, masked
    batch = tokenize_with_answers(m, [it.prompt for it in ITEMS], [it.answer for it in ITEMS], append_eos=True)
    params = dict(m.named_parameters())
    names = sorted(masks)
    for n in names:
        params[n].requires_grad_(True)
    with neuron_hooks(m, zero_ablation(I_EXCL)):
        loss = sft_loss(m(batch.tokens), batch)
    grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))
    for n in names:
        params[n].requires_grad_(False)
    out = Trainer(m, ITEMS, cfg, hooks=zero_ablation(I_EXCL), param_masks=masks, progress=False).fit()
    assert out[0].loss == pytest.approx(float(loss.detach()), rel=1e-5)
    naive_norm = math.sqrt(sum(float((grads[n] * masks[n]).pow(2).sum()) for n in names))
    assert out[0].grad_norm == pytest.approx(naive_norm, rel=1e-4)
    for n in names:
        g = grads[n] * masks[n]
        want = torch.where(masks[n], p0[n] * (1 - lr * wd) - lr * g / (g.abs() + eps), p0[n])
        torch.testing.assert_close(params[n].detach(), want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("gated", [False, True])
def test_compact_adamw_is_bit_identical_to_dense_masked_adamw(gated):
    """Reference: PyTorch's AdamW over the whole touched tensors, gradients masked with ``where``,
    clipping and decay through the mask, written out step by step. The trainer steps only the
    trainable entries (compact shadows); weights and losses must agree bit for bit."""
    m_ref, m = tiny_model(gated=gated, seed=9), tiny_model(gated=gated, seed=9)
    masks = neuron_param_masks(m, R_EXCL)
    masks.update(layer_param_masks(m, [1]))
    cfg = _cfg(steps=4, batch_size=3, grad_accum=2, weight_decay=0.3, max_grad_norm=0.05, warmup_steps=1)
    # dense weight gradients, as the reference takes them (neuron-only gradients agree to float
    # rounding: tests/unit/test_sparse_grads.py)
    trainer = Trainer(m, ITEMS, cfg, hooks=zero_ablation(I_EXCL), param_masks=masks, progress=False,
                      neuron_grads=False)
    log = trainer.fit()
    params = dict(m_ref.named_parameters())
    names = [n for n, _ in m_ref.named_parameters() if n in masks]
    ps = [params[n] for n in names]
    for p in ps:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(ps, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=0.0)
    losses = []
    for step in range(cfg.steps):
        lr = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = trainer.batch_indices(step)
        batches = [tokenize_with_answers(m_ref, [ITEMS[i].prompt for i in mb], [ITEMS[i].answer for i in mb],
                                         append_eos=True) for mb in (idx[:3], idx[3:])]
        n_tok = sum(int(b.answer_mask.sum()) for b in batches)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        with neuron_hooks(m_ref, zero_ablation(I_EXCL)):
            for b in batches:
                loss = sft_loss(m_ref(b.tokens), b) * (int(b.answer_mask.sum()) / n_tok)
                loss.backward()
                total += float(loss.detach())
        for n, p in zip(names, ps, strict=True):
            if masks[n] is not None:
                p.grad = torch.where(masks[n], p.grad, torch.zeros(()))
        torch.nn.utils.clip_grad_norm_(ps, cfg.max_grad_norm)
        with torch.no_grad():
            for n, p in zip(names, ps, strict=True):
                if masks[n] is None:
                    p.mul_(1 - lr * cfg.weight_decay)
                else:
                    p.sub_(torch.where(masks[n], p * (lr * cfg.weight_decay), torch.zeros(())))
        opt.step()
        losses.append(total)
    assert [o.loss for o in log] == losses
    for (n, a), (_, b) in zip(m_ref.named_parameters(), m.named_parameters(), strict=True):
        assert torch.equal(a.detach(), b.detach()), n
    # the optimizer holds moments for the trainable entries only
    assert sum(leaf.numel() for leaf in trainer.trainable.leaves) == count_trainable(m, masks)


def test_grad_accumulation_matches_the_big_batch():
    runs = []
    for bs, acc in ((4, 1), (2, 2)):
        m = tiny_model(seed=4)
        masks = layer_param_masks(m, [0])
        log = Trainer(m, ITEMS, _cfg(batch_size=bs, grad_accum=acc, steps=2), param_masks=masks, progress=False).fit()
        runs.append(([o.loss for o in log], _params(m)))
    for losses, params in runs[1:]:
        assert losses == pytest.approx(runs[0][0], rel=1e-5)
        for n in params:
            torch.testing.assert_close(params[n], runs[0][1][n], rtol=1e-4, atol=1e-6)


def test_clipping_caps_the_update_direction_norm_and_reports_pre_clip_norm():
    m = tiny_model(seed=5)
    log = Trainer(m, ITEMS, _cfg(steps=2, max_grad_norm=1e-6), param_masks=layer_param_masks(m, [0]),
                  progress=False).fit()
    assert all(o.grad_norm > 1e-6 for o in log)  # reported before clipping


def test_loss_goes_down_and_dev_metrics_match_naive_loop():
    m = tiny_model(seed=6)
    cfg = _cfg(steps=12, lr=3e-2, eval_every=6, warmup_steps=1)
    log = Trainer(m, ITEMS[:2], cfg, dev_items=DEV, param_masks=layer_param_masks(m, [0, 1], attention=True),
                  progress=False).fit()
    assert log[-1].loss < log[0].loss
    assert [o.step for o in log if o.dev_loss is not None] == [6, 12]
    # naive dev loss: per item token log-probs, pooled
    tot, ntok, per = 0.0, 0, []
    for it in DEV:
        b = tokenize_with_answers(m, [it.prompt], [it.answer], append_eos=True)
        lp = torch.log_softmax(m(b.tokens)[0], -1)
        s = sum(float(lp[t, b.target_ids[0, t]]) for t in range(b.tokens.shape[1]) if b.answer_mask[0, t])
        tot += s
        ntok += int(b.answer_mask.sum())
        per.append(s)
    assert log[-1].dev_loss == pytest.approx(-tot / ntok, rel=1e-5)
    assert log[-1].dev_answer_logprob == pytest.approx(sum(per) / len(per), rel=1e-5)
    assert evaluate_dev(m, DEV, batch_size=2)["dev_loss"] == pytest.approx(-tot / ntok, rel=1e-5)


# --- resume after a kill -----------------------------------------------------------------
class Boom(RuntimeError):
    pass


def _run(out_dir, kill_at=None, **kw):
    m = tiny_model(seed=7)
    masks = neuron_param_masks(m, R_EXCL)

    def cb(o):
        if kill_at is not None and o.step == kill_at:
            raise Boom(f"killed at {o.step}")

    t = Trainer(m, ITEMS, _cfg(**kw), dev_items=DEV, hooks=zero_ablation(I_EXCL), param_masks=masks,
                out_dir=out_dir, callbacks=[cb], progress=False)
    return m, t


def test_killed_run_resumes_to_identical_parameters_and_log(tmp_path):
    ref_m, ref = _run(tmp_path / "ref", steps=7, checkpoint_every=2)
    ref_log = ref.fit()
    m1, t1 = _run(tmp_path / "run", kill_at=5, steps=7, checkpoint_every=2)
    with pytest.raises(Boom):
        t1.fit()
    assert not any(hp.fwd_hooks for hp in m1.hook_dict.values())
    assert len(read_train_log(tmp_path / "run" / "train_log.jsonl")) == 5  # steps 1..5 logged before the kill
    m2, t2 = _run(tmp_path / "run", steps=7, checkpoint_every=2)  # fresh model, resumes from step 4
    log = t2.fit()
    assert [o.to_dict() for o in log] == [o.to_dict() for o in ref_log]
    assert (tmp_path / "run" / "train_log.jsonl").read_text() == (tmp_path / "ref" / "train_log.jsonl").read_text()
    for (n, a), (_, b) in zip(ref_m.named_parameters(), m2.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    # a finished run resumes as a no-op that restores the final weights
    m3, t3 = _run(tmp_path / "run", steps=7, checkpoint_every=2)
    assert [o.to_dict() for o in t3.fit()] == [o.to_dict() for o in ref_log]
    assert all(torch.equal(a, b) for a, b in zip(ref_m.parameters(), m3.parameters(), strict=True))
    # a checkpoint from a different run is refused
    _, t4 = _run(tmp_path / "run", steps=7, checkpoint_every=2, lr=5e-3)
    with pytest.raises(ValueError, match="different run"):
        t4.fit()


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(int(sys.argv[2]))
    from tests.unit.test_training import _run
    def kill(o):
        if o.step == 5:
            os.kill(os.getpid(), signal.SIGKILL)
    m, t = _run(sys.argv[1], steps=7, checkpoint_every=2)
    t.callbacks = [kill]
    t.fit()
""")


@pytest.mark.slow
def test_sigkilled_subprocess_resumes_to_identical_result(tmp_path):
    """A training process SIGKILLed after step 5 (checkpoint at 4) resumes to the same end."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "run"), str(torch.get_num_threads())],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(read_train_log(tmp_path / "run" / "train_log.jsonl")) == 5
    ref_m, ref = _run(tmp_path / "ref", steps=7, checkpoint_every=2)
    ref_log = ref.fit()
    m, t = _run(tmp_path / "run", steps=7, checkpoint_every=2)
    assert [o.to_dict() for o in t.fit()] == [o.to_dict() for o in ref_log]
    assert all(torch.equal(a, b) for a, b in zip(ref_m.parameters(), m.parameters(), strict=True))


# --- stages and the train() entry point ----------------------------------------------------
def test_train_neurorit_end_to_end_bakes_and_saves(tmp_path):
    from neurorit_lens.models.saved import load_saved_model

    m = tiny_model(seed=8)
    sets = {"R_excl": R_EXCL, "I_excl": I_EXCL}
    cfg = _cfg(method="neurorit", steps=4, lr_grid=(1e-3, 3e-2), n_target_layers=1, checkpoint_every=1)
    res = train(m, ITEMS, DEV, sets, {"R_excl": [0.1, 2.0]}, cfg, out_dir=tmp_path, progress=False)
    assert res.target_layers == [1] and res.stage_steps == {"stage1": 2, "stage2": 2} and res.steps == 4
    assert [o.stage for o in res.log] == ["stage1", "stage1", "stage2", "stage2"]
    assert [o.step for o in res.log] == [1, 2, 3, 4]
    assert set(res.lr_search) == {"0.001", "0.03"}
    assert res.lr == min((1e-3, 3e-2), key=lambda lr: res.lr_search[f"{lr:g}"])
    # the exported (baked, hook-free) model gives the dev loss the hooked model had at the last step
    assert res.final_dev["dev_loss"] == pytest.approx(res.log[-1].dev_loss, rel=1e-5)
    assert 0 < res.trainable_fraction < 1 and res.trainable_params > 0
    assert TrainResult.load(tmp_path / "train.json").to_dict() == res.to_dict()
    assert read_train_log(tmp_path / "train_log.jsonl") == res.log
    loaded = load_saved_model(tmp_path / "model")
    toks = m.to_tokens(DEV[0].prompt)
    torch.testing.assert_close(loaded(toks), m(toks), rtol=0, atol=0)
    meta = json.loads((tmp_path / "model" / "neurorit_model.json").read_text())
    assert meta["method"] == "neurorit" and meta["trainable_params"] == res.trainable_params
    assert "versions" in meta and meta["seed"] == 0


@pytest.mark.parametrize("method", ["full", "layers", "stage1", "random"])
def test_baselines_run_the_same_steps(method, tmp_path):
    m = tiny_model(seed=9)
    cfg = _cfg(method=method, steps=3, n_target_layers=1)
    res = train(m, ITEMS, DEV, {"R_excl": R_EXCL, "I_excl": I_EXCL}, None, cfg, out_dir=tmp_path, progress=False,
                save_model=False)
    assert res.steps == 3 and len(res.log) == 3
    if method in ("stage1", "random"):
        assert res.n_deactivated == len(I_EXCL) and res.n_trained_neurons == len(R_EXCL)
        # deactivation baked: those W_out rows are zero
        deact = I_EXCL if method == "stage1" else None
        if deact is not None:
            for layer, idx in deact.by_layer().items():
                assert m.blocks[layer].mlp.W_out[idx].abs().max() == 0
    if method == "full":
        assert res.trainable_fraction == 1.0
    if method == "layers":
        assert res.target_layers == [0] and res.n_deactivated == 0


def test_lr_search_needs_dev_and_neuron_file_errors():
    m = tiny_model()
    with pytest.raises(ValueError, match="dev"):
        train(m, ITEMS, None, None, None, _cfg(method="full", lr_grid=(1e-3, 1e-2)), progress=False)
    with pytest.raises(ValueError, match="R_excl"):
        train(m, ITEMS, DEV, None, None, _cfg(method="stage1"), progress=False)


# --- training data ------------------------------------------------------------------------------
def test_assign_settings_balances_ratios_and_irrelevant_share():
    cfg = TrainConfig(noise_ratios=(0.0, 0.4, 0.8), irrelevant_only_fraction=0.25, examples_per_question=2)
    pairs = assign_settings(30, cfg, seed=1)
    noisy = [s for _, s in pairs if s != "irrelevant"]
    assert len(noisy) == 60 and {noisy.count(f"noise={r:g}") for r in (0, 0.4, 0.8)} == {20}
    assert sum(s == "irrelevant" for _, s in pairs) == 20  # 20 / 80 = 0.25
    assert pairs == assign_settings(30, cfg, seed=1) and pairs != assign_settings(30, cfg, seed=2)


def test_build_train_items_from_qa_examples():
    from neurorit_lens.models import tiny_tokenizer

    exs = make_examples(10, n_irrelevant=3)
    cfg = TrainConfig(noise_ratios=(0.0, 0.8), irrelevant_only_fraction=0.2)
    td = build_train_items(exs, tiny_tokenizer(), cfg, DataConfig(n_passages=4, template="plain"))
    assert len(td) == 10 + round(0.2 * 10 / 0.8) and td.n_skipped == 0
    assert td.settings.get("irrelevant") == 2
    for it in td.items:
        ex = exs[int(it.id[1:])]
        assert it.answer == " " + ex.answer and ex.question in it.prompt
        assert (ex.passages[0].text in it.prompt) == (it.setting != "irrelevant")
    train_q, dev_q = split_for_training(exs, DataConfig())
    assert len(train_q) == 6 and len(dev_q) == 2 and not {e.id for e in train_q} & {e.id for e in dev_q}
    with pytest.raises(ValueError, match="not enough examples"):
        split_for_training(exs[:2], DataConfig())


# --- clean: the format control -------------------------------------------------------------------
def test_clean_items_are_all_gold_only():
    from neurorit_lens.models import tiny_tokenizer

    exs = make_examples(6, n_irrelevant=3)
    cfg = TrainConfig(method="clean", noise_ratios=(0.0, 0.8), irrelevant_only_fraction=0.2, examples_per_question=2)
    td = build_train_items(exs, tiny_tokenizer(), cfg, DataConfig(n_passages=4, template="plain"), gold_only=True)
    assert len(td) == 12 and td.settings == {"gold": 12} and td.n_skipped == 0
    for it in td.items:
        ex = exs[int(it.id[1:])]
        assert it.setting == "gold" and ex.passages[0].text in it.prompt
        assert not any(p.text in it.prompt for p in ex.passages[1:])  # no irrelevant passage


def test_clean_trains_every_parameter_on_gold_only_items(tmp_path, monkeypatch):
    from neurorit_lens.training import methods

    seen = {}
    real = methods.build_train_items

    def spy(*a, **kw):
        out = real(*a, **kw)
        seen.setdefault("train", out)  # the first call builds the training items
        return out

    monkeypatch.setattr(methods, "build_train_items", spy)
    exs = make_examples(8, n_irrelevant=3)
    m = tiny_model(seed=10)
    before = _params(m)
    cfg = _cfg(method="clean", steps=2, checkpoint_every=1)
    res = train(m, exs[:6], exs[6:], None, None, cfg, DataConfig(n_passages=3, template="plain"),
                out_dir=tmp_path, progress=False, save_model=False)
    assert res.method == "clean" and res.steps == 2 and res.stage_steps == {"clean": 2} and len(res.log) == 2
    assert res.trainable_fraction == 1.0 and res.n_deactivated == 0
    assert set(seen["train"].settings) == {"gold"} and res.data["train"]["settings"] == {"gold": 6}
    assert set(res.data["dev"]["settings"]) != {"gold"}  # dev stays the noisy mix
    assert any(not torch.equal(before[n], p) for n, p in m.named_parameters())


def test_clean_is_a_method_and_bad_input_errors():
    from neurorit_lens.training.plans import METHODS, plan_method
    from tests.helpers import BAD_CHOICE

    assert "clean" in METHODS
    plan = plan_method(tiny_model(), "clean", None, None, _cfg(method="clean"))
    assert [s.name for s in plan.stages] == ["clean"] and plan.trainable_fraction == 1.0
    with pytest.raises(BAD_CHOICE):
        TrainConfig(method="cleen")
    with pytest.raises(ValueError, match="no training items"):  # gold-only needs a relevant passage
        from neurorit_lens.models import tiny_tokenizer

        ex = make_examples(1)[0]
        bare = ex.__class__(id="x", question=ex.question, answers=ex.answers, passages=list(ex.passages[1:]))
        build_train_items([bare], tiny_tokenizer(), TrainConfig(), DataConfig(template="plain"), gold_only=True)
