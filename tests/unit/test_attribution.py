"""Attribution estimators against independent references: Captum, naive loops, closed forms.

Every reference here runs the *full* model with TL's ``run_with_hooks`` and full logits,
one example at a time without padding, so it shares none of the fast path's tricks
(cached residuals, ``start_at_layer``, gates, compact read-out, batched alphas).
"""

from __future__ import annotations

import functools

import pytest
import torch
from jaxtyping import Float

from neurorit_lens.hooks import layer_of, mlp_hook_name, scale_neurons_hook
from neurorit_lens.models import tiny_model
from neurorit_lens.neurons.attribution import (
    attribute,
    baseline_target,
    completeness_gap,
    ig_alphas,
    position_mask,
    target_fn,
)
from neurorit_lens.objective import answer_target, tokenize_with_answers
from tests.helpers import unchecked

PROMPTS = ["The capital of Zarnia is", "Who wrote the report? Answer:", "Trains"]
ANSWERS = [" Velmor", " Alice wrote it", " run north"]


@functools.lru_cache(maxsize=4)
def model64(gated: bool):
    return tiny_model(n_layers=2, d_mlp=32, gated=gated, seed=1, dtype=torch.float64)


def batch_for(model, idx=(0, 1, 2)):
    return tokenize_with_answers(model, [PROMPTS[i] for i in idx], [ANSWERS[i] for i in idx])


def single(model, i):
    return tokenize_with_answers(model, [PROMPTS[i]], [ANSWERS[i]])


def assert_rel_close(got, ref, rel=1e-5):
    """Relative error of the whole vector (answer_target reads logits in float32)."""
    err = ((got - ref).norm() / ref.norm().clamp(min=1e-12)).item()
    assert err < rel, err


def full_F(model, b, hooks=(), target="logprob"):
    """F from the full model (all logits), run through TL's own hook mechanism."""
    logits = model.run_with_hooks(b.tokens, fwd_hooks=list(hooks))
    return answer_target(logits, b, target)


def logprob64(model, b, hooks):
    """Summed answer log-prob computed in float64 throughout (for finite differences)."""
    logits = model.run_with_hooks(b.tokens, fwd_hooks=list(hooks)).double()
    lp = logits.log_softmax(-1).gather(-1, b.target_ids[..., None])[..., 0]
    return (lp * b.answer_mask).sum(-1)


def cached_act(model, b, layer, site="post"):
    _, cache = model.run_with_cache(b.tokens, names_filter=mlp_hook_name(layer, site))
    return cache[mlp_hook_name(layer, site)]


def naive_ig_layer(model, b, layer, steps, rule, positions="all", target="logprob", site="post"):
    """One example, one alpha at a time: IG_i = a_i * mean_k dF(alpha_k a)/da_i, summed over positions."""
    a = cached_act(model, b, layer, site)
    pmask = position_mask(b, positions)[..., None]
    total = torch.zeros(model.cfg.d_mlp, dtype=torch.float64)
    for alpha in ig_alphas(steps, rule).tolist():
        x = (a * torch.where(pmask, alpha, 1.0)).detach().requires_grad_(True)
        F = full_F(model, b, [(mlp_hook_name(layer, site), lambda act, hook, x=x: x)], target)
        (g,) = torch.autograd.grad(F.sum(), x)
        total += (a * g * pmask)[0].sum(0)
    return total / steps


@pytest.mark.parametrize("gated", [False, True])
def test_ig_completeness_per_layer_shrinks_with_steps(gated):
    model = model64(gated)
    b = batch_for(model)
    gaps = []
    for steps in (2, 8, 32):
        s = attribute(model, b, "ig", steps=steps, alpha_chunk=16)
        gaps.append(completeness_gap(model, b, s, "ig").abs().max().item())
    assert gaps[2] < gaps[1] < gaps[0]
    assert gaps[2] < 1e-3
    # midpoint rule: error ~ 1/m^2, so 4x the steps cuts the gap by roughly 16x
    assert gaps[2] < gaps[1] / 6


