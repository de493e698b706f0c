"""Matplotlib figures of a Neuro-RIT run: where the neurons sit, what ablating them does, how tuning helps.

Every function takes plain data (the dicts stored in the run folder: ``neurons.json``'s
``meta.layer_mass``, ``ablation.json``'s rows, ``eval.json``, ``train_log.jsonl`` rows),
returns a :class:`matplotlib.figure.Figure` with labelled axes, and writes a PNG when
given ``save=path``. The Agg backend is used, so nothing needs a display; inside a Jupyter
kernel the notebook's own (inline) backend is kept, so a figure made in a cell shows there.

- :func:`plot_layer_mass`: attribution mass per layer for the relevant (R) and irrelevant (I)
  conditions (the fraction of total positive attribution each layer holds).
- :func:`plot_set_counts`: how many R_excl, I_excl and shared neurons each layer has.
- :func:`plot_ablation_effects`: effect of ablating each set (mean, 95% bootstrap interval)
  next to random sets of the same per-layer counts (mean and the spread of seed means).
- :func:`plot_accuracy_vs_noise`: accuracy against the noise ratio of the context, one line
  per model/method, with 95% intervals.
- :func:`plot_training_curves`: training loss (and learning rate, dev metrics) against step.
- :func:`plot_neuron_histograms`: one neuron's activations, split by passage label and by region.

>>> fig = plot_set_counts({"R_excl": {"0": [1, 2]}, "I_excl": {"1": [3]}, "shared": {}}, n_layers=2)
>>> fig.axes[0].get_xlabel()
'layer'
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend, so its figures show
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from neurorit_lens.io import atomic_write_bytes  # noqa: E402

__all__ = [
    "figure_png",
    "noise_ratio",
    "plot_ablation_effects",
    "plot_accuracy_vs_noise",
    "plot_layer_mass",
    "plot_neuron_histograms",
    "plot_set_counts",
    "plot_training_curves",
    "read_jsonl",
    "save_figure",
]

SET_COLORS = {"R": "#1f77b4", "I": "#d62728", "R_excl": "#1f77b4", "I_excl": "#d62728", "shared": "#9467bd"}


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the figure as a PNG, atomically."""
    return atomic_write_bytes(path, figure_png(fig, dpi))


def _finish(fig: Figure, save: str | os.PathLike | None) -> Figure:
    fig.tight_layout()
    if save is not None:
        save_figure(fig, save)
    return fig


