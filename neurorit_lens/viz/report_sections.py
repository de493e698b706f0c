"""The report's content as blocks (text, tables, images, HTML), one builder per section.

One document model, two renderers (:mod:`neurorit_lens.viz.report` writes it as Markdown
and as self-contained HTML).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurorit_lens.neuron_sets import SET_NAMES, MiningMeta, NeuronSet
from neurorit_lens.viz.report_run import RunContents


# --------------------------------------------------------------------------------------
# building blocks: one document model, two renderers
# --------------------------------------------------------------------------------------
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    name: str
    png: bytes
    alt: str


@dataclass
class HtmlBlock:
    html: str  # only in report.html
    md_note: str = ""


Block = str | Table | Image | HtmlBlock


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
        if cfg.get("controls"):
            rows.append(["controls", ", ".join(cfg["controls"]) + " (same items, steps and schedule)"])
        rows.append(["seed", str(cfg.get("seed"))])
    if c.data:
        rows.append(["examples", f"{c.data.get('n_examples')} loaded ({c.data.get('n_skipped', 0)} skipped); "
                                 f"splits {c.data.get('splits')}"])
    env = {k: v for k, v in (c.environment or {}).items() if v is not None}
    if env:
        keys = ("torch", "transformer_lens", "transformers", "torch_threads", "platform")
        rows.append(["environment", ", ".join(f"{k} {env[k]}" for k in keys if k in env)])
    if c.run and c.run.get("timings_s"):
        cpu = c.run.get("cpu_s") or {}
        rows.append(["stage times", ", ".join(f"{k} {v:.0f} s" + (f" ({cpu[k]:.0f} s CPU)" if k in cpu else "")
                                             for k, v in c.run["timings_s"].items())
                     + (f"; load average at the end {c.run['load_average']}" if c.run.get("load_average") else "")])
    blocks: list[Block] = [Table(["item", "value"], rows)]
    if c.missing:
        blocks.append("**Not in this run folder:** " + "; ".join(c.missing) + ". The sections below show what exists.")
    if c.problems:
        blocks.append("**Could not read:** " + "; ".join(c.problems))
    return blocks


def _ordered(c: RunContents, d: Mapping[str, Any]) -> dict[str, Any]:
    """Controls, then methods, in the config's order, then any others by name (so a table reads
    base, control, method from left to right)."""
    cfg = c.config or {}
    order = [m for m in dict.fromkeys([*cfg.get("controls", []), *cfg.get("methods", [])]) if m in d]
    return {m: d[m] for m in order + sorted(set(d) - set(order))}


#: The metric as eval.json and docs/evaluation.md name it.
METRIC_TEXT = ("accuracy = the share of questions whose extracted answer (the first non-blank line of the output, "
               "its first sentence, at most five words more than the longest gold answer) contains a "
               "SQuAD-normalised gold answer (eval.json: `accuracy`), with its Wilson 95% interval over "
               "questions (`accuracy_wilson`)")


def _wilson_pct(res: Mapping[str, Any]) -> str:
    ci = res.get("accuracy_wilson") or []
    m = _pct(res.get("accuracy"))
    if len(ci) == 2 and _pct(ci[0]) != "n/a":
        return f"{m} [{_pct(ci[0])}, {_pct(ci[1])}]"
    return m


def _contrast_blocks(c: RunContents, evals: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    """The reading sentence and the table of each method minus each control, paired per question."""
    from neurorit_lens.viz.report_compare import contrasts, headline_setting, reading

    cfg = c.config or {}
    methods, controls = list(cfg.get("methods", [])), list(cfg.get("controls", []))
    if not controls or not any(m in c.eval_after for m in controls):
        return []
    ev = cfg.get("eval") or {}
    found, problems = contrasts(c.run_dir, methods, controls, n_bootstrap=int(ev.get("n_bootstrap", 1000)),
                                seed=int(ev.get("seed", 0)))
    c.problems += problems
    if not found:
        return []
    first = next(iter(evals.values()))
    head = headline_setting(first["settings"])
    lead = [x for x in found if x.setting == head] or found[:1]
    pairs = list(dict.fromkeys((x.method, x.control) for x in found))
    one = len(pairs) == 1
    m_name, c_name = pairs[0] if one else ("method", "control")
    rows = [([] if one else [f"{x.method} - {x.control}"])
            + [x.setting, x.label, str(x.n), _pct(x.acc_control), _pct(x.acc_method),
               f"{100 * x.diff:+.1f} [{100 * x.ci[0]:+.1f}, {100 * x.ci[1]:+.1f}]",
               f"{x.only_method} / {x.only_control}", _num(x.p_value, ".2g")] for x in found]
    headers = ([] if one else ["contrast"]) + [
        "setting", "held", "n pairs", f"{c_name} acc %", f"{m_name} acc %",
        f"{m_name} - {c_name}, points [paired bootstrap 95% CI]", f"only {m_name} / only {c_name} right",
        "McNemar p (exact)"]
    names = ", ".join(f"{m} - {ctl}" for m, ctl in pairs)
    return [
        "**Reading:** " + " ".join(reading(x) for x in lead),
        Table(headers, rows,
              f"**{names}**: the control trains the same items with the same steps and learning-rate schedule, "
              "and answers the same test questions, so each question gives a pair. The difference is in "
              "accuracy points, with a paired bootstrap 95% interval over the questions; the interval, not the "
              "point estimate, says whether the two differ."),
    ]


def _section_eval(c: RunContents) -> list[Block]:
    evals: dict[str, Mapping[str, Any]] = {}
    if c.eval_before:
        evals["base"] = c.eval_before
    evals.update(_ordered(c, c.eval_after))
    if not evals:
        return ["No evaluation in this run folder (stages 'eval' / 'train')."]
    settings: list[str] = []
    for e in evals.values():
        settings += [s for s in e["settings"] if s not in settings]
    headers = ["setting", "held", "n"] + [f"{name}: accuracy % [Wilson 95%]" for name in evals]
    rows = []
    for s in settings:
        first = next(e["settings"][s] for e in evals.values() if s in e["settings"])
        row = [s, str(first.get("label") or s), str(first.get("n", ""))]
        for name, e in evals.items():
            res = e["settings"].get(s)
            if res is None:
                row.append("n/a")
                continue
            cell = _wilson_pct(res)
            base = (c.eval_before or {}).get("settings", {}).get(s) if name != "base" else None
            if base is not None:
                try:
                    cell += f" ({100 * (float(res['accuracy']) - float(base['accuracy'])):+.1f})"
                except (KeyError, TypeError, ValueError):
                    pass
            row.append(cell)
        rows.append(row)
    blocks: list[Block] = _contrast_blocks(c, evals)
    blocks.insert(min(1, len(blocks)), Table(
        headers, rows, f"{METRIC_TEXT[0].upper()}{METRIC_TEXT[1:]}. In brackets after a tuned model: the change "
        "from base, in points. `held`: what the prompts really held."))
    headers2 = ["setting"] + [f"{name}: EM / F1 / raw accuracy %" for name in evals]
    rows2 = [[s] + [f"{_pct(e['settings'][s].get('em'))} / {_pct(e['settings'][s].get('f1'))} / "
                    f"{_pct(e['settings'][s].get('accuracy_raw'))}"
                    if s in e["settings"] else "n/a" for e in evals.values()] for s in settings]
    blocks.append(Table(headers2, rows2, "EM and F1: SQuAD v1.1 on the extracted answer (eval.json: `em`, `f1`); "
                                         "raw accuracy: a gold answer contained anywhere in the whole output "
                                         "(`accuracy_raw`, the metric before extraction)."))
    return blocks


def _section_neurons(c: RunContents) -> list[Block]:
    if not c.neurons:
        return ["No neuron sets (stage 'mine' not run)."]
    meta = MiningMeta.of_file(c.neurons)
    shape = list(meta.model_shape) if meta.model_shape else None
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
    blocks: list[Block] = [Table(["set", "neurons", "% of all", "layers", "busiest layers", "first neurons"], rows,
                                  f"Model shape (layers, d_mlp) = {shape}. R_excl = R \\ I, I_excl = I \\ R, "
                                  "shared = R & I.")]
    if isinstance(meta.counts, Mapping) and meta.counts:
        blocks.append(_counts_table(meta.counts))
    if (c.run_dir / "neurons" / "index.html").exists():
        blocks.append(HtmlBlock('<p>Neuron pages (top contexts, histograms, logit effect, attribution): '
                                '<a href="neurons/index.html">neurons/index.html</a></p>',
                                "Neuron pages: [neurons/index.html](neurons/index.html)"))
    return blocks


def _counts_table(counts: Mapping[str, Any]) -> Table:
    """Mining counts as a table: neurons per layer and set (``{set: {layer: n}}``), or per set."""
    names = list(counts)
    if all(isinstance(v, Mapping) for v in counts.values()):
        layers = sorted({int(k) for v in counts.values() for k in v})
        rows = [[f"L{layer}"] + [str(counts[n].get(str(layer), counts[n].get(layer, 0))) for n in names]
                for layer in layers]
        rows.append(["all"] + [str(sum(int(x) for x in counts[n].values())) for n in names])
        return Table(["layer"] + names, rows, "Mined neurons per layer and set.")
    return Table(["set", "neurons"], [[n, str(counts[n])] for n in names], "Mined neurons per set.")


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
            blocks.append(Table(
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
    return [Table(["method", "lr", "steps", "trainable params", "fraction", "target layers", "deactivated",
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
        out.append(Image(name, figure_png(fig), alt))
        plt.close(fig)

    meta = MiningMeta.of_file(c.neurons)
    if meta.layer_mass:
        add("layer_mass", "attribution mass per layer for R and I", plots.plot_layer_mass, meta.layer_mass)
    if c.neurons:
        shape = meta.model_shape
        sets = {k: v for k, v in c.neurons.items() if k in ("R_excl", "I_excl", "shared")}
        if sets:
            add("set_counts", "neuron-set counts per layer", plots.plot_set_counts, sets,
                n_layers=shape[0] if shape else None)
    if c.ablation:
        for metric in ("logprob", "accuracy"):
            if any(r.get("metric") == metric for r in c.ablation["rows"]):
                add(f"ablation_{metric}", f"ablation effects ({metric}) vs random controls",
                    plots.plot_ablation_effects, c.ablation, metric=metric)
    evals = ({"base": c.eval_before} if c.eval_before else {}) | _ordered(c, c.eval_after)
    if evals:
        add("accuracy_vs_noise", "accuracy vs noise ratio per method", plots.plot_accuracy_vs_noise, evals)
    if c.train_logs:
        add("training_curves", "training curves", plots.plot_training_curves, _ordered(c, c.train_logs))
    return out


def build_sections(c: RunContents) -> tuple[str, list[tuple[str, list[Block]]]]:
    title = f"Neuro-RIT run report: {(c.config or {}).get('model', c.run_dir.name)}"
    sections = [
        ("Accuracy under noise: base, controls and tuned methods", _section_eval(c)),
        ("Neuron sets", _section_neurons(c)),
        ("Causal test: ablation vs random neurons", _section_ablation(c)),
        ("Training", _section_training(c)),
        ("Plots", _plot_blocks(c) or ["Nothing to plot yet."]),
    ]
    if c.views:
        vblocks: list[Block] = ["Interactive circuitsvis views (in report.html): the top neurons of each set over "
                                "the relevant and the irrelevant passages of an example, and each set's per-token "
                                "attribution (grad x act of the gold answer's log-prob)."]
        vblocks += [HtmlBlock(v.fragment(heading_level=3), f"- {v.title} ({len(v)} panels)") for v in c.views]
        sections.append(("Neuron views", vblocks))
    else:
        sections.append(("Neuron views", ["No neuron views saved (`neurorit report RUN_DIR --views 2` computes "
                                          "them with the model, or call `neurorit_lens.viz.report.save_views`)."]))
    # the summary goes first but is built last, so it lists problems met while building the rest
    return title, [("Run", _section_summary(c))] + sections
