"""Pooled mining runs select what one run over all their examples selects; split-half stability."""

from __future__ import annotations

import math

import pytest
import torch

from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.models import tiny_model
from neurorit_lens.neuron_sets import SET_NAMES, NeuronSet
from neurorit_lens.neurons.mining import mine
from neurorit_lens.neurons.pooling import jaccard, pool_results, split_half_stability, subset

CFG = MiningConfig(method="grad_x_act", threshold=0.3, frequency=0.5)


@pytest.fixture(scope="module")
def runs():
    m, exs = tiny_model(seed=1), embedded_examples()[:6]
    a = mine(m, exs[:4], CFG, DataConfig(), show_progress=False)
    b = mine(m, exs[4:], CFG, DataConfig(), show_progress=False)
    whole = mine(m, exs, CFG, DataConfig(), show_progress=False)
    return a, b, whole


def test_pooled_runs_select_what_one_run_over_all_examples_selects(runs):
    a, b, whole = runs
    pooled = pool_results([a, b])
    assert pooled.ids_R == whole.ids_R and pooled.ids_I == whole.ids_I
    torch.testing.assert_close(pooled.scores_R, whole.scores_R)
    for name in SET_NAMES:
        assert pooled.sets[name] == whole.sets[name], name
    for name, mass in whole.layer_mass().items():
        assert pooled.layer_mass()[name] == pytest.approx(mass)
    assert pooled.excluded["R"]["n"] == whole.excluded["R"]["n"]
    again = pool_results([a, b], threshold=0.6)
    assert again.sets["R"] == whole.reselect(threshold=0.6).sets["R"]


def test_pooling_refuses_other_settings_and_repeated_ids(runs):
    a, b, _ = runs
    with pytest.raises(ValueError, match="repeat"):
        pool_results([a, a])
    other = a.reselect(threshold=0.9)
    with pytest.raises(ValueError, match="threshold"):
        pool_results([other, b])
    with pytest.raises(ValueError, match="at least one"):
        pool_results([])


def test_jaccard_against_python_sets():
    x, y = NeuronSet({0: [1, 2, 3]}), NeuronSet({0: [2, 3], 1: [5]})
    assert jaccard(x, y) == len({(0, 2), (0, 3)}) / len({(0, 1), (0, 2), (0, 3), (1, 5)})
    assert math.isnan(jaccard(NeuronSet(), NeuronSet()))


def test_split_half_stability_selects_each_half_by_a_naive_reference(runs):
    a, b, _ = runs
    st = split_half_stability([a, b])
    even = pool_results([subset(a, [0, 2], [0, 2]), subset(b, [0], [0])])
    odd = pool_results([subset(a, [1, 3], [1, 3]), subset(b, [1], [1])])
    for name in SET_NAMES:
        assert st["jaccard"][name] == pytest.approx(jaccard(even.sets[name], odd.sets[name]), nan_ok=True)
    assert st["n"]["a"] == {"R": 3, "I": 3} and st["n"]["b"] == {"R": 3, "I": 3}
