"""One page per neuron: where it fires across a data set, what it writes, how it was mined.

A page (``DIR/L14N512.html``, self-contained and offline) shows

- the top-activating token contexts across the data set's passages (each passage in a
  prompt of its own with the question and the gold answer), with the passage's label,
  coloured by circuitsvis' ``ColoredTokens``;
- activation histograms split by passage label and by region (passage, question, answer);
- the direct logit effect (:func:`~neurorit_lens.viz.neuron_data.direct_logit_effect`): the
  top promoted and suppressed tokens;
- its attribution under the R and I conditions across the mined examples (mean and
  percentile-bootstrap 95% interval), and the ablation effect of each set holding it when
  an ``ablation.json`` is given.

:func:`neuron_pages` writes the pages of a set of neurons and an index
(:mod:`neurorit_lens.viz.neuron_index`) from one batched pass over the passages.

>>> from neurorit_lens.data import embedded_examples
>>> from neurorit_lens.models import tiny_model
>>> page = neuron_page(tiny_model(), embedded_examples(2), "L1N5", limit=8, top=3)
>>> "CircuitsVis.render" in page.html() and page.report.label
'L1N5'
"""

from __future__ import annotations

import base64
import html as html_lib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.data.schema import QAExample
from neurorit_lens.io import atomic_write_text, read_json
from neurorit_lens.neuron_sets import Neuron, NeuronSet
from neurorit_lens.tl_backend import Model
from neurorit_lens.viz import neuron_data as nd
from neurorit_lens.viz.neuron_index import NeuronReport, write_index
from neurorit_lens.viz.panels import CVPanel, page_html

log = logging.getLogger(__name__)

__all__ = ["NeuronPage", "NeuronReport", "PageData", "neuron_page", "neuron_pages", "prepare_pages"]

PAGE_CSS = """<style>
table { border-collapse: collapse; margin: 6px 0 14px 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; color: #fff; font-size: 0.8em; }
.relevant { background: #1f77b4; } .irrelevant { background: #d62728; }
.counterfactual { background: #ff7f0e; } .unlabelled { background: #7f7f7f; }
.cv-panel h3 { font-weight: normal; font-size: 0.9em; }
</style>"""


@dataclass
class PageData:
    """Everything the pages of a group of neurons are drawn from (computed once)."""

    records: list[nd.PassageRecord]
    acts: list[torch.Tensor]  # per record [pos, neuron]
    neurons: list[Neuron]
    scale: float
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # "R"/"I" -> [n, layer, d_mlp]
    threshold: float | None = None
    sets: dict[str, NeuronSet] = field(default_factory=dict)
    ablation_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NeuronPage:
    """One neuron's page. ``html()`` is self-contained; Jupyter shows it in an ``iframe``."""

    report: NeuronReport
    body: str
    histogram_png: bytes = b""  # the activation histograms (also inside ``body``)

    def html(self, bundle: str = "inline") -> str:
        """The page; ``bundle="inline"`` embeds circuitsvis, ``"shared"`` loads ``./circuitsvis.js``."""
        head = PAGE_CSS + ('\n<script src="circuitsvis.js"></script>' if bundle == "shared" else "")
        return page_html(self.body, title=f"Neuron {self.report.label}", extra_head=head,
                         include_bundle=bundle == "inline")

    def save(self, path: str | os.PathLike, bundle: str = "inline") -> Path:
        return atomic_write_text(path, self.html(bundle))

    def _repr_html_(self) -> str:
        doc = html_lib.escape(page_html(self.body, title=self.report.label, extra_head=PAGE_CSS,
                                        resize_frame=True), quote=True)
        return f'<iframe srcdoc="{doc}" style="width: 100%; height: 900px; border: none;"></iframe>'


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def _mining_inputs(mining: Any, model: Model) -> tuple[dict[str, torch.Tensor], float | None, dict[str, NeuronSet]]:
    """Scores, threshold and sets from a MiningResult, a mining folder, its ``neurons.json``, or
    a mapping ``{"R": [n, layer, d_mlp], "I": ..., "threshold": t}`` of per-example scores."""
    from neurorit_lens.neurons.mining import MiningResult

    if mining is None:
        return {}, None, {}
    if isinstance(mining, Mapping):
        scores = {c: torch.as_tensor(mining[c]).float() for c in ("R", "I") if c in mining}
        for c, t in scores.items():
            if t.ndim != 3 or tuple(t.shape[1:]) != (model.cfg.n_layers, model.cfg.d_mlp):
                raise ValueError(f"scores {c} must be [n, {model.cfg.n_layers}, {model.cfg.d_mlp}], "
                                 f"got {tuple(t.shape)}")
        return scores, mining.get("threshold"), {}
    if isinstance(mining, (str, os.PathLike)):
        p = Path(mining)
        mining = MiningResult.load(p.parent if p.name.endswith(".json") else p, model)
    if not isinstance(mining, MiningResult):
        raise ValueError(f"mining must be a MiningResult, a mining folder or a mapping of scores, "
                         f"got {type(mining).__name__}")
    return {"R": mining.scores_R, "I": mining.scores_I}, mining.config.threshold, dict(mining.sets)


