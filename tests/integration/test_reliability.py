"""Reliability end to end: SIGKILL + restart gives identical results; same seed, same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurorit_lens.cli.main import main

MINE_ARGS = ["mine", "--model", "tiny", "--data", "embedded:40", "--limit", "12", "--method", "ig", "--steps", "6",
             "--max-prompt-tokens", "320", "--n-passages", "3", "--threshold", "0.05"]




def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "neurorit_lens", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_mine_sigkilled_mid_run_resumes_to_identical_neurons(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert main([*MINE_ARGS, "--out", str(ref), "--no-progress"]) == 0
    proc = _cli([*MINE_ARGS, "--out", str(killed), "--no-progress"])
    deadline = time.time() + 300
    while time.time() < deadline:
        done = list((killed / "scores").glob("*/*.safetensors")) if (killed / "scores").exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "neurons.json").exists()
    assert main([*MINE_ARGS, "--out", str(killed), "--no-progress"]) == 0
    a, b = json.loads((ref / "neurons.json").read_text()), json.loads((killed / "neurons.json").read_text())
    assert {k: v for k, v in a.items() if k != "meta"} == {k: v for k, v in b.items() if k != "meta"}
    assert a["meta"]["layer_mass"] == b["meta"]["layer_mass"]


def test_same_seed_same_run(tmp_path):
    """Two runs of the pipeline with the same seed: identical neuron sets and metrics."""
    def run(out: Path) -> None:
        assert main(["run", "--model", "tiny", "--out", str(out), "--methods", "neurorit", "--stages",
                     "eval,mine,train",
                     "--eval-limit", "4", "--mine-limit", "6", "--train-limit", "10", "--data.data", "embedded:50",
                     "--data.n-passages", "3", "--data.max-prompt-tokens", "320", "--eval.settings", "gold,irrelevant",
                     "--eval.max-new-tokens", "4", "--eval.n-bootstrap", "50", "--mining.threshold", "0.05",
                     "--train.steps", "3", "--train.batch-size", "2"]) == 0

    run(tmp_path / "a")
    run(tmp_path / "b")
    for rel in ("mining/neurons.json", "eval_before/eval.json", "eval_after/neurorit/eval.json"):
        a, b = (json.loads((tmp_path / x / rel).read_text()) for x in "ab")
        if rel.startswith("mining"):
            a.pop("meta"), b.pop("meta")
        else:
            a = {k: {m: v[m] for m in ("n", "accuracy", "em", "f1", "accuracy_ci")} for k, v in a["settings"].items()}
            b = {k: {m: v[m] for m in ("n", "accuracy", "em", "f1", "accuracy_ci")} for k, v in b["settings"].items()}
        assert a == b, rel
    logs = [(tmp_path / x / "train/neurorit/train_log.jsonl").read_text().splitlines() for x in "ab"]
    losses = [[json.loads(line)["loss"] for line in log] for log in logs]
    assert losses[0] == losses[1]
    for x in "ab":
        env = json.loads((tmp_path / x / "environment.json").read_text())
        assert env["seed"] == 0 and env["torch"] and env["transformer_lens"]