# --------------------------------------------------------------------------------------
# mining
# --------------------------------------------------------------------------------------
def plot_layer_mass(
    layer_mass: Mapping[str, Sequence[float]],
    conditions: Sequence[str] = ("R", "I"),
    title: str = "Attribution mass per layer",
    save: str | os.PathLike | None = None,
) -> Figure:
    """Grouped bars: per layer, the share of attribution mass of each condition.

    Args:
        layer_mass: condition -> one value per layer (``neurons.json`` ``meta.layer_mass``).
        conditions: which conditions to draw (missing ones are skipped).
        title: the figure title.
        save: optional PNG path.

    Returns:
        The figure.
    """
    present = [c for c in conditions if c in layer_mass and len(layer_mass[c])]
    if not present:
        raise ValueError(f"layer_mass has none of the conditions {list(conditions)} (has {sorted(layer_mass)})")
    n_layers = max(len(layer_mass[c]) for c in present)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * n_layers + 3), 3.4))
    width = 0.8 / len(present)
    x = np.arange(n_layers)
    for j, c in enumerate(present):
        v = np.asarray(layer_mass[c], dtype=float)
        ax.bar(x[: len(v)] + (j - (len(present) - 1) / 2) * width, v, width, label=c, color=SET_COLORS.get(c))
    ax.set_xlabel("layer")
    ax.set_ylabel("attribution mass (share)")
    ax.set_title(title)
    ax.set_xticks(x if n_layers <= 32 else x[:: max(1, n_layers // 16)])
    ax.legend(title="contexts")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, save)


def _counts(s: Any, n_layers: int) -> np.ndarray:
    """Per-layer counts from a NeuronSet, a ``{layer: [indices]}`` dict or a count list."""
    out = np.zeros(n_layers)
    if hasattr(s, "counts_per_layer"):
        s = s.counts_per_layer()
    if isinstance(s, Mapping):
        for layer, v in s.items():
            layer = int(layer)
            if layer >= n_layers:
                raise ValueError(f"layer {layer} out of range for n_layers={n_layers}")
            out[layer] = v if isinstance(v, (int, float)) else len(v)
    else:
        v = np.asarray(list(s), dtype=float)
        out[: len(v)] = v
    return out


def plot_set_counts(
    sets: Mapping[str, Any],
    n_layers: int | None = None,
    names: Sequence[str] = ("R_excl", "I_excl", "shared"),
    title: str = "Neuron sets per layer",
    save: str | os.PathLike | None = None,
) -> Figure:
    """Stacked bars: per layer, how many neurons each exclusive set holds.

    Args:
        sets: set name -> NeuronSet, ``{layer: [indices]}`` (``neurons.json``) or per-layer counts.
        n_layers: number of layers (default: the highest layer seen + 1).
        names: the sets drawn, bottom to top.
        title: the figure title.
        save: optional PNG path.
    """
    present = [n for n in names if n in sets]
    if not present:
        raise ValueError(f"sets has none of {list(names)} (has {sorted(sets)})")
    if n_layers is None:
        n_layers = 1
        for n in present:
            s = sets[n]
            s = s.counts_per_layer() if hasattr(s, "counts_per_layer") else s
            keys = [int(k) for k in s] if isinstance(s, Mapping) else [len(list(s)) - 1]
            n_layers = max([n_layers] + [k + 1 for k in keys])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * n_layers + 3), 3.4))
    bottom = np.zeros(n_layers)
    x = np.arange(n_layers)
    for n in present:
        c = _counts(sets[n], n_layers)
        ax.bar(x, c, 0.8, bottom=bottom, label=f"{n} ({int(c.sum())})", color=SET_COLORS.get(n))
        bottom += c
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons")
    ax.set_title(title)
    ax.set_xticks(x if n_layers <= 32 else x[:: max(1, n_layers // 16)])
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, save)


# --------------------------------------------------------------------------------------
# ablation
# --------------------------------------------------------------------------------------
def _row(r: Any) -> dict[str, Any]:
    return r.to_dict() if hasattr(r, "to_dict") else dict(r)


def plot_ablation_effects(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    metric: str = "logprob",
    title: str | None = None,
    save: str | os.PathLike | None = None,
) -> Figure:
    """Per context, the effect of ablating each set next to its random controls.

    Each set gets two markers: the set's mean effect with its bootstrap 95% interval, and
    the random controls' mean effect with its interval (plus the per-seed means as dots).

    Args:
        rows: ``ablation.json`` (the whole dict or its ``rows``): dicts with ``set_name``,
            ``context``, ``metric``, ``effect`` / ``random`` = ``{mean, ci_low, ci_high, n}``
            and optionally ``random_seed_means``.
        metric: ``logprob`` (change in gold log-prob, nats) or ``accuracy`` (points).
        title: the figure title.
        save: optional PNG path.
    """
    if isinstance(rows, Mapping):
        rows = rows.get("rows", [])
    rows = [_row(r) for r in rows if _row(r).get("metric") == metric]
    if not rows:
        raise ValueError(f"no ablation rows for metric {metric!r}")
    scale = 100.0 if metric == "accuracy" else 1.0
    contexts = list(dict.fromkeys(r["context"] for r in rows))
    fig, axes = plt.subplots(1, len(contexts), figsize=(4.2 * len(contexts) + 1, 3.6), squeeze=False, sharey=True)
    for ax, ctx in zip(axes[0], contexts, strict=True):
        sub = [r for r in rows if r["context"] == ctx]
        for i, r in enumerate(sub):
            for off, key, color, label in ((-0.15, "effect", SET_COLORS.get(r["set_name"], "#333"), "set"),
                                           (0.15, "random", "#7f7f7f", "random controls")):
                e = r.get(key) or {}
                m = e.get("mean", float("nan"))
                if m is None or not math.isfinite(m):
                    continue
                lo, hi = e.get("ci_low", m), e.get("ci_high", m)
                lo = m if lo is None or not math.isfinite(lo) else lo
                hi = m if hi is None or not math.isfinite(hi) else hi
                ax.errorbar(i + off, m * scale, yerr=[[max(0.0, (m - lo) * scale)], [max(0.0, (hi - m) * scale)]],
                            fmt="o" if key == "effect" else "s", color=color, capsize=4, ms=6,
                            label=label if i == 0 else None)
            seeds = r.get("random_seed_means") or []
            if seeds:
                ax.scatter(np.full(len(seeds), i + 0.3), np.asarray(seeds) * scale, s=9, color="#bbbbbb",
                           label="random seeds" if i == 0 else None, zorder=1)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels([f"{r['set_name']}\n({r.get('n_neurons', '?')} n.)" for r in sub])
        setting = sub[0].get("setting", "")
        ax.set_title(f"{ctx} contexts" + (f" ({setting})" if setting else ""))
        ax.set_xlabel("ablated set")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("change in gold log-prob (nats)" if metric == "logprob" else "change in accuracy (points)")
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title or ("Ablation vs random neurons of the same per-layer counts (95% CI)"), fontsize=11)
    return _finish(fig, save)


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------
_NOISE = re.compile(r"^noise\s*=\s*([0-9.]+)$")
_GOLD_PLUS = re.compile(r"^gold\s*\+\s*(\d+)$")


def noise_ratio(setting: str) -> float | None:
    """Fraction of irrelevant passages in a setting's context, or ``None`` if it has none.

    ``noise=R`` -> R; ``irrelevant`` -> 1; ``gold`` -> 0; ``gold+k`` -> k / (k + 1);
    ``closed``, ``counterfactual`` and unknown names -> ``None`` (not on a noise axis).
    """
    s = setting.strip().lower()
    if m := _NOISE.match(s):
        return float(m.group(1))
    if m := _GOLD_PLUS.match(s):
        k = int(m.group(1))
        return k / (k + 1)
    if s == "irrelevant":
        return 1.0
    if s == "gold":
        return 0.0
    return None


def _eval_settings(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    if "settings" not in ev or not isinstance(ev["settings"], Mapping):
        raise ValueError("an eval result needs a 'settings' mapping (eval.json)")
    return ev["settings"]


def _split_settings(evals: Mapping[str, Mapping[str, Any]], metric: str
                    ) -> tuple[dict[str, dict[float, Mapping[str, Any]]], dict[str, dict[str, Mapping[str, Any]]]]:
    """Per eval: results by noise ratio (``noise=R`` wins a tie) and the settings without a ratio."""
    on_axis: dict[str, dict[float, Mapping[str, Any]]] = {}
    others: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name, ev in evals.items():
        pts: dict[float, tuple[int, Mapping[str, Any]]] = {}
        for setting, res in _eval_settings(ev).items():
            if not isinstance(res, Mapping) or res.get(metric) is None:
                continue
            r = noise_ratio(setting)
            if r is None:
                others.setdefault(name, {})[setting] = res
                continue
            prio = 0 if setting.startswith("noise") else 1
            if r not in pts or prio < pts[r][0]:
                pts[r] = (prio, res)
        on_axis[name] = {x: pts[x][1] for x in sorted(pts)}
    return on_axis, others


def plot_accuracy_vs_noise(
    evals: Mapping[str, Mapping[str, Any]],
    metric: str = "accuracy",
    title: str = "Accuracy vs noise in the context",
    save: str | os.PathLike | None = None,
) -> Figure:
    """One line per model/method: the metric against the noise ratio, with 95% intervals.

    Settings with a noise ratio (see :func:`noise_ratio`) go on the line; ``noise=R`` settings
    are preferred where ``gold``/``gold+k`` land on the same ratio. Settings without one
    (``closed``, ``counterfactual``) go in a small panel on the right.

    Args:
        evals: name (e.g. ``before``, ``neurorit``) -> ``eval.json`` dict.
        metric: ``accuracy`` (default), ``em`` or ``f1``; intervals need ``{metric}_ci``.
        title: the figure title.
        save: optional PNG path.
    """
    if not evals:
        raise ValueError("no eval results given")
    on_axis, others = _split_settings(evals, metric)
    other_names = list(dict.fromkeys(s for d in others.values() for s in d))
    if not any(on_axis.values()) and not other_names:
        raise ValueError(f"no setting of any eval result has {metric!r}")

    def ci(res: Mapping[str, Any]) -> tuple[float, float]:
        c = res.get(f"{metric}_ci") or [np.nan, np.nan]
        return float(c[0]) * 100, float(c[1]) * 100

    if other_names:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8.4, 4.0), sharey=True,
                                      gridspec_kw={"width_ratios": [4, max(1, len(other_names))]})
    else:
        fig, ax = plt.subplots(figsize=(7.2, 4.0))
        ax2 = None
    n = len(evals)
    for j, name in enumerate(evals):
        color = f"C{j}"
        pts = on_axis.get(name) or {}
        if pts:
            xs = list(pts)
            ys = np.array([float(pts[x][metric]) for x in xs]) * 100
            lo, hi = map(np.array, zip(*(ci(pts[x]) for x in xs), strict=True))
            ax.plot(xs, ys, "o-", color=color, label=name)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(np.asarray(xs)[ok], lo[ok], hi[ok], color=color, alpha=0.15)
        if ax2 is not None:
            for k, setting in enumerate(other_names):
                res = (others.get(name) or {}).get(setting)
                if res is None:
                    continue
                y = float(res[metric]) * 100
                lo, hi = ci(res)
                err = [[max(0.0, y - lo)], [max(0.0, hi - y)]] if np.isfinite(lo) and np.isfinite(hi) else None
                ax2.errorbar(k + (j - (n - 1) / 2) * 0.12, y, yerr=err, fmt="o", color=color, capsize=3)
    _style_noise_axes(ax, ax2, other_names, metric, title)
    return _finish(fig, save)


