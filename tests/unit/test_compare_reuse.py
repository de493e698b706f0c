"""The comparison harness (neurorit_lens.experiments) ``--reuse``: a new run folder takes from an earlier one the
trainings with an identical TrainConfig (under any run name), their evaluations, base's and
the mined neurons, and refuses a folder whose data or evaluation differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurorit_lens.experiments import harness as cm
from tests.unit.test_compare_amend_grid import _fake, _load
from tests.unit.test_compare_methods import TINY


def _cfg(**changes) -> dict:
    return {**TINY, "datasets": {"emb_a": {"data": "embedded:40"}}, "settings": ["gold", "gold+2"],
            "methods": ["base", "clean", "neurorit"], "contrasts": [["neurorit", "clean"]], "extra_seeds": [],
            "lr_grid": {"default": [1e-3]}, **changes}


def _with_config(monkeypatch) -> dict[str, list]:
    """The stand-ins of test_compare_amend_grid behind the real ``eval_unit`` (its fake
    evaluation computes a unit), with ``train.json`` recording the TrainConfig as real
    training does (``config``)."""
    import neurorit_lens.training.methods as methods
    from neurorit_lens.io import atomic_write_json, read_json

    real_eval_unit = cm.Harness.eval_unit
    calls = _fake(monkeypatch)
    fake_train, fake_eval = methods.train, cm.Harness.eval_unit
    monkeypatch.setattr(cm.Harness, "evaluate", fake_eval)  # the real eval_unit's shortcuts (reuse) stay
    monkeypatch.setattr(cm.Harness, "eval_unit", real_eval_unit)

    def train(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw):
        fake_train(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw)
        atomic_write_json(d / "train.json", read_json(d / "train.json") | {"config": tcfg.to_dict()})

    monkeypatch.setattr(methods, "train", train)
    return calls


def _run(tmp_path: Path, cfg: dict, out: str, reuse: list[Path] | None = None, name: str = "cfg.json") -> dict:
    h = cm.Harness(_load(tmp_path, cfg, name), tmp_path / out, progress=False, results=tmp_path / f"r_{out}",
                   reuse=reuse)
    h.load_data()
    return h.run()


def test_reuse_takes_identical_trainings_under_any_name_and_their_evaluations(tmp_path, monkeypatch):
    calls = _with_config(monkeypatch)
    old = tmp_path / "old"
    _run(tmp_path, _cfg(), "old")
    assert [t.method for t in calls["train"]] == ["clean", "neurorit"]
    calls["train"].clear()
    calls["eval"].clear()
    grid = {"neurorit": [{"name": "plain"}, {"name": "s1", "stage1_lr": 3e-3}]}
    new_cfg = _cfg(lr_grid={"default": [1e-3], "neurorit": [1e-3, 1e-2]}, train_grid=grid)
    h = cm.Harness(_load(tmp_path, new_cfg, "new.json"), tmp_path / "new", progress=False, reuse=[old])
    h.load_data()
    assert h.reuse_plan() == {"first_seed_trainings": 5, "reusable": {
        "clean/lr=0.001/seed=0": f"{old}/train/clean/lr=0.001/seed=0",
        "neurorit/lr=0.001+plain/seed=0": f"{old}/train/neurorit/lr=0.001/seed=0"}}
    rep = _run(tmp_path, new_cfg, "new", reuse=[old], name="new.json")
    new = tmp_path / "new"
    # clean and neurorit at 1e-3 without overrides are the old runs; the other 3 candidates are trained
    assert sorted((t.lr, t.stage1_lr or 0.0) for t in calls["train"]) == [(1e-3, 3e-3), (1e-2, 0.0), (1e-2, 3e-3)]
    origin = json.loads((new / "train" / "neurorit/lr=0.001+plain/seed=0" / "reused_from.json").read_text())
    assert origin == {"folder": str(old), "run": "neurorit/lr=0.001/seed=0"}
    linked = new / "train" / "neurorit/lr=0.001+plain/seed=0" / "model" / "neurorit_model.json"
    assert linked.stat().st_ino == (old / "train" / "neurorit/lr=0.001/seed=0/model/neurorit_model.json").stat().st_ino
    # base's and clean's test units are copied; the old run had no dev pass, so neurorit's dev units are computed
    assert not [c for c in calls["eval"] if c[0] in ("base", "clean/lr=0.001/seed=0")]
    assert ("neurorit/lr=0.001+plain/seed=0", "dev", "emb_a", "gold+2") in calls["eval"]
    for run, src in (("base", "base"), ("clean/lr=0.001/seed=0", "clean/lr=0.001/seed=0")):
        for s in ("gold", "gold+2"):
            a = json.loads((new / "eval" / run / "test" / "emb_a" / f"{s}.json").read_text())
            b = json.loads((old / "eval" / src / "test" / "emb_a" / f"{s}.json").read_text())
            assert a["records"] == b["records"] and a["reused_from"] == {"folder": str(old), "run": src}
    units = json.loads((new / "reused.json").read_text())["units"]
    assert {(u["kind"], u["unit"]) for u in units if u["kind"] == "train"} == {
        ("train", "clean/lr=0.001/seed=0"), ("train", "neurorit/lr=0.001+plain/seed=0")}
    assert rep["reused"] == units and "Reused from earlier run folders" in (new / "results.md").read_text()
    # a third folder finds every training and every unit in the two earlier ones: neurorit 1e-3's
    # model comes from the first, its dev units (which the first lacks) from the second
    calls["train"].clear()
    calls["eval"].clear()
    _run(tmp_path, new_cfg, "third", reuse=[old, new], name="new.json")
    assert not calls["train"] and not calls["eval"]
    dev = json.loads((tmp_path / "third/eval/neurorit/lr=0.001+plain/seed=0/dev/emb_a/gold+2.json").read_text())
    assert dev["reused_from"] == {"folder": str(new), "run": "neurorit/lr=0.001+plain/seed=0"}
    # a rerun finds everything done
    calls["train"].clear()
    calls["eval"].clear()
    _run(tmp_path, new_cfg, "new", reuse=[old], name="new.json")
    assert not calls["train"] and not calls["eval"]


def test_reuse_refuses_a_folder_with_other_data_or_evaluation(tmp_path, monkeypatch):
    _with_config(monkeypatch)
    _run(tmp_path, _cfg(), "old")
    for changes, key in (({"n_passages": 4}, "n_passages"), ({"eval": {**TINY["eval"], "max_new_tokens": 5}}, "eval"),
                         ({"datasets": {"emb_a": {"data": "embedded:41"}}}, "datasets")):
        with pytest.raises(ValueError, match=f"differs in \\['{key}'\\]"):
            _run(tmp_path, _cfg(**changes), f"new_{key}", reuse=[tmp_path / "old"], name=f"{key}.json")
    with pytest.raises(ValueError, match="no protocol.json"):
        _run(tmp_path, _cfg(), "new_x", reuse=[tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="this run's own folder"):
        _run(tmp_path, _cfg(), "old", reuse=[tmp_path / "old"])
    # settings may differ (a unit is one data set and setting)
    _run(tmp_path, _cfg(settings=["gold"]), "new_gold", reuse=[tmp_path / "old"], name="gold.json")


def test_a_changed_train_config_is_trained_again(tmp_path, monkeypatch):
    calls = _with_config(monkeypatch)
    _run(tmp_path, _cfg(methods=["base", "clean"], contrasts=[]), "old")
    calls["train"].clear()
    _run(tmp_path, _cfg(methods=["base", "clean"], contrasts=[], train={**TINY["train"], "warmup_steps": 0}), "new",
         reuse=[tmp_path / "old"], name="new.json")
    assert [t.method for t in calls["train"]] == ["clean"]
    assert not (tmp_path / "new" / "train" / "clean/lr=0.001/seed=0" / "reused_from.json").exists()


def test_a_recorded_config_without_a_later_field_matches_its_default():
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.experiments.reuse import train_config_key

    full = TrainConfig(method="layers", lr=3e-4).to_dict()
    old = {k: v for k, v in full.items() if k != "gate_penalty"}  # recorded before the field existed
    assert train_config_key(old) == train_config_key(full)
    assert train_config_key({**old, "gate_penalty": 0.5}) != train_config_key(full)
    assert train_config_key({**full, "lr": 1e-3}) != train_config_key(full)
    unknown = {**full, "removed_field": 1}  # a field today's class no longer has: compared as recorded
    assert train_config_key(unknown) == json.loads(json.dumps(unknown)) != train_config_key(full)


def test_a_neurorit_run_recorded_before_stage2_data_is_not_taken_for_a_fair_one():
    """Runs recorded before ``stage2_data`` existed re-read stage 1's items in stage 2."""
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.experiments.reuse import train_config_key

    full = TrainConfig(method="neurorit", lr=3e-4).to_dict()
    old = {k: v for k, v in full.items() if k != "stage2_data"}
    assert train_config_key(old) != train_config_key(full)
    assert train_config_key(old) == train_config_key({**full, "stage2_data": "restart"})


