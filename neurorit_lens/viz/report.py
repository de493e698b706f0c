"""The run report: ``report.html`` (self-contained) and ``report.md`` from a run folder.

Reads whatever the run folder holds (see :mod:`neurorit_lens.runner` for the layout) and
says what it lacks, so a run that stopped after mining still gets a report:

    config.json, environment.json, data.json, run.json
    eval_before/eval.json, eval_after/<method>/eval.json
    mining/neurons.json (+ scores_R / scores_I .safetensors)
    ablation/ablation.json
    train/<method>/train.json + train_log.jsonl
    views/*.json   neuron views saved by :func:`save_views` (circuitsvis panels)

Sections: run summary; accuracy per noise setting before and after tuning (with 95%
intervals and the change vs before); neuron sets (counts, layers, attribution mass);
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
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorit_lens.io import atomic_write_bytes, atomic_write_text, read_json
from neurorit_lens.neurons.sets import SET_NAMES, NeuronSet
from neurorit_lens.viz.views import NeuronView, page_html

log = logging.getLogger(__name__)

__all__ = ["RunContents", "load_run", "load_scores", "save_views", "write_report"]

VIEWS_DIR = "views"
FILES_DIR = "report_files"


# --------------------------------------------------------------------------------------
# reading the run folder
# --------------------------------------------------------------------------------------
@dataclass
class RunContents:
    """Everything found in a run folder (raw dicts as stored), and what is missing."""

    run_dir: Path
    config: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    eval_before: dict[str, Any] | None = None
    eval_after: dict[str, dict[str, Any]] = field(default_factory=dict)
    neurons: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    views: list[NeuronView] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "found": self.found(), "missing": self.missing, "problems": self.problems}

    def found(self) -> list[str]:
        out = [n for n in ("config", "environment", "data", "run", "eval_before", "neurons", "ablation")
               if getattr(self, n) is not None]
        out += [f"eval_after/{m}" for m in self.eval_after] + [f"train/{m}" for m in self.train]
        return out + ([f"views ({len(self.views)})"] if self.views else [])


def _read(run_dir: Path, rel: str, contents: RunContents, why: str | None = None) -> Any:
    path = run_dir / rel
    if not path.exists():
        if why:
            contents.missing.append(f"{rel} ({why})")
        return None
    try:
        return read_json(path)
    except (ValueError, OSError) as e:
        contents.problems.append(f"{rel}: could not be read ({e})")
        return None


def load_run(run_dir: str | os.PathLike) -> RunContents:
    """Read every known part of a run folder; missing or unreadable parts are listed, not fatal."""
    from neurorit_lens.viz.plots import read_jsonl

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is not a run folder")
    c = RunContents(run_dir)
    c.config = _read(run_dir, "config.json", c, "the run's configuration")
    c.environment = _read(run_dir, "environment.json", c)
    c.data = _read(run_dir, "data.json", c)
    c.run = _read(run_dir, "run.json", c)
    c.eval_before = _read(run_dir, "eval_before/eval.json", c, "stage 'eval' not run")
    c.neurons = _read(run_dir, "mining/neurons.json", c, "stage 'mine' not run")
    c.ablation = _read(run_dir, "ablation/ablation.json", c, "stage 'ablate' not run")
    if c.ablation is not None and not isinstance(c.ablation.get("rows"), list):
        c.problems.append("ablation/ablation.json: no 'rows' list")
        c.ablation = None
    for sub, store, fname in (("eval_after", c.eval_after, "eval.json"), ("train", c.train, "train.json")):
        d = run_dir / sub
        if d.is_dir():
            for m in sorted(p.name for p in d.iterdir() if p.is_dir()):
                obj = _read(run_dir, f"{sub}/{m}/{fname}", c)
                if obj is not None:
                    store[m] = obj
    if not c.train:
        c.missing.append("train/<method>/train.json (stage 'train' not run)")
    if not c.eval_after:
        c.missing.append("eval_after/<method>/eval.json (tuned models not evaluated)")
    tdir = run_dir / "train"
    if tdir.is_dir():
        for m in sorted(p.name for p in tdir.iterdir() if p.is_dir()):
            lp = tdir / m / "train_log.jsonl"
            if lp.exists():
                rows = read_jsonl(lp)
                if rows:
                    c.train_logs[m] = rows
            elif m in c.train and c.train[m].get("log"):
                c.train_logs[m] = list(c.train[m]["log"])
    vdir = run_dir / VIEWS_DIR
    if vdir.is_dir():
        for p in sorted(vdir.glob("*.json")):
            try:
                c.views.append(NeuronView.load_json(p))
            except (ValueError, KeyError, TypeError, OSError) as e:
                c.problems.append(f"{VIEWS_DIR}/{p.name}: not a neuron view ({e})")
    for name, ev in [("eval_before", c.eval_before)] + [(f"eval_after/{m}", e) for m, e in c.eval_after.items()]:
        if ev is not None and not isinstance(ev.get("settings"), Mapping):
            c.problems.append(f"{name}/eval.json: no 'settings' mapping")
    c.eval_after = {m: e for m, e in c.eval_after.items() if isinstance(e.get("settings"), Mapping)}
    if c.eval_before is not None and not isinstance(c.eval_before.get("settings"), Mapping):
        c.eval_before = None
    return c


def load_scores(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Mean attribution per neuron, ``{"R": [layer, d_mlp], "I": ...}``, from the mining scores.

    ``mining/scores_{R,I}.safetensors`` hold ``[n, layer, d_mlp]`` (the tensor named
    ``scores``, else the only/first tensor); missing files are skipped.
    """
    from safetensors.torch import load_file

    out = {}
    for cond in ("R", "I"):
        p = Path(run_dir) / "mining" / f"scores_{cond}.safetensors"
        if p.exists():
            tensors = load_file(str(p))
            if not tensors:
                continue
            t = tensors.get("scores", next(iter(tensors.values()))).float()
            out[cond] = t.mean(0) if t.ndim == 3 else t
    return out


