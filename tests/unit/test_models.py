"""Model loading offline: local HF dirs (Llama, GPT-2 and other archs) match HF logits,
no socket is touched, the converted-model cache round-trips, bad names and unwritable
cache dirs give clear errors. All on tiny random models built in tmp_path."""

from __future__ import annotations

import json
import socket
import warnings

import pytest
import torch

from neurorit_lens.models import (
    SUPPORTED,
    CacheDirError,
    default_cache_dir,
    is_instruct,
    load_model,
)
from neurorit_lens.models import cache as cache_mod
from neurorit_lens.models.convert import gemma_config_dict, hf_to_tl, tl_config_dict
from neurorit_lens.models.tiny import tiny_tokenizer

PROMPTS = ["The capital of Zarnia is Velmor.", "Question: Who wrote the report? Answer: Alice"]


def _hf_config(arch: str, vocab: int):
    import transformers as tf

    small = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=128)
    if arch == "llama":
        return tf.LlamaConfig(num_key_value_heads=2, **small), tf.LlamaForCausalLM
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128), tf.GPT2LMHeadModel
    if arch == "qwen2":
        return tf.Qwen2Config(num_key_value_heads=2, **small), tf.Qwen2ForCausalLM
    if arch == "mistral":
        return tf.MistralConfig(num_key_value_heads=2, sliding_window=None, **small), tf.MistralForCausalLM
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(**small), tf.GPTNeoXForCausalLM
    if arch == "gemma":
        return tf.GemmaConfig(num_key_value_heads=1, head_dim=8, **small), tf.GemmaForCausalLM
    if arch == "gemma2":
        cfg = tf.Gemma2Config(num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=16,
                              **small)
        return cfg, tf.Gemma2ForCausalLM
    if arch == "gemma3":
        cfg = tf.Gemma3TextConfig(num_key_value_heads=1, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
                                  layer_types=["sliding_attention", "full_attention"], **small)
        return cfg, tf.Gemma3ForCausalLM
    raise AssertionError(arch)


def _save_checkpoint(tmp_path, arch: str, seed: int = 0):
    """A tiny random HF checkpoint dir (weights + tokenizer), as a user would have on disk."""
    tok = tiny_tokenizer()
    cfg, cls = _hf_config(arch, len(tok))
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = cls(cfg).eval()
        # random norm weights so the RMSNorm (+1) conventions are actually exercised
        for n, p in hf.named_parameters():
            if "norm" in n or "ln" in n:
                p.data.normal_(0.0, 0.3).add_(0.0 if arch.startswith("gemma") else 1.0)
    d = tmp_path / f"ckpt_{arch}"
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d, hf, tok


def _assert_matches_hf(model, hf, tok, atol=1e-4):
    for text in PROMPTS:
        ids = tok(text, return_tensors="pt").input_ids
        assert model.to_tokens(text).tolist() == ids.tolist()  # TL tokens == HF tokens
        with torch.no_grad():
            ref = hf(ids).logits
            out = model(ids)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=atol, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_local_hf_dir_matches_hf_logits_without_network(tmp_path, arch, monkeypatch):
    d, hf, tok = _save_checkpoint(tmp_path, arch)
    calls = []
    real_connect = socket.socket.connect

    def spy(self, address):  # conftest already blocks; record any attempt explicitly too
        calls.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    model = load_model(str(d))
    assert calls == []
    assert model.cfg.model_name == d.name
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.tokenizer.pad_token is not None
    _assert_matches_hf(model, hf, tok)


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "gpt_neox", "gemma", "gemma2", "gemma3"])
def test_other_architectures_match_hf(tmp_path, arch):
    d, hf, tok = _save_checkpoint(tmp_path, arch)
    model = load_model(d)
    _assert_matches_hf(model, hf, tok)


def test_path_string_with_family_word_does_not_confuse_tl(tmp_path):
    """TL dispatches on 'llama'/'gemma' in the path; a GPT-2 dir named like that must still load."""
    d, hf, tok = _save_checkpoint(tmp_path, "gpt2")
    renamed = d.rename(tmp_path / "my-llama-gemma-gpt2")
    model = load_model(str(renamed))
    assert model.cfg.original_architecture == "GPT2LMHeadModel"
    _assert_matches_hf(model, hf, tok)


def test_quantization_config_is_dropped_and_gemma3_dict_matches_tl():
    from transformers import Gemma3TextConfig

    from neurorit_lens.tl_backend import tl_loading

    hf_cfg = Gemma3TextConfig(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                              num_key_value_heads=1, head_dim=256, vocab_size=262144, rms_norm_eps=1e-6,
                              sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=8192,
                              layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                           for i in range(18)],
                              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    ours = gemma_config_dict(hf_cfg)
    theirs = tl_loading.convert_hf_model_config("google/gemma-3-270m")  # name-based: no hub call
    for k, v in ours.items():
        assert theirs.get(k) == pytest.approx(v) if isinstance(v, float) else theirs.get(k) == v, k
    hf_cfg.quantization_config = {"quant_method": "gguf"}
    cfg, tmp = tl_config_dict(hf_cfg)
    try:
        assert "quantization_config" not in json.loads((tmp / "config.json").read_text())
        assert cfg["quantization_method"] is None
    finally:
        import shutil

        shutil.rmtree(tmp)


