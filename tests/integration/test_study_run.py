"""``neurorit study`` end to end on the tiny model: mining folders made by the real mining, three arms
(neurorit, layers with BM25 training distractors, a deactivation with I_excl from another set), a kill
in the middle of a training, the resumed run that redoes nothing finished, and the report."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from neurorit_lens.cli.main import main
from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data import load_examples
from neurorit_lens.data.splits import load_split
from neurorit_lens.experiments.study import Study, study
from neurorit_lens.experiments.study_config import StudyConfig
from neurorit_lens.experiments.study_mining import pooled_set
from neurorit_lens.io import read_json

SPLIT = [0.5, 0.25, 0.25]


def _config(nq: Path) -> dict:
    return {
        "name": "tiny_study", "kind": "component_study", "model": "tiny", "device": "cpu",
        "datasets": {"emb": {"data": "embedded:40"}, "nq": {"data": str(nq), "format": "dpr"}},
        "split_fractions": SPLIT, "data_seed": 0, "n_passages": 5, "max_prompt_tokens": 256, "template": "plain",
        "n_distractors": 6, "train_limit": 6, "dev_limit": 3,
        "mining": {"questions": "the first 4 train questions of each data set", "n_passages": 1, "sets": {
            "ig": {"method": "ig", "steps": 2, "alpha_chunk": 2, "positions": "skip_first", "selection": "topk",
                   "top_k": 16, "frequency": 0.3},
            "contrast": {"method": "grad_x_act", "irrelevant_definition": "contrast", "noisy_setting": "noise=0.8",
                         "n_passages": 3, "selection": "topk", "top_k": 8}}},
        "train": {"lr": 1e-3, "steps": 2, "batch_size": 2, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 1,
                  "n_target_layers": 1, "seed": 0},
        "fair_neurorit": {"method": "neurorit", "stage_schedule": "stage1_extra", "stage1_steps": 1,
                          "stage2_data": "continue", "deactivation": "none"},
        "arms": {"fair": {"base": "fair_neurorit", "sets": "ig"},
                 "layers_bm25": {"method": "layers", "sets": "ig", "train_distractors": "bm25"},
                 "contrast": {"base": "fair_neurorit", "sets": "ig", "deactivation": "scale",
                              "deactivation_scale": 0.5, "i_excl_from": "contrast"}},
        "contrasts": [{"name": "guidance", "a": "fair", "b": "layers_bm25"},
                      {"name": "deactivation", "a": "contrast", "b": "fair"}],
        "settings": {"emb": ["gold", "gold+4"], "nq": ["gold", "gold+4", "gold+4@bm25"]},
        "eval": {"max_new_tokens": 4, "batch_size": 4, "stop_at_newline": True},
        "n_bootstrap": 100,
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A study configuration and its mining folders, ``<set>/<data set>/``, mined with ``mine`` as
    ``neurorit mine`` mines them (the first 4 train questions of each data set)."""
    from neurorit_lens.models import load_model
    from neurorit_lens.neurons.mining import mine

    root = tmp_path_factory.mktemp("study")
    nq = root / "nq.jsonl.gz"
    with gzip.open(nq, "wt", encoding="utf-8") as f:
        for e in load_examples("embedded:40:7").examples:
            ctx = {"title": e.relevant[0].title, "text": e.relevant[0].text, "hasanswer": True, "isgold": True}
            f.write(json.dumps({"question": e.question, "answers": e.answers, "ctxs": [ctx]}) + "\n")
    cfg = _config(nq)
    path = root / "study.json"
    path.write_text(json.dumps(cfg))
    model, mining = load_model("tiny"), root / "mining"
    for name, spec in cfg["mining"]["sets"].items():
        for ds, dspec in cfg["datasets"].items():
            dcfg = DataConfig(data=dspec["data"], format=dspec.get("format", "auto"), split="train", limit=4,
                              split_fractions=tuple(SPLIT), n_passages=spec.get("n_passages", 1), template="plain",
                              max_prompt_tokens=256, n_distractors=6)
            mcfg = MiningConfig(**{k: v for k, v in spec.items() if k != "n_passages"})
            res = mine(model, load_split(dcfg), mcfg, dcfg, out_dir=mining / name / ds, show_progress=False,
                       model_name="tiny")
            res.save(mining / name / ds)
    return path, mining


class Killed(RuntimeError):
    pass


def _mtimes(*folders: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for f in folders for p in f.rglob("*") if p.is_file()}


