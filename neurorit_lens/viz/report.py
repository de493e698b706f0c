"""The run report: ``report.html`` (self-contained) and ``report.md`` from a run folder.

Reads whatever the run folder holds (see :mod:`neurorit_lens.runner` for the layout) and
says what it lacks, so a run that stopped after mining still gets a report:

    config.json, environment.json, data.json, run.json
    eval_before/eval.json, eval_after/<method>/eval.json
    mining/neurons.json (+ scores_R / scores_I .safetensors)
    ablation/ablation.json
    train/<method>/train.json + train_log.jsonl
    views/*.json   neuron views saved by :func:`save_views` (circuitsvis panels)

Sections: run summary; accuracy per noise setting of the base model, the controls and the
tuned methods side by side (extracted-answer accuracy with Wilson 95% intervals, and the
change from base), each method minus each control paired per question (paired bootstrap 95%
interval, exact McNemar test; :mod:`neurorit_lens.viz.report_compare`) with a sentence
that reads the headline setting; neuron sets (counts, layers, attribution mass);
ablation effects against random controls; training summary (trainable parameters and
fraction, wall time, final dev metrics); the plots; the neuron views.

``report.html`` embeds the plots as base64 PNG and the circuitsvis bundle once (only when
there are views), so it opens offline from anywhere. ``report.md`` holds the same tables
and links the PNGs written next to it in ``report_files/``.

>>> import tempfile
>>> html, md = write_report(tempfile.mkdtemp())
>>> "Not in this run folder" in md.read_text()
True
"""

from __future__ import annotations

import base64
import html as html_lib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurorit_lens.io import atomic_write_bytes, atomic_write_text
from neurorit_lens.viz.panels import page_html
from neurorit_lens.viz.report_run import (
    FILES_DIR,
    VIEWS_DIR,
    RunContents,
    load_run,
    load_scores,
    save_neuron_pages,
    save_views,
)
from neurorit_lens.viz.report_sections import Block, HtmlBlock, Image, Table, build_sections

log = logging.getLogger(__name__)

__all__ = ["RunContents", "load_run", "load_scores", "save_views", "write_report"]

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _render_md(title: str, sections: list[tuple[str, list[Block]]], image_names: dict[str, str]) -> str:
    out = [f"# {title}", ""]
    for name, blocks in sections:
        out += [f"## {name}", ""]
        for b in blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [b.caption, ""]
                out.append("| " + " | ".join(_md_escape(h) or " " for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_md_escape(x) for x in r) + " |" for r in b.rows]
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.alt}]({image_names[b.name]})", ""]
            elif isinstance(b, HtmlBlock) and b.md_note:
                out += [b.md_note, ""]
    return "\n".join(out).rstrip() + "\n"


def _inline_md(s: str) -> str:
    """Escape, then the two bits of Markdown used in text blocks: **bold** and `code`."""
    import re

    s = html_lib.escape(s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


_REPORT_CSS = """<style>
table { border-collapse: collapse; margin: 6px 0 14px 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
ul { margin: 4px 0 12px 0; } li { margin: 2px 0; font-size: 0.92em; }
nav a { margin-right: 12px; font-size: 0.9em; }
</style>"""


def _render_html(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    body = [f"<h1>{html_lib.escape(title)}</h1>"]
    body.append("<nav>" + "".join(f'<a href="#s{i}">{html_lib.escape(n)}</a>' for i, (n, _) in enumerate(sections))
                + "</nav>")
    has_views = False
    for i, (name, blocks) in enumerate(sections):
        body.append(f'<h2 id="s{i}">{html_lib.escape(name)}</h2>')
        for b in blocks:
            if isinstance(b, str):
                lines = b.split("\n")
                if all(ln.startswith("- ") for ln in lines):
                    body.append("<ul>" + "".join(f"<li>{_inline_md(ln[2:])}</li>" for ln in lines) + "</ul>")
                else:
                    body.append(f"<p>{_inline_md(b)}</p>")
            elif isinstance(b, Table):
                if b.caption:
                    body.append(f'<p class="caption">{_inline_md(b.caption)}</p>')
                head = "" if not any(b.headers) else (
                    "<tr>" + "".join(f"<th>{html_lib.escape(h)}</th>" for h in b.headers) + "</tr>")
                rows = "".join("<tr>" + "".join(f"<td>{html_lib.escape(x)}</td>" for x in r) + "</tr>" for r in b.rows)
                body.append(f"<table>{head}{rows}</table>")
            elif isinstance(b, Image):
                data = base64.b64encode(b.png).decode("ascii")
                body.append(f'<img class="plot" alt="{html_lib.escape(b.alt)}" src="data:image/png;base64,{data}">')
            elif isinstance(b, HtmlBlock):
                has_views = True
                body.append(b.html)
    return page_html("\n".join(body), title=title, extra_head=_REPORT_CSS, include_bundle=has_views)


def write_report(
    run_dir: str | os.PathLike,
    model: Any = None,
    examples: Sequence[Any] | None = None,
    n_views: int = 2,
    k: int = 5,
    neuron_pages: int = 20,
) -> tuple[Path, Path]:
    """Write ``run_dir/report.html`` and ``run_dir/report.md`` from what the run folder holds.

    Args:
        run_dir: the run folder (it may be incomplete; missing parts are listed in the report).
        model: optional; with ``examples``, neuron views are computed first (:func:`save_views`),
            replacing those in ``views/``. Without it, saved views are embedded as they are.
        examples: QAExamples with labelled passages (e.g. the dev split) for the views.
        n_views: examples that get a view.
        k: neurons per set in a view.
        neuron_pages: with ``model`` and ``examples``, write ``run_dir/neurons/`` (index of
            R_excl and I_excl, pages for the top ``neuron_pages`` of each; 0 = none), see
            :func:`~neurorit_lens.viz.report_run.save_neuron_pages`.

    Returns:
        ``(html_path, md_path)``.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is not a run folder")
    if model is not None and examples is not None and n_views > 0:
        if (run_dir / "mining" / "neurons.json").exists():
            for old in (run_dir / VIEWS_DIR).glob("*.json") if (run_dir / VIEWS_DIR).is_dir() else []:
                old.unlink()
            save_views(run_dir, model, examples, k=k, n_examples=n_views)
        else:
            log.warning("no mining/neurons.json: no neuron views")
    mined = (run_dir / "mining" / "neurons.json").exists()
    if model is not None and examples is not None and neuron_pages > 0 and mined:
        log.info("neuron pages: %s", save_neuron_pages(run_dir, model, examples, pages_per_set=neuron_pages))
    c = load_run(run_dir)
    title, sections = build_sections(c)
    image_names = {}
    for _, blocks in sections:
        for b in blocks:
            if isinstance(b, Image):
                rel = f"{FILES_DIR}/{b.name}.png"
                atomic_write_bytes(run_dir / rel, b.png)
                image_names[b.name] = rel
    md = atomic_write_text(run_dir / "report.md", _render_md(title, sections, image_names))
    html = atomic_write_text(run_dir / "report.html", _render_html(title, sections))
    return html, md
