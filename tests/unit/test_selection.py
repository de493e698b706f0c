"""Selection rules against naive Python loops; additive stats merge like one pass."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neurorit_lens.neuron_sets import Neuron, NeuronSet, exclusive_sets
from neurorit_lens.neurons.selection import SelectionStats, select


def naive_threshold(scores, t, p):
    n_ex, L, D = scores.shape
    counts = {}
    for e in range(n_ex):
        mx = max(scores[e, l, i].item() for l in range(L) for i in range(D))
        for l in range(L):
            for i in range(D):
                if mx > 0 and scores[e, l, i].item() >= t * mx:
                    counts[(l, i)] = counts.get((l, i), 0) + 1
    return NeuronSet(Neuron(l, i) for (l, i), c in counts.items() if c / n_ex >= p)


def naive_mean(scores):
    n_ex, L, D = scores.shape
    return {(l, i): sum(scores[e, l, i].item() for e in range(n_ex)) / n_ex for l in range(L) for i in range(D)}


def naive_topk(scores, k):
    mean = naive_mean(scores)
    ranked = sorted(mean.items(), key=lambda kv: (-kv[1], kv[0]))
    return NeuronSet(Neuron(*key) for key, v in ranked[:k] if v > 0)


def naive_topk_per_layer(scores, k):
    mean = naive_mean(scores)
    out = []
    for l in range(scores.shape[1]):
        ranked = sorted(((key, v) for key, v in mean.items() if key[0] == l), key=lambda kv: (-kv[1], kv[0]))
        out += [Neuron(*key) for key, v in ranked[:k] if v > 0]
    return NeuronSet(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t,p", [(0.2, 0.5), (0.5, 0.3), (0.05, 1.0), (1.0, 0.1)])
def test_threshold_rule_matches_naive_loop(seed, t, p):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(7, 3, 11, generator=g).pow(3)
    scores[3] = -scores[3].abs()  # an example with no positive attribution keeps nothing
    assert select(scores, "threshold", threshold=t, frequency=p) == naive_threshold(scores, t, p)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_topk_rules_match_naive_loop(k):
    g = torch.Generator().manual_seed(k)
    scores = torch.randn(5, 3, 9, generator=g)
    assert select(scores, "topk", top_k=k) == naive_topk(scores, k)
    assert select(scores, "topk_per_layer", top_k=k) == naive_topk_per_layer(scores, k)
    assert len(select(scores, "topk", top_k=k)) <= k
    assert all(c <= k for c in select(scores, "topk_per_layer", top_k=k).counts_per_layer().values())


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(0, 10_000), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_merged_shards_equal_one_pass(n, seed, t, p):
    scores = torch.randn(n, 2, 6, generator=torch.Generator().manual_seed(seed))
    cut = n // 2
    a = SelectionStats.from_scores(scores[:cut], t) if cut else SelectionStats(2, 6, t)
    b = SelectionStats.from_scores(scores[cut:], t)
    merged = a.merge(b)
    whole = SelectionStats.from_scores(scores, t)
    assert merged.n_examples == whole.n_examples == n
    assert torch.equal(merged.keep_count, whole.keep_count)
    torch.testing.assert_close(merged.score_sum, whole.score_sum)
    for rule in ("threshold", "topk", "topk_per_layer"):
        assert merged.select(rule, p, 4) == whole.select(rule, p, 4) == select(scores, rule, t, p, 4)


def test_stats_roundtrip_and_errors():
    scores = torch.rand(4, 2, 5)
    s = SelectionStats.from_scores(scores, 0.3)
    r = SelectionStats.from_dict(s.to_dict())
    assert r.select() == s.select() and r.n_examples == 4
    assert SelectionStats(2, 5).select() == NeuronSet()  # no examples -> empty
    with pytest.raises(ValueError, match="thresholds"):
        s.merge(SelectionStats(2, 5, 0.2))
    with pytest.raises(ValueError, match="shape"):
        s.merge(SelectionStats(3, 5, 0.3))
    with pytest.raises(ValueError, match="scores must be"):
        s.update(torch.rand(1, 3, 5))
    with pytest.raises(ValueError, match="NaN"):
        s.update(torch.full((1, 2, 5), float("nan")))
    with pytest.raises(ValueError, match="unknown selection rule"):
        s.select("best")
    with pytest.raises(ValueError, match="threshold"):
        select(scores, threshold=0.0)


def test_exclusive_sets_from_two_conditions():
    g = torch.Generator().manual_seed(3)
    sr, si = torch.rand(6, 2, 8, generator=g), torch.rand(6, 2, 8, generator=g)
    R, I = select(sr, threshold=0.5), select(si, threshold=0.5)
    sets = exclusive_sets(R, I)
    assert set(sets["R_excl"]) == set(R) - set(I)
    assert set(sets["I_excl"]) == set(I) - set(R)
    assert set(sets["shared"]) == set(R) & set(I)


def _agreement_module():
    from benchmarks import agreement

    return agreement


def test_agreement_metrics_against_naive_definitions():
    ag = _agreement_module()
    x = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0])
    y = torch.tensor([1.0, 0.0, 4.0, 3.0, 2.0])

    def naive_ranks(v):  # average ranks of ties, 0-based
        vals = v.tolist()
        return [sum(1 for w in vals if w < a) + (sum(1 for w in vals if w == a) - 1) / 2 for a in vals]

    rx, ry = naive_ranks(x), naive_ranks(y)
    mx, my = sum(rx) / 5, sum(ry) / 5
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    ref = cov / (sum((a - mx) ** 2 for a in rx) ** 0.5 * sum((b - my) ** 2 for b in ry) ** 0.5)
    assert ag.spearman(x, y) == pytest.approx(ref)
    assert ag.spearman(x, x) == pytest.approx(1.0) and ag.spearman(x, -x) == pytest.approx(-1.0)
    assert ag.topk_overlap(torch.tensor([5.0, 4, 3, 2, 1]), torch.tensor([5.0, 1, 4, 2, 3]), 2) == 0.5
    assert ag.jaccard(NeuronSet({0: [1, 2]}), NeuronSet({0: [2, 3]})) == pytest.approx(1 / 3)


def naive_sign_consistent(scores, q):
    n_ex, L, D = scores.shape
    return {(l, i) for l in range(L) for i in range(D)
            if sum(1 for e in range(n_ex) if scores[e, l, i].item() > 0) >= q * n_ex}


@pytest.mark.parametrize("rule", ["threshold", "topk", "topk_per_layer"])
@pytest.mark.parametrize("q", [0.0, 0.5, 0.8, 1.0])
def test_sign_consistency_matches_naive_loop(rule, q):
    g = torch.Generator().manual_seed(7)
    scores = torch.randn(6, 3, 9, generator=g) + 0.3
    base = select(scores, rule, 0.2, 0.3, top_k=6)
    got = select(scores, rule, 0.2, 0.3, top_k=6, sign_consistency=q)
    ok = naive_sign_consistent(scores, q)
    assert got == NeuronSet(n for n in base if (n.layer, n.index) in ok)
    a = SelectionStats.from_scores(scores[:2]).merge(SelectionStats.from_scores(scores[2:]))
    assert a.select(rule, 0.3, 6, q) == got
    assert SelectionStats.from_dict(a.to_dict()).select(rule, 0.3, 6, q) == got
    with pytest.raises(ValueError, match="sign_consistency"):
        a.select(rule, 0.3, 6, 1.5)


def test_normalize_scores_matches_naive_division():
    from neurorit_lens.neurons.selection import normalize_scores

    g = torch.Generator().manual_seed(3)
    scores = torch.randn(4, 2, 5, generator=g)
    scale = torch.rand(2, 5, generator=g) + 0.1
    scale[1, 2] = 0.0  # a dead neuron scores 0
    out = normalize_scores(scores, scale)
    for e in range(4):
        for l in range(2):
            for i in range(5):
                ref = 0.0 if scale[l, i] == 0 else scores[e, l, i].item() / scale[l, i].item()
                assert out[e, l, i].item() == pytest.approx(ref, rel=1e-6)
    with pytest.raises(Exception, match="shape|d_mlp|layer"):  # the run-time type check or the ValueError
        normalize_scores(scores, scale[:1])
    with pytest.raises(ValueError, match="finite"):
        normalize_scores(scores, -scale)
