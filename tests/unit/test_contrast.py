"""The contrast definition of I against naive references on the tiny model."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.hooks import mlp_hook_name
from neurorit_lens.neurons.contrast import contrast_attribute, contrast_baseline_target, shared_suffix
from neurorit_lens.objective import tokenize_with_answers
from tests.helpers import cached_tiny_model

NOISY = ["Doc: Trains in Brindle run on time. Doc: The capital of Zarnia is Velmor. Q: capital of Zarnia? A:",
         "Doc: Ann Lee wrote it. Doc: Bob sings. Doc: Cats purr. Q: who wrote it? A:"]
GOLD = ["Doc: The capital of Zarnia is Velmor. Q: capital of Zarnia? A:", "Doc: Ann Lee wrote it. Q: who wrote it? A:"]
ANSWERS = [" Velmor", " Ann Lee"]


def _batches(model):
    return (tokenize_with_answers(model, NOISY, ANSWERS), tokenize_with_answers(model, GOLD, ANSWERS))


def _naive_suffix(model, noisy, gold, b):
    a = noisy.tokens[b, : noisy.lengths[b]].tolist()
    g = gold.tokens[b, : gold.lengths[b]].tolist()
    n = 0
    while n < min(len(a), len(g)) and a[len(a) - 1 - n] == g[len(g) - 1 - n]:
        n += 1
    return n


def naive_contrast(model, noisy, gold, layer, alphas):
    """One example at a time, one alpha at a time: full forward with the suffix activations as a leaf."""
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    out = torch.zeros(len(noisy), L, D, dtype=torch.float64)
    name = mlp_hook_name(layer)
    for b in range(len(noisy)):
        tn = noisy.tokens[b: b + 1, : noisy.lengths[b]]
        tg = gold.tokens[b: b + 1, : gold.lengths[b]]
        S = _naive_suffix(model, noisy, gold, b)
        _, cn = model.run_with_cache(tn, names_filter=name)
        _, cg = model.run_with_cache(tg, names_filter=name)
        a_n, a_g = cn[name][0, -S:].detach(), cg[name][0, -S:].detach()
        n_ans = int(noisy.n_answer_tokens[b])
        targets = tn[0, -n_ans:]
        for alpha in alphas:
            x = (a_g + alpha * (a_n - a_g)).clone().requires_grad_(True)

            def hook(act, *, hook, x=x, S=S):
                return torch.cat([act[:, :-S], x[None]], dim=1)

            logits = model.run_with_hooks(tn, fwd_hooks=[(name, hook)])
            lp = logits[0, -n_ans - 1: -1].log_softmax(-1).gather(-1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(lp, x)
            out[b, layer] += ((a_n - a_g) * grad).sum(0).double() / len(alphas)
    return out


def test_shared_suffix_is_question_and_answer():
    model = cached_tiny_model()
    noisy, gold = _batches(model)
    s = shared_suffix(noisy, gold)
    assert s.tolist() == [_naive_suffix(model, noisy, gold, b) for b in range(2)]
    assert all(int(s[b]) >= int(noisy.lengths[b] - noisy.last_prompt_pos[b]) for b in range(2))
    other = tokenize_with_answers(model, GOLD, [" Quell", " Zed"])
    with pytest.raises(ValueError, match="share only their last"):
        shared_suffix(noisy, other)
    with pytest.raises(ValueError, match="2 noisy but 1 gold"):
        shared_suffix(noisy, gold.select([0]))


@pytest.mark.parametrize("layer", [0, 1])
def test_batched_contrast_ig_matches_naive_loop_over_alphas(layer):
    model = cached_tiny_model()
    noisy, gold = _batches(model)
    alphas = [0.1, 0.45, 0.8, 1.0]
    got = contrast_attribute(model, noisy, gold, method="ig", alphas=alphas, alpha_chunk=3, layers=[layer])
    ref = naive_contrast(model, noisy, gold, layer, alphas)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6)
    assert got[:, 1 - layer].abs().max() == 0


def test_contrast_completeness_per_layer():
    model = cached_tiny_model()
    noisy, gold = _batches(model)
    scores = contrast_attribute(model, noisy, gold, method="ig", steps=64, alpha_chunk=16)
    f1 = contrast_baseline_target(model, noisy, gold)
    for layer in range(model.cfg.n_layers):
        f0 = contrast_baseline_target(model, noisy, gold, [layer])
        want = (f1 - f0).double()
        assert want.abs().min() > 1e-3  # the noise does change F through this layer
        torch.testing.assert_close(scores[:, layer].double().sum(-1), want, rtol=2e-3, atol=2e-4)


def test_contrast_ig_joint_completeness_and_grad_x_act_is_alpha_one():
    model = cached_tiny_model()
    noisy, gold = _batches(model)
    joint = contrast_attribute(model, noisy, gold, method="ig_joint", steps=64, alpha_chunk=16)
    want = contrast_baseline_target(model, noisy, gold) - contrast_baseline_target(model, noisy, gold, [0, 1])
    torch.testing.assert_close(joint.double().sum((1, 2)), want.double(), rtol=2e-3, atol=2e-4)
    gxa = contrast_attribute(model, noisy, gold, method="grad_x_act")
    for layer in range(2):
        torch.testing.assert_close(gxa[:, layer].double(), naive_contrast(model, noisy, gold, layer, [1.0])[:, layer],
                                   rtol=1e-4, atol=1e-6)


def test_contrast_of_identical_prompts_is_zero():
    model = cached_tiny_model()
    gold = tokenize_with_answers(model, GOLD, ANSWERS)
    assert contrast_attribute(model, gold, gold, method="ig", steps=3).abs().max() == 0


# --- mining with irrelevant_definition="contrast" ---------------------------------------------
def _mining_prompts(model, exs, setting):
    from neurorit_lens.data import answer_continuation
    from tests.unit.test_irrelevant import _prompts

    rp, ids = _prompts(model, exs, setting)
    return dict(zip(ids, rp.prompts, strict=True)), {i: answer_continuation(e.example.answer, rp.template)
                                                    for i, e in zip(ids, rp.instances, strict=True)}


@pytest.mark.parametrize("method", ["grad_x_act", "ig"])
def test_mining_contrast_stores_negated_contrast_scores_and_resumes(method, tmp_path):
    from neurorit_lens.config import MiningConfig
    from neurorit_lens.data import embedded_examples
    from neurorit_lens.neurons.mining import mine
    from tests.unit.test_irrelevant import DATA

    model = cached_tiny_model()
    exs = embedded_examples()[:3]
    cfg = MiningConfig(method=method, steps=3, irrelevant_definition="contrast", noisy_setting="noise=0.5",
                       precision="fp32")  # the reference is fp32 (auto would run IG in bf16)
    res = mine(model, exs, cfg, DATA, out_dir=tmp_path, show_progress=False)
    noisy, answers = _mining_prompts(model, exs, "noise=0.5")
    gold, _ = _mining_prompts(model, exs, "gold")
    assert res.ids_I == list(noisy)
    rows = []
    for i in res.ids_I:
        nb = tokenize_with_answers(model, [noisy[i]], [answers[i]])
        gb = tokenize_with_answers(model, [gold[i]], [answers[i]])
        rows.append(-contrast_attribute(model, nb, gb, method=method, steps=3)[0])
    torch.testing.assert_close(res.scores_I, torch.stack(rows).float(), rtol=1e-4, atol=1e-6)
    again = mine(model, exs, cfg, DATA, out_dir=tmp_path, show_progress=False)
    assert again.info["n_computed"] == 0
    torch.testing.assert_close(again.scores_I, res.scores_I)
    # another relevant-only prompt changes the I fingerprints: recomputed, not mixed in
    other = mine(model, exs, cfg.replace(relevant_setting="gold+1"), DATA, out_dir=tmp_path, show_progress=False)
    assert other.info["n_computed"] == 6


def test_mining_contrast_excludes_questions_without_a_relevant_only_prompt(monkeypatch):
    import neurorit_lens.neurons.mining as mining
    from neurorit_lens.config import MiningConfig
    from neurorit_lens.data import embedded_examples
    from tests.unit.test_irrelevant import DATA

    model = cached_tiny_model()
    exs = embedded_examples()[:3]
    real = mining._condition_items

    def fake(model, examples, setting, data_cfg):
        items, excl, info = real(model, examples, setting, data_cfg)
        return (items[1:] if setting == "gold" else items), excl, info

    monkeypatch.setattr(mining, "_condition_items", fake)
    cfg = MiningConfig(method="grad_x_act", irrelevant_definition="contrast")
    res = mining.mine(model, exs, cfg, DATA, show_progress=False)
    assert res.ids_I == [e.id for e in exs[1:]] and res.excluded["I"]["unpaired"] == 1
    assert exs[0].id in res.excluded["I"]["ids"]


def test_key_value_prefix_changes_nothing(monkeypatch):
    import neurorit_lens.neurons.contrast as contrast

    model = cached_tiny_model()
    noisy, gold = _batches(model)
    with_prefix = contrast_attribute(model, noisy, gold, method="ig", steps=4)
    monkeypatch.setattr(contrast, "_prefix", lambda model, noisy, suffix: 0)
    torch.testing.assert_close(contrast_attribute(model, noisy, gold, method="ig", steps=4), with_prefix,
                               rtol=1e-4, atol=1e-6)