def _style_noise_axes(ax: Any, ax2: Any, other_names: Sequence[str], metric: str, title: str) -> None:
    ax.set_xlabel("noise ratio (share of irrelevant passages; 1 = irrelevant only)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="model", fontsize=8)
    if ax2 is not None:
        ax2.set_xticks(range(len(other_names)))
        ax2.set_xticklabels(other_names, rotation=30, ha="right")
        ax2.set_xlim(-0.6, len(other_names) - 0.4)
        ax2.set_xlabel("other settings")
        ax2.grid(alpha=0.3)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (blank and half-written trailing lines are skipped)."""
    import json
    import logging

    rows, bad = [], 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        logging.getLogger(__name__).warning("%s: skipped %d unreadable line(s)", path, bad)
    return rows


def plot_training_curves(
    logs: Mapping[str, Sequence[Mapping[str, Any]] | str | os.PathLike] | Sequence[Mapping[str, Any]],
    title: str = "Training",
    save: str | os.PathLike | None = None,
) -> Figure:
    """Loss against step (left), dev metrics against step (right, when logged).

    Args:
        logs: ``train_log.jsonl`` rows (dicts with ``step``, ``loss``, optional ``lr``,
            ``stage`` and ``dev_*`` metrics), a path to such a file, or method -> either.
        title: the figure title.
        save: optional PNG path.
    """
    if not isinstance(logs, Mapping):
        logs = {"": logs}
    series = {name: (read_jsonl(v) if isinstance(v, (str, os.PathLike)) else list(v)) for name, v in logs.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError("no training log rows")
    dev_keys = sorted({k for rows in series.values() for r in rows for k, v in r.items()
                       if (k.startswith("dev_") or k.startswith("dev/")) and isinstance(v, (int, float))})
    ncols = 2 if dev_keys else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols + 0.5, 3.6), squeeze=False)
    ax = axes[0][0]
    for j, (name, rows) in enumerate(series.items()):
        pts = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float)) and "step" in r]
        if pts:
            steps, losses = zip(*pts, strict=True)
            ax.plot(steps, losses, "-", color=f"C{j}", lw=1.2, label=name or "loss")
        stages = [(r["step"], r.get("stage")) for r in rows if "step" in r and r.get("stage") is not None]
        for (_, a), (s1, b) in zip(stages, stages[1:], strict=False):
            if a != b:
                ax.axvline(s1, color=f"C{j}", ls=":", lw=1)
                ax.annotate(f" {b}", (s1, 0.98), xycoords=("data", "axes fraction"), fontsize=7, ha="left", va="top")
    ax.set_xlabel("step")
    ax.set_ylabel("SFT loss (answer tokens)")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    if len(series) > 1 or next(iter(series)):
        ax.legend(fontsize=8)
    if dev_keys:
        ax2 = axes[0][1]
        for j, (name, rows) in enumerate(series.items()):
            for k, key in enumerate(dev_keys):
                pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
                if pts:
                    s, v = zip(*pts, strict=True)
                    ax2.plot(s, v, marker="o", color=f"C{j}", ms=3, ls=["-", "--", ":", "-."][k % 4],
                             label=f"{name} {key}".strip())
        ax2.set_xlabel("step")
        ax2.set_ylabel("dev metric")
        ax2.set_title("dev")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, save)


# --------------------------------------------------------------------------------------
# neuron pages
# --------------------------------------------------------------------------------------
LABEL_COLORS = {"relevant": "#1f77b4", "irrelevant": "#d62728", "counterfactual": "#ff7f0e",
                "unlabelled": "#7f7f7f"}


def plot_neuron_histograms(
    by_label: Mapping[str, Sequence[float]],
    by_region: Mapping[str, Sequence[float]],
    title: str = "",
    bins: int = 40,
    save: str | os.PathLike | None = None,
) -> Figure:
    """Two density histograms of one neuron's activations on shared bins.

    Args:
        by_label: passage label -> activations at the passage's own tokens.
        by_region: region (passage, question, answer) -> activations at those tokens.
        title: figure title (e.g. the neuron's label).
        bins: number of bins over the range of all values.
        save: optional PNG path.
    """
    vals = [float(v) for d in (by_label, by_region) for xs in d.values() for v in xs]
    if not vals:
        raise ValueError("no activations to plot")
    lo, hi = min(vals), max(vals)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), squeeze=False)
    for ax, data, what in ((axes[0][0], by_label, "passage tokens, by passage label"),
                           (axes[0][1], by_region, "all passages, by region")):
        for j, (name, xs) in enumerate(data.items()):
            if len(xs):
                ax.hist(np.asarray(xs, float), bins=edges, density=True, histtype="step", lw=1.4,
                        color=LABEL_COLORS.get(name, f"C{j + 2}"), label=f"{name} (n={len(xs)})")
        ax.set_yscale("log")
        ax.set_xlabel("activation")
        ax.set_ylabel("density (log)")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, save)
