"""Batched KV-cache greedy generation equals one-at-a-time and a naive no-cache loop."""

from __future__ import annotations

import pytest
import torch

from neurorit_lens.config import EvalConfig
from neurorit_lens.hooks import neuron_hooks, zero_ablation
from neurorit_lens.models import tiny_model
from neurorit_lens.models.generation import (
    encode_for_generation,
    generate_greedy,
    generate_greedy_ids,
    left_pad,
    stop_token_ids,
)
from neurorit_lens.neuron_sets import NeuronSet
from tests.helpers import BAD_CHOICE, cached_tiny_model, unchecked

PROMPTS = [
    "The capital of Zarnia is",
    "Hi",
    "Question: Who wrote the report? Answer: Alice wrote it. Passages: Document 1 says the river",
    "What is the name of the tallest tower in Brindle?",
    "Irrelevant text about weather and trains. The Sorrel Spire is",
    "user: where? assistant:",
]
N_NEW = 8




def naive_greedy(model, prompt: str, max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """Reference: full forward on the unpadded sequence each step, argmax of the last logits."""
    ids = encode_for_generation(model, prompt)
    stops = set(stop_token_ids(model)) if stop_at_eos else set()
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            t = int(model(torch.tensor([ids + out]))[0, -1].argmax())
            if t in stops:
                break
            out.append(t)
    return out


@pytest.mark.parametrize("gated", [False, True])
def test_batched_equals_single_and_naive(gated):
    model = cached_tiny_model(gated=gated)
    batched = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=3, show_progress=False)
    single = [generate_greedy_ids(model, [p], max_new_tokens=N_NEW, show_progress=False)[0] for p in PROMPTS]
    naive = [naive_greedy(model, p, N_NEW) for p in PROMPTS]
    assert batched == single
    assert batched == naive
    assert any(len(x) == N_NEW for x in batched)  # something ran the whole length
    texts = generate_greedy(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False)
    assert texts == [model.tokenizer.decode(x, skip_special_tokens=True) for x in naive]


@pytest.mark.parametrize("gated", [False, True])
def test_generation_with_zero_ablation_hook(gated):
    model = cached_tiny_model(gated=gated)
    ns = NeuronSet({0: list(range(0, 64, 2)), 1: list(range(20))})
    plain = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False)
    with neuron_hooks(model, zero_ablation(ns)):
        batched = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False)
        naive = [naive_greedy(model, p, N_NEW) for p in PROMPTS]
    assert batched == naive
    assert batched != plain  # the hook was in effect during generation
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())


def test_hook_sees_every_step():
    model = cached_tiny_model()
    shapes = []

    def record(act, *, hook):
        shapes.append(tuple(act.shape))

    with neuron_hooks(model, [("blocks.1.mlp.hook_post", record)]):
        generate_greedy_ids(model, ["Hi there", "Hi"], max_new_tokens=4, stop_at_eos=False, show_progress=False)
    assert shapes[0][0] == 2 and shapes[0][1] == max(len(encode_for_generation(model, p)) for p in ["Hi there", "Hi"])
    assert shapes[1:] == [(2, 1, 64)] * 3  # one pass per new token after the prompt pass


def test_stops_at_eos_and_chat_end():
    model = tiny_model(seed=3)
    tok = model.tokenizer
    eos = tok.eos_token_id
    assert eos in stop_token_ids(model)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(model)
    assert tok.convert_tokens_to_ids("<|endoftext|>") in stop_token_ids(model)
    with torch.no_grad():
        model.unembed.b_U[eos] = 1e4  # EOS is always the argmax
    assert generate_greedy(model, ["Hi", "The capital"], max_new_tokens=5, show_progress=False) == ["", ""]
    ids = generate_greedy_ids(model, ["Hi"], max_new_tokens=5, stop_at_eos=False, show_progress=False)
    assert ids == [[eos] * 5]


