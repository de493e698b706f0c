"""`neurorit run` end to end on the tiny model: every stage, resumable, report written."""

from __future__ import annotations

import json
import re

from neurorit_lens.cli.main import main


def test_run_pipeline_tiny_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--model", "tiny", "--out", str(out), "--methods", "neurorit,random",
            "--eval-limit", "4", "--mine-limit", "6", "--ablate-limit", "4", "--train-limit", "12",
            "--data.data", "embedded:60", "--data.n-passages", "3", "--data.max-prompt-tokens", "300",
            "--eval.settings", "gold,gold+1,irrelevant", "--eval.max-new-tokens", "4",
            "--eval.n-bootstrap", "50", "--mining.threshold", "0.05", "--ablation.n-random", "5",
            "--ablation.accuracy-limit", "2", "--ablation.n-bootstrap", "50",
            "--train.steps", "4", "--train.batch-size", "2", "--train.checkpoint-every", "2"]
    assert main(argv) == 0
    for rel in ("config.json", "environment.json", "data.json", "eval_before/eval.json", "mining/neurons.json",
                "ablation/ablation.json", "train/neurorit/train.json", "train/random/model/neurorit_model.json",
                "eval_after/neurorit/eval.json", "eval_after/random/eval.json", "report.html", "report.md"):
        assert (out / rel).exists(), rel
    ev = json.loads((out / "eval_before" / "eval.json").read_text())
    assert set(ev["settings"]) == {"gold", "gold+1", "irrelevant"}
    env = json.loads((out / "environment.json").read_text())
    assert env["seed"] == 0 and env["torch"]
    html = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html) and not re.search(r"(src|href)=[\"']https?://", html)
    # a second run with the same config skips every stage and changes nothing
    before = {p: p.read_bytes() for p in (out / "mining" / "neurons.json", out / "eval_after" / "neurorit" / "eval.json")}
    assert main(argv) == 0
    assert all(p.read_bytes() == b for p, b in before.items())


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
