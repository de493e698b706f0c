"""The comparison harness (neurorit_lens.experiments) end to end on the tiny model (resume: the second run trains
nothing), and its contrast statistics against neurorit_lens/statistics.py on known inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from neurorit_lens.cli.main import main
from neurorit_lens.experiments import harness as cm
from neurorit_lens.experiments.comparison import accuracy_contrast, mean_difference, pair, per_question_difference
from neurorit_lens.experiments.report import build_report, render_markdown
from neurorit_lens.statistics import (
    bootstrap_ci,
    holm,
    mcnemar_exact,
    min_detectable_difference,
    paired_bootstrap_ci,
    wilson_interval,
)
from tests.helpers import BAD_CHOICE

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "name": "tiny_test", "model": "tiny", "device": "cpu",
    "datasets": {"emb_a": {"data": "embedded:40"},
                 "emb_b": {"data": "embedded:40:7", "settings": ["gold", "gold+2", "counterfactual"]}},
    "split_fractions": [0.5, 0.25, 0.25], "data_seed": 0, "n_passages": 3, "max_prompt_tokens": 256,
    "template": "plain", "train_limit": 6, "dev_limit": 3, "test_limit": 5,
    "settings": ["gold", "gold+2"],
    "methods": ["base", "clean", "layers", "full", "random", "neurorit"],
    "contrasts": [["neurorit", "layers"], ["neurorit", "full"], ["neurorit", "clean"]],
    "seeds": [0], "extra_seeds": [1],
    "lr_grid": {"default": [1e-3], "neurorit": [1e-3, 1e-2]},
    "selection": {"settings": ["gold+2"]},
    "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 1,
              "n_target_layers": 1},
    "mining": {"selection": "topk", "top_k": 16, "frequency": 0.3}, "mine_limit": 6,
    "eval": {"max_new_tokens": 4, "batch_size": 4, "n_bootstrap": 50, "stop_at_newline": True},
    "n_bootstrap": 200,
}


def _write_cfg(tmp_path, **changes) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**TINY, **changes}))
    return path


def test_harness_end_to_end_resumes_without_training(tmp_path):
    out, res = tmp_path / "run", tmp_path / "results"
    h = cm.Harness(cm.load_config(_write_cfg(tmp_path)), out, progress=False, results=res)
    h.load_data()
    plan = h.plan()
    assert plan["training_runs"] == 6 + 2 and plan["per_dataset"]["emb_a"] == {"train": 6, "dev": 3, "test": 5}
    rep = h.run()
    assert h.n_trained == 8  # 4 methods x 1 LR + neurorit x 2 LRs + 2 extra seeds
    assert (res / "results.json").exists() and (res / "results.md").exists() and (out / "protocol.json").exists()
    strongest = json.loads((out / "selection" / "strongest_baseline.json").read_text())["method"]
    assert set(rep["runs"]["neurorit"]) == {"0", "1"} and set(rep["runs"][strongest]) == {"0", "1"}
    sel = json.loads((out / "selection" / "neurorit.json").read_text())
    assert set(sel["dev_scores"]) == {"0.001", "0.01"}
    assert sel["chosen_lr"] == max([1e-3, 1e-2], key=lambda lr: (sel["dev_scores"][f"{lr:g}"], -lr))
    assert not list((out / "train").rglob("runs"))  # checkpoints removed once a run is complete
    # per-question records with the teacher-forced log p(gold), and a contrast row recomputed from them
    blob = json.loads((out / "eval" / rep["runs"]["neurorit"]["0"] / "test" / "emb_b" / "counterfactual.json")
                      .read_text())
    assert len(blob["records"]) == 5 and all(isinstance(r["logprob"], float) for r in blob["records"])
    row = next(r for r in rep["contrasts"] if r["a"] == "neurorit" and r["b"] == "clean" and r["dataset"] == "emb_a"
               and r["setting"] == "gold+2" and r["seed"] == 0)
    ev = {m: json.loads((out / "eval" / rep["runs"][m]["0"] / "test" / "emb_a" / "gold+2.json").read_text())
          for m in ("neurorit", "clean")}
    a, b = ({r["id"]: r["accuracy"] for r in ev[m]["records"]} for m in ("neurorit", "clean"))
    _, x, y = pair(a, b)
    assert row["p_value"] == mcnemar_exact(x, y).p_value and row["n"] == 5
    # cost: the same optimizer steps for every trained method, trainable parameters recorded
    steps = {m: c["steps"] for m, c in rep["cost"].items() if m != "base"}
    assert set(steps.values()) == {2} and rep["cost"]["full"]["trainable_fraction"] == 1.0
    assert rep["cost"]["clean"]["trainable_params"] == rep["cost"]["full"]["trainable_params"]
    # peak resident memory of each training and evaluation unit (Linux), at least the model's weights
    if os.path.exists("/proc/self/clear_refs"):
        weights_mb = sum(p.numel() * p.element_size() for p in h.base.parameters()) / 2**20
        assert all(c["train_peak_rss_mb"] > weights_mb for m, c in rep["cost"].items() if m != "base")
        assert blob["peak_rss_mb"] > weights_mb
    # resume: a second harness on the same folder trains and evaluates nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("*.json")}
    h2 = cm.Harness(cm.load_config(_write_cfg(tmp_path)), out, progress=False, results=res)
    h2.load_data()
    rep2 = h2.run()
    assert h2.n_trained == 0 and h2._base is None  # not even the base model was loaded
    assert {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("*.json")} == mtimes
    assert cm._clean(rep2["contrasts"]) == cm._clean(rep["contrasts"])


def test_a_one_value_grid_without_extra_seeds_makes_no_dev_pass(tmp_path):
    cfg = cm.load_config(_write_cfg(tmp_path, methods=["base", "clean"], contrasts=[["clean", "base"]],
                                    extra_seeds=[], datasets={"emb_a": {"data": "embedded:40"}}))
    h = cm.Harness(cfg, tmp_path / "run", progress=False, results=tmp_path / "r")
    h.load_data()
    assert h.plan()["dev_generations"] == 0
    rep = h.run()
    assert h.n_trained == 1 and not list((tmp_path / "run" / "eval").rglob("dev"))
    assert rep["selection"]["clean"]["chosen_lr"] == 1e-3 and rep["selection"]["clean"]["dev_scores"] == {}
    assert [(r["a"], r["b"]) for r in rep["contrasts"]] == [("clean", "base")] * 2  # gold, gold+2


def test_workers_split_the_methods_and_share_one_run_folder(tmp_path):
    """--methods: each worker trains and evaluates its own methods only; the extra seeds wait for
    every dev choice; a plain run afterwards has nothing left to do."""
    path = _write_cfg(tmp_path, methods=["base", "clean", "layers", "neurorit"], datasets={"emb_a": {"data":
                      "embedded:40"}}, contrasts=[["neurorit", "layers"], ["neurorit", "clean"]],
                      lr_grid={"default": [1e-3]})
    out, res = tmp_path / "run", tmp_path / "results"
    argv = ["compare", str(path), "--out", str(out), "--results", str(res), "--no-progress"]
    assert main([*argv, "--methods", "base,clean"]) == 0  # the CLI: worker A
    assert sorted(p.name for p in (out / "train").iterdir()) == ["clean"]
    assert not (out / "selection" / "strongest_baseline.json").exists()  # layers and neurorit not chosen yet
    assert set(json.loads((res / "results.json").read_text())["runs"]) == {"base", "clean"}

    def worker(methods):
        h = cm.Harness(cm.load_config(path), out, progress=False, results=res, methods=methods)
        h.load_data()
        return h, h.run()

    b, _ = worker(["layers", "neurorit"])
    strongest = json.loads((out / "selection" / "strongest_baseline.json").read_text())["method"]
    assert strongest in ("clean", "layers")
    assert b.n_trained == 3 + (strongest == "layers")  # its two methods, neurorit seed 1, layers seed 1 if strongest
    a, _ = worker(["base", "clean"])
    assert a.n_trained == int(strongest == "clean")  # clean's seed 1 falls to worker A
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("*.json")}
    h = cm.Harness(cm.load_config(path), out, progress=False, results=res)
    h.load_data()
    rep = h.run()
    assert h.n_trained == 0 and h._base is None
    assert {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("*.json")} == mtimes
    assert set(rep["runs"]["neurorit"]) == {"0", "1"} and set(rep["runs"][strongest]) == {"0", "1"}
    assert {(r["a"], r["b"], r["seed"]) for r in rep["contrasts"]} >= {("neurorit", "layers", 0),
                                                                        ("neurorit", "clean", 0)}
    with pytest.raises(ValueError, match="one of the configuration's methods"):
        cm.Harness(cm.load_config(path), out, methods=["base", "full"])


def test_changed_protocol_and_bad_config_are_errors(tmp_path):
    out = tmp_path / "run"
    h = cm.Harness(cm.load_config(_write_cfg(tmp_path)), out, progress=False, results=tmp_path / "r")
    out.mkdir()
    h.protocol()
    h2 = cm.Harness(cm.load_config(_write_cfg(tmp_path, seeds=[3])), out, progress=False, results=tmp_path / "r")
    with pytest.raises(ValueError, match="protocol differs"):
        h2.protocol()
    with pytest.raises(ValueError, match="unknown method"):
        cm.load_config(_write_cfg(tmp_path, methods=["base", "fulll"]))
    with pytest.raises(ValueError, match="contrast"):
        cm.load_config(_write_cfg(tmp_path, contrasts=[["neurorit", "stage1"]]))
    with pytest.raises(ValueError, match="lr_grid"):
        cm.load_config(_write_cfg(tmp_path, lr_grid={"neurorit": [1e-3]}))
    with pytest.raises(ValueError, match="setting"):
        cm.load_config(_write_cfg(tmp_path, settings=["gold", "gold+x"]))
    with pytest.raises(ValueError, match="unknown key"):
        cm.load_config(_write_cfg(tmp_path, test_limt=3))
    with pytest.raises(ValueError, match="missing"):
        bad = dict(TINY)
        bad.pop("contrasts")
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        cm.load_config(tmp_path / "bad.json")


def _blob(acc: dict[str, float], lp: dict[str, float] | None = None) -> dict:
    n, k = len(acc), int(sum(acc.values()))
    recs = [{"id": i, "accuracy": v, "logprob": (lp or {}).get(i)} for i, v in acc.items()]
    return {"summary": {"n": n, "accuracy": k / n, "accuracy_wilson": list(wilson_interval(k, n)), "em": 0.0,
                        "f1": 0.0, "copy_rate": 0.0, "label": "x"}, "records": recs}


def test_contrast_statistics_match_the_statistics_module_on_known_inputs():
    rng = np.random.default_rng(3)
    ids = [f"q{i}" for i in range(40)]
    acc = {m: {i: float(v) for i, v in zip(ids, rng.integers(0, 2, 40), strict=True)}
           for m in ("neurorit", "layers", "full")}
    gold = {m: {i: float(v) for i, v in zip(ids, rng.integers(0, 2, 40), strict=True)} for m in acc}
    lp = {m: {i: float(v) for i, v in zip(ids, rng.normal(-3, 1, 40), strict=True)} for m in acc}
    evals = {}
    for m in acc:
        evals[(m, "d", "gold+4")] = _blob(acc[m], lp[m])
        evals[(m, "d", "gold")] = _blob(gold[m])
    cfg = {"name": "t", "model": "m", "datasets": {"d": {}}, "settings": ["gold", "gold+4"], "seeds": [0],
           "contrasts": [["neurorit", "layers"], ["neurorit", "full"]], "selection": {"rule": "r"},
           "n_bootstrap": 500}
    runs = {m: {0: m} for m in acc}
    rep = build_report(cfg, runs, evals, {}, {})
    rows = {(r["b"], r["setting"]): r for r in rep["contrasts"]}
    for b in ("layers", "full"):
        r = rows[(b, "gold+4")]
        x, y = np.array([acc["neurorit"][i] for i in ids]), np.array([acc[b][i] for i in ids])
        diff, ci = paired_bootstrap_ci(x, y, n=500, seed=0)
        t = mcnemar_exact(x, y)
        assert (r["diff"], r["ci"], r["only_a"], r["only_b"], r["p_value"]) == (diff, list(ci), t.b, t.c, t.p_value)
        assert r["mdd_planning"] == min_detectable_difference(40, 0.2)
        assert r["mdd_observed"] == min_detectable_difference(40, (t.b + t.c) / 40)
        want_lp = paired_bootstrap_ci([lp["neurorit"][i] for i in ids], [lp[b][i] for i in ids], n=500, seed=0)
        assert r["logprob_diff"]["mean"] == want_lp[0] and r["logprob_diff"]["ci"] == list(want_lp[1])
    family = [r for r in rep["contrasts"] if r["primary"]]
    assert [r["p_holm"] for r in family] == holm([r["p_value"] for r in family]) and len(family) == 4
    # within-question gap acc(gold+4) - acc(gold): a naive loop, and the paired difference of two gaps
    gap = {m: {i: acc[m][i] - gold[m][i] for i in ids} for m in acc}
    g = next(r for r in rep["gaps"] if r["method"] == "layers" and r["setting"] == "gold+4")
    assert g["mean"] == pytest.approx(sum(gap["layers"].values()) / 40)
    assert g["ci"] == list(bootstrap_ci(list(gap["layers"].values()), n=500, seed=0))
    gc = next(r for r in rep["gap_contrasts"] if r["b"] == "full")
    want = paired_bootstrap_ci(list(gap["neurorit"].values()), list(gap["full"].values()), n=500, seed=0)
    assert (gc["mean"], gc["ci"]) == (want[0], list(want[1]))
    assert per_question_difference(acc["full"], gold["full"]) == gap["full"]
    assert mean_difference(gap["neurorit"], gap["full"], 500)["mean"] == want[0]
    acc_row = next(r for r in rep["accuracy"] if r["method"] == "full" and r["setting"] == "gold")
    assert acc_row["wilson"] == list(wilson_interval(int(sum(gold["full"].values())), 40))
    assert "neurorit - layers" in render_markdown(rep)


def test_accuracy_contrast_bad_input():
    with pytest.raises(ValueError, match="no question in common"):
        accuracy_contrast({"a": 1.0}, {"b": 0.0})
    with pytest.raises(ValueError, match="0/1"):
        accuracy_contrast({"a": 0.5}, {"a": 0.0})


def test_shipped_configs_load_and_declare_the_issue_13_contrasts():
    for name in ("cpu_small", "gpu"):
        cfg = cm.load_config(ROOT / "benchmarks" / "configs" / f"{name}.json")
        assert cfg["name"] == name
        assert [tuple(c) for c in cfg["contrasts"]] == [("neurorit", "layers"), ("neurorit", "full"),
                                                        ("neurorit", "clean")]
        assert {"base", "clean", "layers", "full", "random", "neurorit"} <= set(cfg["methods"])
    # cpu_main_amend = cpu_main plus only what --amend may add
    from neurorit_lens.experiments.protocol import amendment

    main, amend = (cm.load_config(ROOT / "benchmarks" / "configs" / f"{n}.json")
                   for n in ("cpu_main", "cpu_main_amend"))
    added = amendment(main, amend, main["methods"])
    assert added["methods"] == ["prompted"] and set(added["cross_test"]) == {"rgb", "bamboogle"}
    assert len(added["prompted_variants"]) in (3, 4) and all("prompted" in c for c in added["contrasts"])
    gpu = cm.load_config(ROOT / "benchmarks" / "configs" / "gpu.json")
    assert (gpu["test_limit"] is None or gpu["test_limit"] >= 200) and gpu["extra_seeds"]
    assert {"gold", "gold+2", "gold+4", "irrelevant"} <= set(gpu["settings"])


# --- prompted variants, cross_test sets, --amend ------------------------------------------------
VARIANTS = [{"name": "short", "max_new_tokens": 2},
            {"name": "terse", "instruction": "Read the documents. Give only the answer, a few words, nothing else.",
             "system_prompt": "Answer with a few words.", "template": "chat", "max_new_tokens": 3}]


def _rgb_file(path: Path, tag: str, counterfactual: bool) -> str:
    """A tiny RGB-format set of 4 questions that appear in no embedded set."""
    rows = []
    for i in range(4):
        row = {"id": i, "query": f"Which lake feeds the {tag} mill number {i}?", "answer": [f"Lake {tag}{i}"],
               "positive": [f"The {tag} mill number {i} is fed by Lake {tag}{i}."],
               "negative": [f"Weather note {j} about the trains of {tag}." for j in range(3)]}
        if counterfactual:
            row["positive_wrong"] = [f"The {tag} mill number {i} is fed by Lake Other{i}."]
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _old_cfg(**changes) -> dict:
    return {**TINY, "datasets": {"emb_a": {"data": "embedded:40", "settings": ["gold", "gold+2", "counterfactual"]}},
            "methods": ["base", "clean", "layers"], "contrasts": [["layers", "clean"], ["layers", "base"]],
            "extra_seeds": [], "lr_grid": {"default": [1e-3]}, **changes}


def _amended_cfg(tmp_path, **changes) -> dict:
    cross = {"rgbx": {"data": _rgb_file(tmp_path / "rgbx.json", "Quorn", True), "format": "rgb"},
             "plainx": {"data": _rgb_file(tmp_path / "plainx.json", "Tavel", False)}}
    return _old_cfg(methods=["base", "prompted", "clean", "layers"], prompted_variants=VARIANTS, cross_test=cross,
                    contrasts=[["layers", "clean"], ["layers", "base"], ["layers", "prompted"]], **changes)


def _harness(tmp_path, cfg: dict, amend: bool = False, name: str = "cfg.json") -> cm.Harness:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    h = cm.Harness(cm.load_config(path), tmp_path / "run", progress=False, results=tmp_path / "results", amend=amend)
    h.load_data()
    return h


def test_amend_adds_prompted_and_cross_sets_without_redoing_anything(tmp_path, monkeypatch):
    import neurorit_lens.neurons.mining as mining
    import neurorit_lens.training.methods as methods

    seen: list[str] = []  # every question a training run or the mining saw
    real_train, real_mine = methods.train, mining.mine
    monkeypatch.setattr(methods, "train", lambda model, exs, *a, **k: (seen.extend(e.question for e in exs),
                                                                        real_train(model, exs, *a, **k))[1])
    monkeypatch.setattr(mining, "mine", lambda model, exs, *a, **k: (seen.extend(e.question for e in exs),
                                                                      real_mine(model, exs, *a, **k))[1])
    out = tmp_path / "run"
    old = _harness(tmp_path, _old_cfg())
    plan_keys = set(old.plan())
    rep0 = old.run()
    assert set(json.loads((out / "protocol.json").read_text())) == {"config", "declared_at", "environment"}
    assert plan_keys == {"train_questions", "training_runs", "extra_runs", "optimizer_steps", "dev_generations",
                         "test_generations", "teacher_forced_passes", "per_dataset"}  # an old config: old plan
    mtimes = {p: p.stat().st_mtime_ns for d in ("eval", "train", "mining", "selection")
              for p in (out / d).rglob("*") if p.is_file()}
    # without --amend the amended configuration is refused; with it, only the additions run
    with pytest.raises(ValueError, match="protocol differs"):
        _harness(tmp_path, _amended_cfg(tmp_path), name="amend.json").protocol()
    h = _harness(tmp_path, _amended_cfg(tmp_path), amend=True, name="amend.json")
    plan = h.plan()
    assert plan["prompted"]["variants"] == ["short", "terse"] and plan["prompted"]["dev_generations"] == 2 * 3
    assert plan["cross_test"]["rgbx"]["questions"] == 4 and plan["cross_test"]["plainx"]["skipped_settings"] == {
        "counterfactual": {"no_counterfactual": 4}}
    rep = h.run()
    assert h.n_trained == 0 and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["config"] == json.loads(json.dumps(old.cfg))  # the first declaration is kept as it was
    (am,) = proto["amendments"]
    assert am["added"] == {"methods": ["prompted"], "contrasts": [["layers", "prompted"]],
                           "prompted_variants": ["short", "terse"], "cross_test": ["rgbx", "plainx"]}
    assert am["at"].endswith("Z")
    # the variant choice: pooled dev accuracy at the selection settings, recomputed from the files; ties: first
    sel = json.loads((out / "selection" / "prompted.json").read_text())
    dev = {v: [r["accuracy"] for p in (out / "eval" / "prompted" / v / "dev").rglob("*.json")
               for r in json.loads(p.read_text())["records"]] for v in ("short", "terse")}
    assert {p.stem for p in (out / "eval" / "prompted").rglob("dev/*/*.json")} == {"gold+2"}
    assert sel["dev_scores"] == {v: sum(x) / len(x) for v, x in dev.items()}
    assert sel["chosen"] == ("terse" if sel["dev_scores"]["terse"] > sel["dev_scores"]["short"] else "short")
    assert [p.parts[-4] for p in (out / "eval" / "prompted").rglob("test/*/*.json")] == [sel["chosen"]] * 3
    short, terse = (json.loads((out / "eval" / "prompted" / v / "dev" / "emb_a" / "gold+2.json").read_text())
                    for v in ("short", "terse"))
    assert [r["prompt_tokens"] for r in terse["records"]] != [r["prompt_tokens"] for r in short["records"]]
    # cross sets: every question is test, evaluated for every method's first-seed run, never trained or mined on
    cross_q = {ex.question for name in h.cross for ex in h.cross[name]}
    assert seen and not cross_q & set(seen) and len(cross_q) == 8
    runs = {"base", f"prompted/{sel['chosen']}", "clean/lr=0.001/seed=0", "layers/lr=0.001/seed=0"}
    for name, settings in (("rgbx", {"gold", "gold+2", "counterfactual"}), ("plainx", {"gold", "gold+2"})):
        for run in runs:
            got = {p.stem for p in (out / "eval" / run / "cross" / name).glob("*.json")}
            assert got == settings, (run, name, got)
        blob = json.loads((out / "eval" / "base" / "cross" / name / "gold.json").read_text())
        assert len(blob["records"]) == 4
        table = rep["cross"][name]
        assert table["label"] == f"trained on emb_a, tested on all of {name}" and table["exploratory"]
        assert table["overlap_with_training_data"] == {"train": 0, "dev": 0, "test": 0}
        assert table["contrasts"] and all(r["exploratory"] and "p_holm" not in r for r in table["contrasts"])
    # the amended contrast is exploratory, outside the Holm family; the declared rows are unchanged
    assert rep["contrasts_declared"] == [["layers", "clean"], ["layers", "base"]]
    expl = [r for r in rep["contrasts"] if r["b"] == "prompted"]
    assert expl and all(r["exploratory"] and "p_holm" not in r for r in expl)
    assert cm._clean([r for r in rep["contrasts"] if r["b"] != "prompted"]) == cm._clean(rep0["contrasts"])
    md = (tmp_path / "results" / "results.md").read_text()
    assert "tested on all of rgbx" in md and "(exploratory)" in md and "Prompted baseline" in md
    # a rerun of the old configuration in the amended folder is refused; the amended one resumes with nothing to do
    with pytest.raises(ValueError, match="protocol differs"):
        _harness(tmp_path, _old_cfg()).protocol()
    again = _harness(tmp_path, _amended_cfg(tmp_path), name="amend.json")
    again.run()
    assert again.n_trained == 0 and again._base is None
    assert len(json.loads((out / "protocol.json").read_text())["amendments"]) == 1


def test_prompted_variant_rule_highest_dev_then_first_declared(tmp_path, monkeypatch):
    cfg = _old_cfg(methods=["base", "prompted"], contrasts=[], prompted_variants=[{"name": n} for n in "abcd"])
    h = cm.Harness(cfg, tmp_path / "run", progress=False)
    scores = {"prompted/a": 0.25, "prompted/b": 0.5, "prompted/c": 0.5, "prompted/d": 0.125}
    monkeypatch.setattr(h, "dev_score", lambda run: scores[run])
    sel = h.select_prompted(lambda: None)
    assert sel["chosen"] == "b" and sel["dev_scores"] == {"a": 0.25, "b": 0.5, "c": 0.5, "d": 0.125}
    one = cm.Harness({**cfg, "prompted_variants": [{"name": "only"}]}, tmp_path / "run1", progress=False)
    monkeypatch.setattr(one, "dev_score", lambda run: pytest.fail("one variant needs no dev pass"))
    assert one.select_prompted(lambda: None)["chosen"] == "only"
    h.cfg["prompted_variants"] = VARIANTS
    dcfg, ecfg = h.variant_inputs("prompted/terse", cm.DataConfig(template="plain"), {"max_new_tokens": 9,
                                                                                      "batch_size": 2})
    assert (dcfg.instruction, dcfg.system_prompt, dcfg.template) == (VARIANTS[1]["instruction"],
                                                                     VARIANTS[1]["system_prompt"], "chat")
    assert ecfg == {"max_new_tokens": 3, "batch_size": 2}
    assert h.variant_inputs("base", "d", {"x": 1}) == ("d", {"x": 1})


def test_a_reworded_description_is_not_a_changed_protocol(tmp_path):
    from neurorit_lens.experiments.protocol import check_protocol

    old = cm.load_config(_write_cfg(tmp_path, **_old_cfg()))
    path = tmp_path / "protocol.json"
    check_protocol(path, dict(old, description="first words"))
    assert check_protocol(path, dict(old, description="corrected words"))["config"]["description"] == "first words"
    with pytest.raises(ValueError, match="protocol differs"):
        check_protocol(path, dict(old, description="corrected words", seeds=[5]))


def test_amendment_accepts_only_additions(tmp_path):
    from neurorit_lens.experiments.protocol import amendment, check_protocol

    old = cm.load_config(_write_cfg(tmp_path, **_old_cfg()))
    path = tmp_path / "protocol.json"
    check_protocol(path, old)
    new = dict(old, methods=["base", "prompted", "clean", "layers"], prompted_variants=VARIANTS,
               contrasts=[*old["contrasts"], ["prompted", "base"]])
    with pytest.raises(ValueError, match="protocol differs"):
        check_protocol(path, new)
    proto = check_protocol(path, new, amend=True)
    assert proto["amendments"][0]["added"]["prompted_variants"] == ["short", "terse"]
    assert check_protocol(path, new)["amendments"] == proto["amendments"]  # the amended config now resumes as is
    more = dict(new, prompted_variants=[*VARIANTS, {"name": "third"}])
    assert amendment(new, more, old["methods"]) == {"prompted_variants": ["third"]}
    refused = {"seeds": dict(new, seeds=[1]),
               "'methods'": dict(new, methods=["base", "prompted", "clean", "layers", "full"]),
               "name no method added": dict(new, contrasts=[*new["contrasts"], ["clean", "base"]]),
               "existing entries": dict(new, prompted_variants=VARIANTS[::-1]),
               "existing sets": dict(new, cross_test={})}
    new_with_cross = dict(new, cross_test={"x": {"data": "embedded:8"}})
    for match, cfg in refused.items():
        base = new_with_cross if match == "existing sets" else new
        with pytest.raises(ValueError, match=match):
            amendment(base, cfg, old["methods"])
    with pytest.raises(ValueError, match="cannot add"):
        check_protocol(path, dict(new, settings=["gold"]), amend=True)
    assert len(json.loads(path.read_text())["amendments"]) == 1  # a refused amendment writes nothing


def test_prompted_and_cross_config_errors(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        cm.load_config(_write_cfg(tmp_path, **_old_cfg(methods=["base", "prompted"], contrasts=[])))
    with pytest.raises(ValueError, match="unique"):
        cm.load_config(_write_cfg(tmp_path, **_old_cfg(prompted_variants=[{"name": "a"}, {"name": "a"}],
                                                       methods=["base", "prompted"], contrasts=[])))
    with pytest.raises(ValueError, match="unknown key"):
        cm.load_config(_write_cfg(tmp_path, **_old_cfg(prompted_variants=[{"name": "a", "lr": 1}],
                                                       methods=["base", "prompted"], contrasts=[])))
    with pytest.raises(BAD_CHOICE):
        cm.load_config(_write_cfg(tmp_path, **_old_cfg(prompted_variants=[{"name": "a", "template": "fancy"}],
                                                       methods=["base", "prompted"], contrasts=[])))
    with pytest.raises(ValueError, match="name of its own"):
        cm.load_config(_write_cfg(tmp_path, **_old_cfg(cross_test={"emb_a": {"data": "embedded:8"}})))
    with pytest.raises(ValueError, match="setting"):
        cm.load_config(_write_cfg(tmp_path, **_old_cfg(cross_test={"x": {"data": "embedded:8", "settings": ["gld"]}})))
    # a setting the set lists itself but cannot build is an error (inherited ones are skipped and logged)
    cfg = cm.load_config(_write_cfg(tmp_path, **_old_cfg(cross_test={"x": {"data": _rgb_file(
        tmp_path / "x.json", "Vey", False), "settings": ["gold", "counterfactual"]}})))
    with pytest.raises(ValueError, match="counterfactual"):
        cm.Harness(cfg, tmp_path / "run", progress=False).load_data()