@pytest.mark.parametrize("gated", [False, True])
def test_ig_joint_completeness_over_whole_model(gated):
    model = model64(gated)
    b = batch_for(model)
    gaps = []
    for steps in (4, 32):
        s = attribute(model, b, "ig_joint", steps=steps, alpha_chunk=16)
        gap = completeness_gap(model, b, s, "ig_joint")
        assert gap.shape == (3,)
        gaps.append(gap.abs().max().item())
    assert gaps[1] < gaps[0] / 6 and gaps[1] < 1e-3
    # the total it explains is F(model) - F(every MLP zeroed)
    f1, f0 = target_fn(model, b), baseline_target(model, b, [0, 1])
    torch.testing.assert_close(s.sum((1, 2)), (f1 - f0).double(), atol=2e-3, rtol=0)


@pytest.mark.parametrize("gated,rule,method", [(False, "midpoint", "riemann_middle"), (True, "right", "riemann_right"),
                                               (True, "midpoint", "riemann_middle")])
def test_ig_equals_captum_integrated_gradients(gated, rule, method):
    from captum.attr import IntegratedGradients

    model = model64(gated)
    steps = 7
    b = batch_for(model, (0, 1))
    ours = attribute(model, b, "ig", steps=steps, rule=rule, alpha_chunk=3)
    for i in range(len(b)):
        bi = single(model, i)
        for layer in range(model.cfg.n_layers):
            a = cached_act(model, bi, layer)

            def forward(x, bi=bi, layer=layer):
                tokens = bi.tokens.expand(x.shape[0], -1)
                rep = bi.select([0] * x.shape[0])
                logits = model.run_with_hooks(tokens, fwd_hooks=[(mlp_hook_name(layer), lambda act, hook: x)])
                return answer_target(logits, rep, "logprob")

            ref = IntegratedGradients(forward).attribute(a, baselines=torch.zeros_like(a), n_steps=steps,
                                                         method=method)
            ref = ref[0].sum(0)
            rel = (ours[i, layer] - ref).norm() / ref.norm()
            assert rel < 1e-4, (i, layer, rel.item())


@pytest.mark.parametrize("gated,positions", [(False, "all"), (True, "all"), (True, "last"), (False, "last")])
def test_batched_padded_ig_equals_naive_loop(gated, positions):
    model = model64(gated)
    b = batch_for(model)
    assert len(set(b.lengths.tolist())) > 1  # really padded
    ours = attribute(model, b, "ig", steps=3, alpha_chunk=2, positions=positions, site="post")
    for i in range(len(b)):
        for layer in range(model.cfg.n_layers):
            ref = naive_ig_layer(model, single(model, i), layer, 3, "midpoint", positions)
            assert_rel_close(ours[i, layer], ref)


@pytest.mark.parametrize("target,site", [("prob", "pre"), ("logit_diff", "post"), ("logit", "pre")])
def test_other_targets_and_sites_match_naive_loop(target, site):
    model = model64(False)
    b = batch_for(model, (0, 2))
    ours = attribute(model, b, "ig", steps=3, rule="right", alpha_chunk=2, target=target, site=site, layers=[1])
    assert torch.count_nonzero(ours[:, 0]) == 0  # layer 0 not requested
    for j, i in enumerate((0, 2)):
        ref = naive_ig_layer(model, single(model, i), 1, 3, "right", target=target, site=site)
        assert_rel_close(ours[j, 1], ref)