def _ablation_rows(ablation: Any) -> list[dict[str, Any]]:
    if ablation is None:
        return []
    obj = read_json(ablation) if isinstance(ablation, (str, os.PathLike)) else ablation
    rows = obj.get("rows") if isinstance(obj, Mapping) else None
    if not isinstance(rows, list):
        raise ValueError("ablation results need a 'rows' list (as in ablation.json)")
    return rows


def prepare_pages(model: Model, examples: Sequence[QAExample], neurons: Any, mining: Any = None,
                  ablation: Any = None, sets: Mapping[str, NeuronSet] | None = None, limit: int | None = 500,
                  batch_size: int = 16, max_prompt_tokens: int = 512) -> PageData:
    """Collect what the pages need: passages, activations (one batched pass), the final-norm
    scale, mining scores, set membership and ablation rows."""
    ns = nd.parse_neurons(model, neurons)
    records = nd.passage_records(model, examples, limit, max_prompt_tokens)
    t0, c0 = time.perf_counter(), time.process_time()
    acts = nd.collect_activations(model, records, ns, batch_size)
    log.info("activations of %d neuron(s) over %d passages (%d tokens): %.1f s wall, %.1f s CPU, one batched pass",
             len(ns), len(records), sum(len(r.tokens) for r in records), time.perf_counter() - t0,
             time.process_time() - c0)
    scores, threshold, mined_sets = _mining_inputs(mining, model)
    all_sets = {k: v for k, v in mined_sets.items() if k in ("R_excl", "I_excl", "shared")}
    all_sets.update(sets or {})
    return PageData(records, acts, ns, nd.final_norm_scale(model, records), scores, threshold, all_sets,
                    _ablation_rows(ablation))


# --------------------------------------------------------------------------------------
# one neuron
# --------------------------------------------------------------------------------------
def _top_tokens(model: Model, effect: torch.Tensor, k: int, largest: bool) -> list[tuple[str, float]]:
    vals, idx = effect.topk(min(k, effect.numel()), largest=largest)
    toks = model.to_str_tokens(idx)
    return [(str(t), float(v)) for t, v in zip(toks, vals.tolist(), strict=True)]


def _neuron_report(model: Model, data: PageData, k: int, n_tokens: int = 10) -> NeuronReport:
    n = data.neurons[k]
    effect = nd.direct_logit_effect(model, n, data.scale)
    means = nd.passage_means(data.records, data.acts, k)
    ablation = [r for r in data.ablation_rows
                if r.get("set_name") == n.label or (r.get("set_name") in data.sets and n in data.sets[r["set_name"]])]
    return NeuronReport(
        neuron=n, sets=sorted(name for name, s in data.sets.items() if n in s),
        attribution={c: nd.attribution_stats(data.scores.get(c), n, data.threshold) for c in ("R", "I")},
        selectivity=nd.selectivity(means),
        passage_means={lab: sum(v) / len(v) for lab, v in means.items() if v},
        max_activation=max(float(a[1:, k].max()) if a.shape[0] > 1 else -math.inf for a in data.acts),
        promoted=_top_tokens(model, effect, n_tokens, True), suppressed=_top_tokens(model, effect, n_tokens, False),
        ablation=ablation)


def _context_panels(model: Model, data: PageData, k: int, top: int, window: int = 14) -> list[CVPanel]:
    """The ``top`` passages with the highest activation (BOS excluded), a window around the peak."""
    peaks = []
    for i, a in enumerate(data.acts):
        if a.shape[0] > 1:
            pos = int(a[1:, k].argmax()) + 1
            peaks.append((float(a[pos, k]), i, pos))
    peaks.sort(reverse=True)
    scale = max((abs(p[0]) for p in peaks), default=1.0) or 1.0
    panels = []
    for rank, (v, i, pos) in enumerate(peaks[:top], 1):
        r, a = data.records[i], data.acts[i]
        lo, hi = max(1, pos - window), min(len(r.tokens), pos + window + 1)
        toks = model.to_str_tokens(torch.tensor(r.tokens[lo:hi]))
        panels.append(CVPanel(
            "ColoredTokens",
            {"tokens": toks, "values": a[lo:hi, k].tolist(), "minValue": -scale, "maxValue": scale,
             "negativeColor": "#d62728", "positiveColor": "#1f77b4"},
            title=f"#{rank} · {r.label} passage · example {r.example_id} · peak {v:.3g} at "
                  f"{toks[pos - lo]!r} ({r.regions[pos]})"))
    return panels