def test_shipped_final_config_can_reuse_cpu_main_and_cpu_stage():
    from neurorit_lens.experiments.grid import candidates
    from neurorit_lens.experiments.reuse import reuse_mismatch

    root = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"
    main, stage, final = (cm.load_config(root / f"{n}.json") for n in ("cpu_main", "cpu_stage", "cpu_final"))
    assert reuse_mismatch(main, final) == [] and reuse_mismatch(stage, final) == []
    assert final["train"] == main["train"] and final["extra_seeds"] == [1]
    # every contending method trained on noisy contexts chooses the same two data variants on dev
    for m in ("neurorit", "layers", "full"):
        assert [(lr, v["name"]) for lr, v in candidates(final, m)] == [
            (lr, v) for lr in sorted(final["lr_grid"][m]) for v in ("gold", "drop")]
        assert len(final["lr_grid"][m]) == 2


def test_a_prompted_variant_without_overrides_copies_the_base_units(tmp_path, monkeypatch):
    from tests.unit.test_compare_amend_grid import SCORES

    calls = _with_config(monkeypatch)
    monkeypatch.setitem(SCORES, "prompted/same", 90)
    monkeypatch.setitem(SCORES, "prompted/short", 10)
    variants = [{"name": "same"}, {"name": "short", "max_new_tokens": 2}]
    _run(tmp_path, _cfg(methods=["base", "prompted"], contrasts=[["prompted", "base"]], prompted_variants=variants),
         "run")
    ran = {(c[0], c[1]) for c in calls["eval"]}
    # both variants are scored on dev (base has no dev units to copy); the chosen one's test units are base's
    assert {("prompted/same", "dev"), ("prompted/short", "dev"), ("base", "test")} == ran
    sel = json.loads((tmp_path / "run" / "selection" / "prompted.json").read_text())
    assert sel["chosen"] == "same"
    for s in ("gold", "gold+2"):
        a = json.loads((tmp_path / f"run/eval/prompted/same/test/emb_a/{s}.json").read_text())
        b = json.loads((tmp_path / f"run/eval/base/test/emb_a/{s}.json").read_text())
        assert a["records"] == b["records"] and a["same_as"] == "base" and a["run"] == "prompted/same"