def test_converted_cache_roundtrip_and_completion_marker(tmp_path):
    from neurorit_lens.models.convert import from_converted

    d, hf, tok = _save_checkpoint(tmp_path, "llama")
    conv = hf_to_tl(hf, tok, tmp_path / "tok")
    key = {"file": "x.gguf", "size": 1}
    entry = cache_mod.write_entry(tmp_path / "cache", "m", key, conv.cfg_dict, conv.state_dict, conv.tokenizer)
    assert cache_mod.read_entry(entry, key) is not None
    assert cache_mod.read_entry(entry, {"file": "x.gguf", "size": 2}) is None  # other source -> rebuild
    cfg, sd, tok2 = cache_mod.load_entry(entry)
    model = from_converted(cfg, sd, tok2, model_name="m", default_prepend_bos=False)
    _assert_matches_hf(model, hf, tok)
    (entry / "entry.json").unlink()  # an interrupted write: never read as complete
    assert cache_mod.read_entry(entry, key) is None
    assert not list(entry.parent.glob(".*staging*"))


def test_gguf_loader_uses_cache_and_skips_conversion(tmp_path, monkeypatch):
    """Second load of a GGUF model must come from the cache (conversion not called)."""
    from neurorit_lens.models import gguf

    d, hf, tok = _save_checkpoint(tmp_path, "llama")
    calls = []

    def fake_gguf_reader(path):  # stands in for transformers' dequantisation of a real file
        calls.append(path)
        return hf, tok

    monkeypatch.setattr(gguf, "load_hf_from_gguf", fake_gguf_reader)
    key = {"file": "tiny.gguf", "size": 1}
    m1 = gguf.load_gguf_model("tinyg", tmp_path / "tiny.gguf", key, cache_dir=tmp_path / "c")
    m2 = gguf.load_gguf_model("tinyg", tmp_path / "tiny.gguf", key, cache_dir=tmp_path / "c", dtype=torch.bfloat16)
    assert len(calls) == 1 and m1.cfg.model_name == "tinyg" and m2.cfg.dtype == torch.bfloat16
    _assert_matches_hf(m1, hf, tok)


def test_unwritable_cache_dir_is_a_clear_error(tmp_path, monkeypatch):
    from neurorit_lens.models import gguf

    blocker = tmp_path / "a_file"
    blocker.write_text("not a dir")
    with pytest.raises(CacheDirError, match="not writable.*NEURORIT_CACHE"):
        cache_mod.ensure_writable(blocker / "cache")
    monkeypatch.setattr(gguf, "load_hf_from_gguf", lambda p: pytest.fail("must fail before converting"))
    with pytest.raises(PermissionError, match="a_file"):
        gguf.load_gguf_model("x", tmp_path / "x.gguf", {"k": 1}, cache_dir=blocker / "cache")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURORIT_CACHE", str(tmp_path / "nc"))
    assert default_cache_dir() == tmp_path / "nc"
    monkeypatch.delenv("NEURORIT_CACHE")
    assert default_cache_dir().name == "neurorit_lens"


def test_unknown_names_list_what_is_supported(tmp_path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct.*gemma-3-270m.*tiny"):
        load_model("no-such-model-xyz")
    with pytest.raises(ValueError, match="no such file"):
        load_model(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="dtype"):
        load_model("tiny", dtype="int3")
    assert SUPPORTED == ("smollm2-135m-instruct", "gemma-3-270m", "tiny")


def test_tl_official_name_not_cached_is_an_error_not_a_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_model("gpt2")


def test_unsupported_architecture(tmp_path):
    from transformers import BertConfig

    d = tmp_path / "bert"
    BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16).save_pretrained(d)
    with pytest.raises(ValueError, match="unsupported architecture"):
        load_model(d)


def test_saved_dir_dispatches_to_trainer_loader(tmp_path, monkeypatch):
    import sys
    import types

    (tmp_path / "neurorit_model.json").write_text("{}")
    fake = types.ModuleType("neurorit_lens.models.saved")
    from neurorit_lens.models.tiny import tiny_model

    calls, model = [], tiny_model()
    fake.load_saved_model = lambda path, device="cpu", dtype=torch.float32: calls.append((path, device, dtype)) or model
    monkeypatch.setitem(sys.modules, "neurorit_lens.models.saved", fake)
    assert load_model(str(tmp_path), dtype="bf16") is model
    assert calls == [(str(tmp_path), "cpu", torch.bfloat16)]


def test_tiny_and_is_instruct():
    m = load_model("tiny", n_ctx=64)
    assert m.cfg.model_name == "tiny" and m.cfg.n_ctx == 64 and not is_instruct(m)
    assert not any(p.requires_grad for p in m.parameters())
    for name, want in [("smollm2-135m-instruct", True), ("gemma-3-270m", False), ("gemma-3-270m-it", True),
                       ("Qwen2-0.5B-Instruct", True), ("gpt2", False), ("my-chat-model", True)]:
        m.cfg.model_name = name
        assert is_instruct(m) is want, name
    m.neurorit_instruct = True
    assert is_instruct(m)