def save_views(
    run_dir: str | os.PathLike,
    model: Any,
    examples: Sequence[Any],
    k: int = 5,
    n_examples: int = 2,
    **kwargs: Any,
) -> list[Path]:
    """Compute neuron views for a few examples and keep them in ``run_dir/views/`` (JSON).

    Top neurons per set are ranked by mean attribution (R scores for ``R_excl``, I scores
    for ``I_excl``) when ``mining/scores_*.safetensors`` exist.

    Args:
        run_dir: a run folder with ``mining/neurons.json``.
        model: the model the neurons were mined on.
        examples: QAExamples with labelled passages (e.g. the dev split).
        k: neurons per set.
        n_examples: how many examples get a view.
        **kwargs: passed to :func:`neurorit_lens.viz.views.example_view`.

    Returns:
        The written JSON paths.
    """
    from neurorit_lens.neurons.sets import load_neuron_sets
    from neurorit_lens.viz.views import example_view

    run_dir = Path(run_dir)
    npath = run_dir / "mining" / "neurons.json"
    if not npath.exists():
        raise FileNotFoundError(f"{npath}: run the 'mine' stage first")
    sets = load_neuron_sets(npath, model)
    scores = load_scores(run_dir)
    ranking = {"R_excl": scores.get("R"), "I_excl": scores.get("I"), "shared": scores.get("R")}
    ranking = {k_: v for k_, v in ranking.items() if v is not None}
    paths = []
    usable = [ex for ex in examples if ex.relevant or ex.irrelevant][:n_examples]
    if not usable:
        raise ValueError("no example with labelled passages to show")
    for i, ex in enumerate(usable):
        view = example_view(model, ex, sets, scores=ranking, k=k, **kwargs)
        paths.append(view.save_json(run_dir / VIEWS_DIR / f"example_{i:02d}.json"))
    return paths


