"""``neurorit compare``: the typed configuration (JSON or TOML), the protocol written before any
unit, the stage records shared with the runner, and run folders of the earlier harness resumed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from neurorit_lens.cli.main import main
from neurorit_lens.experiments import harness as cm
from neurorit_lens.io import read_json
from neurorit_lens.stages import STAGE_FILE, open_stage, read_record, run_stage
from tests.unit.test_compare_amend_grid import _old
from tests.unit.test_compare_methods import TINY
from tests.unit.test_compare_reuse import _with_config


# --- the shared stage rule ---------------------------------------------------------------------
def test_run_stage_skips_resumes_restarts_adopts_and_refuses(tmp_path):
    ran: list[str] = []

    def work(tag: str):
        def fn():
            ran.append(tag)
            (d / "out.json").write_text("{}")
        return fn

    d = tmp_path / "s"
    assert run_stage(d, {"a": 1}, ["out.json"], work("first"))
    assert not run_stage(d, {"a": 1}, ["out.json"], work("again"))  # current and complete: skipped
    assert read_record(d)["complete"] and ran == ["first"]
    (d / "keep.txt").write_text("checkpoint")
    (d / "out.json").unlink()  # current but its output gone: run again in place
    assert run_stage(d, {"a": 1}, ["out.json"], work("resumed")) and (d / "keep.txt").exists()
    assert run_stage(d, {"a": 2}, ["out.json"], work("stale")) and not (d / "keep.txt").exists()  # restart
    with pytest.raises(ValueError, match="other inputs"):
        run_stage(d, {"a": 3}, ["out.json"], work("x"), stale="refuse")
    (d / STAGE_FILE).unlink()  # a folder from before the records: adopted as it is
    assert not run_stage(d, {"a": 3}, ["out.json"], work("x"), unrecorded="adopt")
    assert read_record(d)["adopted"] and ran == ["first", "resumed", "stale"]
    (d / STAGE_FILE).unlink()  # ... or (runner) removed and run afresh
    assert run_stage(d, {"a": 3}, ["out.json"], work("fresh")) and ran[-1] == "fresh"
    e = tmp_path / "e"
    open_stage(e, {"b": 1})
    (e / "unit.json").write_text("{}")
    open_stage(e, {"b": 1})
    assert (e / "unit.json").exists()
    with pytest.raises(ValueError, match="other inputs"):
        open_stage(e, {"b": 2}, stale="refuse")


# --- the typed configuration -------------------------------------------------------------------
def _write(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**TINY, **changes}))
    return path


@pytest.mark.parametrize(("changes", "match"), [
    ({"n_passages": "5"}, r"n_passages: expected an integer, got '5'"),
    ({"logprob": 1}, r"logprob: expected bool"),
    ({"seeds": [0, 1.5]}, r"seeds\[1\]: expected an integer"),
    ({"datasets": {"emb_a": {"data": "embedded:40", "fromat": "rgb"}}}, r"unknown key.*datasets\.emb_a\.fromat"),
    ({"datasets": {"emb_a": {"data": "embedded:40", "format": "csv"}}}, r"datasets\.emb_a\.format: unknown value"),
    ({"train": {**TINY["train"], "steps": 2.5}}, r"train\.steps: expected an integer"),
    ({"train": {**TINY["train"], "stpes": 2}}, r"train: unknown key.*stpes"),
    ({"train": {**TINY["train"], "steps": 0}}, r"train: .*steps"),
    ({"eval": {"max_new_tokens": "4"}}, r"eval\.max_new_tokens: expected an integer"),
    ({"split_fractions": [0.5, 0.5]}, r"split_fractions: expected a list of 3"),
    ({"planning_discordance": 2}, r"planning_discordance: must be in"),
    ({"test_limit": 0}, r"test_limit: must be >= 1"),
    ({"template": "fancy"}, r"template: unknown value 'fancy'"),
    ({"lr_grid": {"default": ["1e-3"]}}, r"lr_grid\.default\[0\]: expected a finite number"),
    ({"selection": {"setting": ["gold"]}}, r"unknown key.*selection\.setting"),
])
def test_each_bad_key_is_one_error_naming_it(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        cm.load_config(_write(tmp_path, **changes))


def test_train_grid_variants_take_any_train_config_field(tmp_path):
    grid = {"neurorit": [{"name": "cont", "stage_schedule": "continuous", "deactivation": "zero"},
                         {"name": "abstain", "irrelevant_target": "abstain", "stage1_lr": 3e-3}]}
    cfg = cm.load_config(_write(tmp_path, train_grid=grid, extra_seeds=[]))
    assert cfg["train_grid"] == grid
    with pytest.raises(ValueError, match=r"train_grid\.neurorit\.a\.stage1_lr: expected a finite number"):
        cm.load_config(_write(tmp_path, train_grid={"neurorit": [{"name": "a", "stage1_lr": "big"}]}))


def test_toml_reads_as_the_same_configuration(tmp_path):
    cfg = {"name": "t", "model": "tiny", "settings": ["gold"], "methods": ["base", "clean"],
           "contrasts": [["clean", "base"]], "seeds": [0], "n_passages": 3}
    toml = """name = "t"
model = "tiny"
settings = ["gold"]
methods = ["base", "clean"]
contrasts = [["clean", "base"]]
seeds = [0]
n_passages = 3

[datasets.emb_a]
data = "embedded:40"

[lr_grid]
default = [1e-3]

[train]
steps = 2

