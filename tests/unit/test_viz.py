"""Offline circuitsvis views: HTML is self-contained; activations and per-token attribution match references."""

from __future__ import annotations

import re

import pytest
import torch

from neurorit_lens.hooks import mlp_hook_name, neuron_hooks
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import Neuron, NeuronSet
from neurorit_lens.objective import tokenize_with_answers
from neurorit_lens.viz.views import (
    CVPanel,
    NeuronView,
    activation_view,
    attribution_view,
    circuitsvis_bundle,
    example_view,
    mlp_activations,
    page_html,
    token_attribution,
    top_neurons,
)
from tests.helpers import cached_tiny_model, make_example

SETS = {"R_excl": NeuronSet({0: [1, 2, 3], 1: [4]}), "I_excl": NeuronSet({1: [5, 6]}), "shared": NeuronSet()}


def _assert_offline(html: str) -> None:
    srcs = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", html, flags=re.I)
    assert not srcs, f"external script sources: {srcs}"
    assert not re.findall(r"<link[^>]*href\s*=\s*[\"']?https?://", html, flags=re.I)
    for cdn in ("unpkg.com", "jsdelivr", "cdnjs", "googleapis", "sourceMappingURL"):
        assert cdn not in html, cdn


@pytest.fixture(scope="module")
def view() -> NeuronView:
    return example_view(cached_tiny_model(), make_example(0, n_irrelevant=2), SETS, k=3)


def test_saved_view_is_self_contained(view, tmp_path):
    path = view.save(tmp_path / "v.html")
    html = path.read_text()
    _assert_offline(html)
    bundle = circuitsvis_bundle()
    assert html.count(bundle) == 1  # the bundle, once
    assert "</script" not in bundle
    ids = re.findall(r'<div id="([^"]+)" class="cv-target">', html)
    assert len(ids) == len(view.panels) == 2 + 2 * 2 and len(set(ids)) == len(ids)
    for i in ids:
        assert f'CircuitsVis.render("{i}"' in html
    assert "CircuitsVis.TextNeuronActivations" in html and "CircuitsVis.ColoredTokens" in html
    assert "L0N1 (R_excl)" in html and "Velmor0" in html  # data embedded


def test_repr_html_is_offline_iframe(view):
    r = view._repr_html_()
    assert r.startswith("<iframe srcdoc=") and "&lt;script&gt;" in r and "<script" not in r.replace("<iframe", "")
    _assert_offline(r)


def test_page_escapes_script_end_in_data():
    panel = CVPanel("ColoredTokens", {"tokens": ["</script><script>alert(1)</script>"], "values": [1.0]})
    html = page_html(panel.html())
    body = html.split("</head>", 1)[1]
    assert body.count("</script>") == 1 and "alert(1)" in body  # only the panel's own closing tag


def test_view_json_roundtrip(view, tmp_path):
    p = view.save_json(tmp_path / "v.json")
    back = NeuronView.load_json(p)
    assert back.to_dict() == view.to_dict()
    assert len(view + back) == 2 * len(view)


def test_mlp_activations_match_full_cache():
    model = cached_tiny_model()
    toks = model.to_tokens(["The capital of Zarnia is Velmor.", "Trains run."])
    ns = [Neuron(1, 7), Neuron(0, 3), Neuron(1, 0)]
    got = mlp_activations(model, toks, ns)
    _, cache = model.run_with_cache(toks)
    ref = torch.stack([cache[mlp_hook_name(n.layer)][..., n.index] for n in ns], -1)
    torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="out of range"):
        mlp_activations(model, toks, [Neuron(5, 0)])
    with pytest.raises(ValueError, match="no neurons"):
        mlp_activations(model, toks, [])


def test_token_attribution_matches_finite_differences():
    """a * dF/da per (position, neuron) against central differences, in float64."""
    model = tiny_model(dtype=torch.float64, seed=3)
    batch = tokenize_with_answers(model, ["Zarnia capital?", "Q: tower of Brindle? A:"], [" Velmor", " Sorrel"])
    ns = [Neuron(0, 2), Neuron(1, 9), Neuron(0, 40)]
    got = token_attribution(model, batch, ns, per_neuron=True)
    eps = 1e-4

    def F(logits, row, b):  # naive float64 answer log-prob of example b (answer_target works in float32)
        lp = torch.log_softmax(logits[row], -1)
        return sum(lp[t, batch.target_ids[b, t]] for t in range(lp.shape[0]) if batch.answer_mask[b, t])

    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens)
    for b in range(len(batch)):
        P = int(batch.lengths[b])
        toks = batch.tokens[b : b + 1].repeat(2 * P, 1)  # row 2p: +eps at position p, row 2p+1: -eps
        for j, n in enumerate(ns):

            def bump(act, *, hook, n=n, P=P):
                act = act.clone()
                for p in range(P):
                    act[2 * p, p, n.index] += eps
                    act[2 * p + 1, p, n.index] -= eps
                return act

            with torch.no_grad(), neuron_hooks(model, [(mlp_hook_name(n.layer), bump)]):
                logits = model(toks)
            for p in range(P):
                fd = (F(logits[2 * p : 2 * p + 1], 0, b) - F(logits[2 * p + 1 : 2 * p + 2], 0, b)) / (2 * eps)
                ref = cache[mlp_hook_name(n.layer)][b, p, n.index] * fd
                assert abs(float(got[b, p, j]) - float(ref)) < 1e-7 + 1e-4 * abs(float(ref)), (b, p, n)
    # padded positions are zero; the set attribution is the per-neuron sum
    assert got[0, int(batch.lengths[0]):].abs().sum() == 0
    torch.testing.assert_close(token_attribution(model, batch, ns), got.sum(-1))
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())


def test_token_attribution_sums_to_attribution_module():
    """Summed over positions it is the mining module's grad_x_act."""
    from neurorit_lens.neurons.attribution import attribute

    model = cached_tiny_model()
    batch = tokenize_with_answers(model, ["The capital of Zarnia is"], [" Velmor"])
    ref = attribute(model, batch, "grad_x_act")  # [batch, layer, d_mlp]
    ns = NeuronSet({0: range(64), 1: range(64)})
    per = token_attribution(model, batch, ns, per_neuron=True).sum(1)  # [batch, neuron]
    torch.testing.assert_close(per.reshape(1, 2, 64), ref.float().cpu(), atol=1e-5, rtol=1e-4)


def test_top_neurons_and_bad_inputs():
    s = NeuronSet({0: [1, 2], 1: [3]})
    scores = torch.zeros(2, 8)
    scores[1, 3], scores[0, 2] = 5.0, 1.0
    assert top_neurons(s, scores, k=2) == [Neuron(1, 3), Neuron(0, 2)]
    assert top_neurons(s, None, k=1) == [Neuron(0, 1)]
    with pytest.raises(ValueError, match="k must be"):
        top_neurons(s, None, k=0)
    with pytest.raises(ValueError, match="unknown circuitsvis component"):
        CVPanel("Nope", {})
    model = cached_tiny_model()
    with pytest.raises(ValueError, match="none of the sets"):
        example_view(model, make_example(0), {"R_excl": NeuronSet()})
    with pytest.raises(ValueError, match="no texts"):
        activation_view(model, {}, [Neuron(0, 1)])
    with pytest.raises(ValueError, match="no prompts"):
        attribution_view(model, {}, [Neuron(0, 1)])