# --------------------------------------------------------------------------------------
# building blocks: one document model, two renderers
# --------------------------------------------------------------------------------------
@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class _Image:
    name: str
    png: bytes
    alt: str


@dataclass
class _Html:
    html: str  # only in report.html
    md_note: str = ""


Block = str | _Table | _Image | _Html


def _pct(x: Any, digits: int = 1) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(x) else f"{100 * x:.{digits}f}"


def _num(x: Any, fmt: str = ".3g") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a" if x is None else str(x)
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def _ci_pct(res: Mapping[str, Any], key: str = "accuracy") -> str:
    m = _pct(res.get(key))
    ci = res.get(f"{key}_ci") or []
    if len(ci) == 2 and _pct(ci[0]) != "n/a":
        return f"{m} [{_pct(ci[0])}, {_pct(ci[1])}]"
    return m


def _fmt_effect(e: Mapping[str, Any] | None, metric: str) -> str:
    if not e or not e.get("n"):
        return "n/a"
    s, d = (100.0, 1) if metric == "accuracy" else (1.0, 3)
    try:
        return f"{e['mean'] * s:+.{d}f} [{e['ci_low'] * s:+.{d}f}, {e['ci_high'] * s:+.{d}f}]"
    except (TypeError, KeyError):
        return "n/a"


def _section_summary(c: RunContents) -> list[Block]:
    cfg = c.config or {}
    rows = [["run folder", str(c.run_dir)]]
    if cfg:
        rows.append(["model", str(cfg.get("model", "?"))])
        data = cfg.get("data") or {}
        rows.append(["data", f"{data.get('data', '?')} (format {data.get('format', '?')}, limit {data.get('limit')})"])
        m = cfg.get("mining") or {}
        if m:
            rows.append(["mining", f"{m.get('method')} (steps {m.get('steps')}, positions {m.get('positions')}, "
                                   f"target {m.get('target')}); selection {m.get('selection')} "
                                   f"(t={m.get('threshold')}, "
                                   f"p={m.get('frequency')}); R = {m.get('relevant_setting')}, "
                                   f"I = {m.get('irrelevant_setting')}"])
        a = cfg.get("ablation") or {}
        if a:
            rows.append(["ablation", f"{a.get('mode')} ablation vs {a.get('n_random')} random sets; relevant = "
                                     f"{a.get('relevant_setting')}, noisy = {a.get('noisy_setting')}"])
        if cfg.get("methods"):
            rows.append(["methods", ", ".join(cfg["methods"])])
        rows.append(["seed", str(cfg.get("seed"))])
    if c.data:
        rows.append(["examples", f"{c.data.get('n_examples')} loaded ({c.data.get('n_skipped', 0)} skipped); "
                                 f"splits {c.data.get('splits')}"])
    env = {k: v for k, v in (c.environment or {}).items() if v is not None}
    if env:
        keys = ("torch", "transformer_lens", "transformers", "torch_threads", "platform")
        rows.append(["environment", ", ".join(f"{k} {env[k]}" for k in keys if k in env)])
    if c.run and c.run.get("timings_s"):
        rows.append(["stage times", ", ".join(f"{k} {v:.0f} s" for k, v in c.run["timings_s"].items())])
    blocks: list[Block] = [_Table(["", ""], rows)]
    if c.missing:
        blocks.append("**Not in this run folder:** " + "; ".join(c.missing) + ". The sections below show what exists.")
    if c.problems:
        blocks.append("**Could not read:** " + "; ".join(c.problems))
    return blocks


def _ordered(c: RunContents, d: Mapping[str, Any]) -> dict[str, Any]:
    """Methods in the config's order, then any others by name."""
    order = [m for m in (c.config or {}).get("methods", []) if m in d]
    return {m: d[m] for m in order + sorted(set(d) - set(order))}


