"""Run report from a synthetic run folder: tables, embedded plots and views, missing parts, the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from neurorit_lens.cli.main import main
from neurorit_lens.config import RunConfig
from neurorit_lens.evaluation.evaluate import EvalRecord, EvalResult, aggregate
from neurorit_lens.io import atomic_write_json
from neurorit_lens.neuron_sets import NeuronSet, exclusive_sets, save_neuron_sets
from neurorit_lens.viz.report import load_run, load_scores, save_views, write_report
from tests.helpers import cached_tiny_model, make_examples

SETTINGS = ("closed", "gold", "gold+4", "noise=0.4", "noise=0.8", "irrelevant")
IRRELEVANT = {"closed": 0.0, "gold": 0.0, "gold+4": 4.0, "noise=0.4": 2.0, "noise=0.8": 4.0, "irrelevant": 5.0}


def _eval(out: Path, model: str, shift: int) -> None:
    """``out/eval.json`` and ``predictions.jsonl`` of 20 questions per setting: the first
    ``18 - 3 i + shift`` are right in the i-th setting, so a larger shift is right on a superset."""
    records = [EvalRecord(f"q{q}", s, 100, "x", ["x"], float(q < 18 - 3 * i + shift), 0.0, 0.5)
               for i, s in enumerate(SETTINGS) for q in range(20)]
    settings = {}
    for s in SETTINGS:
        agg = aggregate(s, [r for r in records if r.setting == s], n_bootstrap=200)
        settings[s] = replace(agg, label=s, mean_n_irrelevant=IRRELEVANT[s])
    EvalResult(model, "embedded", settings, records).save(out)


def _effect(m: float, w: float = 0.1, n: int = 20) -> dict:
    return {"mean": m, "ci_low": m - w, "ci_high": m + w, "n": n}


def make_run(root: Path, parts: tuple[str, ...] = ("eval", "mine", "ablate", "train")) -> Path:
    """A run folder with the layout of ``neurorit run`` for the tiny model (2 layers x 64)."""
    run = root / "run"
    cfg = RunConfig(model="tiny", out=str(run))
    cfg.save(run / "config.json")
    atomic_write_json(run / "environment.json", {"seed": 0, "torch": torch.__version__, "torch_threads": 2})
    atomic_write_json(run / "run.json", {"out": str(run), "timings_s": {"eval": 12.0, "mine": 30.5}})
    if "eval" in parts:
        _eval(run / "eval_before", "tiny", 0)
    if "mine" in parts:
        sets = exclusive_sets(NeuronSet({0: [1, 2, 3], 1: [4, 5]}), NeuronSet({0: [3], 1: [6, 7]}))
        save_neuron_sets(run / "mining" / "neurons.json", sets, {
            "model": "tiny", "model_shape": [2, 64], "counts": {"R": 5, "I": 3},
            "layer_mass": {"R": [0.4, 0.6], "I": [0.7, 0.3], "R_excl": [0.3, 0.7], "I_excl": [0.5, 0.5]}})
        from safetensors.torch import save_file

        g = torch.Generator().manual_seed(0)
        for cond in ("R", "I"):
            save_file({"scores": torch.randn(4, 2, 64, generator=g)},
                      str(run / "mining" / f"scores_{cond}.safetensors"))
    if "ablate" in parts:
        rows = [{"set_name": s, "context": c, "setting": "gold" if c == "relevant" else "noise=0.8", "metric": m,
                 "n_neurons": 3, "n": 20, "base": -2.0 if m == "logprob" else 0.6,
                 "effect": _effect(-0.6 if s == "R_excl" else 0.05), "random": _effect(-0.02),
                 "diff": _effect(-0.58 if s == "R_excl" else 0.07), "random_seed_means": [-0.05, 0.0, 0.01],
                 "verdict": f"{s} verdict under {c}"}
                for s in ("R_excl", "I_excl", "shared") for c in ("relevant", "noisy") for m in ("logprob", "accuracy")]
        atomic_write_json(run / "ablation" / "ablation.json",
                          {"config": {"mode": "zero", "n_random": 5}, "contexts": {}, "sets": {}, "rows": rows,
                           "verdicts": [r["verdict"] for r in rows]})
    if "train" in parts:
        for method, shift in (("neurorit", 6), ("layers", 1)):
            tdir = run / "train" / method
            log = [{"step": s, "loss": 2.0 / s, "lr": 1e-4, "grad_norm": 1.0, "n_tokens": 8,
                    "stage": "stage1" if s <= 5 else "stage2", "dev_loss": 1.5 - 0.05 * s if s % 5 == 0 else None,
                    "dev_answer_logprob": None} for s in range(1, 11)]
            (tdir).mkdir(parents=True)
            (tdir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
            atomic_write_json(tdir / "train.json", {
                "method": method, "lr": 1e-4, "steps": 10, "trainable_params": 12345, "total_params": 200000,
                "trainable_fraction": 0.0617, "target_layers": [1], "n_deactivated": 2, "n_trained_neurons": 4,
                "wall_s": 42.0, "final_dev": {"dev_loss": 1.0}, "log": log})
            _eval(run / "eval_after" / method, f"tiny+{method}", shift)
    return run


def _no_external(html: str) -> None:
    assert not re.findall(r"<script[^>]*\bsrc\s*=", html, flags=re.I)
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html, flags=re.I)
    assert "unpkg.com" not in html and "sourceMappingURL" not in html


def test_full_report_with_views(tmp_path):
    run = make_run(tmp_path)
    model = cached_tiny_model()
    html_path, md_path = write_report(run, model=model, examples=make_examples(3, n_irrelevant=2), n_views=1, k=2)
    html, md = html_path.read_text(), md_path.read_text()
    _no_external(html)
    # tables: base, control and method side by side (Wilson intervals, change from base), sets, ablation, training
    assert "| gold | gold | 20 | 75.0 [53.1, 88.8] | 80.0 [58.4, 91.9] (+5.0) | 100.0 [83.9, 100.0] (+25.0) |" in md
    # the paired contrast: neurorit is right on a superset of layers' questions (5 more of 20 at gold+4)
    assert "| gold+4 | gold+4 | 20 | 65.0 | 90.0 | +25.0 [" in md and "| 5 / 0 | 0.062 |" in md
    assert "**Reading:** neurorit beats layers at gold+4: +25.0 points [" in md
    assert "| R_excl | 3 |" in md and "| I_excl | 2 |" in md
    assert "-0.580 [-0.680, -0.480]" in md and "R_excl verdict under noisy" in md
    assert "12,345" in md and "6.17%" in md and "42 s" in md
    assert "Not in this run folder" not in md
    # plots: PNG files for the md, base64 in the html
    for name in ("layer_mass", "set_counts", "ablation_logprob", "ablation_accuracy", "accuracy_vs_noise",
                 "training_curves"):
        assert (run / "report_files" / f"{name}.png").exists(), name
        assert f"report_files/{name}.png" in md
    assert html.count("data:image/png;base64,") == 6
    # views: computed, saved as JSON, embedded with the bundle once
    assert len(list((run / "views").glob("*.json"))) == 1
    assert html.count("CircuitsVis.render(") == 6 and html.count("var CircuitsVis") == 1
    # regenerating without the model keeps the saved views
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").read_text().count("CircuitsVis.render(") == 6


def _md_tables(md: str) -> list[list[str]]:
    """The Markdown tables of ``md``, each as its lines."""
    tables, cur = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def test_report_names_the_current_metric_and_has_only_headed_tables(tmp_path):
    md = write_report(make_run(tmp_path))[1].read_text()
    # the metric as eval.json and docs/evaluation.md state it: the extracted answer, Wilson intervals
    assert "extracted answer" in md and "Wilson 95%" in md and "`accuracy_wilson`" in md
    assert "contained in the output" not in md and "percentile bootstrap" not in md
    # no raw Python / JSON mapping printed anywhere (the mining counts are a table)
    assert not re.search(r"\{['\"]", md), "raw dict in report.md"
    tables = _md_tables(md)
    assert len(tables) >= 6
    for t in tables:
        header = [h.strip() for h in t[0].strip("|").split("|")]
        assert all(header), f"a table without a full header: {t[0]}"
        assert set(t[1]) <= set("|-"), t[1]


def test_mining_counts_per_layer_are_a_table(tmp_path):
    run = make_run(tmp_path, parts=("mine",))
    meta = json.loads((run / "mining" / "neurons.json").read_text())
    meta["meta"]["counts"] = {"R_excl": {"0": 2, "1": 2}, "I_excl": {"1": 2}}
    atomic_write_json(run / "mining" / "neurons.json", meta)
    md = write_report(run)[1].read_text()
    assert "| layer | R_excl | I_excl |" in md and "| L0 | 2 | 0 |" in md and "| all | 4 | 2 |" in md


def test_report_of_partial_run_says_what_is_missing(tmp_path):
    run = make_run(tmp_path, parts=("mine",))
    html_path, md_path = write_report(run)
    md = md_path.read_text()
    assert "Not in this run folder" in md and "eval_before/eval.json (stage 'eval' not run)" in md
    assert "ablation/ablation.json (stage 'ablate' not run)" in md and "No training results" in md
    assert (run / "report_files" / "set_counts.png").exists()
    html = html_path.read_text()
    _no_external(html)
    assert "var CircuitsVis" not in html  # no views, no 1.3 MB bundle


def test_report_survives_corrupt_parts(tmp_path):
    run = make_run(tmp_path, parts=("eval",))
    (run / "ablation").mkdir()
    (run / "ablation" / "ablation.json").write_text("{not json")
    atomic_write_json(run / "eval_after" / "neurorit" / "eval.json", {"model": "x"})
    c = load_run(run)
    assert any("ablation.json: could not be read" in p for p in c.problems)
    assert any("no 'settings'" in p for p in c.problems) and not c.eval_after
    _, md = write_report(run)
    assert "Could not read" in md.read_text()


def test_empty_folder_and_bad_path(tmp_path):
    html, md = write_report(tmp_path / "nothing")
    assert "config.json" in md.read_text() and html.exists()
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        write_report(f)
    assert main(["report", str(f)]) == 2


def test_scores_rank_views(tmp_path):
    run = make_run(tmp_path, parts=("mine",))
    scores = load_scores(run)
    assert set(scores) == {"R", "I"} and tuple(scores["R"].shape) == (2, 64)
    paths = save_views(run, cached_tiny_model(), make_examples(2), k=1, n_examples=2)
    assert len(paths) == 2
    view = json.loads(paths[0].read_text())
    labels = view["panels"][0]["props"]["secondDimensionLabels"]
    r_excl = [(0, 1), (0, 2), (1, 4), (1, 5)]
    best = max(r_excl, key=lambda n: float(scores["R"][n]))
    assert labels[0] == f"L{best[0]}N{best[1]} (R_excl)"


def test_reading_follows_the_interval_and_the_headline_is_the_noisiest_gold_setting():
    from neurorit_lens.viz.report_compare import Contrast, headline_setting, reading

    def c(lo: float, hi: float, label: str = "gold+2") -> Contrast:
        return Contrast("neurorit", "layers", "noise=0.8", label, 24, 0.5, 0.5, (lo + hi) / 2, (lo, hi), 3, 3, 1.0)

    assert reading(c(0.01, 0.2)).startswith("neurorit beats layers at noise=0.8 (prompts held gold+2): +10.5 points")
    assert reading(c(-0.2, -0.01)).startswith("neurorit trails layers at noise=0.8")
    assert reading(c(-0.1, 0.05)) == ("neurorit and layers are level at noise=0.8 (prompts held gold+2): -2.5 points "
                                      "[-10.0, +5.0], n=24; the paired 95% interval includes 0.")
    settings = {s: {"mean_n_irrelevant": IRRELEVANT[s]} for s in SETTINGS}
    assert headline_setting(settings) == "gold+4"  # a tie with noise=0.8: the first
    assert headline_setting({"closed": {}, "noise=0.4": {}, "noise=0.8": {}}) == "noise=0.8"
    assert headline_setting({"closed": {}, "gold": {}}) == "gold"
