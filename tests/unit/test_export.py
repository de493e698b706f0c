"""Export to transformers: tiny Llama / Qwen2 / GPT-2 models round-trip through
``AutoModelForCausalLM.from_pretrained`` with log-probs equal to TL's; trained ``b_in``
entries and a baked deactivation fold exactly; bad input errors name what is wrong."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from neurorit_lens.cli.main import main as cli_main
from neurorit_lens.models.convert import hf_to_hooked
from neurorit_lens.models.export import export_hf, hf_native_params, stop_ids_of, tl_only_params, to_hf_model
from neurorit_lens.models.saved import save_trained_model
from neurorit_lens.models.tiny import tiny_model, tiny_tokenizer
from neurorit_lens.neuron_sets import NeuronSet
from neurorit_lens.training.masks import full_param_masks
from neurorit_lens.training.methods import bake_deactivation

TEXTS = ["The capital of Zarnia is Velmor.", "Question: Who wrote the report? Answer: Alice wrote it."]


def _tiny_hf(arch: str, tie: bool = False):
    import transformers as tf

    tok = tiny_tokenizer()
    small = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=128, tie_word_embeddings=tie)
    cfg, cls = {
        "llama": (lambda: tf.LlamaConfig(num_key_value_heads=2, **small), tf.LlamaForCausalLM),
        "qwen2": (lambda: tf.Qwen2Config(num_key_value_heads=2, **small), tf.Qwen2ForCausalLM),
        "gpt2": (lambda: tf.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                       tie_word_embeddings=tie), tf.GPT2LMHeadModel),
        "gpt_neox": (lambda: tf.GPTNeoXConfig(**small), tf.GPTNeoXForCausalLM),
    }[arch]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = cls(cfg()).eval()
        for n, p in hf.named_parameters():  # non-trivial norms and biases
            if "norm" in n or "ln" in n:
                p.data.normal_(1.0, 0.3)
            elif n.endswith("bias"):
                p.data.normal_(0.0, 0.1)
    return hf, tok


def _tl(arch: str, tmp_path, tie: bool = False, prepend_bos: bool | None = None):
    hf, tok = _tiny_hf(arch, tie)
    return hf_to_hooked(hf, tok, model_name=f"tiny-{arch}", tokenizer_dir=tmp_path / f"tok_{arch}",
                        default_prepend_bos=prepend_bos)


def _tune_like_stage1(model) -> NeuronSet:
    """Perturb b_in / b_out / W_in entries as stage 1 training would, then bake a deactivation."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for l in range(model.cfg.n_layers):
            mlp = model.blocks[l].mlp
            idx = torch.tensor([3, 7, 11])
            mlp.b_in[idx] += torch.randn(3, generator=g)
            mlp.W_in[:, idx] += 0.1 * torch.randn(model.cfg.d_model, 3, generator=g)
    deact = NeuronSet({0: [1, 2, 3], 1: [5]})
    bake_deactivation(model, deact)
    return deact


def _logprobs_close(model, hf, tok, atol: float = 1e-4) -> float:
    worst = 0.0
    for text in TEXTS:
        ids = model.to_tokens(text)
        assert tok(text).input_ids == ids[0].tolist()  # the exported tokenizer tokenises as TL does
        with torch.no_grad():
            ref = model(ids).log_softmax(-1)
            out = hf(ids).logits.log_softmax(-1)
        worst = max(worst, float((out - ref).abs().max()))
    assert worst < atol, worst
    return worst


