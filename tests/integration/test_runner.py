"""`neurorit run` end to end on the tiny model: every stage, resumable, report written."""

from __future__ import annotations

import json
import re

from neurorit_lens.cli.main import main


def test_run_pipeline_tiny_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--model", "tiny", "--out", str(out), "--methods", "neurorit", "--controls", "layers,random",
            "--eval-limit", "4", "--mine-limit", "6", "--ablate-limit", "4", "--train-limit", "12",
            "--data.data", "embedded:60", "--data.n-passages", "3", "--data.max-prompt-tokens", "300",
            "--eval.settings", "gold,gold+1,irrelevant", "--eval.max-new-tokens", "4",
            "--eval.n-bootstrap", "50", "--mining.threshold", "0.05", "--ablation.n-random", "5",
            "--ablation.accuracy-limit", "2", "--ablation.n-bootstrap", "50",
            "--train.steps", "4", "--train.batch-size", "2", "--train.checkpoint-every", "2"]
    assert main(argv) == 0
    for rel in ("config.json", "environment.json", "data.json", "eval_before/eval.json", "mining/neurons.json",
                "ablation/ablation.json", "train/neurorit/train.json", "train/random/model/neurorit_model.json",
                "eval_after/neurorit/eval.json", "eval_after/random/eval.json", "train/layers/train.json",
                "eval_after/layers/predictions.jsonl", "report.html", "report.md"):
        assert (out / rel).exists(), rel
    # the controls train the same items with the same steps and schedule as the method
    runs = {m: json.loads((out / "train" / m / "train.json").read_text()) for m in ("neurorit", "layers")}
    assert runs["neurorit"]["steps"] == runs["layers"]["steps"] == 4
    stage = json.loads((out / "train" / "layers" / "stage.json").read_text())
    assert stage["complete"] and stage["seconds"] >= 0
    assert {k: v for k, v in stage["inputs"]["train"].items() if k != "method"} == {
        k: v for k, v in _stage(out, "train/neurorit")["inputs"]["train"].items() if k != "method"}
    # the report: base, the controls and the method side by side, each paired difference and a reading
    md = (out / "report.md").read_text()
    assert "| setting | held | n | base: accuracy % [Wilson 95%] | layers: accuracy % [Wilson 95%] |" in md
    assert "| neurorit - layers | gold+1 |" in md and "| neurorit - random | gold+1 |" in md
    assert re.search(r"\*\*Reading:\*\* neurorit (and layers are level|beats layers|trails layers) at gold\+1", md)
    ev = json.loads((out / "eval_before" / "eval.json").read_text())
    assert set(ev["settings"]) == {"gold", "gold+1", "irrelevant"}
    env = json.loads((out / "environment.json").read_text())
    assert env["seed"] == 0 and env["torch"]
    html = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html) and not re.search(r"(src|href)=[\"']https?://", html)
    # a second run with the same config skips every stage and changes nothing
    before = {p: p.read_bytes() for p in (out / "mining" / "neurons.json",
                                          out / "eval_after" / "neurorit" / "eval.json")}
    assert main(argv) == 0
    assert all(p.read_bytes() == b for p, b in before.items())
    # dropping a control keeps every stage of the method (its fingerprints do not include the controls)
    trained = (out / "train" / "neurorit" / "stage.json").read_bytes()
    assert main([a if a != "layers,random" else "layers" for a in argv]) == 0
    assert (out / "train" / "neurorit" / "stage.json").read_bytes() == trained


def test_run_repeats_from_saved_config(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", "tiny", "--out", str(out), "--stages", "eval", "--eval-limit", "2",
                 "--data.data", "embedded:30", "--eval.settings", "gold", "--eval.max-new-tokens", "2",
                 "--data.max-prompt-tokens", "300", "--eval.n-bootstrap", "20"]) == 0
    again = tmp_path / "again"
    assert main(["run", "--config", str(out / "config.json"), "--out", str(again)]) == 0
    a = json.loads((out / "eval_before" / "eval.json").read_text())["settings"]
    b = json.loads((again / "eval_before" / "eval.json").read_text())["settings"]
    assert {k: v["accuracy"] for k, v in a.items()} == {k: v["accuracy"] for k, v in b.items()}


