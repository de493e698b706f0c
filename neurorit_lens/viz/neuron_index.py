"""The index of a set's neuron pages: one sortable table, each row linking to its page.

Columns: neuron, sets, layer, index, mean attribution under R and I, activation
selectivity (Cohen's d of per-passage mean activation, relevant vs irrelevant passages),
peak activation and the top promoted token. A click on a header sorts by that column (a
few lines of inline JavaScript; the page loads nothing).
"""

from __future__ import annotations

import html as html_lib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorit_lens.io import atomic_write_json, atomic_write_text
from neurorit_lens.neuron_sets import Neuron
from neurorit_lens.viz.panels import page_html


@dataclass
class NeuronReport:
    """The numbers shown for one neuron (also the row of the index)."""

    neuron: Neuron
    sets: list[str] = field(default_factory=list)
    attribution: dict[str, dict[str, Any]] = field(default_factory=dict)
    selectivity: float = math.nan
    passage_means: dict[str, float] = field(default_factory=dict)
    max_activation: float = math.nan
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)
    ablation: list[dict[str, Any]] = field(default_factory=list)
    page: str | None = None

    @property
    def label(self) -> str:
        return self.neuron.label



__all__ = ["NeuronReport", "index_html", "index_rows", "write_index"]

_SORT_JS = """<script>
(function() {
  var table = document.getElementById("neurons");
  var dir = {};
  Array.prototype.forEach.call(table.querySelectorAll("th"), function(th, col) {
    th.addEventListener("click", function() {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      dir[col] = -(dir[col] || -1);
      rows.sort(function(a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        var nx = parseFloat(x), ny = parseFloat(y);
        if (!isNaN(nx) && !isNaN(ny)) return dir[col] * (nx - ny);
        if (!isNaN(nx)) return -1;
        if (!isNaN(ny)) return 1;
        return dir[col] * String(x).localeCompare(String(y));
      });
      rows.forEach(function(r) { body.appendChild(r); });
    });
  });
})();
</script>"""

_CSS = """<style>
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: left; }
th { background: #f3f3f3; cursor: pointer; user-select: none; } th:hover { background: #e6e6e6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
</style>"""

_HEADERS = ("neuron", "sets", "layer", "index", "mean attr R", "mean attr I", "selectivity (d)",
            "peak act", "top promoted token")


def _cell(value: Any, shown: str | None = None, num: bool = False) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        value, shown = "", "n/a"
    text = html_lib.escape(shown if shown is not None else str(value))
    cls = ' class="num"' if num else ""
    return f'<td data-v="{html_lib.escape(str(value), quote=True)}"{cls}>{text}</td>'


def _row(rep: NeuronReport) -> str:
    label = html_lib.escape(rep.label)
    link = f'<a href="{html_lib.escape(rep.page, quote=True)}">{label}</a>' if rep.page else label
    key = rep.neuron.layer * 1_000_000 + rep.neuron.index
    cells = [f'<td data-v="{key}">{link}</td>', _cell(", ".join(rep.sets))]
    cells += [_cell(rep.neuron.layer, num=True), _cell(rep.neuron.index, num=True)]
    for c in ("R", "I"):
        m = float(rep.attribution.get(c, {}).get("mean", math.nan))
        cells.append(_cell(m, f"{m:+.4g}" if math.isfinite(m) else None, num=True))
    cells.append(_cell(rep.selectivity, f"{rep.selectivity:+.2f}" if math.isfinite(rep.selectivity) else None,
                       num=True))
    cells.append(_cell(rep.max_activation, f"{rep.max_activation:.3g}" if math.isfinite(rep.max_activation)
                       else None, num=True))
    tok, v = rep.promoted[0] if rep.promoted else ("", math.nan)
    cells.append(_cell(tok, f"{tok!r} ({v:+.3g})" if rep.promoted else "n/a"))
    return "<tr>" + "".join(cells) + "</tr>"


def index_html(reports: Sequence[NeuronReport], title: str = "Neuron pages", n_passages: int | None = None) -> str:
    """The index page as a string (self-contained; no circuitsvis needed)."""
    n_pages = sum(1 for r in reports if r.page)
    what = f" over {n_passages} passages" if n_passages else ""
    intro = (f"<p>{len(reports)} neurons{what}; {n_pages} have a page (linked). Click a column header to "
             "sort. Mean attr = mean attribution of the gold answer's log-prob over the mined examples "
             "under R (relevant context) and I (irrelevant context); selectivity = Cohen's d of the mean "
             "activation over a passage's own tokens, relevant vs irrelevant passages; top promoted token "
             "= largest direct logit effect.</p>")
    head = "<thead><tr>" + "".join(f"<th>{html_lib.escape(h)}</th>" for h in _HEADERS) + "</tr></thead>"
    body = "<tbody>" + "".join(_row(r) for r in reports) + "</tbody>"
    return page_html(f"<h1>{html_lib.escape(title)}</h1>{intro}<table id=\"neurons\">{head}{body}</table>"
                     f"{_SORT_JS}", title=title, extra_head=_CSS, include_bundle=False)


def index_rows(reports: Sequence[NeuronReport]) -> list[dict[str, Any]]:
    """The index as JSON-ready rows (NaN as None)."""
    def num(x: Any) -> float | None:
        return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None

    return [{"neuron": r.label, "layer": r.neuron.layer, "index": r.neuron.index, "sets": r.sets,
             "mean_attr_R": num(r.attribution.get("R", {}).get("mean")),
             "mean_attr_I": num(r.attribution.get("I", {}).get("mean")),
             "selectivity": num(r.selectivity), "peak_activation": num(r.max_activation),
             "passage_means": {k: num(v) for k, v in r.passage_means.items()},
             "top_promoted": r.promoted[:5], "top_suppressed": r.suppressed[:5], "page": r.page}
            for r in reports]


def write_index(path: str | os.PathLike, reports: Sequence[NeuronReport], title: str = "Neuron pages",
                n_passages: int | None = None) -> Path:
    """Write :func:`index_html` to ``path`` and its rows (:func:`index_rows`) next to it as ``index.json``."""
    path = Path(path)
    atomic_write_json(path.with_suffix(".json"), {"title": title, "n_passages": n_passages,
                                                  "neurons": index_rows(reports)})
    return atomic_write_text(path, index_html(reports, title, n_passages))
