"""Mining's ``precision="auto"`` (neurorit_lens/precision.py ``resolve_precision``): bf16 for IG where the
device runs bf16 natively, fp32 otherwise; the resolved value is what runs and what is recorded (score
files' fingerprints, ``neurons.json``), and an fp32 folder still resumes. The support check is
monkeypatched, so the tests do not depend on the machine's CPU."""

from __future__ import annotations

import json

import pytest
import torch

import neurorit_lens.neurons.mining as mining
import neurorit_lens.precision as precision_mod
from neurorit_lens.cli.main import main
from neurorit_lens.config import DataConfig, MiningConfig
from neurorit_lens.data import embedded_examples
from neurorit_lens.experiments.study_config import SET_DATA_KEYS, StudyConfig
from neurorit_lens.experiments.study_mining import mismatches
from neurorit_lens.neurons.attribution import attribute
from neurorit_lens.neurons.mining import SCORE_FIELDS, MiningResult, mine
from neurorit_lens.neurons.score_files import fingerprint
from neurorit_lens.precision import bf16_supported, resolve_precision
from tests.helpers import cached_tiny_model

DATA = DataConfig(max_prompt_tokens=320, n_passages=2)


@pytest.fixture
def supported(monkeypatch):
    """Set whether the device 'runs bf16 natively' for resolve_precision."""
    def set_to(value: bool) -> None:
        monkeypatch.setattr(precision_mod, "bf16_supported", lambda device=None: value)
    return set_to


@pytest.fixture
def seen(monkeypatch):
    """The precision of every attribute() call mining makes."""
    calls: list[str] = []

    def spy(*a, **k):
        calls.append(k["precision"])
        return attribute(*a, **k)

    monkeypatch.setattr(mining, "attribute", spy)
    return calls


@pytest.mark.parametrize("native", [True, False])
def test_resolve_precision_on_each_branch(supported, native):
    supported(native)
    assert resolve_precision("auto", "ig") == resolve_precision("auto", "ig_joint", "cuda") == (
        "bf16" if native else "fp32")
    assert resolve_precision("auto", "grad_x_act") == "fp32"
    for method in ("ig", "ig_joint", "grad_x_act"):  # explicit values are kept, whatever the device
        assert resolve_precision("fp32", method) == "fp32" and resolve_precision("bf16", method) == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve_precision("fp16", "ig")


def test_bf16_support_check(monkeypatch):
    def boom():
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert bf16_supported() and bf16_supported("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not bf16_supported("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", boom)  # an error reads as unsupported
    assert not bf16_supported("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not bf16_supported("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert bf16_supported("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", boom)
    assert not bf16_supported(torch.device("cuda"))
    assert not bf16_supported("meta")  # neither CPU nor CUDA


def _recorded(folder) -> str:
    return json.loads((folder / "neurons.json").read_text())["meta"]["config"]["precision"]


def test_default_mining_records_the_resolved_precision(tmp_path, supported, seen):
    supported(True)
    exs, model = embedded_examples()[:2], cached_tiny_model()
    cfg = MiningConfig(method="ig", steps=2, layers=(1,))
    assert cfg.precision == "auto"
    res = mine(model, exs, cfg, DATA, out_dir=tmp_path / "ig", show_progress=False)
    assert set(seen) == {"bf16"} and res.config.precision == "bf16" and _recorded(tmp_path / "ig") == "bf16"
    assert MiningResult.load(tmp_path / "ig").config.precision == "bf16"
    seen.clear()
    res = mine(model, exs, MiningConfig(method="grad_x_act"), DATA, out_dir=tmp_path / "gxa", show_progress=False)
    assert set(seen) == {"fp32"} and res.config.precision == "fp32" and _recorded(tmp_path / "gxa") == "fp32"
    supported(False)  # no native bf16: IG in fp32 too
    seen.clear()
    res = mine(model, exs, cfg, DATA, show_progress=False)
    assert set(seen) == {"fp32"} and res.config.precision == "fp32"


def test_an_fp32_folder_resumes_under_explicit_fp32_and_is_never_mixed_with_bf16(tmp_path, supported, seen,
                                                                                    monkeypatch):
    supported(True)
    stamped: list[set[str]] = []

    def fp_spy(name, shape, fields, tokens, extra=None):
        stamped.append(set(fields))
        return fingerprint(name, shape, fields, tokens, extra)

    monkeypatch.setattr(mining, "fingerprint", fp_spy)
    out = tmp_path / "m"
    args = ["mine", "--model", "tiny", "--data", "embedded", "--split", "all", "--limit", "2", "--method", "ig",
            "--steps", "2", "--layers", "1", "--max-prompt-tokens", "320", "--n-passages", "2", "--no-progress",
            "--out", str(out)]
    assert main([*args, "--precision", "fp32"]) == 0
    n = len(seen)
    assert n > 0 and set(seen) == {"fp32"} and _recorded(out) == "fp32"
    # fp32 fingerprints hold the score fields alone, as before precision existed: old fp32 files stay valid
    assert stamped and all(f == set(SCORE_FIELDS) for f in stamped)
    assert main([*args, "--precision", "fp32"]) == 0  # explicit fp32: every file resumed
    assert len(seen) == n
    stamped.clear()
    assert main(args) == 0  # auto resolves to bf16 here: nothing of the fp32 run is reused
    assert len(seen) == 2 * n and set(seen[n:]) == {"bf16"} and _recorded(out) == "bf16"
    assert all(f == {*SCORE_FIELDS, "precision"} for f in stamped)


def test_a_study_set_declared_auto_matches_either_resolved_value(tmp_path):
    from tests.unit.test_study_config import SHIPPED

    d = json.loads(SHIPPED.read_text())
    d["mining"]["sets"]["ig"]["precision"] = "auto"
    d["mining"]["sets"]["grad_x_act"]["precision"] = "auto"
    cfg = StudyConfig.from_dict(d)
    for name, got, ok in (("ig", "bf16", True), ("ig", "fp32", True), ("grad_x_act", "fp32", True),
                          ("grad_x_act", "bf16", False)):
        spec = cfg.set_spec(name)
        mined = {**{k: v for k, v in spec.items() if k not in SET_DATA_KEYS}, "precision": got}
        data = {k: spec[k] for k in SET_DATA_KEYS}
        bad = mismatches(cfg, name, cfg.model, mined, data)
        assert bad == ([] if ok else ["precision='bf16' (declared 'auto')"]), (name, got, bad)


def test_the_runners_mining_inputs_hold_the_resolved_precision(tmp_path, supported):
    """An earlier grad_x_act run folder (mined in fp32) stays current under the auto default."""
    from neurorit_lens.config import RunConfig
    from neurorit_lens.runner import Runner

    supported(True)
    cfg = RunConfig(out=str(tmp_path))
    assert cfg.mining.precision == "auto" and cfg.mining.method == "grad_x_act"
    assert Runner(cfg).stage_inputs("mining")["mining"] == cfg.mining.replace(precision="fp32").to_dict()
    ig = cfg.replace(mining=MiningConfig(method="ig"))
    assert Runner(ig).stage_inputs("mining")["mining"]["precision"] == "bf16"
    supported(False)
    assert Runner(ig).stage_inputs("mining")["mining"]["precision"] == "fp32"