def _section_eval(c: RunContents) -> list[Block]:
    evals: dict[str, Mapping[str, Any]] = {}
    if c.eval_before:
        evals["before"] = c.eval_before
    evals.update(_ordered(c, c.eval_after))
    if not evals:
        return ["No evaluation in this run folder (stages 'eval' / 'train')."]
    settings: list[str] = []
    for e in evals.values():
        settings += [s for s in e["settings"] if s not in settings]
    headers = ["setting", "n"] + [f"{name} acc % [95% CI]" for name in evals]
    rows = []
    for s in settings:
        n = next((str(e["settings"][s].get("n", "")) for e in evals.values() if s in e["settings"]), "")
        row = [s, n]
        for name, e in evals.items():
            res = e["settings"].get(s)
            if res is None:
                row.append("n/a")
                continue
            cell = _ci_pct(res)
            base = (c.eval_before or {}).get("settings", {}).get(s) if name != "before" else None
            if base is not None:
                try:
                    cell += f" ({100 * (float(res['accuracy']) - float(base['accuracy'])):+.1f})"
                except (KeyError, TypeError, ValueError):
                    pass
            row.append(cell)
        rows.append(row)
    blocks: list[Block] = [_Table(headers, rows, "Accuracy = a normalised gold answer is contained in the output "
                                                 "(percentile bootstrap 95% interval over questions; in brackets "
                                                 "after a tuned model: change vs before, in points).")]
    headers2 = ["setting"] + [f"{name} EM / F1 %" for name in evals]
    rows2 = [[s] + [f"{_pct(e['settings'][s].get('em'))} / {_pct(e['settings'][s].get('f1'))}"
                    if s in e["settings"] else "n/a" for e in evals.values()] for s in settings]
    blocks.append(_Table(headers2, rows2))
    return blocks


def _section_neurons(c: RunContents) -> list[Block]:
    if not c.neurons:
        return ["No neuron sets (stage 'mine' not run)."]
    meta = c.neurons.get("meta") or {}
    shape = meta.get("model_shape")
    rows = []
    for name in SET_NAMES:
        if name not in c.neurons:
            continue
        try:
            s = NeuronSet.from_dict(c.neurons[name])
        except ValueError as e:
            c.problems.append(f"mining/neurons.json: set {name}: {e}")
            continue
        counts = s.counts_per_layer()
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        frac = f"{100 * len(s) / (shape[0] * shape[1]):.2f}" if shape and len(shape) == 2 else "n/a"
        rows.append([name, str(len(s)), frac, str(len(counts)),
                     ", ".join(f"L{layer}: {n}" for layer, n in top) or "-", ", ".join(s.labels()[:6]) or "-"])
    blocks: list[Block] = [_Table(["set", "neurons", "% of all", "layers", "busiest layers", "first neurons"], rows,
                                  f"Model shape (layers, d_mlp) = {shape}. R_excl = R \\ I, I_excl = I \\ R, "
                                  "shared = R & I.")]
    if meta.get("counts"):
        counts = meta["counts"]
        text = ", ".join(f"{k}: {v}" for k, v in counts.items()) if isinstance(counts, Mapping) else str(counts)
        blocks.append(f"Mining counts: {text}.")
    return blocks