def _load_back(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()
    return hf, AutoTokenizer.from_pretrained(str(path), local_files_only=True)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_untouched_model_round_trips(tmp_path, arch):
    model = _tl(arch, tmp_path)
    out = export_hf(model, tmp_path / "hf")
    hf, tok = _load_back(out)
    _logprobs_close(model, hf, tok)
    if arch == "llama":  # no bias switched on when none is needed: same config as the source
        assert hf.config.mlp_bias is False and hf.config.attention_bias is False


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_stage1_tuned_and_baked_model_round_trips(tmp_path, arch):
    model = _tl(arch, tmp_path)
    _tune_like_stage1(model)
    out = export_hf(model, tmp_path / "hf")
    hf, tok = _load_back(out)
    _logprobs_close(model, hf, tok)
    if arch == "llama":
        assert hf.config.mlp_bias is True
        # b_in folds into the down-projection bias: b_down = b_in @ W_out + b_out, gate/up bias zero
        mlp = model.blocks[0].mlp
        want = mlp.b_in.double() @ mlp.W_out.double() + mlp.b_out.double()
        torch.testing.assert_close(hf.model.layers[0].mlp.down_proj.bias.double(), want, atol=1e-6, rtol=0)
        assert not hf.model.layers[0].mlp.up_proj.bias.any() and not hf.model.layers[0].mlp.gate_proj.bias.any()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_native_params_are_the_hf_checkpoints_params(tmp_path, arch):
    """``full`` trains what fine-tuning the HF model trains: the native TL parameters hold
    exactly as many entries as the (untied) HF model has, and the rest are TL's zeros."""
    hf, _ = _tiny_hf(arch)
    model = _tl(arch, tmp_path)
    params = dict(model.named_parameters())
    native = hf_native_params(model)
    assert sum(params[n].numel() for n in native) == sum(p.numel() for p in hf.parameters())
    assert "unembed.b_U" not in native and set(native) | set(tl_only_params(model)) == set(params)
    assert all(not params[n].any() for n in tl_only_params(model))
    assert set(full_param_masks(model)) == set(native)
    assert ("blocks.0.mlp.b_in" in native) == (arch in ("gpt2", "gpt_neox"))
    assert hf_native_params(tiny_model()) == [n for n, _ in tiny_model().named_parameters()]  # TL-only: all


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_full_tuned_model_exports_to_the_source_config(tmp_path, arch):
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.training.items import TrainItem
    from neurorit_lens.training.methods import train

    model = _tl(arch, tmp_path, prepend_bos=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = [TrainItem(f"Question: Where is Zarnia{i}? Answer:", f" Velmor{i}", id=f"q{i}") for i in range(4)]
    cfg = TrainConfig(method="full", steps=2, batch_size=2, lr=1e-2, lr_grid=(), warmup_steps=0,
                      checkpoint_every=0, eval_every=0, weight_decay=0.1)
    res = train(model, items, None, None, None, cfg, out_dir=tmp_path / "run", progress=False)
    params = dict(model.named_parameters())
    assert res.trainable_params == sum(params[n].numel() for n in hf_native_params(model)) < res.total_params
    assert not torch.equal(params["blocks.0.mlp.W_in"], before["blocks.0.mlp.W_in"])  # trained
    for n in tl_only_params(model):  # TL's zero biases (and b_U) untouched
        assert torch.equal(params[n], before[n]), n
    out = export_hf(tmp_path / "run" / "model", tmp_path / "hf")
    hf, tok = _load_back(out)
    _logprobs_close(model, hf, tok)
    if arch == "llama":
        assert hf.config.mlp_bias is False and hf.config.attention_bias is False


def test_saved_folder_and_cli_export(tmp_path):
    model = _tl("llama", tmp_path, tie=True, prepend_bos=True)  # TL prepends BOS, the tokenizer alone does not
    deact = _tune_like_stage1(model)
    src = save_trained_model(model, tmp_path / "run" / "model", sets={"deactivated": deact}, extra={"method": "stage1"})
    rc = cli_main(["export", "--model", str(src), "--out", str(tmp_path / "hf")])
    assert rc == 0
    hf, tok = _load_back(tmp_path / "hf")
    assert hf.config.tie_word_embeddings is True
    _logprobs_close(model, hf, tok)
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert set(stop_ids_of(model.tokenizer)) <= set(gen["eos_token_id"] if isinstance(gen["eos_token_id"], list)
                                                   else [gen["eos_token_id"]])
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_non_empty_target_needs_force(tmp_path, capsys):
    model = _tl("gpt2", tmp_path)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty.*force"):
        export_hf(model, out)
    assert (out / "keep.txt").exists()
    src = save_trained_model(model, tmp_path / "model")
    assert cli_main(["export", "--model", str(src), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main(["export", "--model", str(src), "--out", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    with pytest.raises(ValueError, match="overwrite the source"):
        export_hf(src, src, force=True)


def test_unsupported_architecture_is_named(tmp_path):
    with pytest.raises(ValueError, match="GPTNeoXForCausalLM"):
        export_hf(_tl("gpt_neox", tmp_path), tmp_path / "hf")
    with pytest.raises(ValueError, match="neurorit_tiny"):
        export_hf(tiny_model(), tmp_path / "hf2")
    assert not (tmp_path / "hf").exists()


def test_parameter_without_a_slot_is_named(tmp_path):
    model = _tl("llama", tmp_path)
    with torch.no_grad():
        model.unembed.b_U[5] = 0.5
    with pytest.raises(ValueError, match="unembed.b_U"):
        to_hf_model(model)


def test_config_feature_without_equivalent_is_named(tmp_path):
    model = _tl("llama", tmp_path)
    model.cfg.use_qk_norm = True
    with pytest.raises(ValueError, match="use_qk_norm"):
        to_hf_model(model)


@pytest.mark.slow
@pytest.mark.real_model
def test_tuned_smollm2_exports_with_equal_logprobs(tmp_path):
    from neurorit_lens.config import TrainConfig
    from neurorit_lens.data import embedded_examples
    from neurorit_lens.models import load_model
    from neurorit_lens.models.saved import load_saved_model
    from neurorit_lens.training.methods import train

    model = load_model("smollm2-135m-instruct")
    ex = embedded_examples(4)
    sets = {"R_excl": NeuronSet({3: [1, 2, 3], 10: [7, 8]}), "I_excl": NeuronSet({5: [4, 9], 12: [100]})}
    cfg = TrainConfig(method="stage1", steps=2, lr_grid=(), lr=1e-2, batch_size=2, warmup_steps=0,
                      checkpoint_every=0, eval_every=0)
    train(model, ex, None, sets, None, cfg, out_dir=tmp_path / "run", progress=False)
    assert any(bool(model.blocks[l].mlp.b_in.ne(0).any()) for l in (3, 10))  # stage 1 did move b_in
    out = export_hf(tmp_path / "run" / "model", tmp_path / "hf")
    hf, tok = _load_back(out)
    tuned = load_saved_model(tmp_path / "run" / "model")
    worst = 0.0
    for text in TEXTS:
        ids = tuned.to_tokens(text)
        assert ids.tolist() == tok(text, return_tensors="pt").input_ids.tolist()
        with torch.no_grad():
            d = (hf(ids).logits.log_softmax(-1) - tuned(ids).log_softmax(-1)).abs().max()
        worst = max(worst, float(d))
    assert worst < 1e-4, worst
