"""The component study's typed configuration: the shipped study_dev.json loads as declared, and each
bad key is one ValueError naming it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from neurorit_lens.cli.main import main
from neurorit_lens.experiments.study_config import StudyConfig, load_study_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "benchmarks" / "configs" / "study_dev.json"


def _shipped() -> dict:
    return json.loads(SHIPPED.read_text())


def test_the_shipped_study_loads_as_declared():
    cfg = load_study_config(SHIPPED)
    assert list(cfg.arm_specs) == ["fair", "layers", "layers_matched", "random_s1", "gxa", "zero", "contrast", "bm25",
                                   "layers_bm25"]
    assert len(cfg.contrasts) == 8 and cfg.contrasts[0].a == "fair" and cfg.contrasts[0].b == "layers_matched"
    assert (cfg.train_limit, cfg.dev_limit, cfg.n_bootstrap, cfg.target_halfwidth_nats) == (300, 150, 2000, 0.2)
    fair = cfg.train_config("fair")
    assert (fair.method, fair.steps, fair.stage1_steps, fair.stage_schedule, fair.stage2_data, fair.lr) == (
        "neurorit", 32, 16, "stage1_extra", "continue", 3e-4)
    assert fair.deactivation == "none" and fair.stage1_neurons == "r_excl" and fair.checkpoint_every == 4
    matched = cfg.train_config("layers_matched")
    assert (matched.method, matched.steps) == ("layers", 48)
    assert cfg.train_config("random_s1").stage1_neurons == "random"
    assert cfg.train_config("zero").deactivation == "zero"
    contrast = cfg.arm_specs["contrast"]
    assert contrast.i_excl_from == "contrast" and contrast.sets == "ig"
    assert (cfg.train_config(contrast).deactivation, cfg.train_config(contrast).deactivation_scale) == ("scale", 0.5)
    assert cfg.arm_specs["gxa"].sets == "grad_x_act"
    assert [a for a, s in cfg.arm_specs.items() if s.train_distractors == "bm25"] == ["bm25", "layers_bm25"]
    assert cfg.settings["nq"] == ("gold", "gold+4", "gold+4@bm25") and cfg.settings["embedded"] == ("gold", "gold+4")
    assert cfg.set_spec("contrast")["n_passages"] == 5 and cfg.set_spec("ig")["n_passages"] == 1
    assert cfg.set_spec("ig")["max_prompt_tokens"] == 896 and cfg.declared == _shipped()
    small = cfg.with_limits(train_limit=4, dev_limit=2)
    assert (small.train_limit, small.dev_limit) == (4, 2) and small.declared["train_limit"] == 4
    assert cfg.train_limit == 300  # unchanged


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *head, last = path.split(".")
    node = d
    for k in head:
        node = node[k]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return d


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "match"), [
    ("n_bootstrap", "2000", r"n_bootstrap: expected an integer"),
    ("dev_limit", 0, r"dev_limit: must be >= 1"),
    ("target_halfwidth_nats", 0, r"target_halfwidth_nats: must be > 0"),
    ("kind", "screen", r"kind: unknown value 'screen'"),
    ("colour", 1, r"unknown key.*colour"),
    ("train.stpes", 2, r"train: unknown key.*stpes"),
    ("train.lr", "3e-4", r"train\.lr: expected a finite number"),
    ("fair_neurorit.stage_schedule", "sometimes", r"fair_neurorit\.stage_schedule: unknown value"),
    ("eval.max_new_tokens", "32", r"eval\.max_new_tokens: expected an integer"),
    ("arms.zero.deactivation", "off", r"arms\.zero\.deactivation: unknown value 'off'"),
    ("arms.zero.stpes", 3, r"arms\.zero: unknown key.*stpes"),
    ("arms.gxa.sets", "gxa", r"arms\.gxa\.sets: unknown set 'gxa'"),
    ("arms.gxa.sets", _DELETE, r"arms\.gxa\.sets: missing"),
    ("arms.contrast.i_excl_from", "noise", r"arms\.contrast\.i_excl_from: unknown set 'noise'"),
    ("arms.fair.base", "fair", r"arms\.fair\.base: unknown value 'fair'"),
    ("arms.bm25.train_distractors", "tfidf", r"arms\.bm25\.train_distractors: unknown value 'tfidf'"),
    ("mining.sets.ig.threshold", "0.05", r"mining\.sets\.ig\.threshold: expected a finite number"),
    ("mining.sets.ig.stepz", 8, r"mining\.sets\.ig: unknown key.*stepz"),
    ("mining.sets.ig.threshold", 2.0, r"mining\.sets\.ig: threshold must be in"),
    ("mining.sets.contrast.max_prompt_tokens", 8, r"mining\.sets\.contrast: max_prompt_tokens must be >= 32"),
    ("settings.nq", ["gold", "gold+4", "gold+4@bm26"], r"settings\.nq\[2\]: unknown distractor method 'bm26'"),
    ("settings.embedded", ["gold+4"], r"settings\.embedded: .*missing \['gold'\]"),
    ("settings.web", ["gold"], r"settings: one list per data set.*unknown \['web'\]"),
    ("datasets.nq.settings", ["gold"], r"datasets\.nq\.settings: the study's settings are the top-level"),
    ("datasets.nq.fromat", "dpr", r"unknown key.*datasets\.nq\.fromat"),
])
def test_each_bad_key_is_one_error_naming_it(path, value, match):
    with pytest.raises(ValueError, match=match):
        StudyConfig.from_dict(_set(_shipped(), path, value))


def test_bad_contrasts_name_the_entry():
    d = _shipped()
    d["contrasts"][2]["b"] = "random"
    with pytest.raises(ValueError, match=r"contrasts\[2\]\.b: unknown arm 'random'"):
        StudyConfig.from_dict(d)
    d = _shipped()
    d["contrasts"][1]["name"] = d["contrasts"][0]["name"]
    with pytest.raises(ValueError, match=r"contrasts: names must be unique"):
        StudyConfig.from_dict(d)
    d = _shipped()
    d["contrasts"][0]["c"] = "fair"
    with pytest.raises(ValueError, match=r"unknown key.*contrasts\[0\]\.c"):
        StudyConfig.from_dict(d)


def test_the_cli_names_the_file_and_the_key(tmp_path, capsys):
    path = tmp_path / "study.json"
    path.write_text(json.dumps(_set(_shipped(), "arms.zero.deactivation", "off")))
    assert main(["study", str(path), "--out", str(tmp_path / "run"), "--plan"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "arms.zero.deactivation" in err
    assert main(["study", str(SHIPPED), "--out", str(tmp_path / "run"), "--plan", "--report"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_the_shipped_confirmatory_block_parses_as_declared():
    c = load_study_config(SHIPPED).confirmatory
    assert c is not None and c.arms == ("chosen", "layers", "full", "clean") and c.seeds == (0, 1)
    assert c.lrs == {"layers": 3e-4, "full": 1e-4, "clean": 3e-5}
    nq, emb = c.questions["nq"], c.questions["embedded"]
    assert (nq.split, nq.start, nq.limit, nq.format) == ("test", 200, 331, "dpr")
    assert (emb.data, emb.split, emb.start, emb.limit) == ("embedded:1000:7", "all", 0, 300)
    assert c.seen["embedded"] == ("embedded:200", "embedded:500", "embedded:1000") and isinstance(c.seen["nq"], str)
    assert c.settings["nq"] == ("gold", "gold+4", "gold+4@bm25") and c.settings["embedded"] == ("gold", "gold+4")
    assert c.contrasts == (("chosen", "layers"), ("chosen", "full"), ("chosen", "clean"))


@pytest.mark.parametrize(("path", "value", "match"), [
    ("confirmatory.seeds", [0, 0], r"confirmatory\.seeds: at least one seed, each once"),
    ("confirmatory.seeds", ["0"], r"confirmatory\.seeds\[0\]: expected an integer"),
    ("confirmatory.arms", ["layers", "full"], r"confirmatory\.arms: must hold 'chosen'"),
    ("confirmatory.arms", ["chosen", "lora"], r"confirmatory\.arms\[1\]: unknown arm 'lora'"),
    ("confirmatory.lrs", {"layers": 3e-4, "full": 1e-4}, r"confirmatory\.lrs\.clean: missing"),
    ("confirmatory.lrs", {"layers": 3e-4, "full": 1e-4, "clean": 0.0}, r"confirmatory\.lrs\.clean: must be > 0"),
    ("confirmatory.lrs", {"layers": 3e-4, "full": 1e-4, "clean": 3e-5, "chosen": 1e-3},
     r"confirmatory\.lrs\.chosen: not a baseline arm"),
    ("confirmatory.questions.nq.split", "val", r"confirmatory\.questions\.nq\.split: unknown value 'val'"),
    ("confirmatory.questions.nq.start", -1, r"confirmatory\.questions\.nq\.start: must be >= 0"),
    ("confirmatory.questions.nq.limit", 0, r"confirmatory\.questions\.nq\.limit: must be >= 1"),
    ("confirmatory.questions.nq.limit", _DELETE, r"missing key.*confirmatory\.questions\.nq\.limit"),
    ("confirmatory.questions.nq.fromat", "dpr", r"unknown key.*confirmatory\.questions\.nq\.fromat"),
    ("confirmatory.questions.web", {"data": "x", "limit": 3}, r"confirmatory\.questions\.web: not a data set"),
    ("confirmatory.questions.embedded", _DELETE, r"confirmatory\.questions\.embedded: missing"),
    ("confirmatory.settings.nq", ["gold", "gold+4@bm26"], r"confirmatory\.settings\.nq\[1\]: unknown distractor"),
    ("confirmatory.contrasts", [["chosen", "lora"]], r"confirmatory\.contrasts\[0\]\[1\]: unknown arm 'lora'"),
    ("confirmatory.contrasts", [["chosen", "chosen"]], r"confirmatory\.contrasts\[0\]: a and b are the same arm"),
    ("confirmatory.seen.web", ["embedded:200"], r"confirmatory\.seen\.web: not a data set"),
    ("confirmatory.colour", 1, r"unknown key.*confirmatory\.colour"),
])
def test_each_bad_confirmatory_key_is_one_error_naming_it(path, value, match):
    with pytest.raises(ValueError, match=match):
        StudyConfig.from_dict(_set(_shipped(), path, value))
