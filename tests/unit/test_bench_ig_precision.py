"""benchmarks.bench_ig_precision against hand-computed agreement on made-up score files."""

import math

import pytest
import torch
from safetensors.torch import save_file

from benchmarks.bench_ig_precision import compare, main


def _write(folder, name, scores):
    d = folder / "scores" / "R"
    d.mkdir(parents=True, exist_ok=True)
    save_file({"scores": scores}, str(d / f"{name}.safetensors"))


def test_relative_error_and_jaccard_match_hand_values(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    x = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.3, 0.01]])
    y = x.clone()
    y[1, 3] = 0.06  # crosses the 0.05 x max threshold: one neuron more in b
    _write(a, "e1", x)
    _write(b, "e1", y)
    _write(a, "only_a", x)  # not shared: ignored
    r = compare(a, b, "R", threshold=0.05, frequency=0.5)
    assert r["examples"] == ["e1"]
    assert r["relative_error"][0] == pytest.approx(0.05 / float(x.norm()))
    assert r["jaccard_per_example"][0] == pytest.approx(3 / 4)  # {(0,0),(0,1),(1,2)} vs + (1,3)
    assert r["jaccard_set"] == pytest.approx(3 / 4) and r["set_sizes"] == [3, 4]
    assert compare(a, b, "I", 0.05, 0.5) is None


def test_folders_without_shared_files_are_refused(tmp_path):
    _write(tmp_path / "a", "e1", torch.ones(2, 3))
    _write(tmp_path / "b", "e2", torch.ones(2, 3))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    assert not math.isnan(compare(tmp_path / "a", tmp_path / "a", "R", 0.05, 0.5)["jaccard_set"])