def test_left_pad_and_bad_input():
    toks, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert toks.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    model = cached_tiny_model()
    assert generate_greedy(model, [], show_progress=False) == []
    with pytest.raises(ValueError, match="list of strings"):
        unchecked(generate_greedy_ids)(model, "a prompt", show_progress=False)  # where it is checked
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_greedy(model, ["a"], max_new_tokens=0, show_progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        generate_greedy(model, ["a"], batch_size=0, show_progress=False)
    with pytest.raises(ValueError, match="context"):
        generate_greedy(model, ["word " * 600], show_progress=False)
    with pytest.raises(ValueError, match="prompt 1"):
        unchecked(generate_greedy_ids)(model, ["a", 3], show_progress=False)


@pytest.mark.parametrize("gated", [False, True])
def test_decode_layout_is_bitwise_neutral_and_restored(gated):
    from neurorit_lens.models.generation import decode_layout

    model = cached_tiny_model(gated=gated)
    before = {n: (p, p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    toks = model.to_tokens(PROMPTS[2])
    with torch.no_grad():
        ref = model(toks)
        with decode_layout(model):
            changed = [n for n, p in model.named_parameters() if p.stride() != before[n][2]]
            got = model(toks)
    assert any(n.endswith("mlp.W_out") for n in changed) and any(n.endswith("attn.W_O") for n in changed)
    assert torch.equal(ref, got)
    for n, p in model.named_parameters():
        assert p is before[n][0] and p.data_ptr() == before[n][1] and p.stride() == before[n][2]
    with pytest.raises(RuntimeError), decode_layout(model):
        raise RuntimeError("boom")
    assert all(p.data_ptr() == before[n][1] for n, p in model.named_parameters())


def _tiny_hf_twin_model(arch: str, tmp_path):
    """A tiny random HF Llama / GPT-2 converted to TL (exportable, so 'auto' may use the HF twin)."""
    import transformers as tf

    from neurorit_lens.models.convert import hf_to_hooked
    from neurorit_lens.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             initializer_range=0.2)
        cls = tf.LlamaForCausalLM
    else:
        cfg = tf.GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                            initializer_range=0.2)
        cls = tf.GPT2LMHeadModel
    torch.manual_seed(0)
    hf = cls(cfg).eval()
    return hf_to_hooked(hf, tok, model_name=f"tiny-{arch}", tokenizer_dir=tmp_path / "tok")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hf_twin_gives_identical_greedy_ids(tmp_path, arch):
    from neurorit_lens.models import generation as gen

    model = _tiny_hf_twin_model(arch, tmp_path)
    with torch.no_grad():  # a trained b_in entry (folded into the down bias for Llama)
        model.blocks[0].mlp.b_in[:5] += 0.5
    tl = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False, backend="tl")
    hf = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False, backend="hf")
    auto = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=3, show_progress=False)
    assert hf == tl == auto
    assert tl == [naive_greedy(model, p, N_NEW) for p in PROMPTS]
    assert len({tuple(x) for x in tl}) > 1 and any(len(x) == N_NEW for x in tl)
    assert model in gen._HF_CACHE  # 'auto' used the twin
    twin = gen._HF_CACHE[model][1]
    with torch.no_grad():  # any in-place change to a parameter rebuilds the twin
        model.blocks[1].mlp.W_out.mul_(3.0)
    changed = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False)
    assert gen._HF_CACHE[model][1] is not twin
    assert changed == generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False,
                                          backend="tl")


def test_hooks_force_the_tl_path(tmp_path):
    from neurorit_lens.models import generation as gen

    model = _tiny_hf_twin_model("llama", tmp_path)
    calls = []

    def record(act, *, hook):
        calls.append(act.shape[1])

    with neuron_hooks(model, [("blocks.0.mlp.hook_post", record)]):
        assert gen.hooks_active(model)
        generate_greedy_ids(model, PROMPTS[:2], max_new_tokens=3, stop_at_eos=False, show_progress=False)
        with pytest.raises(ValueError, match="hooks are active"):
            generate_greedy_ids(model, PROMPTS[:2], max_new_tokens=3, show_progress=False, backend="hf")
    assert len(calls) == 3 and model not in gen._HF_CACHE  # every pass went through TL
    assert not gen.hooks_active(model)
    with pytest.raises(BAD_CHOICE, match="backend"):
        generate_greedy_ids(model, PROMPTS[:1], show_progress=False, backend="vllm")
    with pytest.raises(ValueError, match="'auto', 'tl', 'hf'.*vllm"):  # without the type checker, as users run
        unchecked(generate_greedy_ids)(model, PROMPTS[:1], show_progress=False, backend="vllm")


def test_eval_config_generation_backend_is_a_choice():
    assert EvalConfig().generation_backend == "auto"
    assert EvalConfig.from_dict({"generation_backend": "tl"}).generation_backend == "tl"
    with pytest.raises(BAD_CHOICE, match="generation_backend"):
        EvalConfig(generation_backend="vllm")
    cfg = EvalConfig()
    cfg.generation_backend = "vllm"  # type: ignore[assignment]  (past the type checker, as users run)
    with pytest.raises(ValueError, match="unknown generation_backend 'vllm'; choose from auto, tl, hf"):
        cfg.__post_init__()


def test_unexportable_model_uses_tl_and_hf_backend_names_it():
    model = cached_tiny_model()
    with pytest.raises(ValueError, match="neurorit_tiny"):
        generate_greedy_ids(model, PROMPTS[:1], max_new_tokens=2, show_progress=False, backend="hf")


def _cut_at_first_line_end(tok, ids: list[int]) -> list[int]:
    """Reference: the shortest prefix whose text holds a newline after a non-blank character."""
    import re

    for k in range(1, len(ids) + 1):
        if re.search(r"\S[\s\S]*\n", tok.decode(ids[:k], skip_special_tokens=True)):
            return ids[:k]
    return ids


