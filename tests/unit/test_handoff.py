"""Typed hand-offs: one loader of a mining folder, one preparation of a training from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from neurorit_lens.config import TrainConfig
from neurorit_lens.neuron_sets import MiningMeta, NeuronSet, exclusive_sets, load_neuron_sets, save_neuron_sets
from neurorit_lens.neurons.output import MiningOutput
from neurorit_lens.neurons.score_files import write_tensor
from neurorit_lens.training.inputs import prepare_training
from tests.helpers import cached_tiny_model

ROOT = Path(__file__).resolve().parents[2]
META = {"model": "tiny", "model_shape": [2, 64], "config": {"site": "post", "threshold": 0.3},
        "layer_mass": {"R_excl": [0.2, 1.0]}, "totals": {"R": 3}, "custom": 1}


def _mining_folder(d: Path, means: bool = True) -> Path:
    sets = exclusive_sets(NeuronSet({0: [1, 2, 3], 1: [4]}), NeuronSet({0: [3], 1: [9]}))
    save_neuron_sets(d / "neurons.json", sets, META)
    if means:
        write_tensor(d / "answer_means.safetensors", torch.arange(128.0).view(2, 64), {"model": "tiny"})
    return d


def test_mining_output_loads_sets_meta_layer_mass_and_means(tmp_path):
    model = cached_tiny_model()
    d = _mining_folder(tmp_path)
    out = MiningOutput.load(d, model)
    assert out.path == d / "neurons.json" and MiningOutput.load(d / "neurons.json").sets == out.sets
    assert out.sets == load_neuron_sets(d / "neurons.json", model)
    assert out.layer_mass == {"R_excl": [0.2, 1.0]} and out.meta.model_shape == (2, 64)
    assert out.meta.site == "post" and out.meta.setting("threshold") == 0.3 and out.meta.extra == {"custom": 1}
    assert out.meta.model == "tiny" and out.meta.totals == {"R": 3}
    torch.testing.assert_close(out.answer_means, torch.arange(128.0).view(2, 64))
    assert MiningMeta.from_dict(None) == MiningMeta() and MiningMeta().site is None


def test_mining_output_rejects_other_models_and_missing_files(tmp_path):
    d = _mining_folder(tmp_path)
    save_neuron_sets(d / "other.json", {"R_excl": NeuronSet({0: [1]})}, {"model_shape": [30, 1536]})
    with pytest.raises(ValueError, match=r"shape \[30, 1536\]"):
        MiningOutput.load(d / "other.json", cached_tiny_model())
    with pytest.raises(FileNotFoundError, match="neuron file not found"):
        MiningOutput.load(tmp_path / "nowhere")


def test_prepare_training_takes_what_the_method_needs(tmp_path):
    mined = MiningOutput.load(_mining_folder(tmp_path / "a"))
    got = prepare_training(mined, TrainConfig(deactivation="constant"))
    assert got.sets == mined.sets and got.layer_mass == mined.layer_mass
    torch.testing.assert_close(got.deactivation_values, mined.answer_means)
    assert prepare_training(mined, TrainConfig(deactivation="zero")).deactivation_values is None
    none = prepare_training(None, TrainConfig(method="full"))
    assert (none.sets, none.layer_mass, none.deactivation_values) == (None, None, None)
    bare = MiningOutput.load(_mining_folder(tmp_path / "b", means=False))
    assert bare.answer_means is None
    with pytest.raises(FileNotFoundError, match="--answer-means"):
        prepare_training(bare, TrainConfig(deactivation="constant"))


# Where a key "meta" may be read: the neurons.json reader, and files whose own "meta" it is.
META_READERS = {"neurorit_lens/neuron_sets.py": "the neurons.json reader",
                "neurorit_lens/data/formats.py": "a QA record's meta field",
                "neurorit_lens/data/schema.py": "a QA record's meta field",
                "neurorit_lens/ablation/result.py": "ablation.json's meta"}
HARNESS = re.compile(r"benchmarks/(compare_|screen_)")


def test_only_the_loader_reads_the_meta_block():
    raw = re.compile(r"""(\.get\(\s*["']meta["']|\[\s*["']meta["']\s*\])""")
    offenders = []
    for path in sorted([*ROOT.glob("neurorit_lens/**/*.py"), *ROOT.glob("benchmarks/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in META_READERS or HARNESS.match(rel):
            continue
        offenders += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1) if raw.search(line)]
    assert not offenders, "read the meta of neurons.json through MiningOutput / read_neurons_file: " + ", ".join(
        offenders)
