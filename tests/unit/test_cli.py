"""The command line explains itself: every flag has help, choices are checked, old spellings parse."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from neurorit_lens.cli import common
from neurorit_lens.cli.main import command_modules, main, parse_command
from neurorit_lens.config import (
    AblationConfig,
    DataConfig,
    EvalConfig,
    MiningConfig,
    RunConfig,
    TrainConfig,
)

MODULES = {m.NAME: m for m in command_modules()}
ROOT = Path(__file__).resolve().parents[2]


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _options(text: str) -> dict[str, str]:
    """``{"--flag": "help text"}`` from tyro's help, boxed (a terminal) or not (captured)."""
    opts: dict[str, list[str]] = {}
    cur = None
    for raw in text.splitlines():
        line = raw.removeprefix("│").rstrip().removesuffix("│").rstrip()
        body = line.lstrip()
        indent = len(line) - len(body)
        if body.startswith("-") and not set(body) <= {"-", "─"} and indent <= 2:
            invocation, _, rest = re.split(r"(\s{2,})", body + "  ", maxsplit=1)
            cur = invocation.split()[0].rstrip(",")
            opts[cur] = [rest.strip()]
        elif cur is not None and body and indent > 2:
            opts[cur].append(body)
        else:
            cur = None  # a border, a group title or description, a blank line
    return {k: " ".join(p for p in v if p) for k, v in opts.items()}