[selection]
settings = ["gold"]
"""
    (tmp_path / "c.toml").write_text(toml)
    (tmp_path / "c.json").write_text(json.dumps({**cfg, "datasets": {"emb_a": {"data": "embedded:40"}},
                                                 "lr_grid": {"default": [1e-3]}, "train": {"steps": 2},
                                                 "selection": {"settings": ["gold"]}}))
    assert cm.load_config(tmp_path / "c.toml") == cm.load_config(tmp_path / "c.json")
    (tmp_path / "bad.toml").write_text(toml.replace("n_passages = 3", "n_passages = '3'"))
    with pytest.raises(ValueError, match="n_passages: expected an integer"):
        cm.load_config(tmp_path / "bad.toml")


def test_cli_errors_and_plan(tmp_path, capsys):
    path = _write(tmp_path, n_passages="5")
    assert main(["compare", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "n_passages: expected an integer" in capsys.readouterr().err
    path = _write(tmp_path, methods=["base", "clean"], contrasts=[["clean", "base"]], extra_seeds=[])
    assert main(["compare", str(path), "--out", str(tmp_path / "run"), "--plan", "--no-progress"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["training_runs"] == 1 and not (tmp_path / "run" / "protocol.json").exists()


# --- the protocol first, and run folders of the earlier harness -------------------------------
def test_the_protocol_is_written_before_any_unit(tmp_path, monkeypatch):
    import neurorit_lens.training.methods as methods

    calls = _with_config(monkeypatch)
    out = tmp_path / "run"
    h = cm.Harness(cm.load_config(_write(tmp_path, methods=["base", "clean"], contrasts=[["clean", "base"]],
                                         extra_seeds=[])), out, progress=False)
    h.load_data()
    with pytest.raises(RuntimeError, match="before any unit"):
        h.train_unit("clean", 1e-3, 0)
    seen = []
    fake = methods.train
    monkeypatch.setattr(methods, "train", lambda *a, **k: (seen.append((out / "protocol.json").exists()),
                                                           fake(*a, **k)))
    h.run()
    assert seen == [True] and len(calls["train"]) == 1


def _files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "harness.log"}


def test_a_run_folder_of_the_earlier_harness_resumes_under_the_new_command(tmp_path, monkeypatch):
    """The earlier harness (benchmarks/compare_methods.py) wrote exactly the files of today's run
    folder but the ``stage.json`` records: protocol.json, selection/, mining/, train/<run>/
    (train.json, model/, checkpoints under runs/ while unfinished) and eval/<run>/<split>/<data
    set>/<setting>.json. Such a folder, one of its trainings cut short, resumes: the unfinished
    training goes on from its checkpoints, nothing finished is trained or evaluated again."""
    calls = _with_config(monkeypatch)
    cfg = _old(tmp_path, methods=["base", "clean", "neurorit"], contrasts=[["neurorit", "clean"]],
               lr_grid={"default": [1e-3], "neurorit": [1e-3, 1e-2]}, extra_seeds=[1])
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "run"
    argv = ["compare", str(path), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    n_train, n_eval = len(calls["train"]), len(calls["eval"])
    assert n_train == 5 and n_eval > 0  # clean, neurorit x 2 LRs, 2 extra seeds
    # the earlier harness's folder: no stage records, one training killed before it finished
    for rec in out.rglob(STAGE_FILE):
        rec.unlink()
    cut = out / "train" / "clean" / "lr=0.001" / "seed=1"  # the strongest baseline's extra seed
    shutil.rmtree(out / "eval" / "clean" / "lr=0.001" / "seed=1")  # not evaluated: its training was cut
    (cut / "train.json").unlink()
    (cut / "model" / "neurorit_model.json").unlink()
    (cut / "runs").mkdir()
    (cut / "runs" / "checkpoint.json").write_text("{}")
    before = _files(out)
    report = read_json(out / "results.json")

    import neurorit_lens.training.methods as methods

    fake = methods.train
    resumed = []

    def train(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw):
        resumed.append((d / "runs" / "checkpoint.json").exists() and kw.get("resume"))
        fake(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw)

    monkeypatch.setattr(methods, "train", train)
    assert main(argv) == 0
    assert resumed == [True] and len(calls["train"]) == n_train + 1  # the cut training only, from its checkpoint
    assert {c[0] for c in calls["eval"][n_eval:]} == {"clean/lr=0.001/seed=1"}  # and only its evaluations
    n_eval = len(calls["eval"])
    after = _files(out)
    changed = {p for p in before if after.get(p) != before[p]}
    rewritten = ("results.json", "results.md", "strongest_baseline.json")  # rewritten each run, as before
    bad = sorted(str(p.relative_to(out)) for p in changed if not (p.is_relative_to(cut) or p.name in rewritten))
    assert not bad, bad
    adopted = {str(p.parent.relative_to(out)) for p in out.rglob(STAGE_FILE) if read_json(p).get("adopted")}
    assert "train/neurorit/lr=0.001/seed=1" in adopted or "train/neurorit/lr=0.01/seed=1" in adopted  # extra seed
    assert read_record(out / "eval" / "base")["adopted"]
    assert read_json(out / "results.json")["contrasts"] == report["contrasts"]
    # a third run does nothing at all; a unit recorded under another protocol is refused
    stable = _files(out)
    assert main(argv) == 0 and len(calls["train"]) == n_train + 1 and len(calls["eval"]) == n_eval
    assert {p: t for p, t in _files(out).items() if p.name not in rewritten} == \
        {p: t for p, t in stable.items() if p.name not in rewritten}
    rec = read_json(cut / STAGE_FILE)
    (cut / STAGE_FILE).write_text(json.dumps({**rec, "fingerprint": "0" * 16}))
    (cut / "train.json").unlink()
    assert main(argv) == 2  # the CLI's error exit
