"""Distributed mining and training: 2 CPU processes (gloo, loopback) against one process.

The 2-process job runs once per module (spawning costs seconds) and every test compares
one of its results with the same task run in this process without a process group.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from neurorit_lens.distributed import collectives as C
from neurorit_lens.distributed import process as D
from tests.integration import dist_worker as W

WORLD = 2


@pytest.fixture(scope="module")
def spawned_dir(tmp_path_factory):
    """The shared folder of the 2-process job (one sub-folder per task)."""
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def spawned(spawned_dir):
    """Each rank's task results (the job runs once per module)."""
    return W.run_spawned(WORLD, spawned_dir, list(W.TASKS))


# --- single-process behaviour -----------------------------------------------------------------
def test_dist_env_parsing():
    assert D.dist_env({}) is None
    assert D.dist_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = D.dist_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.2",
                      "MASTER_PORT": "1234"})
    assert (env.rank, env.world_size, env.local_rank, env.master_port, env.is_main) == (3, 4, 1, 1234, False)
    with pytest.raises(ValueError, match="RANK"):
        D.dist_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="out of range"):
        D.dist_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="not an integer"):
        D.dist_env({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="backend"):
        D.DistributedConfig(backend="mpi")
    assert D.resolve_backend("auto") in ("gloo", "nccl")


def test_sharding_covers_every_item_once_and_interleave_inverts_it():
    for n in range(0, 9):
        for world in (1, 2, 3):
            shards = [D.shard_indices(n, r, world) for r in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(n))
            assert D.interleave(shards) == list(range(n))
    with pytest.raises(ValueError, match="shard"):
        D.shard_indices(3, rank=2, world_size=2)


def test_helpers_are_noops_in_one_process():
    assert not D.is_distributed() and D.get_rank() == 0 and D.get_world_size() == 1
    s = W.FakeStats(0)
    before = s.keep_count.clone()
    assert C.all_reduce_additive(s) is s and torch.equal(s.keep_count, before)
    assert C.all_reduce_scalar(2.5) == 2.5 and C.global_token_count(7) == 7
    assert C.gather_objects("x") == ["x"] and D.current_shard() is None
    assert C.stats_comm_bytes(s) == 8 + 15 * 8 + 15 * 4
    with pytest.raises(ValueError, match="no field"):
        C.all_reduce_additive(object(), fields=("keep_count",))


def test_fsdp_helpers_are_identity_in_one_process():
    from neurorit_lens.distributed import fsdp as F

    model = W.tiny_model_for_check()
    assert F.shard_model_fsdp(model) is model and not F.is_sharded(model)
    assert not any(F.is_dtensor(p) for p in model.parameters()) and not F.is_dtensor(3.0)
    t = torch.arange(6.0).view(2, 3)
    assert F.full_tensor(t) is t and torch.equal(F.shard_like(t.double(), t), t) and F.shard_like(t, t).dtype == t.dtype
    got = F.gather_full([("a", t)])
    assert torch.equal(got["a"], t) and got["a"].data_ptr() != t.data_ptr()
    opt = torch.optim.AdamW([torch.nn.Parameter(t.clone())])
    opt.param_groups[0]["params"][0].grad = torch.ones(2, 3)
    opt.step()
    state = opt.state_dict()
    full = F.full_optimizer_state(state)
    assert torch.equal(full["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    back = F.shard_optimizer_state(full, opt.param_groups[0]["params"])
    assert back["state"][0]["exp_avg"] is full["state"][0]["exp_avg"]


# --- 2 processes vs 1 -----------------------------------------------------------------------
@pytest.mark.allow_loopback
def test_all_reduce_of_additive_stats_is_the_sum(spawned):
    ref = [W.FakeStats(r) for r in range(WORLD)]
    for res in spawned:
        got = res["stats"]
        assert got["n_examples"] == sum(s.n_examples for s in ref)
        assert got["keep_count"].dtype == torch.int64
        assert torch.equal(got["keep_count"], sum(s.keep_count for s in ref))
        assert torch.allclose(got["score_sum"], sum(s.score_sum for s in ref))


@pytest.mark.allow_loopback
def test_gradient_sync_training_matches_one_process(spawned):
    ref = W.manual_training()
    for res in spawned:
        got = res["manual_training"]
        assert got["n_global"] == ref["n_global"]
        assert got["n_sync_params"] == 2  # only the trainable subset is synchronised
        assert got["losses"] == pytest.approx(ref["losses"], abs=1e-5)
        assert torch.allclose(got["w_in"], ref["w_in"], atol=1e-5)
        assert torch.allclose(got["w_out"], ref["w_out"], atol=1e-5)
    # the loss went down, and masked entries never moved
    assert ref["losses"][-1] < ref["losses"][0]
    fresh = W.tiny_model_for_check()
    assert torch.equal(ref["w_in"][:, 8:], fresh.blocks[0].mlp.W_in[:, 8:])


@pytest.mark.allow_loopback
def test_distributed_trainer_matches_single_process_trainer(spawned, tmp_path):
    ref = W.trainer_run(tmp_path / "single")
    assert ref["world_size"] == 1
    r0, r1 = (res["trainer"] for res in spawned)
    assert r0["world_size"] == r1["world_size"] == 2  # the one Trainer, data parallel in a process group
    for got in (r0, r1):
        assert len(got["log"]) == len(ref["log"]) == 4
        for g, e in zip(got["log"], ref["log"], strict=True):
            assert g["loss"] == pytest.approx(e["loss"], abs=1e-5)
            assert g["grad_norm"] == pytest.approx(e["grad_norm"], abs=1e-5)
            assert g["n_tokens"] == e["n_tokens"] and g["lr"] == pytest.approx(e["lr"])
        assert got["log"][-1]["dev_loss"] == pytest.approx(ref["log"][-1]["dev_loss"], abs=1e-5)
        for name, p in ref["params"].items():
            assert torch.allclose(got["params"][name], p, atol=1e-5), name
    assert ref["log"][-1]["loss"] < ref["log"][0]["loss"]
    # rank 0 wrote the shared folder, rank 1 wrote nothing of its own
    assert "checkpoint.pt" in r0["files"] and "train_log.jsonl" in r0["files"]


@pytest.mark.allow_loopback
def test_fsdp_sharded_layer_training_matches_one_process(spawned):
    ref = W.fsdp_training()
    assert not ref["sharded"]
    for res in spawned:
        got = res["fsdp"]
        assert got["sharded"]  # parameters really were DTensor shards
        assert got["losses"] == pytest.approx(ref["losses"], abs=1e-5)
        for name, p in ref["params"].items():
            assert torch.allclose(got["params"][name], p, atol=1e-5), name
    assert ref["losses"][-1] < ref["losses"][0]


@pytest.mark.allow_loopback
def test_fsdp_sharded_full_training_with_checkpointing_matches_one_process(spawned):
    """``full`` (every weight) sharded over 2 gloo processes by FSDP2, blocks recomputed in backward:
    the losses and final weights of one process without sharding or checkpointing."""
    ref = W._fsdp_run(lambda n: not n.endswith("attn.b_K"), 3, 1e-3, checkpointing=False)
    assert not ref["sharded"] and len(ref["params"]) > 20
    for res in spawned:
        got = res["fsdp_full"]
        assert got["sharded"]
        assert got["losses"] == pytest.approx(ref["losses"], abs=1e-5)
        for name, p in ref["params"].items():
            torch.testing.assert_close(got["params"][name], p, rtol=1e-4, atol=1e-5, msg=name)
    assert ref["losses"][-1] < ref["losses"][0]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model" / "model.safetensors"))


@pytest.mark.allow_loopback
def test_full_training_sharded_by_fsdp_matches_one_process_and_resumes(spawned, spawned_dir, tmp_path):
    """``train(method="full")`` in 2 gloo processes shards the model with FSDP2 (sharding ``auto``)
    and gives the losses, gradient norms, dev losses and saved weights of one process; a run
    stopped after its step-2 checkpoint and resumed on a fresh model ends with the same weights."""
    ref = W.full_train_run(tmp_path, resume_check=False)
    assert not ref["sharded"] and ref["masked_error"] is None  # one process: nothing sharded
    r0, r1 = (res["full_train"] for res in spawned)
    for got in (r0, r1):
        assert got["sharded"] and got["dtensor"]  # every parameter is an FSDP2 shard
        assert len(got["log"]) == len(ref["log"]) == 4
        for g, e in zip(got["log"], ref["log"], strict=True):
            assert g["loss"] == pytest.approx(e["loss"], abs=1e-5)
            assert g["grad_norm"] == pytest.approx(e["grad_norm"], rel=1e-4, abs=1e-5)
            assert g["n_tokens"] == e["n_tokens"] and g["items"] == e["items"] and g["lr"] == pytest.approx(e["lr"])
            assert (g["dev_loss"] is None) == (e["dev_loss"] is None)
            if e["dev_loss"] is not None:
                assert g["dev_loss"] == pytest.approx(e["dev_loss"], abs=1e-5)
        assert [o["loss"] for o in got["resumed_log"]] == [o["loss"] for o in got["log"]]
        assert "whole tensors only" in got["masked_error"]
    assert ref["log"][-1]["loss"] < ref["log"][0]["loss"]
    one = _weights(tmp_path / "whole")
    two = _weights(spawned_dir / "full_train" / "whole")  # rank 0 gathered the shards: full tensors
    resumed = _weights(spawned_dir / "full_train" / "resumed")
    assert list(two) == list(one) and all(two[n].shape == t.shape for n, t in one.items())
    init = W.tiny_model_for_check().state_dict()
    moved = 0
    for name, t in one.items():
        torch.testing.assert_close(resumed[name], two[name], rtol=0, atol=1e-7, msg=name)
        if name.endswith("attn.b_K"):
            continue  # true gradient 0 (softmax shift invariance): Adam turns rounding noise into steps
        torch.testing.assert_close(two[name], t, rtol=1e-4, atol=1e-5, msg=name)
        moved += not torch.equal(t, init[name])
    assert moved > 20  # full: nearly every tensor was trained
    lines = (spawned_dir / "full_train" / "whole" / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 4  # rank 0 alone wrote the log, one line per step
    # the sharded run's step-2 checkpoint holds full tensors: one process resumes it
    shutil.copytree(spawned_dir / "full_train" / "stopped", tmp_path / "cross")
    cross = W.full_train(tmp_path / "cross")
    assert [o.loss for o in cross.log] == pytest.approx([o["loss"] for o in ref["log"]], abs=1e-5)
    for name, t in _weights(tmp_path / "cross").items():
        if not name.endswith("attn.b_K"):
            torch.testing.assert_close(t, one[name], rtol=1e-4, atol=1e-5, msg=name)


def test_sharding_choice_and_its_validation():
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.training.trainer import uses_fsdp

    for method, auto in (("full", True), ("clean", True), ("layers", False), ("neurorit", False)):
        cfg = TrainConfig(method=method)
        assert cfg.sharding == "auto" and uses_fsdp(cfg, 2) is auto and not uses_fsdp(cfg, 1)
        assert not uses_fsdp(cfg.replace(sharding="ddp"), 4)
    assert uses_fsdp(TrainConfig(method="full", sharding="fsdp"), 2)
    with pytest.raises(ValueError, match="every weight.*few percent"):
        TrainConfig(method="layers", sharding="fsdp")


def test_split_across_devices_validates_and_maps_blocks_like_tl():
    model = W.tiny_model_for_check()
    assert D.split_across_devices(model, 1) is model
    with pytest.raises(ValueError, match="n_devices"):
        D.split_across_devices(model, 0)
    if torch.cuda.device_count() < 64:
        with pytest.raises(ValueError, match="GPUs"):
            D.split_across_devices(model, 64)
    groups = [D.block_device_index(i, 30, 4) for i in range(30)]
    assert groups == sorted(groups) and set(groups) == {0, 1, 2, 3}
    assert max(groups.count(g) for g in set(groups)) - min(groups.count(g) for g in set(groups)) <= 1
    assert D.rank_device("cuda", D.DistEnv(1, 2, 1, "127.0.0.1", 1)) == "cuda:1"
    assert D.rank_device("cpu", D.DistEnv(1, 2, 1, "127.0.0.1", 1)) == "cpu"


@pytest.mark.allow_loopback
def test_distributed_mining_equals_single_process(spawned, spawned_dir, tmp_path):
    from neurorit_lens.io import read_json
    from neurorit_lens.neurons.mining import MiningResult

    ref = W.mining_run(tmp_path / "single")
    assert ref["n_R"] > 0 and ref["sets"]["R_excl"] and ref["sets"]["I_excl"]  # a non-trivial case
    r0, r1 = (res["mine"] for res in spawned)
    for got in (r0, r1):  # every rank selects the same sets from the all-reduced stats
        assert got["sets"] == ref["sets"]
        assert torch.equal(got["keep_R"], ref["keep_R"]) and torch.equal(got["keep_I"], ref["keep_I"])
        assert got["n_R"] == ref["n_R"]
        assert torch.allclose(got["sum_R"], ref["sum_R"], rtol=1e-4, atol=1e-5)  # threads: float32 order
    # rank 0 holds every example's scores in the single-process order and wrote the same files
    assert r0["ids_R"] == ref["ids_R"] and r0["ids_I"] == ref["ids_I"]
    assert torch.allclose(r0["scores_R"], ref["scores_R"], rtol=1e-4, atol=1e-5)
    assert torch.allclose(r0["scores_I"], ref["scores_I"], rtol=1e-4, atol=1e-5)
    assert len(r1["ids_R"]) < len(ref["ids_R"])  # rank 1 only kept its own shard
    assert r0["info"]["distributed"]["world_size"] == 2
    assert [p["n_input_examples"] for p in r0["info"]["distributed"]["per_rank"]] == [3, 2]
    assert {"neurons.json", "scores_R.safetensors", "scores_I.safetensors", "mining.json", "scores"} <= set(r0["files"])
    single = read_json(tmp_path / "single" / "neurons.json")
    dist_dir = spawned_dir / "mine"
    multi = read_json(dist_dir / "neurons.json")
    assert {k: v for k, v in multi.items() if k != "meta"} == {k: v for k, v in single.items() if k != "meta"}
    for key in ("counts", "totals", "n_examples", "excluded", "config", "model_shape"):
        assert multi["meta"][key] == single["meta"][key], key
    for name, mass in single["meta"]["layer_mass"].items():
        assert multi["meta"]["layer_mass"][name] == pytest.approx(mass, rel=1e-4, abs=1e-5)
    loaded = MiningResult.load(dist_dir)
    assert loaded.sets == {k: v for k, v in MiningResult.load(tmp_path / "single").sets.items()}


# --- the CLI under torchrun (subprocesses: slow on a loaded 2-core machine) ------------------
def _cli(tmp_path, nproc: int | None, argv: list[str]):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if nproc is None:
        cmd = [sys.executable, "-m", "neurorit_lens", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
               "127.0.0.1", "--master-port", str(W.free_port()), "-m", "neurorit_lens", *argv]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
@pytest.mark.allow_loopback
def test_torchrun_mine_and_train_cli_equal_single_process(tmp_path):
    import json

    mine_args = ["mine", "--model", "tiny", "--limit", "5", "--method", "grad_x_act", "--max-prompt-tokens", "256",
                 "--no-progress"]
    _cli(tmp_path, None, [*mine_args, "--out", str(tmp_path / "m1")])
    _cli(tmp_path, 2, [*mine_args, "--out", str(tmp_path / "m2")])
    a, b = (json.loads((tmp_path / d / "neurons.json").read_text()) for d in ("m1", "m2"))
    assert {k: v for k, v in a.items() if k != "meta"} == {k: v for k, v in b.items() if k != "meta"}
    assert a["meta"]["n_examples"] == b["meta"]["n_examples"]

    train_args = ["train", "--model", "tiny", "--neurons", str(tmp_path / "m1" / "neurons.json"), "--limit", "8",
                  "--method", "neurorit", "--steps", "4", "--batch-size", "2", "--grad-accum", "2",
                  "--warmup-steps", "0", "--lr", "1e-3", "--max-prompt-tokens", "256", "--no-progress"]
    _cli(tmp_path, None, [*train_args, "--out", str(tmp_path / "t1")])
    _cli(tmp_path, 2, [*train_args, "--out", str(tmp_path / "t2")])
    la, lb = ([json.loads(x) for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
              for d in ("t1", "t2"))
    assert [x["loss"] for x in lb] == pytest.approx([x["loss"] for x in la], abs=1e-5)
    assert [x["n_tokens"] for x in lb] == [x["n_tokens"] for x in la]
    assert (tmp_path / "t2" / "model").is_dir() and (tmp_path / "t2" / "train.json").is_file()


@pytest.mark.slow
@pytest.mark.allow_loopback
def test_torchrun_train_full_cli_shards_with_fsdp_and_equals_single_process(tmp_path):
    """`neurorit train --method full` under torchrun (sharding auto: FSDP2) logs the losses of one
    process and saves full, unsharded weights in the same format."""
    import json

    args = ["train", "--model", "tiny", "--limit", "8", "--method", "full", "--steps", "3", "--batch-size", "2",
            "--grad-accum", "2", "--warmup-steps", "0", "--lr", "1e-3", "--max-prompt-tokens", "256",
            "--no-progress"]
    _cli(tmp_path, None, [*args, "--out", str(tmp_path / "t1")])
    r = _cli(tmp_path, 2, [*args, "--out", str(tmp_path / "t2")])
    assert r.stderr.count("sharded the model with FSDP2 over 2 ranks") == 2  # once per rank
    la, lb = ([json.loads(x) for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
              for d in ("t1", "t2"))
    assert len(la) == len(lb) == 3
    assert [x["loss"] for x in lb] == pytest.approx([x["loss"] for x in la], abs=1e-5)
    one, two = _weights(tmp_path / "t1"), _weights(tmp_path / "t2")
    assert list(two) == list(one)
    for name, t in one.items():
        if not name.endswith("attn.b_K"):  # see test_full_training_sharded_by_fsdp_matches_one_process_and_resumes
            torch.testing.assert_close(two[name], t, rtol=1e-4, atol=1e-5, msg=name)
    assert json.loads((tmp_path / "t2" / "train.json").read_text())["config"]["sharding"] == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (bf16 mining and NCCL gradient sync); CI runs on CPU only")
def test_gpu_bf16_mining_and_grad_sync_path():
    from neurorit_lens.config import DataConfig, MiningConfig
    from neurorit_lens.data import embedded_examples
    from neurorit_lens.distributed.mining import mine_distributed
    from neurorit_lens.models import tiny_model

    model = tiny_model(dtype=torch.bfloat16).to("cuda")
    res = mine_distributed(model, embedded_examples()[:2], MiningConfig(method="ig", steps=2, alpha_chunk=2),
                           DataConfig(max_prompt_tokens=256), show_progress=False)
    assert torch.isfinite(res.scores_R).all() and res.scores_R.shape[1:] == (2, 64)