def test_every_subcommand_is_found():
    assert {"ablate", "data", "eval", "mine", "report", "run", "train"} <= set(MODULES)
    for mod in MODULES.values():
        assert mod.HELP and mod.Args.__doc__, mod.NAME


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_flag_says_what_it_does_and_shows_its_default_once(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    opts = _options(_help(capsys, [name]))
    assert "-h" in opts and len(opts) >= 3, opts
    for flag, text in opts.items():
        if flag == "-h":
            continue
        marks = re.findall(r"\((?:default: [^)]*|required|repeatable)\)", text)  # repeatable: an append flag
        assert len(marks) == 1, f"{name} {flag}: default shown {len(marks)} times: {text!r}"
        words = re.sub(r"\((?:default: [^)]*|required|repeatable)\)", "", text).split()
        assert len(words) >= 3, f"{name} {flag} has no help text: {text!r}"


def test_root_help_lists_every_subcommand(capsys):
    text = _help(capsys, [])
    for name, mod in MODULES.items():
        assert name in text and mod.HELP.split()[0] in text


@pytest.mark.parametrize("argv, allowed", [
    (["mine", "--method", "igg"], ("ig_joint", "grad_x_act")),
    (["mine", "--site", "mid"], ("post", "pre")),
    (["train", "--model", "tiny", "--out", "x", "--lr-schedule", "cosin"], ("cosine", "linear", "constant")),
    (["ablate", "--model", "tiny", "--neurons", "n.json", "--out", "x", "--mode", "zeros"], ("zero", "mean", "scale")),
    (["run", "--stages", "eval,mien"], ("ablate", "report")),
    (["run", "--methods", "neurorit,fulll"], ("stage1", "layers")),
    (["eval", "--template", "chatml"], ("plain", "chat")),
])
def test_a_bad_choice_exits_2_listing_the_allowed_values(argv, allowed, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(a in err for a in allowed), err
    assert not (tmp_path / "x").exists()


def test_makefile_run_args_parse_to_the_same_config():
    make = (ROOT / "Makefile").read_text()
    raw = re.search(r"RUN_ARGS \?=((?:.*\\\n)*.*)", make).group(1).replace("\\\n", " ")
    cfg = MODULES["run"].build_config(parse_command(MODULES["run"], shlex.split(raw)))
    assert type(cfg) is RunConfig
    assert (cfg.eval_limit, cfg.mine_limit, cfg.ablate_limit, cfg.train_limit) == (24, 24, 16, 120)
    assert cfg.data == DataConfig(n_passages=3, max_prompt_tokens=256)
    assert cfg.eval == EvalConfig(settings=("closed", "gold", "noise=0.4", "noise=0.8", "irrelevant"),
                                  max_new_tokens=16)
    assert cfg.mining == MiningConfig(threshold=0.05)
    assert cfg.ablation == AblationConfig(sets=("R_excl", "I_excl"), accuracy_limit=8)
    # the library's training defaults (deactivation none), with the control trained beside it
    assert cfg.train == TrainConfig(steps=24, batch_size=2, lr=3e-4) and cfg.train.deactivation == "none"
    assert cfg.methods == ("neurorit",) and cfg.controls == ("layers",)


def test_controls_parse_and_none_turns_them_off():
    run = MODULES["run"]
    assert run.build_config(parse_command(run, ["--controls", "none"])).controls == ()
    cfg = run.build_config(parse_command(run, ["--methods", "neurorit,full", "--controls", "layers,full"]))
    assert cfg.controls == ("layers", "full") and cfg.trained_methods() == ("neurorit", "full", "layers")


def test_defaults_match_the_configs_and_none_tuples_parse():
    mine = parse_command(MODULES["mine"], [])
    assert common.config_of(mine.data) == DataConfig(split="train")
    assert common.config_of(mine.mining) == MiningConfig()
    assert parse_command(MODULES["run"], []).to_dict() == {**RunConfig().to_dict(), "config": None,
                                                           "progress": True, "threads": None}
    mine = parse_command(MODULES["mine"], ["--layers", "0,2", "--limit", "none", "--split-fractions", "0.5,0.25,0.25"])
    assert mine.mining.layers == (0, 2) and mine.data.limit is None and mine.data.split_fractions == (0.5, 0.25, 0.25)
    assert parse_command(MODULES["mine"], ["--layers", "none"]).mining.layers is None
    train = parse_command(MODULES["train"], ["--model", "tiny", "--out", "o", "--lr-grid", "1e-3,3e-2",
                                             "--no-resume", "--seed", "3", "--train-attention"])
    cfg = common.config_of(train.train, seed=train.seed)
    assert type(cfg) is TrainConfig and cfg.lr_grid == (1e-3, 3e-2) and cfg.seed == 3 and cfg.train_attention
    assert not train.resume and train.launch.config().backend == "auto"
    assert main(["mine", "--split-fractions", "0.5,0.5"]) == 2


def test_without_hides_a_flag_and_config_of_restores_the_plain_config(capsys):
    flags = common.without(EvalConfig, "seed")
    cfg = common.config_of(flags(max_new_tokens=4), seed=7)
    assert type(cfg) is EvalConfig and cfg == EvalConfig(max_new_tokens=4, seed=7)
    eval_opts = _options(_help(capsys, ["eval"]))
    assert "--seed" in eval_opts and "Random seed for the split" in eval_opts["--seed"]


GROUP_HELP = {"data": "Which QA data, how it is split", "mining": "Attribution of the answer to neurons",
              "eval": "Greedy generation and the metrics", "ablation": "The causal test",
              "train": "The training method"}


@pytest.mark.parametrize("name", ["ablate", "data", "eval", "mine", "run", "train"])
def test_each_option_group_is_described_by_its_own_comment(name, capsys, monkeypatch):
    # a section without its own comment once showed the comment of the field above it
    monkeypatch.setenv("COLUMNS", "100")  # one column of option groups
    text = _help(capsys, [name])
    groups = re.findall(r"^ ([\w.]+) options\s*\n -+\s*\n\s+(\S[^\n]*)", text, re.M)
    assert groups, text[:500]
    for group, line in groups:
        want = GROUP_HELP.get(group.split(".")[-1])
        if want:
            assert line.startswith(want), f"{name}: group {group!r} is described as {line!r}"


def test_train_cli_accepts_clean_without_neurons(tmp_path):
    out = tmp_path / "clean"
    assert main(["train", "--model", "tiny", "--out", str(out), "--method", "clean", "--data", "embedded:12",
                 "--steps", "1", "--batch-size", "2", "--template", "plain", "--n-passages", "2",
                 "--no-progress"]) == 0
    res = json.loads((out / "train.json").read_text())
    assert res["method"] == "clean" and res["data"]["train"]["settings"] == {"gold": res["data"]["train"]["n_items"]}


LONG_RUNNING = {"run": [], "mine": [], "eval": [], "neuron": [], "train": ["--model", "tiny", "--out", "o"],
                "ablate": ["--model", "tiny", "--neurons", "n.json", "--out", "o"]}


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_long_running_commands_take_the_common_options(name):
    assert issubclass(MODULES[name].Args, common.Common)
    args = parse_command(MODULES[name], [*LONG_RUNNING[name], "--no-progress", "--device", "meta", "--threads", "3",
                                         "--seed", "5"])
    assert (args.progress, args.device, args.threads, args.seed) == (False, "meta", 3, 5)
    args = parse_command(MODULES[name], LONG_RUNNING[name])
    assert (args.progress, args.device, args.threads, args.seed) == (True, "cpu", None, 0)


def test_threads_sets_torch_threads_before_the_command_runs(monkeypatch):
    import torch

    seen: list[int] = []
    monkeypatch.setattr(MODULES["eval"], "run", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    n = 2 if before != 2 else 1
    try:
        assert main(["eval", "--threads", str(n), "--no-progress"]) == 0
        assert seen == [n]
    finally:
        torch.set_num_threads(before)
    assert main(["eval", "--threads", "0"]) == 2 and seen == [n]