def test_run_rejects_bad_config(tmp_path, capsys):
    assert main(["run", "--model", "tiny", "--out", str(tmp_path), "--methods", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "stage1" in err  # the allowed values are listed


SMALL = ["run", "--model", "tiny", "--eval-limit", "2", "--mine-limit", "4", "--ablate-limit", "2",
         "--data.data", "embedded:30", "--data.max-prompt-tokens", "320", "--eval.settings", "gold",
         "--eval.max-new-tokens", "2", "--eval.n-bootstrap", "20", "--mining.threshold", "0.05",
         "--ablation.n-random", "5", "--ablation.accuracy-limit", "1", "--ablation.n-bootstrap", "20"]


def _stage(out, rel):
    return json.loads((out / rel / "stage.json").read_text())


def test_run_reruns_only_stages_whose_inputs_changed(tmp_path):
    out = tmp_path / "run"
    base = SMALL + ["--out", str(out), "--stages", "eval,mine,ablate"]
    assert main(base) == 0
    first = {rel: _stage(out, rel) for rel in ("eval_before", "mining", "ablation")}
    assert all(r["complete"] for r in first.values())
    assert first["ablation"]["inputs"]["upstream"] == {"mining": first["mining"]["fingerprint"]}
    eval_bytes = (out / "eval_before" / "eval.json").read_bytes()
    # a changed mining section: mining and ablation (downstream) rerun, eval_before is kept
    assert main(base + ["--mining.threshold", "0.1"]) == 0
    assert (out / "eval_before" / "eval.json").read_bytes() == eval_bytes
    assert _stage(out, "eval_before") == first["eval_before"]
    for rel in ("mining", "ablation"):
        assert _stage(out, rel)["fingerprint"] != first[rel]["fingerprint"], rel
    assert json.loads((out / "config.json").read_text())["mining"]["threshold"] == 0.1
    # the config changes again but only eval runs: the stale mining/ablation folders go, they are not
    # reported under the new config.json
    assert main(base[:-1] + ["eval", "--mining.threshold", "0.2"]) == 0
    assert not (out / "mining").exists() and not (out / "ablation").exists()
    assert _stage(out, "eval_before") == first["eval_before"]


def test_run_resumes_a_started_stage_and_replaces_a_legacy_one(tmp_path):
    from neurorit_lens.config import RunConfig
    from neurorit_lens.runner import Runner

    out = tmp_path / "run"
    assert main(SMALL + ["--out", str(out), "--stages", "eval"]) == 0
    cfg = RunConfig.load(out / "config.json")
    runner = Runner(cfg)
    assert runner.remove_stale() == []  # unchanged config: nothing is stale
    (out / "eval_before" / "stage.json").unlink()  # a folder from before stage records: not trusted
    (out / "mining").mkdir()
    (out / "mining" / "neurons.json").write_text("{}")
    assert sorted(Runner(cfg).remove_stale()) == ["eval_before", "mining"]
    assert not (out / "eval_before").exists() and not (out / "mining").exists()


def test_run_files_follow_the_umask_and_environment_names_versions(tmp_path):
    import importlib.metadata
    import os
    import stat

    from neurorit_lens.io import atomic_write_text

    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert main(SMALL + ["--out", str(out), "--stages", "eval,report"]) == 0
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert "report.html" in modes and "eval_before/eval.json" in modes
    assert {m for m in modes.values()} == {0o644}, modes
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    env = json.loads((out / "environment.json").read_text())
    assert env["transformer_lens"] == importlib.metadata.version("transformer-lens")
