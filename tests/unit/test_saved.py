"""Saved trained-model folder round trip, load_model dispatch, and the `neurorit train` CLI."""

from __future__ import annotations

import json

import pytest
import torch

from neurorit_lens.cli.main import main
from neurorit_lens.hooks import neuron_hooks, zero_ablation
from neurorit_lens.models import load_model, tiny_model
from neurorit_lens.models.saved import (
    MARKER,
    config_from_dict,
    config_to_dict,
    is_saved_model,
    load_saved_model,
    load_saved_sets,
    save_trained_model,
)
from neurorit_lens.neuron_sets import NeuronSet, save_neuron_sets
from neurorit_lens.training.methods import bake_deactivation

PROMPTS = ["The capital of Zarnia is", "Trains in Brindle run on time"]




@pytest.mark.parametrize("gated", [False, True])
def test_round_trip_gives_identical_logits_and_baked_model_needs_no_hook(tmp_path, gated):
    m = tiny_model(gated=gated, seed=11)
    deact = NeuronSet({0: [1, 4], 1: [7]})
    toks = m.to_tokens(PROMPTS)
    with neuron_hooks(m, zero_ablation(deact)):
        hooked = m(toks)
    bake_deactivation(m, deact)
    d = save_trained_model(m, tmp_path / "model", sets={"deactivated": deact},
                           extra={"method": "stage1", "seed": 3, "base_model": "tiny"},
                           train_log=[{"step": 1, "loss": 1.0}])
    assert is_saved_model(d) and not list(tmp_path.glob(".model.*"))  # no temp folders left
    for f in ("model.safetensors", "config.json", "tokenizer", "neuron_sets.json", "train_log.jsonl", MARKER):
        assert (d / f).exists(), f
    loaded = load_saved_model(d)
    torch.testing.assert_close(loaded(toks), hooked, rtol=0, atol=1e-6)
    assert torch.equal(loaded(toks), m(toks))
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.cfg.gated_mlp == gated and loaded.cfg.dtype == torch.float32
    assert loaded.tokenizer.encode("Zarnia Velmor") == m.tokenizer.encode("Zarnia Velmor")
    assert load_saved_sets(d)["deactivated"] == deact
    meta = json.loads((d / MARKER).read_text())
    assert meta["method"] == "stage1" and meta["seed"] == 3 and meta["versions"]["torch"] == torch.__version__
    # the models engineer's loader dispatches to us
    torch.testing.assert_close(load_model(str(d))(toks), m(toks), rtol=0, atol=0)


def test_config_round_trip_and_overwrite_and_bad_folders(tmp_path):
    m = tiny_model()
    d = config_to_dict(m.cfg)
    json.dumps(d)
    cfg2 = config_from_dict(json.loads(json.dumps(d)))
    assert config_to_dict(cfg2) == d
    assert config_from_dict(d, dtype=torch.bfloat16).dtype == torch.bfloat16
    save_trained_model(m, tmp_path / "model")
    save_trained_model(m, tmp_path / "model", extra={"method": "full"})  # replaces the folder
    assert json.loads((tmp_path / "model" / MARKER).read_text())["method"] == "full"
    (tmp_path / "model" / MARKER).unlink()
    with pytest.raises(ValueError, match="incomplete|not a neurorit"):
        load_saved_model(tmp_path / "model")
    save_trained_model(m, tmp_path / "m16")
    m16 = load_saved_model(tmp_path / "m16", dtype=torch.bfloat16)
    assert next(m16.parameters()).dtype == torch.bfloat16


def _neurons_file(path, shape=(2, 64)):
    rel = NeuronSet({0: [1, 2, 3], 1: [4, 5]})
    irr = NeuronSet({0: [3, 10], 1: [12]})
    sets = {"R": rel, "I": irr, "R_excl": rel - irr, "I_excl": irr - rel, "shared": rel & irr}
    return save_neuron_sets(path, sets, {"model_shape": list(shape), "layer_mass": {"R_excl": [0.2, 1.0]}})


def test_train_cli_end_to_end_on_tiny(tmp_path):
    neurons = _neurons_file(tmp_path / "neurons.json")
    out = tmp_path / "run"
    argv = ["train", "--model", "tiny", "--data", "embedded", "--neurons", str(neurons), "--method", "neurorit",
            "--out", str(out), "--limit", "8", "--steps", "4", "--batch-size", "2", "--warmup-steps", "1",
            "--n-target-layers", "1", "--checkpoint-every", "2", "--eval-every", "2", "--max-dev-items", "4",
            "--n-passages", "3", "--max-prompt-tokens", "448", "--no-progress", "--deactivation", "zero"]
    assert main(argv) == 0
    res = json.loads((out / "train.json").read_text())
    assert res["method"] == "neurorit" and res["steps"] == 4 and res["target_layers"] == [1]
    assert res["n_train_items"] >= 8 and res["final_dev"]["dev_loss"] > 0 and res["wall_s"] > 0
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 4
    tuned = load_model(str(out / "model"))
    # I_excl baked in
    assert tuned.blocks[0].mlp.W_out[[10]].abs().max() == 0 and tuned.blocks[1].mlp.W_out[[12]].abs().max() == 0
    # rerunning resumes from the finished checkpoints and gives the same weights
    before = {n: p.clone() for n, p in tuned.named_parameters()}
    assert main(argv) == 0
    again = load_model(str(out / "model"))
    assert all(torch.equal(before[n], p) for n, p in again.named_parameters())


def test_train_cli_rejects_neurons_from_another_model_before_training(tmp_path, capsys):
    neurons = _neurons_file(tmp_path / "neurons.json", shape=(30, 1536))
    rc = main(["train", "--model", "tiny", "--neurons", str(neurons), "--out", str(tmp_path / "o"), "--steps", "2",
               "--no-progress"])
    assert rc == 2 and "shape" in capsys.readouterr().err
    assert not (tmp_path / "o" / "train.json").exists()
    rc = main(["train", "--model", "tiny", "--method", "stage1", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "--neurons" in capsys.readouterr().err
