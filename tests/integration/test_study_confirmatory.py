"""``neurorit study --confirmatory`` end to end on the tiny model: a hand-written chosen.json, two arms
(chosen neurorit, layers) x two seeds x two steps on a tiny embedded draw and a made-up NQ-like file,
a kill after the first training, the resumed run that redoes nothing finished, the report; the
refusals (no chosen.json, another configuration's, fresh questions that overlap seen ones)."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from neurorit_lens.cli.main import main
from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data.splits import load_split
from neurorit_lens.experiments.confirmatory import Confirmatory, confirm
from neurorit_lens.experiments.study_config import StudyConfig
from neurorit_lens.io import fingerprint, read_json

SPLIT = [0.5, 0.25, 0.25]
SETS = {"gxa": {"method": "grad_x_act", "positions": "skip_first", "selection": "topk", "top_k": 16,
                "frequency": 0.3}}


def _nq_like(path: Path, n: int = 40) -> None:
    """A made-up NQ-open-like file (dpr format): one gold passage per question."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(n):
            ctx = {"title": f"Harbour {i}", "text": f"The harbour of Velm{i} was built by Oskar Tamm{i} in {1700 + i}.",
                   "hasanswer": True, "isgold": True}
            f.write(json.dumps({"question": f"who built the harbour of velm{i}", "answers": [f"Oskar Tamm{i}"],
                                "ctxs": [ctx]}) + "\n")


def _config(nq: Path) -> dict:
    return {
        "name": "tiny_confirm", "kind": "component_study", "model": "tiny", "device": "cpu",
        "datasets": {"emb": {"data": "embedded:40"}, "nq": {"data": str(nq), "format": "dpr"}},
        "split_fractions": SPLIT, "data_seed": 0, "n_passages": 5, "max_prompt_tokens": 256, "template": "plain",
        "n_distractors": 6, "train_limit": 4, "dev_limit": 3,
        "mining": {"n_passages": 1, "sets": SETS},
        "train": {"lr": 1e-3, "steps": 1, "batch_size": 2, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 1,
                  "n_target_layers": 1, "seed": 0},
        "fair_neurorit": {"method": "neurorit", "stage_schedule": "stage1_extra", "stage1_steps": 1,
                          "stage2_data": "continue", "deactivation": "none"},
        "arms": {"fair": {"base": "fair_neurorit", "sets": "gxa"}},
        "contrasts": [],
        "settings": {"emb": ["gold", "gold+4"], "nq": ["gold", "gold+4", "gold+4@bm25"]},
        "eval": {"max_new_tokens": 4, "batch_size": 4, "stop_at_newline": True},
        "n_bootstrap": 50,
        "confirmatory": {
            "questions": {"nq": {"data": str(nq), "format": "dpr", "split": "test", "start": 2, "limit": 4},
                          "emb": {"data": "embedded:40:7", "split": "all", "limit": 4}},
            "seen": {"emb": ["embedded:40"], "nq": "the train and dev questions and the first 2 test questions"},
            "seeds": [0, 1], "arms": ["chosen", "layers"], "lrs": {"layers": 3e-4},
            "settings": {"emb": ["gold", "gold+4"], "nq": ["gold", "gold+4", "gold+4@bm25"]},
            "contrasts": [["chosen", "layers"]]},
    }