def test_study_runs_resumes_after_a_kill_and_reports(setup, monkeypatch, capsys):
    import neurorit_lens.training.methods as methods

    path, mining = setup
    out = path.parent / "run"
    argv = ["study", str(path), "--out", str(out), "--mining", str(mining), "--no-progress"]
    assert main([*argv, "--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["ready"] == ["fair", "layers_bm25", "contrast"] and not plan["waiting_for_mining"]
    assert plan["arms"]["fair"]["optimizer_steps"] == 3 and plan["arms"]["layers_bm25"]["optimizer_steps"] == 2
    assert plan["arms"]["contrast"]["sets"] == "ig+I_excl=contrast" and not (out / "protocol.json").exists()

    real, calls = methods.train, []

    def train(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw):
        calls.append(d.name)
        if d.name == "contrast" and calls.count("contrast") == 1:
            def kill(step):
                if step.step == 2:  # stage 2's first step, after its checkpoint
                    raise Killed("killed")
            kw["callbacks"] = [kill]
        return real(model, exs, dev, sets, mass, tcfg, dcfg, d, **kw)

    monkeypatch.setattr(methods, "train", train)
    with pytest.raises(Killed):
        study(path, out, mining=mining, progress=False)
    assert calls == ["fair", "layers_bm25", "contrast"]
    assert list((out / "train" / "contrast").rglob("checkpoint.pt")) and not (out / "train" / "contrast" /
                                                                              "train.json").exists()
    done = _mtimes(out / "train" / "fair", out / "train" / "layers_bm25", out / "eval", out / "sets")
    assert main(argv) == 0
    assert calls == ["fair", "layers_bm25", "contrast", "contrast"]  # only the killed training, resumed
    assert _mtimes(out / "train" / "fair", out / "train" / "layers_bm25", out / "eval", out / "sets") | done == \
        _mtimes(out / "train" / "fair", out / "train" / "layers_bm25", out / "eval", out / "sets")
    log = [json.loads(line) for line in (out / "train" / "contrast" / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in log] == [1, 2, 3] and [s["stage"] for s in log] == ["stage1", "stage2", "stage2"]

    rep = read_json(out / "report.json")
    assert set(rep["cost"]) == {"fair", "layers_bm25", "contrast"}
    assert rep["cost"]["fair"]["steps"] == 3 and rep["cost"]["layers_bm25"]["steps"] == 2
    assert rep["cost"]["fair"]["distinct_items"] == 6 and rep["cost"]["fair"]["repeats_before_all_seen"] == 0
    assert rep["cost"]["fair"]["lr_mass_stage2"] == pytest.approx(sum(s["lr"] for s in log if s["stage"] == "stage2"))
    rows = {(r["contrast"], r["scope"], r["setting"]): r for r in rep["contrasts"]}
    assert set(rows) == {(c, scope, s) for c in ("guidance", "deactivation")
                         for scope, s in [("pooled", "gold"), ("pooled", "gold+4"), ("emb", "gold"), ("emb", "gold+4"),
                                          ("nq", "gold"), ("nq", "gold+4"), ("nq", "gold+4@bm25")]}
    assert rows[("guidance", "pooled", "gold+4")]["n"] == 6 and "logprob" in rows[("guidance", "pooled", "gold+4")]
    assert not rep["rule"]["complete"] and not (out / "chosen.json").exists()  # the rule's arms are not declared
    assert (out / "report.md").read_text().startswith("# Component study `tiny_study`")
    blob = read_json(out / "eval" / "fair" / "nq" / "gold+4@bm25.json")
    assert len(blob["records"]) == 3 and all(isinstance(r["logprob"], float) for r in blob["records"])
    score = rep["scores"]["fair|nq|gold+4@bm25"]  # the per-arm table: mean over the unit's own records
    assert score["n"] == 3 and score["mean_logprob"] == pytest.approx(sum(r["logprob"] for r in blob["records"]) / 3)
    assert score["accuracy"] == pytest.approx(sum(r["accuracy"] for r in blob["records"]) / 3)
    assert "| fair | nq | gold+4@bm25 | 3 |" in (out / "report.md").read_text()
    neurons = read_json(out / "sets" / "ig+I_excl=contrast" / "neurons.json")
    assert neurons["meta"]["study"]["i_excl_from"] == "contrast"
    assert neurons["I_excl"] == pooled_set(StudyConfig.from_dict(json.loads(path.read_text())), mining,
                                           "contrast").sets["I_excl"].to_dict()
    # the BM25 arm's NQ training questions carry BM25 distractors only
    s = Study(StudyConfig.from_dict(json.loads(path.read_text())), out, mining)
    nq_kinds = {q.kind for ex in s.train_pool("bm25") if ex.source == "dpr" for q in ex.irrelevant}
    assert nq_kinds == {"distractor:bm25"}
    # --report redoes nothing; another configuration in the same folder is refused
    assert main([*argv, "--report"]) == 0 and calls.count("contrast") == 2
    assert main([*argv, "--dev-limit", "2"]) == 2
    assert "made for another configuration" in capsys.readouterr().err


def test_missing_or_mismatched_mining_is_named(setup, tmp_path, capsys):
    path, mining = setup
    partial = tmp_path / "mining"
    shutil.copytree(mining / "ig", partial / "ig")
    (partial / "contrast" / "emb" / "scores" / "R").mkdir(parents=True)  # a shard run cut short
    argv = ["study", str(path), "--out", str(tmp_path / "run"), "--mining", str(partial), "--no-progress"]
    assert main([*argv, "--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["ready"] == ["fair", "layers_bm25"] and plan["waiting_for_mining"] == ["contrast"]
    assert "incomplete" in plan["mining_folders"]["contrast"]["emb"]
    assert plan["mining_folders"]["contrast"]["nq"].endswith("missing")
    assert main([*argv, "--arms", "contrast"]) == 2
    err = capsys.readouterr().err
    assert "bash benchmarks/study_mine.sh" in err and f"{partial}/contrast/nq: missing" in err
    assert not (tmp_path / "run" / "train").exists()
    cfg = json.loads(path.read_text())
    cfg["mining"]["sets"]["ig"]["positions"] = "all"
    with pytest.raises(ValueError, match=r"ig/emb: mined with positions='skip_first' \(declared 'all'\)"):
        pooled_set(StudyConfig.from_dict(cfg), mining, "ig")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(cfg))
    assert main(["study", str(other), "--out", str(tmp_path / "run2"), "--mining", str(mining), "--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["ready"] == [] and plan["mining_folders"]["contrast"]["nq"].endswith("complete, mined as declared")
    assert plan["arms"]["fair"]["needs"] == [f"{mining}/ig/{d}: mined with positions='skip_first' (declared 'all')"
                                             for d in ("emb", "nq")]
