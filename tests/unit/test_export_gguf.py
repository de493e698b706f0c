"""GGUF export: the tensors read back with gguf's reader equal the transformers export's
state dict (Q/K rows un-permuted), transformers' GGUF loader rebuilds a model with the TL
model's log-probs, and bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurorit_lens.cli.main import main as cli_main
from neurorit_lens.models.export import hf_checkpoint
from neurorit_lens.models.export_gguf import export_gguf, permute_rotary, unpermute_rotary
from neurorit_lens.models.saved import save_trained_model
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.training.plans import bake_deactivation
from tests.unit.test_export import TEXTS, _tl, _tune_like_stage1

gguf = pytest.importorskip("gguf")


def test_rotary_permutation_matches_llama_cpp_loop():
    """Reference: llama.cpp's row order written as a loop: within each head of size d, row
    ``2j`` is HF row ``j`` and row ``2j + 1`` is HF row ``j + d/2``."""
    n_head, d, cols = 3, 8, 5
    w = torch.arange(n_head * d * cols, dtype=torch.float32).reshape(n_head * d, cols)
    want = torch.empty_like(w)
    for h in range(n_head):
        for j in range(d // 2):
            want[h * d + 2 * j] = w[h * d + j]
            want[h * d + 2 * j + 1] = w[h * d + j + d // 2]
    assert torch.equal(permute_rotary(w, n_head), want)
    assert torch.equal(unpermute_rotary(permute_rotary(w, n_head), n_head), w)


def _read(path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: np.array(t.data) for t in reader.tensors}


def test_gguf_tensors_equal_the_hf_state_dict(tmp_path):
    model = _tl("llama", tmp_path)
    _tune_like_stage1(model)  # b_in folded into a down-projection bias, a deactivation baked
    path = export_gguf(model, tmp_path / "m.gguf")
    got = _read(path)
    config, sd = hf_checkpoint(model)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    assert len(got) == len(sd)
    for name, t in sd.items():
        arr = torch.from_numpy(got[names.get_name(name, try_suffixes=(".weight", ".bias"))].copy())
        arr = arr.reshape(t.shape)
        if ".q_proj." in name:
            arr = unpermute_rotary(arr, config.num_attention_heads)
        elif ".k_proj." in name:
            arr = unpermute_rotary(arr, config.num_key_value_heads)
        assert torch.equal(arr, t.float()), name
    assert "blk.0.ffn_down.bias" in got and "output.weight" in got  # folded b_in; untied head
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["tokenizer.ggml.tokens"]
    assert len(field.data) == config.vocab_size
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.attention.head_count_kv"].contents() == config.num_key_value_heads


def test_transformers_loads_the_gguf_with_equal_logprobs(tmp_path):
    from neurorit_lens.models.gguf import load_hf_from_gguf

    model = _tl("llama", tmp_path, tie=True, prepend_bos=True)
    # a baked zero deactivation; no b_in moved: transformers' GGUF loader builds its config from
    # the metadata alone and drops the optional bias tensors (llama.cpp's loader reads them)
    bake_deactivation(model, NeuronSet({0: [1, 2, 3], 1: [5]}))
    path = export_gguf(model, tmp_path / "m.gguf")
    hf, tok = load_hf_from_gguf(path)
    for text in TEXTS:
        ids = model.to_tokens(text)
        assert tok(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
        with torch.no_grad():
            d = (hf(ids).logits.log_softmax(-1) - model(ids).log_softmax(-1)).abs().max()
        assert float(d) < 1e-4


def test_gguf_bad_input_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError, match="Llama-style"):
        export_gguf(_tl("gpt2", tmp_path), tmp_path / "g.gguf")
    model = _tl("llama", tmp_path)
    src = save_trained_model(model, tmp_path / "model")
    out = tmp_path / "m.gguf"
    assert cli_main(["export", "--model", str(src), "--out", str(out), "--format", "gguf"]) == 0
    assert out.is_file()
    with pytest.raises(ValueError, match="exists.*force"):
        export_gguf(src, out)
    assert cli_main(["export", "--model", str(src), "--out", str(out), "--format", "gguf", "--force",
                     "--gguf-dtype", "float16"]) == 0
    half = _read(out)
    assert half["blk.0.attn_q.weight"].dtype == np.float16 and half["blk.0.attn_norm.weight"].dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(src, tmp_path / "x.gguf", dtype="int4")