def _section_ablation(c: RunContents) -> list[Block]:
    if not c.ablation:
        return ["No ablation results (stage 'ablate' not run)."]
    cfg = c.ablation.get("config") or {}
    blocks: list[Block] = []
    for metric, unit in (("logprob", "change in the gold answer's log-prob (nats)"),
                         ("accuracy", "change in accuracy (points)")):
        rows = []
        for r in c.ablation["rows"]:
            if r.get("metric") != metric:
                continue
            base = r.get("base")
            base_s = (f"{_pct(base)}%" if metric == "accuracy" else _num(base, ".3f")) if base is not None else "n/a"
            diff = r.get("diff") or {}
            sig = "yes" if diff.get("n") and (diff.get("ci_low", 0) > 0 or diff.get("ci_high", 0) < 0) else "no"
            rows.append([str(r.get("set_name")), str(r.get("n_neurons", "")),
                         f"{r.get('context')} ({r.get('setting', '')})", str(r.get("n", "")), base_s,
                         _fmt_effect(r.get("effect"), metric), _fmt_effect(r.get("random"), metric),
                         _fmt_effect(diff, metric), sig])
        if rows:
            blocks.append(_Table(
                ["set", "neurons", "context", "n", "unablated", "set effect", "random effect", "set - random",
                 "differs from random"], rows,
                f"**{unit}**: {cfg.get('mode', 'zero')} ablation vs {cfg.get('n_random', '?')} random sets with "
                "the same per-layer counts; effect = ablated - unablated, mean [bootstrap 95% CI] over examples."))
    verdicts = c.ablation.get("verdicts") or [r.get("verdict") for r in c.ablation["rows"] if r.get("verdict")]
    if verdicts:
        blocks.append("\n".join(f"- {v}" for v in verdicts))
    return blocks or ["ablation.json has no rows."]


def _section_training(c: RunContents) -> list[Block]:
    if not c.train:
        return ["No training results (stage 'train' not run)."]
    rows = []
    for m, t in _ordered(c, c.train).items():
        dev = t.get("final_dev") or {}
        rows.append([m, _num(t.get("lr"), ".2g"), str(t.get("steps", "")),
                     f"{int(t['trainable_params']):,}"
                     if isinstance(t.get("trainable_params"), (int, float)) else "n/a",
                     f"{_pct(t.get('trainable_fraction'), 2)}%", str(t.get("target_layers", "")),
                     str(t.get("n_deactivated", "")), str(t.get("n_trained_neurons", "")),
                     f"{_num(t.get('wall_s'), '.0f')} s", ", ".join(f"{k} {_num(v)}" for k, v in dev.items()) or "-"])
    return [_Table(["method", "lr", "steps", "trainable params", "fraction", "target layers", "deactivated",
                    "trained neurons", "wall time", "final dev"], rows)]


def _plot_blocks(c: RunContents) -> list[Block]:
    import matplotlib.pyplot as plt

    from neurorit_lens.viz import plots
    from neurorit_lens.viz.plots import figure_png

    out: list[Block] = []

    def add(name: str, alt: str, fn, *args, **kw) -> None:
        try:
            fig = fn(*args, **kw)
        except (ValueError, KeyError, TypeError) as e:
            c.problems.append(f"plot {name}: {e}")
            return
        out.append(_Image(name, figure_png(fig), alt))
        plt.close(fig)

    meta = (c.neurons or {}).get("meta") or {}
    if meta.get("layer_mass"):
        add("layer_mass", "attribution mass per layer for R and I", plots.plot_layer_mass, meta["layer_mass"])
    if c.neurons:
        shape = meta.get("model_shape")
        sets = {k: v for k, v in c.neurons.items() if k in ("R_excl", "I_excl", "shared")}
        if sets:
            add("set_counts", "neuron-set counts per layer", plots.plot_set_counts, sets,
                n_layers=shape[0] if shape else None)
    if c.ablation:
        for metric in ("logprob", "accuracy"):
            if any(r.get("metric") == metric for r in c.ablation["rows"]):
                add(f"ablation_{metric}", f"ablation effects ({metric}) vs random controls",
                    plots.plot_ablation_effects, c.ablation, metric=metric)
    evals = ({"before": c.eval_before} if c.eval_before else {}) | _ordered(c, c.eval_after)
    if evals:
        add("accuracy_vs_noise", "accuracy vs noise ratio per method", plots.plot_accuracy_vs_noise, evals)
    if c.train_logs:
        add("training_curves", "training curves", plots.plot_training_curves, _ordered(c, c.train_logs))
    return out