def _fmt(x: Any, fmt: str = "+.3g") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return format(x, fmt) if math.isfinite(x) else "n/a"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html_lib.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _histogram_png(data: PageData, k: int, label: str) -> bytes:
    import matplotlib.pyplot as plt

    from neurorit_lens.viz.plots import figure_png, plot_neuron_histograms

    by_label: dict[str, list[float]] = {}
    by_region: dict[str, list[float]] = {"passage": [], "question": [], "answer": []}
    for r, a in zip(data.records, data.acts, strict=True):
        col = a[:, k].tolist()
        for t, (g, v) in enumerate(zip(r.regions, col, strict=True)):
            if t == 0 or g not in by_region:
                continue
            by_region[g].append(v)
            if g == "passage":
                by_label.setdefault(r.label, []).append(v)
    fig = plot_neuron_histograms(by_label, by_region, title=f"{label}: activation histograms")
    png = figure_png(fig)
    plt.close(fig)
    return png


def _attribution_html(rep: NeuronReport, threshold: float | None) -> str:
    if not any(s.get("n") for s in rep.attribution.values()):
        return "<p>No mining scores given (pass <code>mining=</code> a MiningResult or a mining folder).</p>"
    rows = []
    for c, s in rep.attribution.items():
        lo, hi = s.get("ci", (math.nan, math.nan))
        rows.append([c, str(s.get("n", 0)), _fmt(s.get("mean")), f"[{_fmt(lo)}, {_fmt(hi)}]",
                     _fmt(s.get("frac_above"), ".0%") if "frac_above" in s else "n/a"])
    cap = (f"Attribution of the gold answer's log-prob to this neuron per mined example; R = relevant "
           f"context, I = irrelevant context. Threshold t = {threshold}." if threshold is not None else "")
    return f'<p class="caption">{html_lib.escape(cap)}</p>' + _table(
        ["condition", "examples", "mean", "95% CI (bootstrap)", "share of examples > t"], rows)


def _ablation_html(rep: NeuronReport) -> str:
    rows = []
    for r in rep.ablation:
        e, d = r.get("effect") or {}, r.get("diff") or {}
        rows.append([str(r.get("set_name")), str(r.get("n_neurons", "")), str(r.get("metric")),
                     f"{r.get('context')} ({r.get('setting', '')})", str(r.get("n", "")),
                     f"{_fmt(e.get('mean'))} [{_fmt(e.get('ci_low'))}, {_fmt(e.get('ci_high'))}]",
                     f"{_fmt(d.get('mean'))} [{_fmt(d.get('ci_low'))}, {_fmt(d.get('ci_high'))}]"])
    if not rows:
        return "<p>No ablation rows for a set holding this neuron.</p>"
    return ('<p class="caption">Ablating the whole set that holds this neuron (not this neuron alone): '
            "effect = ablated - unablated, mean [95% CI]; set - random = vs random sets of the same "
            "per-layer counts.</p>" + _table(["set", "neurons", "metric", "context", "n", "effect",
                                               "set - random"], rows))


def _summary_html(rep: NeuronReport, data: PageData) -> str:
    e = html_lib.escape
    means = ", ".join(f'<span class="badge {e(lab)}">{e(lab)}</span> {_fmt(v, ".3g")}'
                      for lab, v in rep.passage_means.items())
    sets = ", ".join(rep.sets) or "none given"
    return (f"<h1>Neuron {e(rep.label)}</h1><p>Layer {rep.neuron.layer}, index {rep.neuron.index} "
            f"(<code>blocks.{rep.neuron.layer}.mlp.hook_post</code>). Sets: {e(sets)}. "
            f"{len(data.records)} passages, each in a prompt of its own with the question and the gold "
            f"answer. Mean activation over a passage's own tokens: {means}. Selectivity (Cohen's d, relevant "
            f"vs irrelevant passages): {_fmt(rep.selectivity, '+.2f')}. Peak activation "
            f"{_fmt(rep.max_activation, '.3g')}.</p>")