@pytest.mark.parametrize("gated", [False, True])
def test_ig_joint_equals_naive_path_loop(gated):
    """Reference: scale every layer by alpha, read a_i(alpha) and dF/dx_i with retain_grad."""
    model = model64(gated)
    b = batch_for(model)
    steps = 4
    ours = attribute(model, b, "ig_joint", steps=steps, alpha_chunk=3)
    for i in range(len(b)):
        bi = single(model, i)
        total = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.float64)
        for alpha in ig_alphas(steps).tolist():
            store = {}

            def hook(act, hook, alpha=alpha, store=store):
                if layer_of(hook.name) == 0:  # parameters are frozen: the graph starts here
                    x = (act * alpha).detach().requires_grad_(True)
                else:
                    x = act * alpha
                    x.retain_grad()
                store[hook.name] = (act.detach(), x)
                return x

            F = full_F(model, bi, [(mlp_hook_name(l), hook) for l in range(model.cfg.n_layers)])
            F.sum().backward()
            for l in range(model.cfg.n_layers):
                act, x = store[mlp_hook_name(l)]
                total[l] += (act * x.grad)[0].sum(0)  # a_i(alpha) * dF/dx_i, summed over positions
        assert_rel_close(ours[i], total / steps)


@pytest.mark.parametrize("gated", [False, True])
def test_last_position_prefix_reuse_keeps_completeness(gated):
    """positions='last' reuses the unchanged prefix; completeness must still hold for every method."""
    model = model64(gated)
    b = batch_for(model)
    s = attribute(model, b, "ig_joint", steps=32, alpha_chunk=16, positions="last")
    assert completeness_gap(model, b, s, "ig_joint", positions="last").abs().max() < 1e-3
    s = attribute(model, b, "ig", steps=32, alpha_chunk=16, positions="last")
    assert completeness_gap(model, b, s, "ig", positions="last").abs().max() < 1e-3
    g = attribute(model, b, "grad_x_act", positions="last")
    torch.testing.assert_close(g, attribute(model, b, "ig", steps=1, rule="right", positions="last"))