def _chosen(cfg: dict) -> dict:
    return {"rule": "hand-written", "base_arm": "fair", "sets": "gxa", "i_excl_from": None, "deactivation_arm": None,
            "train_distractors": "random", "train_overrides": dict(cfg["fair_neurorit"]),
            "protocol": fingerprint(StudyConfig.from_dict(cfg).declared)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from neurorit_lens.models import load_model
    from neurorit_lens.neurons.mining import mine

    root = tmp_path_factory.mktemp("confirm")
    nq = root / "nq.jsonl.gz"
    _nq_like(nq)
    cfg = _config(nq)
    path = root / "study.json"
    path.write_text(json.dumps(cfg))
    (root / "dev").mkdir()
    (root / "dev" / "chosen.json").write_text(json.dumps(_chosen(cfg)))
    model, mining = load_model("tiny"), root / "mining"
    for name, spec in SETS.items():
        for ds, dspec in cfg["datasets"].items():
            dcfg = DataConfig(data=dspec["data"], format=dspec.get("format", "auto"), split="train", limit=3,
                              split_fractions=tuple(SPLIT), n_passages=1, template="plain", max_prompt_tokens=256,
                              n_distractors=6)
            res = mine(model, load_split(dcfg), MiningConfig(**spec), dcfg, out_dir=mining / name / ds,
                       show_progress=False, model_name="tiny")
            res.save(mining / name / ds)
    return path, mining, cfg


class Killed(RuntimeError):
    pass


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_confirmatory_runs_resumes_and_reports(setup, monkeypatch, capsys):
    import neurorit_lens.training.methods as methods

    path, mining, cfg = setup
    out = path.parent / "run"
    chosen = path.parent / "dev" / "chosen.json"
    argv = ["study", str(path), "--out", str(out), "--mining", str(mining), "--confirmatory", "--chosen",
            str(chosen), "--no-progress"]
    assert main([*argv, "--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert list(plan["runs"]) == ["chosen/seed0", "chosen/seed1", "layers/seed0", "layers/seed1"]
    assert plan["runs"]["chosen/seed0"]["optimizer_steps"] == 2 and plan["runs"]["layers/seed1"]["optimizer_steps"] == 2
    assert plan["runs"]["layers/seed1"]["lr"] == 3e-4 and plan["runs"]["chosen/seed1"]["lr"] == 1e-3
    assert plan["runs"]["layers/seed1"]["seed"] == 1 and not (out / "protocol.json").exists()

    real, calls = methods.train, []

    def train(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw):
        calls.append((d.parent.name, d.name, tcfg.method, tcfg.steps, tcfg.seed, tcfg.lr))
        if len(calls) == 2:
            raise Killed("killed")
        return real(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw)

    monkeypatch.setattr(methods, "train", train)
    with pytest.raises(Killed):
        confirm(path, out, chosen, mining=mining, progress=False)
    fresh = read_json(out / "fresh.json")
    assert {d: b["n"] for d, b in fresh.items()} == {"nq": 4, "emb": 4}
    assert all(n == 0 for b in fresh.values() for n in b["overlap"].values())
    assert "dev study nq train and dev questions" in fresh["emb"]["overlap"]
    done = _mtimes(out / "train" / "chosen" / "seed0") | _mtimes(out / "eval")
    assert main(argv) == 0
    assert calls == [("chosen", "seed0", "neurorit", 1, 0, 1e-3), ("chosen", "seed1", "neurorit", 1, 1, 1e-3),
                     ("chosen", "seed1", "neurorit", 1, 1, 1e-3), ("layers", "seed0", "layers", 2, 0, 3e-4),
                     ("layers", "seed1", "layers", 2, 1, 3e-4)]
    assert {p: t for p, t in (_mtimes(out / "train" / "chosen" / "seed0") | _mtimes(out / "eval")).items()
            if p in done} == done  # nothing finished was redone
    log = [json.loads(x) for x in (out / "train" / "layers" / "seed1" / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in log] == [1, 2]

    rep = read_json(out / "report_confirmatory.json")
    assert set(rep["cost"]) == {"chosen/seed0", "chosen/seed1", "layers/seed0", "layers/seed1"}
    assert rep["cost"]["chosen/seed0"]["steps"] == 2 and rep["cost"]["layers/seed0"]["steps"] == 2
    assert rep["cost"]["chosen/seed0"]["distinct_items"] == rep["cost"]["layers/seed0"]["distinct_items"] == 4
    rows = {(r["seed"], r["scope"], r["setting"]): r for r in rep["rows"]}
    want = [("pooled", "gold"), ("pooled", "gold+4"), ("emb", "gold"), ("emb", "gold+4"), ("nq", "gold"),
            ("nq", "gold+4"), ("nq", "gold+4@bm25")]
    assert set(rows) == {(s, sc, st) for s in ("mean", 0, 1) for sc, st in want}
    r0 = rows[(0, "pooled", "gold+4")]
    assert r0["n"] == 8 and {"p_value", "mdd_planning", "ci"} <= set(r0["accuracy"]) and "p_holm" in r0
    assert r0["p_holm"] == r0["accuracy"]["p_value"]  # a family of one contrast
    assert rows[("mean", "nq", "gold+4@bm25")]["n"] == 4 and "logprob" in rows[("mean", "nq", "gold+4@bm25")]
    assert rep["aim"]["met"] is None and "full" in " ".join(rep["aim"]["missing"])  # `full` is not an arm here
    md = (out / "report_confirmatory.md").read_text()
    assert md.startswith("# Confirmatory run of `tiny_confirm`") and "not evaluable yet" in md
    blob = read_json(out / "eval" / "chosen" / "seed1" / "nq" / "gold+4@bm25.json")
    assert blob["split"] == "fresh" and [r["id"] for r in blob["records"]] == fresh["nq"]["ids"]
    # --report redoes nothing; another chosen.json in the same folder is refused
    n = len(calls)
    assert main([*argv, "--report"]) == 0 and len(calls) == n
    other = path.parent / "dev2" / "chosen.json"
    other.parent.mkdir()
    other.write_text(json.dumps({**_chosen(cfg), "train_distractors": "bm25"}))
    assert main([*argv[:-2], str(other), "--no-progress", "--report"]) == 2
    assert "made for another configuration or chosen.json" in capsys.readouterr().err
    assert main(["study", str(path), "--out", str(out), "--mining", str(mining), "--report"]) == 2  # the dev run
    assert "holds a confirmatory run" in capsys.readouterr().err


def test_chosen_json_of_another_configuration_or_none_is_refused(setup, tmp_path, capsys):
    path, mining, cfg = setup
    argv = ["study", str(path), "--out", str(tmp_path / "run"), "--mining", str(mining), "--confirmatory", "--plan"]
    assert main(argv) == 2 and "--chosen" in capsys.readouterr().err
    assert main([*argv, "--chosen", str(tmp_path / "chosen.json")]) == 2
    assert "no chosen.json" in capsys.readouterr().err
    other = copy.deepcopy(cfg)
    other["train_limit"] = 3
    (tmp_path / "chosen.json").write_text(json.dumps(_chosen(other)))
    assert main([*argv, "--chosen", str(tmp_path / "chosen.json")]) == 2
    assert "chosen under another configuration" in capsys.readouterr().err
    # without a recorded fingerprint: the dev folder's protocol.json decides
    blob = {k: v for k, v in _chosen(cfg).items() if k != "protocol"}
    (tmp_path / "chosen.json").write_text(json.dumps(blob))
    assert main([*argv, "--chosen", str(tmp_path / "chosen.json")]) == 2
    assert "records no protocol fingerprint" in capsys.readouterr().err
    (tmp_path / "protocol.json").write_text(json.dumps({"config": cfg}))
    assert main([*argv, "--chosen", str(tmp_path / "chosen.json")]) == 0
    capsys.readouterr()


def test_fresh_questions_that_overlap_seen_ones_are_refused(setup, tmp_path):
    path, mining, cfg = setup
    bad = copy.deepcopy(cfg)
    bad["confirmatory"]["questions"]["emb"]["data"] = "embedded:40"  # the dev study's own draw
    bad["confirmatory"]["seen"] = {}
    c = StudyConfig.from_dict(bad)
    (tmp_path / "chosen.json").write_text(json.dumps(_chosen(bad)))
    run = Confirmatory(c, tmp_path / "run", tmp_path / "chosen.json", mining, progress=False)
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match=r"fresh questions overlap.*emb.*dev study emb train and dev questions"):
        run.guard()
    blob = read_json(tmp_path / "run" / "fresh.json")
    assert blob["emb"]["overlap"]["dev study emb train and dev questions"] > 0
    assert blob["nq"]["overlap"] and not any(blob["nq"]["overlap"].values())
    with pytest.raises(ValueError, match="fresh questions overlap"):
        run.eval_examples("nq")  # nothing is scored
