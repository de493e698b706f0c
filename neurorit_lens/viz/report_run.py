"""Reading a run folder for the report: what it holds, what it lacks, and saved neuron views.

See :mod:`neurorit_lens.viz.report` for the layout of a run folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurorit_lens.io import read_json
from neurorit_lens.viz.panels import NeuronView

__all__ = ["FILES_DIR", "NEURONS_DIR", "VIEWS_DIR", "RunContents", "load_run", "load_scores", "save_neuron_pages",
           "save_views"]

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
    from neurorit_lens.neuron_sets import load_neuron_sets
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


NEURONS_DIR = "neurons"


def save_neuron_pages(
    run_dir: str | os.PathLike,
    model: Any,
    examples: Sequence[Any],
    set_names: Sequence[str] = ("R_excl", "I_excl"),
    pages_per_set: int = 20,
    limit: int = 84,
    top: int = 12,
) -> Path:
    """Neuron pages of the run's sets in ``run_dir/neurons/`` (``index.html`` lists every neuron).

    Each set's neurons are ranked by mean attribution (R scores for ``R_excl``, I scores for
    ``I_excl``); the first ``pages_per_set`` of each get a page. The pages share one local
    ``circuitsvis.js`` (offline; a few hundred inline copies of the 1.3 MB bundle would not
    be). ``neurorit neuron --set RUN/mining/neurons.json:R_excl`` makes self-contained pages
    for all of a set.

    Returns:
        The path of ``index.html``.
    """
    from safetensors.torch import load_file

    from neurorit_lens.neuron_sets import check_sets_fit, read_neurons_file
    from neurorit_lens.viz.neuron_page import neuron_pages

    run_dir = Path(run_dir)
    npath = run_dir / "mining" / "neurons.json"
    sets, meta = read_neurons_file(npath)
    if model is not None:
        check_sets_fit(npath, sets, meta, model)
    scores: dict[str, Any] = {}
    for cond in ("R", "I"):
        p = run_dir / "mining" / f"scores_{cond}.safetensors"
        if p.exists():
            t = load_file(str(p))
            scores[cond] = t.get("scores", next(iter(t.values()))).float()
    scores["threshold"] = meta.setting("threshold")
    neurons, pages = [], []
    for name in set_names:
        cond = "I" if name.startswith("I") else "R"
        mean = scores[cond].mean(0) if cond in scores else None
        ranked = sorted(sets.get(name, []), key=lambda n: -float(mean[n.layer, n.index]) if mean is not None else 0)
        neurons += [n for n in ranked if n not in neurons]
        pages += ranked[:pages_per_set]
    if not neurons:
        raise ValueError(f"the sets {list(set_names)} are empty: no neuron pages")
    abl = run_dir / "ablation" / "ablation.json"
    return neuron_pages(model, examples, neurons, run_dir / NEURONS_DIR, mining=scores,
                        sets={k: v for k, v in sets.items() if k in ("R_excl", "I_excl", "shared")},
                        ablation=abl if abl.exists() else None, limit=limit, top=top, pages=pages,
                        bundle="shared", title=f"Neuron pages: {', '.join(set_names)} of {run_dir.name}")