def test_ig_joint_on_one_layer_is_ig():
    model = model64(True)
    b = batch_for(model)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(attribute(model, b, "ig_joint", steps=6, layers=[layer]),
                                   attribute(model, b, "ig", steps=6, layers=[layer]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gated", [False, True])
def test_grad_x_act_equals_autograd_and_finite_differences(gated):
    model = model64(gated)
    b = batch_for(model)
    ours = attribute(model, b, "grad_x_act")
    # one-step right-rule IG is attribution patching, layer by layer
    torch.testing.assert_close(ours, attribute(model, b, "ig", steps=1, rule="right"), rtol=1e-9, atol=1e-12)
    for i in range(len(b)):
        bi = single(model, i)
        # finite differences: d/de F(scale neuron (l, j) by 1 + e) at e = 0 = sum_pos a * dF/da
        eps = 1e-5
        for layer, j in [(0, 3), (1, 7), (1, 30)]:
            up = logprob64(model, bi, [(mlp_hook_name(layer), scale_neurons_hook([j], 1 + eps))])
            dn = logprob64(model, bi, [(mlp_hook_name(layer), scale_neurons_hook([j], 1 - eps))])
            fd = ((up - dn) / (2 * eps)).item()
            assert abs(ours[i, layer, j].item() - fd) < 1e-5 * max(1.0, abs(fd)), (layer, j, fd)


def test_scores_shape_dtype_and_jaxtyping():
    model = tiny_model(n_layers=2, d_mlp=64)  # float32

    b = tokenize_with_answers(model, PROMPTS[:2], ANSWERS[:2])
    for method in ("ig", "ig_joint", "grad_x_act"):
        s = attribute(model, b, method, steps=2, offload=True)
        assert isinstance(s, Float[torch.Tensor, "batch layer d_mlp"])
        assert s.shape == (2, 2, 64) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert not any(hp.fwd_hooks or hp.bwd_hooks for hp in model.hook_dict.values())
    assert not any(p.requires_grad for p in model.parameters())


def test_parameters_restored_and_hooks_removed_after_error():
    model = tiny_model(n_layers=2, d_mlp=16)
    for p in model.parameters():
        p.requires_grad_(True)
    b = tokenize_with_answers(model, PROMPTS[:1], ANSWERS[:1])
    with pytest.raises(ValueError, match="unknown target"):  # without the type checker, as users run
        unchecked(attribute)(model, b, target="nope")
    s = attribute(model, b, "ig", steps=2)
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())  # only gates received gradients
    assert s.abs().sum() > 0
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "shap"}, "unknown method"),
    ({"rule": "simpson"}, "unknown rule"),
    ({"positions": "first"}, "unknown positions"),
    ({"site": "resid"}, "site must be"),
    ({"layers": [5]}, "out of range"),
    ({"steps": 0}, "steps must be"),
    ({"alpha_chunk": 0}, "alpha_chunk"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    model = model64(False)
    b = batch_for(model, (0,))
    with pytest.raises(ValueError, match=match):  # without the type checker, as users run
        unchecked(attribute)(model, b, **kwargs)


@pytest.mark.parametrize("method", ["ig", "grad_x_act"])
def test_skip_first_leaves_the_first_position_unscaled(method):
    """positions='skip_first' equals a naive alpha loop that scales every position but 0 (mask built here)."""
    model = model64(True)
    b = batch_for(model)
    steps, rule = (3, "midpoint") if method == "ig" else (1, "right")
    ours = attribute(model, b, method, steps=steps, alpha_chunk=2, positions="skip_first")
    for i in range(len(b)):
        bi = single(model, i)
        for layer in range(model.cfg.n_layers):
            a = cached_act(model, bi, layer)
            keep = torch.ones(a.shape[:2], dtype=torch.bool)
            keep[:, 0] = False
            keep = keep[..., None]
            total = torch.zeros(model.cfg.d_mlp, dtype=torch.float64)
            for alpha in ig_alphas(steps, rule).tolist():
                x = (a * torch.where(keep, alpha, 1.0)).detach().requires_grad_(True)
                F = full_F(model, bi, [(mlp_hook_name(layer), lambda act, hook, x=x: x)], "logprob")
                (g,) = torch.autograd.grad(F.sum(), x)
                total += (a * g * keep)[0].sum(0)
            assert_rel_close(ours[i, layer], total / steps)
    assert completeness_gap(model, b, attribute(model, b, "ig", steps=32, alpha_chunk=16, positions="skip_first"),
                            "ig", positions="skip_first").abs().max() < 1e-3


@pytest.mark.parametrize("method", ["ig", "ig_joint"])
def test_memory_budget_lowers_the_chunk_and_keeps_the_scores(method):
    """A tiny budget forces one alpha per pass; the scores equal the default chunk's to float rounding."""
    from neurorit_lens.neurons.attribution import budget_chunk

    model = model64(True)
    batch = batch_for(model)
    assert budget_chunk(model, batch, 0, 5, None) == 5
    assert budget_chunk(model, batch, 0, 5, 1e-9) == 1
    assert budget_chunk(model, batch, 0, 5, 1e3) == 5
    big = budget_chunk(model, batch, 1, 50, 1e-3)
    assert budget_chunk(model, batch, 0, 50, 1e-3) <= big  # a pass from a lower layer runs more blocks
    ref = attribute(model, batch, method, steps=6, alpha_chunk=3)
    small = attribute(model, batch, method, steps=6, alpha_chunk=3, max_memory_gb=1e-9)
    torch.testing.assert_close(small, ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="max_memory_gb"):
        attribute(model, batch, method, steps=2, max_memory_gb=0)


def test_mining_config_carries_the_budget_to_attribute(monkeypatch):
    import neurorit_lens.neurons.mining as mining
    from neurorit_lens.config import DataConfig, MiningConfig
    from neurorit_lens.data import embedded_examples

    seen = []

    def spy(*a, **k):
        seen.append(k["max_memory_gb"])
        return attribute(*a, **k)

    monkeypatch.setattr(mining, "attribute", spy)
    mining.mine(tiny_model(n_layers=2, d_mlp=32), embedded_examples()[:2], MiningConfig(method="grad_x_act",
                max_memory_gb=0.5), DataConfig(max_prompt_tokens=320, n_passages=2), show_progress=False)
    assert seen and set(seen) == {0.5}
    with pytest.raises(ValueError, match="max_memory_gb"):
        MiningConfig(max_memory_gb=0)