def _page_body(model: Model, data: PageData, k: int, rep: NeuronReport, top: int, png: bytes) -> str:
    img = (f'<img class="plot" alt="activation histograms of {rep.label}" '
           f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
    logit_rows = [[repr(p[0]), _fmt(p[1]), repr(s[0]), _fmt(s[1])]
                  for p, s in zip(rep.promoted, rep.suppressed, strict=True)]
    parts = [
        _summary_html(rep, data),
        "<h2>Top-activating contexts</h2>",
        '<p class="caption">The passages where the neuron peaks (first token excluded), a window of tokens '
        "around the peak; colour = activation (blue positive, red negative), hover a token for its value.</p>",
        *[p.html() for p in _context_panels(model, data, k, top)],
        "<h2>Activation histograms</h2>", img,
        "<h2>Direct logit effect</h2>",
        f'<p class="caption">Logit change per unit activation through the final norm (scale '
        f"{data.scale:.3g}, mean at the answer position) and W_U; paths through later layers not counted.</p>",
        _table(["promoted token", "logit / unit", "suppressed token", "logit / unit"], logit_rows),
        "<h2>Attribution under R and I</h2>", _attribution_html(rep, data.threshold),
    ]
    if data.ablation_rows:
        parts += ["<h2>Ablation</h2>", _ablation_html(rep)]
    return "\n".join(parts)


def neuron_page(model: Model, examples: Sequence[QAExample], neuron: str | Neuron, mining: Any = None,
                ablation: Any = None, sets: Mapping[str, NeuronSet] | None = None, limit: int | None = 500,
                top: int = 20, out: str | os.PathLike | None = None) -> NeuronPage:
    """The page of one neuron (``"L14N512"`` or a :class:`Neuron`).

    Args:
        model: a HookedTransformer.
        examples: QAExamples with labelled passages (every passage becomes one prompt).
        neuron: the neuron.
        mining: a MiningResult, a mining folder or its ``neurons.json`` (attribution, sets).
        ablation: an ``ablation.json`` path or its dict (effects of the sets holding the neuron).
        sets: more named sets for membership (added to the mined R_excl / I_excl / shared).
        limit: at most this many passages (in data order).
        top: top-activating contexts shown.
        out: when given, write the self-contained page to this path (or ``out/L14N512.html``
            when it is a folder).
    """
    data = prepare_pages(model, examples, [neuron], mining, ablation, sets, limit)
    rep = _neuron_report(model, data, 0)
    png = _histogram_png(data, 0, rep.label)
    page = NeuronPage(rep, _page_body(model, data, 0, rep, top, png), png)
    if out is not None:
        path = Path(out)
        page.save(path / f"{rep.label}.html" if path.suffix != ".html" else path)
    return page


def neuron_pages(model: Model, examples: Sequence[QAExample], neurons: Any, out_dir: str | os.PathLike,
                 mining: Any = None, ablation: Any = None, sets: Mapping[str, NeuronSet] | None = None,
                 limit: int | None = 500, top: int = 20, pages: Sequence[Any] | None = None,
                 bundle: str = "inline", title: str = "Neuron pages") -> Path:
    """Pages for a set of neurons (``out_dir/L{l}N{i}.html``) and ``out_dir/index.html``.

    One batched pass gives the activations of all neurons. ``pages`` restricts which neurons
    get a page (the index lists all of them); ``bundle="shared"`` writes circuitsvis once as
    ``out_dir/circuitsvis.js`` (still offline) instead of embedding it in every page.

    Returns:
        The path of ``index.html``.
    """

    if bundle not in ("inline", "shared"):
        raise ValueError(f"bundle must be 'inline' or 'shared', got {bundle!r}")
    data = prepare_pages(model, examples, neurons, mining, ablation, sets, limit)
    wanted = set(nd.parse_neurons(model, pages)) if pages is not None else set(data.neurons)
    out = Path(out_dir)
    reports = []
    for k, n in enumerate(data.neurons):
        rep = _neuron_report(model, data, k)
        if n in wanted:
            rep.page = f"{n.label}.html"
            png = _histogram_png(data, k, rep.label)
            NeuronPage(rep, _page_body(model, data, k, rep, top, png), png).save(out / rep.page, bundle)
        reports.append(rep)
    if bundle == "shared":
        from neurorit_lens.viz.panels import circuitsvis_bundle

        atomic_write_text(out / "circuitsvis.js", circuitsvis_bundle())
    return write_index(out / "index.html", reports, title=title, n_passages=len(data.records))