def _build(c: RunContents) -> tuple[str, list[tuple[str, list[Block]]]]:
    title = f"Neuro-RIT run report: {(c.config or {}).get('model', c.run_dir.name)}"
    sections = [
        ("Accuracy under noise, before and after tuning", _section_eval(c)),
        ("Neuron sets", _section_neurons(c)),
        ("Causal test: ablation vs random neurons", _section_ablation(c)),
        ("Training", _section_training(c)),
        ("Plots", _plot_blocks(c) or ["Nothing to plot yet."]),
    ]
    if c.views:
        vblocks: list[Block] = ["Interactive circuitsvis views (in report.html): the top neurons of each set over "
                                "the relevant and the irrelevant passages of an example, and each set's per-token "
                                "attribution (grad x act of the gold answer's log-prob)."]
        vblocks += [_Html(v.fragment(heading_level=3), f"- {v.title} ({len(v)} panels)") for v in c.views]
        sections.append(("Neuron views", vblocks))
    else:
        sections.append(("Neuron views", ["No neuron views saved (`neurorit report RUN_DIR --views 2` computes "
                                          "them with the model, or call `neurorit_lens.viz.report.save_views`)."]))
    # the summary goes first but is built last, so it lists problems met while building the rest
    return title, [("Run", _section_summary(c))] + sections


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _render_md(title: str, sections: list[tuple[str, list[Block]]], image_names: dict[str, str]) -> str:
    out = [f"# {title}", ""]
    for name, blocks in sections:
        out += [f"## {name}", ""]
        for b in blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, _Table):
                if b.caption:
                    out += [b.caption, ""]
                out.append("| " + " | ".join(_md_escape(h) or " " for h in b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                out += ["| " + " | ".join(_md_escape(x) for x in r) + " |" for r in b.rows]
                out.append("")
            elif isinstance(b, _Image):
                out += [f"![{b.alt}]({image_names[b.name]})", ""]
            elif isinstance(b, _Html) and b.md_note:
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
            elif isinstance(b, _Table):
                if b.caption:
                    body.append(f'<p class="caption">{_inline_md(b.caption)}</p>')
                head = "" if not any(b.headers) else (
                    "<tr>" + "".join(f"<th>{html_lib.escape(h)}</th>" for h in b.headers) + "</tr>")
                rows = "".join("<tr>" + "".join(f"<td>{html_lib.escape(x)}</td>" for x in r) + "</tr>" for r in b.rows)
                body.append(f"<table>{head}{rows}</table>")
            elif isinstance(b, _Image):
                data = base64.b64encode(b.png).decode("ascii")
                body.append(f'<img class="plot" alt="{html_lib.escape(b.alt)}" src="data:image/png;base64,{data}">')
            elif isinstance(b, _Html):
                has_views = True
                body.append(b.html)
    return page_html("\n".join(body), title=title, extra_head=_REPORT_CSS, include_bundle=has_views)


def write_report(
    run_dir: str | os.PathLike,
    model: Any = None,
    examples: Sequence[Any] | None = None,
    n_views: int = 2,
    k: int = 5,
) -> tuple[Path, Path]:
    """Write ``run_dir/report.html`` and ``run_dir/report.md`` from what the run folder holds.

    Args:
        run_dir: the run folder (it may be incomplete; missing parts are listed in the report).
        model: optional; with ``examples``, neuron views are computed first (:func:`save_views`),
            replacing those in ``views/``. Without it, saved views are embedded as they are.
        examples: QAExamples with labelled passages (e.g. the dev split) for the views.
        n_views: examples that get a view.
        k: neurons per set in a view.

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
    c = load_run(run_dir)
    title, sections = _build(c)
    image_names = {}
    for _, blocks in sections:
        for b in blocks:
            if isinstance(b, _Image):
                rel = f"{FILES_DIR}/{b.name}.png"
                atomic_write_bytes(run_dir / rel, b.png)
                image_names[b.name] = rel
    md = atomic_write_text(run_dir / "report.md", _render_md(title, sections, image_names))
    html = atomic_write_text(run_dir / "report.html", _render_html(title, sections))
    return html, md
