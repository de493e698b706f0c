"""The comparison harness (neurorit_lens.experiments): settings added by ``--amend`` (evaluated on the existing runs,
exploratory in the report) and the ``train_grid`` of TrainConfig variants chosen on dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurorit_lens.experiments import harness as cm
from neurorit_lens.experiments.protocol import amended_settings, amendment, check_protocol
from tests.unit.test_compare_methods import TINY, _rgb_file

ROOT = Path(__file__).resolve().parents[2]


def _old(tmp_path: Path, **changes) -> dict:
    """Two training data sets (one RGB-format set without counterfactual passages), base and clean."""
    plain = _rgb_file(tmp_path / "plainx.json", "Tavel", False)
    return {**TINY, "datasets": {"emb_a": {"data": "embedded:40"}, "plainx": {"data": plain, "format": "rgb"}},
            "settings": ["gold"], "methods": ["base", "clean"], "contrasts": [["clean", "base"]],
            "extra_seeds": [], "lr_grid": {"default": [1e-3]}, **changes}


def _amended(old: dict) -> dict:
    """``old`` + gold+2 and counterfactual appended globally, and irrelevant for emb_a only."""
    return {**old, "settings": ["gold", "gold+2", "counterfactual"],
            "datasets": {**old["datasets"], "emb_a": {"data": "embedded:40",
                                                      "settings": ["gold", "gold+2", "counterfactual", "irrelevant"]}}}


def _load(tmp_path: Path, cfg: dict, name: str = "cfg.json") -> dict:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return cm.load_config(path)


def _harness(tmp_path: Path, cfg: dict, amend: bool = False, name: str = "cfg.json") -> cm.Harness:
    h = cm.Harness(_load(tmp_path, cfg, name), tmp_path / "run", progress=False, results=tmp_path / "results",
                   amend=amend)
    h.load_data()
    return h


def test_amendment_appends_settings_and_refuses_other_setting_changes(tmp_path):
    old = _load(tmp_path, _old(tmp_path))
    new = _load(tmp_path, _amended(old), "new.json")
    assert amendment(old, new, old["methods"]) == {"settings": ["gold+2", "counterfactual"],
                                                   "datasets.emb_a.settings": ["gold+2", "counterfactual",
                                                                               "irrelevant"]}
    path = tmp_path / "protocol.json"
    check_protocol(path, old)
    proto = check_protocol(path, new, amend=True)
    assert amended_settings(proto) == {"emb_a": ["gold+2", "counterfactual", "irrelevant"],
                                       "plainx": ["gold+2", "counterfactual"]}
    more = dict(new, settings=[*new["settings"], "irrelevant"])
    assert amendment(new, more, old["methods"]) == {"settings": ["irrelevant"]}  # emb_a keeps its own list
    emb = new["datasets"]["emb_a"]
    refused = {
        "'settings'": dict(new, settings=["gold+2", "gold", "counterfactual"]),  # reordered
        "listed twice": dict(new, settings=[*new["settings"], "gold"]),
        "'selection' changed": dict(new, selection={**new["selection"], "settings": ["gold"]}),
        "'datasets.emb_a.settings' removed": dict(new, datasets={**new["datasets"], "emb_a": {"data": emb["data"]}}),
        "'datasets.emb_a.settings'": dict(new, datasets={**new["datasets"], "emb_a": {**emb, "settings": ["gold"]}}),
        "'datasets.emb_a': changed": dict(new, datasets={**new["datasets"], "emb_a": {**emb, "data": "embedded:41"}}),
        "'datasets': data sets added": dict(new, datasets={"emb_a": emb}),
    }
    for match, cfg in refused.items():
        with pytest.raises(ValueError, match=match):
            amendment(new, cfg, old["methods"])
    # a data set's own list added: the settings it inherited must come first
    with pytest.raises(ValueError, match="'datasets.plainx.settings'"):
        amendment(old, dict(old, datasets={**old["datasets"], "plainx": {**old["datasets"]["plainx"],
                                                                          "settings": ["gold+2"]}}), old["methods"])


def _fake(monkeypatch) -> dict[str, list]:
    """Stand-ins for training and evaluation (no model is loaded): a training run writes its
    ``train.json`` and model marker and records its TrainConfig; an evaluation writes 0/1
    answers that depend on the run, question and setting only (``SCORES`` shifts a run's).
    Returns the training configurations and the evaluation units that ran."""
    import hashlib

    import neurorit_lens.training.methods as methods
    from neurorit_lens.io import atomic_write_json
    from neurorit_lens.statistics import wilson_interval

    calls: dict[str, list] = {"train": [], "eval": []}

    def train(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw):
        calls["train"].append(tcfg)
        atomic_write_json(d / "model" / "neurorit_model.json", {})
        atomic_write_json(d / "train.json", {"wall_s": 1.0, "stage_steps": {tcfg.method: tcfg.steps},
                                             "steps": tcfg.steps, "trainable_params": 1, "trainable_fraction": 0.5})

    def eval_unit(self, run, split, dataset, setting):
        path = self.eval_path(run, split, dataset, setting)
        if path.exists():
            return json.loads(path.read_text())
        calls["eval"].append((run, split, dataset, setting))
        recs = []
        for ex in self.examples[dataset][split]:
            h = int(hashlib.sha256(f"{run}|{ex.id}|{setting}".encode()).hexdigest(), 16)
            recs.append({"id": ex.id, "accuracy": float(h % 100 < SCORES.get(run, 50)), "logprob": -(h % 7) / 2})
        k, n = int(sum(r["accuracy"] for r in recs)), len(recs)
        blob = {"run": run, "split": split, "dataset": dataset, "setting": setting, "wall_s": 0.5, "records": recs,
                "summary": {"n": n, "accuracy": k / n, "accuracy_wilson": list(wilson_interval(k, n)), "em": 0.0,
                            "f1": 0.0, "copy_rate": 0.0, "label": setting}}
        atomic_write_json(path, blob)
        return blob

    monkeypatch.setattr(methods, "train", train)
    monkeypatch.setattr(cm.Harness, "eval_unit", eval_unit)
    monkeypatch.setattr(cm.Harness, "neurons", lambda self: None)  # no mining output
    monkeypatch.setattr(cm.Harness, "base", property(lambda self: object()))
    return calls


SCORES: dict[str, int] = {}  # run -> percent of questions the fake evaluation answers right


def test_amended_settings_run_on_existing_runs_without_training_and_are_exploratory(tmp_path, monkeypatch):
    calls = _fake(monkeypatch)
    out = tmp_path / "run"
    old = _harness(tmp_path, _old(tmp_path))
    rep0 = old.run()
    assert len(calls["train"]) == 1 and {c[1] for c in calls["eval"]} == {"test"}
    mtimes = {p: p.stat().st_mtime_ns for d in ("eval", "train", "selection") for p in (out / d).rglob("*")
              if p.is_file()}
    md0 = (out / "results.md").read_text()
    with pytest.raises(ValueError, match="protocol differs"):
        _harness(tmp_path, _amended(old.cfg), name="amend.json").protocol()
    h = _harness(tmp_path, _amended(old.cfg), amend=True, name="amend.json")
    assert h.amended == {"emb_a": ["gold+2", "counterfactual", "irrelevant"], "plainx": ["gold+2"]}
    assert h.skipped == {"plainx": {"counterfactual": {"no_counterfactual": 1}}}
    plan = h.plan()["amended_settings"]
    assert plan["test_generations"] == 2 * (3 * 5 + 1) and plan["units_done"] == 0
    assert plan["skipped_settings"] == h.skipped
    calls["eval"].clear()
    rep = h.run()
    assert len(calls["train"]) == 1 and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert sorted(calls["eval"]) == sorted((run, "test", d, s) for run in ("base", "clean/lr=0.001/seed=0")
                                           for d, v in h.amended.items() for s in v)  # test only, no dev
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["amendments"][0]["added"] == {"settings": ["gold+2", "counterfactual"],
                                               "datasets.emb_a.settings": ["gold+2", "counterfactual", "irrelevant"]}
    # every row at an amended setting is exploratory (pooled gold+2 too); the declared rows are unchanged
    declared = {("emb_a", "gold"), ("plainx", "gold"), ("pooled", "gold")}
    for key in ("accuracy", "contrasts"):
        assert all(r.get("exploratory", False) == ((r["dataset"], r["setting"]) not in declared) for r in rep[key])
    assert {(r["dataset"], r["setting"]) for r in rep["contrasts"] if r.get("exploratory")} == {
        ("emb_a", "gold+2"), ("emb_a", "counterfactual"), ("emb_a", "irrelevant"), ("plainx", "gold+2"),
        ("pooled", "gold+2")}
    assert all("p_holm" not in r for r in rep["contrasts"] if r.get("exploratory"))
    assert cm._clean([r for r in rep["contrasts"] if not r.get("exploratory")]) == cm._clean(rep0["contrasts"])
    assert cm._clean([r for r in rep["accuracy"] if not r.get("exploratory")]) == cm._clean(rep0["accuracy"])
    assert rep["gaps"] and all(g["exploratory"] for g in rep["gaps"])  # every gap is at an amended setting here
    assert rep["settings_exploratory"]["pooled"] == ["gold+2"]
    assert rep["skipped_settings"] == {"plainx": {"counterfactual": {"no_counterfactual": 1}}}
    md = (out / "results.md").read_text()
    assert "Settings added by amendment (exploratory" in md and "(gold+2) (exploratory)" in md
    assert "plainx: counterfactual" in md and md != md0
    # the amended configuration resumes with nothing to do and the same report
    calls["eval"].clear()
    rep2 = _harness(tmp_path, _amended(old.cfg), name="amend.json").run()
    assert not calls["eval"] and len(calls["train"]) == 1
    assert cm._clean(rep2["contrasts"]) == cm._clean(rep["contrasts"])


def test_amend2_config_is_cpu_main_amend_plus_settings():
    first, amend, amend2 = (cm.load_config(ROOT / "benchmarks" / "configs" / f"{n}.json")
                            for n in ("cpu_main", "cpu_main_amend", "cpu_main_amend2"))
    assert amendment(amend, amend2, first["methods"]) == {
        "settings": ["gold+2", "irrelevant"],
        "datasets.embedded.settings": ["gold+2", "irrelevant", "counterfactual"]}
    added = amendment(first, amend2, first["methods"])  # also valid straight after cpu_main
    assert added["methods"] == ["prompted"] and added["settings"] == ["gold+2", "irrelevant"]
    assert amend2["selection"] == first["selection"]


# --- train_grid: TrainConfig variants chosen on dev ------------------------------------------------
GRID = {"neurorit": [{"name": "a"}, {"name": "b", "stage1_lr": 3e-3, "stage_schedule": "continuous"}]}


def _grid_cfg(tmp_path: Path, **changes) -> dict:
    return {**TINY, "datasets": {"emb_a": {"data": "embedded:40"}}, "methods": ["base", "neurorit"],
            "contrasts": [], "extra_seeds": [], "lr_grid": {"default": [1e-3]}, "train_grid": GRID,
            "dev_only": True, **changes}


def test_train_grid_validation_errors(tmp_path):
    from tests.helpers import BAD_CHOICE

    def bad(**grid_or_changes):
        return _load(tmp_path, _grid_cfg(tmp_path, **grid_or_changes))

    cases = {"'stage1_lrr' is not a TrainConfig field": {"neurorit": [{"name": "a", "stage1_lrr": 1e-3}]},
             "'steps' may not vary": {"neurorit": [{"name": "a", "steps": 3}]},
             "'seed' may not vary": {"neurorit": [{"name": "a", "seed": 3}]},
             "'lr' may not vary": {"neurorit": [{"name": "a", "lr": 3e-3}]},
             "not a trained method": {"base": [{"name": "a"}]},
             "unique": {"neurorit": [{"name": "a"}, {"name": "a", "stage1_lr": 1e-3}]},
             "'name'": {"neurorit": [{"name": "a/b"}]},
             "non-empty list": {"neurorit": []}}
    for match, grid in cases.items():
        with pytest.raises(ValueError, match=match):
            bad(train_grid=grid)
    with pytest.raises(BAD_CHOICE):
        bad(train_grid={"neurorit": [{"name": "a", "stage_schedule": "shared"}]})
    with pytest.raises(ValueError, match="dev_only"):
        bad(extra_seeds=[1])
    with pytest.raises(ValueError, match="'train_grid' changed"):
        amendment(bad(), bad(train_grid={"neurorit": [*GRID["neurorit"], {"name": "c"}]}), ["base", "neurorit"])


def test_candidates_follow_the_rule_order_and_ties_go_to_the_first():
    from neurorit_lens.experiments.grid import candidate_key, candidates, choose

    cfg = {"lr_grid": {"neurorit": [1e-2, 1e-3]}, "train_grid": GRID}
    cands = candidates(cfg, "neurorit")
    assert [candidate_key(*c) for c in cands] == ["0.001+a", "0.001+b", "0.01+a", "0.01+b"]
    assert choose(cands, {}) == 0 and choose(cands, {"0.01+a": 0.5, "0.01+b": 0.5}) == 2
    assert choose(cands, {"0.001+a": 0.2, "0.001+b": 0.3, "0.01+a": 0.3, "0.01+b": 0.1}) == 1
    # without a train_grid: today's candidates, keys and run names
    assert candidates({"lr_grid": {"default": [3e-4, 1e-4]}}, "layers") == [(1e-4, None), (3e-4, None)]
    assert candidate_key(3e-4) == "0.0003" and cm.run_name("layers", 3e-4, 0) == "layers/lr=0.0003/seed=0"
    assert cm.run_name("neurorit", 3e-4, 0, "s1lr1e-3") == "neurorit/lr=0.0003+s1lr1e-3/seed=0"


def test_dev_only_selection_over_two_variants_picks_by_the_rule(tmp_path, monkeypatch):
    from neurorit_lens.experiments.grid import RULE_GRID

    calls = _fake(monkeypatch)
    runs = {v: f"neurorit/lr=0.001+{v}/seed=0" for v in "ab"}
    monkeypatch.setitem(SCORES, runs["a"], 10)
    monkeypatch.setitem(SCORES, runs["b"], 90)
    h = _harness(tmp_path, _grid_cfg(tmp_path))
    assert h.plan()["test_generations"] == 0 and h.plan()["dev_generations"] == 3 * 3  # base + 2 variants
    rep = h.run()
    out = tmp_path / "run"
    assert [(t.stage1_lr, t.stage_schedule, t.lr) for t in calls["train"]] == [(None, "per_stage", 1e-3),
                                                                               (3e-3, "continuous", 1e-3)]
    assert all((out / "train" / r / "train.json").exists() for r in runs.values())
    assert {c[1] for c in calls["eval"]} == {"dev"} and {c[0] for c in calls["eval"]} == {"base", *runs.values()}
    sel = json.loads((out / "selection" / "neurorit.json").read_text())
    dev = {v: [r["accuracy"] for r in json.loads((out / "eval" / r / "dev" / "emb_a" / "gold+2.json").read_text())
               ["records"]] for v, r in runs.items()}
    assert sel["dev_scores"] == {f"0.001+{v}": sum(x) / len(x) for v, x in dev.items()}
    want = "b" if sel["dev_scores"]["0.001+b"] > sel["dev_scores"]["0.001+a"] else "a"
    assert sel["chosen"] == f"0.001+{want}" and sel["chosen_variant"] == want and sel["rule"] == RULE_GRID
    assert sel["chosen_overrides"] == {k: v for k, v in GRID["neurorit"]["ab".index(want)].items() if k != "name"}
    assert rep["dev_only"] and rep["selection"]["neurorit"] == sel and isinstance(rep["base_dev_score"], float)
    md = (out / "results.md").read_text()
    assert "No test question was evaluated" in md and "0.001+b" in md
    # a tie goes to the first declared variant (every fake answer wrong: both score 0)
    monkeypatch.setitem(SCORES, runs["a"], 0)
    monkeypatch.setitem(SCORES, runs["b"], 0)
    tie = cm.Harness(h.cfg, tmp_path / "tie", progress=False, results=tmp_path / "r2")
    tie.load_data()
    assert tie.run()["selection"]["neurorit"]["chosen_variant"] == "a"


def test_without_train_grid_run_names_selection_files_and_rule_are_todays(tmp_path, monkeypatch):
    from neurorit_lens.experiments.protocol import RULE

    _fake(monkeypatch)
    cfg = _grid_cfg(tmp_path, methods=["base", "clean"], dev_only=False)
    cfg.pop("train_grid")
    cfg.pop("dev_only")
    h = _harness(tmp_path, cfg)
    h.run()
    assert [p.relative_to(tmp_path / "run" / "train").as_posix() for p in (tmp_path / "run" / "train").glob("*/*/*")] \
        == ["clean/lr=0.001/seed=0"]
    sel = json.loads((tmp_path / "run" / "selection" / "clean.json").read_text())
    assert list(sel) == ["method", "seed", "dev_scores", "chosen", "chosen_lr", "rule", "settings"]
    assert sel["rule"] == RULE and sel["chosen"] == "0.001"
    for name in ("cpu_main", "cpu_small", "cpu_main_amend", "cpu_main_amend2"):
        assert cm.load_config(ROOT / "benchmarks" / "configs" / f"{name}.json")["selection"]["rule"] == RULE


def test_schedule_mass_of_the_continuous_schedule_is_that_of_one_stage():
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.training.trainer import lr_factor

    one = [lr_factor(s, 32, 3) for s in range(32)]  # a naive loop over one warmup + cosine of 32 steps
    cont = TrainConfig(warmup_steps=3, stage_schedule="continuous")
    assert cm.schedule_mass(cont, {"stage1": 16, "stage2": 16}) == pytest.approx(sum(one))
    per = TrainConfig(warmup_steps=3)
    assert cm.schedule_mass(per, {"stage1": 16, "stage2": 16}) == pytest.approx(
        2 * sum(lr_factor(s, 16, 3) for s in range(16)))


def test_cpu_stage_and_gpu_configs():
    from neurorit_lens.experiments.grid import candidates

    main, stage, gpu = (cm.load_config(ROOT / "benchmarks" / "configs" / f"{n}.json")
                        for n in ("cpu_main", "cpu_stage", "gpu"))
    assert stage["dev_only"] and stage["methods"] == ["base", "layers", "neurorit"]
    same = ("datasets", "split_fractions", "data_seed", "n_passages", "max_prompt_tokens", "template",
            "n_distractors", "train_limit", "dev_limit", "test_limit", "train", "mining", "mine_limit", "eval")
    assert {k: stage[k] for k in same} == {k: main[k] for k in same}
    assert stage["selection"]["settings"] == main["selection"]["settings"]
    variants = stage["train_grid"]["neurorit"]
    assert len(variants) <= 6 and variants[0] == {"name": "default"}
    assert all(len(v) <= 2 for v in variants)  # one factor at a time around today's default
    assert len(candidates(gpu, "neurorit")) == 3 * 18 and len(candidates(gpu, "layers")) == 3


def test_report_so_far_rewrites_results_from_finished_units_only(tmp_path, monkeypatch):
    calls = _fake(monkeypatch)
    out = tmp_path / "run"
    rep = _harness(tmp_path, _old(tmp_path)).run()
    md = (out / "results.md").read_text()
    (out / "results.md").unlink()
    (out / "results.json").unlink()
    calls["train"].clear()
    calls["eval"].clear()
    h = _harness(tmp_path, _old(tmp_path))
    h.protocol(write=False)
    again = h.report_so_far()
    assert not calls["train"] and not calls["eval"]  # nothing trained or evaluated
    assert cm._clean(again["contrasts"]) == cm._clean(rep["contrasts"])
    assert (out / "results.md").read_text() == md
    # a method whose dev choice is not on disk yet is left out, not chosen again
    (out / "selection" / "clean.json").unlink()
    partial = _harness(tmp_path, _old(tmp_path))
    partial.protocol(write=False)
    rows = partial.report_so_far()["accuracy"]
    assert {r["method"] for r in rows} == {"base"} and not calls["eval"]
