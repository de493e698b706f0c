"""Each plot: a figure from small synthetic inputs, a PNG written, axes labelled."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest

from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.viz.plots import (
    noise_ratio,
    plot_ablation_effects,
    plot_accuracy_vs_noise,
    plot_layer_mass,
    plot_set_counts,
    plot_training_curves,
    read_jsonl,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _check(fig, path):
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and (ax.get_title() or fig._suptitle is not None)
    plt.close(fig)


def test_layer_mass(tmp_path):
    fig = plot_layer_mass({"R": [0.1, 0.5, 0.4], "I": [0.3, 0.3, 0.4], "R_excl": [1, 0, 0]}, save=tmp_path / "m.png")
    assert len(fig.axes[0].patches) == 6  # R and I only, by default
    _check(fig, tmp_path / "m.png")
    with pytest.raises(ValueError, match="none of the conditions"):
        plot_layer_mass({"X": [1.0]})


def test_set_counts(tmp_path):
    sets = {"R_excl": {"0": [1, 2], "2": [5]}, "I_excl": NeuronSet({1: [3]}), "shared": [0, 1, 0]}
    fig = plot_set_counts(sets, save=tmp_path / "c.png")
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [2, 0, 1, 0, 1, 0, 0, 1, 0]
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "R_excl (3)"
    _check(fig, tmp_path / "c.png")


def _effect(m, lo, hi, n=8):
    return {"mean": m, "ci_low": lo, "ci_high": hi, "n": n}


def test_ablation_effects(tmp_path):
    rows = [
        {"set_name": s, "context": c, "setting": "gold" if c == "relevant" else "noise=0.8", "metric": "logprob",
         "n_neurons": 4, "effect": _effect(-0.5, -0.8, -0.2), "random": _effect(-0.05, -0.1, 0.0),
         "random_seed_means": [-0.1, 0.0, -0.05]}
        for s in ("R_excl", "I_excl") for c in ("relevant", "noisy")
    ] + [{"set_name": "R_excl", "context": "relevant", "metric": "accuracy", "n_neurons": 4,
          "effect": _effect(float("nan"), float("nan"), float("nan"), 0), "random": _effect(0, 0, 0)}]
    fig = plot_ablation_effects({"rows": rows}, save=tmp_path / "a.png")
    assert len(fig.axes) == 2 and "nats" in fig.axes[0].get_ylabel()
    _check(fig, tmp_path / "a.png")
    fig = plot_ablation_effects(rows, metric="accuracy", save=tmp_path / "acc.png")  # NaN effect tolerated
    _check(fig, tmp_path / "acc.png")
    with pytest.raises(ValueError, match="no ablation rows"):
        plot_ablation_effects(rows, metric="f1")


def test_noise_ratio():
    assert noise_ratio("noise=0.4") == 0.4 and noise_ratio("irrelevant") == 1.0 and noise_ratio("gold") == 0.0
    assert noise_ratio("gold+4") == 0.8 and noise_ratio("closed") is None and noise_ratio("counterfactual") is None


def test_accuracy_vs_noise(tmp_path):
    def ev(shift):
        return {"model": "m", "data": "d", "settings": {
            "closed": {"n": 10, "accuracy": 0.1, "accuracy_ci": [0.0, 0.3]},
            "gold": {"n": 10, "accuracy": 0.8 + shift, "accuracy_ci": [0.6, 0.95]},
            "noise=0.4": {"n": 10, "accuracy": 0.6 + shift, "accuracy_ci": [0.4, 0.8]},
            "gold+4": {"n": 10, "accuracy": 0.5 + shift, "accuracy_ci": [0.3, 0.7]},
            "noise=0.8": {"n": 10, "accuracy": 0.4 + shift, "accuracy_ci": [float("nan"), float("nan")]},
            "irrelevant": {"n": 10, "accuracy": 0.2 + shift, "accuracy_ci": [0.1, 0.4]}}}

    fig = plot_accuracy_vs_noise({"before": ev(0.0), "neurorit": ev(0.05)}, save=tmp_path / "n.png")
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 0.4, 0.8, 1.0]  # noise=0.8 wins over gold+4
    assert list(line.get_ydata()) == pytest.approx([80, 60, 40, 20])
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["closed"]
    _check(fig, tmp_path / "n.png")
    with pytest.raises(ValueError, match="settings"):
        plot_accuracy_vs_noise({"x": {"model": "m"}})


def test_training_curves(tmp_path):
    rows = [{"step": s, "loss": 3.0 / (s + 1), "lr": 1e-4, "stage": "stage1" if s < 5 else "stage2",
             "dev_loss": (2.0 - 0.1 * s) if s % 3 == 0 else None} for s in range(1, 10)]
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 10, "lo')  # half-written last line
    assert len(read_jsonl(log)) == 9
    fig = plot_training_curves({"neurorit": log, "full": rows[:4]}, save=tmp_path / "t.png")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "dev metric"
    _check(fig, tmp_path / "t.png")
    with pytest.raises(ValueError, match="no training log"):
        plot_training_curves([])