@pytest.mark.parametrize("backend", ["tl", "hf"])
def test_stop_at_newline_equals_the_unstopped_output_cut_at_its_first_line_end(tmp_path, backend):
    from neurorit_lens.data.answers import extract_answer
    from neurorit_lens.models.generation import newline_token_ids

    model = _tiny_hf_twin_model("llama", tmp_path)
    newline, _, _ = newline_token_ids(model.tokenizer)
    assert newline and all("\n" in model.tokenizer.decode([i]) for i in newline)
    with torch.no_grad():  # make newlines likely enough that some rows stop early and some never do
        model.unembed.W_U[:, newline] *= 3.0
    kw = dict(max_new_tokens=24, batch_size=4, show_progress=False, backend=backend)
    full = generate_greedy_ids(model, PROMPTS, **kw)
    stopped = generate_greedy_ids(model, PROMPTS, stop_at_newline=True, **kw)
    tok = model.tokenizer
    assert stopped == [_cut_at_first_line_end(tok, ids) for ids in full]
    pairs = list(zip(stopped, full, strict=True))
    assert any(len(s) < len(f) for s, f in pairs) and any(s == f for s, f in pairs)
    texts = generate_greedy(model, PROMPTS, stop_at_newline=True, **kw)
    full_texts = generate_greedy(model, PROMPTS, **kw)
    assert [extract_answer(t, ["x"]) for t in texts] == [extract_answer(t, ["x"]) for t in full_texts]
    assert generate_greedy(model, PROMPTS, **kw) == full_texts  # the default is unchanged


def test_eval_config_stop_at_newline_defaults_off():
    from neurorit_lens.config import EvalConfig

    assert EvalConfig().stop_at_newline is False
    assert EvalConfig.from_dict({"stop_at_newline": True}).stop_at_newline is True


def test_stop_at_newline_ends_the_batch_when_every_row_has_stopped(tmp_path):
    from neurorit_lens.models.generation import newline_token_ids

    model = _tiny_hf_twin_model("llama", tmp_path)
    with torch.no_grad():
        model.unembed.W_U[:, newline_token_ids(model.tokenizer)[0]] *= 3.0
    kw = dict(max_new_tokens=24, show_progress=False, backend="tl")
    prompt = PROMPTS[0]
    stopped = generate_greedy_ids(model, [prompt], stop_at_newline=True, **kw)[0]
    assert len(stopped) < 24
    passes = []
    with neuron_hooks(model, [("blocks.0.mlp.hook_post", lambda act, hook: passes.append(1))]):
        assert generate_greedy_ids(model, [prompt], stop_at_newline=True, **kw)[0] == stopped
    assert len(passes) == len(stopped)  # the prompt pass plus one per kept token but the last


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_neurons_scaled_in_the_twin_decode_as_the_hooks_do(tmp_path, arch):
    """Zero and scale ablation baked into the twin's output rows give TL-with-hooks' greedy ids
    (and logits to float tolerance); the rows are restored bit for bit and the twin is kept."""
    from neurorit_lens.ablation.controls import ablation_hooks
    from neurorit_lens.models import generation as gen

    model = _tiny_hf_twin_model(arch, tmp_path)
    neurons = NeuronSet({0: [1, 5, 9, 40], 1: [2, 3, 77]})
    twin = gen.twin_of(model)
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    plain = generate_greedy_ids(model, PROMPTS, max_new_tokens=N_NEW, batch_size=4, show_progress=False)
    toks = model.to_tokens(PROMPTS[0])
    outputs = []
    for mode, factor in (("zero", 0.0), ("scale", 0.5), ("scale", 3.0)):
        with torch.no_grad(), neuron_hooks(model, ablation_hooks(neurons, mode, scale=factor)):
            ref = generate_greedy_ids(model, PROMPTS, N_NEW, 4, show_progress=False, backend="tl")
            ref_logits = model(toks)
        with gen.scaled_neurons_in_twin(model, neurons.by_layer(), factor) as ok:
            assert ok and not gen.hooks_active(model)
            got = generate_greedy_ids(model, PROMPTS, N_NEW, 4, show_progress=False, backend="hf")
            with torch.no_grad():
                got_logits = twin(toks).logits
        assert got == ref, mode
        torch.testing.assert_close(got_logits, ref_logits, atol=1e-4, rtol=1e-4)
        outputs.append(got)
    assert any(o != plain for o in outputs)  # the ablations change answers: the comparison can fail
    assert gen.twin_of(model) is twin
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in before.items())
    with pytest.raises(RuntimeError), gen.scaled_neurons_in_twin(model, neurons.by_layer(), 0.0):
        raise RuntimeError("boom")
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in before.items())


def test_neurons_are_not_scaled_where_the_twin_folds_an_mlp_bias(tmp_path):
    from neurorit_lens.models import generation as gen

    model = _tiny_hf_twin_model("llama", tmp_path)
    with torch.no_grad():  # b_in becomes a bias of the twin's down projection
        model.blocks[0].mlp.b_in[:5] += 0.5
    twin = gen.twin_of(model)
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    with gen.scaled_neurons_in_twin(model, {0: [1, 2]}, 0.0) as ok:
        assert not ok
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in before.items())
    assert gen.twin_of(tiny_model()) is None  # a TL-only architecture has no twin
