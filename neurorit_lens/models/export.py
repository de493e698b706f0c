"""Export a HookedTransformer (or a ``neurorit train`` model folder) as a transformers checkpoint.

The inverse of :mod:`.convert`, which loads HF weights into TL *unprocessed* (no LayerNorm
folding, no centring): every TL tensor maps back to one HF tensor by a reshape or a
transpose. Two architectures are written:

- **Llama-style** (TL ``original_architecture`` Llama, Mistral without sliding window,
  Qwen2 without sliding window) -> ``LlamaForCausalLM``. transformers' Llama has optional
  biases: ``attention_bias`` (q/k/v/o) and ``mlp_bias`` (gate/up/down). TL's gated MLP
  computes ``(act(x W_gate) * (x W_in) + b_in) W_out + b_out``: its ``b_in`` is added
  *after* the product, so it is a constant on the MLP output and folds exactly into the
  down-projection bias, ``b_down = b_in W_out + b_out`` (computed in float64); gate and up
  biases stay zero. The biases are switched on only when some entry is nonzero, so an
  untouched model exports to the same config it came from.
- **GPT-2** (``GPT2LMHeadModel``): every TL parameter has an HF slot (``c_attn``,
  ``c_proj``, ``c_fc``, LayerNorm biases, ``wpe``).

What neither can hold raises ``ValueError`` naming it: a nonzero ``unembed.b_U`` (neither
``lm_head`` has a bias), any TL parameter without a slot, and config features (sliding
window, rotary scaling, QK norm, logit soft-capping, parallel attention+MLP ...). Other
architectures are refused with their name. Input and output embeddings are tied in the
export exactly when ``W_E == W_U.T`` bitwise.

Which parameters a method may train so that the export stays the source's architecture:
:func:`hf_native_params` lists the TL parameters the HF checkpoints of the model's
architecture have (:data:`NOT_IN_HF` the zero ones TL adds on conversion); the ``full``
method trains exactly those, so a fully tuned Llama exports to the source's config.

>>> import tempfile, torch
>>> m = _demo_llama()
>>> hf = to_hf_model(m)
>>> toks = torch.tensor([[1, 5, 9, 2]])
>>> bool((hf(toks).logits - m(toks)).abs().max() < 1e-4)
True
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import einops
import torch

from neurorit_lens.tl_backend import HookedTransformer

log = logging.getLogger(__name__)

LLAMA_STYLE = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
EXPORTABLE = (*LLAMA_STYLE, "GPT2LMHeadModel")

#: Per-block TL biases that TL adds as zeros to models converted from gated, bias-free
#: architectures (the HF checkpoints have no such tensors).
_BLOCK_BIASES = ("attn.b_Q", "attn.b_K", "attn.b_V", "attn._b_K", "attn._b_V", "attn.b_O", "mlp.b_in", "mlp.b_out")

#: TL parameters (``blocks.{l}.`` stripped) that the architecture's own HF checkpoints do not
#: have: TL adds them as zeros on conversion. ``unembed.b_U`` has no slot in any of these
#: architectures (no ``lm_head`` bias); the others have an optional slot in the exported
#: Llama (``attention_bias`` / ``mlp_bias``, ``b_in`` folded exactly) but switching it on
#: changes the architecture's config, so full fine-tuning leaves them frozen (see
#: :func:`hf_native_params`). Architectures not listed (TL-only models) keep every parameter.
NOT_IN_HF: dict[str, tuple[str, ...]] = {
    **{arch: (*_BLOCK_BIASES, "unembed.b_U") for arch in (
        "LlamaForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM",
        "Gemma3ForCausalLM")},
    "Qwen2ForCausalLM": ("attn.b_O", "mlp.b_in", "mlp.b_out", "unembed.b_U"),  # q/k/v biases are Qwen2's own
    "GPT2LMHeadModel": ("unembed.b_U",),
    "GPTNeoXForCausalLM": ("unembed.b_U",),
}


def _short_name(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[2:]) if parts[0] == "blocks" else name


def tl_only_params(model: torch.nn.Module) -> list[str]:
    """Names of ``model``'s parameters that its HF architecture's checkpoints do not have
    (:data:`NOT_IN_HF`); empty for an architecture that is not listed."""
    arch = getattr(getattr(model, "cfg", None), "original_architecture", None)
    extra = set(NOT_IN_HF.get(str(arch), ()))
    return [n for n, _ in model.named_parameters() if _short_name(n) in extra]


def hf_native_params(model: torch.nn.Module) -> list[str]:
    """Names of ``model``'s parameters that exist in its HF architecture as the source
    checkpoint has it: what fine-tuning the HF model would train, and what the ``full``
    method trains. Every parameter for an architecture :data:`NOT_IN_HF` does not list.

    >>> m = _demo_llama()
    >>> sorted({_short_name(n) for n in set(dict(m.named_parameters())) - set(hf_native_params(m))})[:3]
    ['attn._b_K', 'attn._b_V', 'attn.b_O']
    """
    extra = set(tl_only_params(model))
    return [n for n, _ in model.named_parameters() if n not in extra]


# Special tokens that end an assistant turn in common chat templates (when in the vocab).
CHAT_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>", "</s>", "<|eot_id|>", "<|end|>")


def stop_ids_of(tokenizer: Any) -> list[int]:
    """Token ids that end a generated answer: EOS plus the chat end tokens the tokenizer
    knows as special (or added) tokens, so an ordinary word spelled like one never counts."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    special = set(getattr(tokenizer, "all_special_tokens", [])) | set(
        getattr(tokenizer, "get_added_vocab", dict)().keys())
    vocab = tokenizer.get_vocab()
    for t in CHAT_END_TOKENS:
        if t in special and t in vocab:
            ids.add(int(vocab[t]))
    return sorted(ids)


def _cfg_checks(model: HookedTransformer, arch: str, target: str, expected: dict[str, Any]) -> None:
    """Raise naming the first TL config field whose value ``target`` cannot express."""
    cfg = model.cfg
    for field, want in expected.items():
        have = getattr(cfg, field, None)
        if field == "attn_scale":
            ok = have is not None and math.isclose(float(have), float(want), rel_tol=1e-9)
        elif field.endswith("soft_cap"):
            ok = have is None or float(have) <= 0
        else:
            ok = have == want or (want is False and not have)
        if not ok:
            raise ValueError(f"cannot export this {arch} model as {target}: TL config {field}={have!r} has no "
                             f"equivalent there (needs {want!r})")


def _check_zero(params: dict[str, torch.Tensor], name: str, target: str) -> None:
    p = params.pop(name, None)
    if p is not None and bool(p.detach().ne(0).any()):
        hint = (" (TL adds a zero unembed.b_U to converted models; method 'full' trains only "
                "hf_native_params(model), which leave it out)") if name == "unembed.b_U" else ""
        raise ValueError(f"parameter {name} is nonzero but {target} has no slot for it "
                         f"(max |value| {float(p.abs().max()):.3g}); it cannot be exported exactly{hint}")


def _attn_tensors(params: dict[str, torch.Tensor], l: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """TL ``W_{kind}``/``b_{kind}`` of layer ``l`` (``_W_K``/``_b_K`` under grouped-query attention)."""
    pre = f"blocks.{l}.attn."
    w = params.pop(pre + f"W_{kind}", None)
    if w is None:
        w = params.pop(pre + f"_W_{kind}")
    b = params.pop(pre + f"b_{kind}", None)
    if b is None:
        b = params.pop(pre + f"_b_{kind}")
    return w, b


LLAMA_FIELDS = {
    "normalization_type": "RMS", "positional_embedding_type": "rotary", "gated_mlp": True, "final_rms": True,
    "rotary_adjacent_pairs": False, "use_attn_scale": True, "use_local_attn": False, "use_qk_norm": False,
    "use_NTK_by_parts_rope": False, "use_yarn_rope": False, "use_dynamic_ntk_rope": False,
    "parallel_attn_mlp": False, "scale_attn_by_inverse_layer_idx": False,
    "use_normalization_before_and_after": False, "output_logits_soft_cap": None, "attn_scores_soft_cap": None,
}


def _llama_state_dict(model: HookedTransformer) -> tuple[dict[str, torch.Tensor], bool, bool]:
    """HF Llama state dict of ``model``, and whether attention / MLP biases are needed."""
    cfg = model.cfg
    params = {n: p.detach() for n, p in model.named_parameters()}
    sd: dict[str, torch.Tensor] = {"model.embed_tokens.weight": params.pop("embed.W_E")}
    attn_bias = mlp_bias = False
    for l in range(cfg.n_layers):
        pre, hf = f"blocks.{l}.", f"model.layers.{l}."
        sd[hf + "input_layernorm.weight"] = params.pop(pre + "ln1.w")
        sd[hf + "post_attention_layernorm.weight"] = params.pop(pre + "ln2.w")
        for kind, proj in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")):
            w, b = _attn_tensors(params, l, kind)
            sd[hf + f"self_attn.{proj}.weight"] = einops.rearrange(w, "n m h -> (n h) m")
            sd[hf + f"self_attn.{proj}.bias"] = b.reshape(-1)
        sd[hf + "self_attn.o_proj.weight"] = einops.rearrange(params.pop(pre + "attn.W_O"), "n h m -> m (n h)")
        sd[hf + "self_attn.o_proj.bias"] = params.pop(pre + "attn.b_O")
        attn_bias |= any(bool(sd[hf + f"self_attn.{p}.bias"].ne(0).any())
                         for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
        w_in, w_gate, w_out = (params.pop(pre + f"mlp.{k}") for k in ("W_in", "W_gate", "W_out"))
        b_in, b_out = params.pop(pre + "mlp.b_in"), params.pop(pre + "mlp.b_out")
        sd[hf + "mlp.up_proj.weight"], sd[hf + "mlp.gate_proj.weight"] = w_in.T, w_gate.T
        sd[hf + "mlp.down_proj.weight"] = w_out.T
        # b_in is added after act(gate) * up, so it is the constant b_in @ W_out on the output
        down_bias = (b_in.double() @ w_out.double() + b_out.double()).to(w_out.dtype)
        sd[hf + "mlp.down_proj.bias"] = down_bias
        sd[hf + "mlp.up_proj.bias"] = torch.zeros_like(b_in)
        sd[hf + "mlp.gate_proj.bias"] = torch.zeros_like(b_in)
        mlp_bias |= bool(down_bias.ne(0).any())
    sd["model.norm.weight"] = params.pop("ln_final.w")
    sd["lm_head.weight"] = params.pop("unembed.W_U").T
    _check_zero(params, "unembed.b_U", "LlamaForCausalLM (lm_head has no bias)")
    if params:
        raise ValueError(f"parameters with no slot in LlamaForCausalLM: {sorted(params)[:5]}")
    if not attn_bias:
        sd = {k: v for k, v in sd.items() if not (k.endswith(".bias") and ".self_attn." in k)}
    if not mlp_bias:
        sd = {k: v for k, v in sd.items() if not (k.endswith(".bias") and ".mlp." in k)}
    return sd, attn_bias, mlp_bias


def _llama_config(model: HookedTransformer, tied: bool, attn_bias: bool, mlp_bias: bool):
    from transformers import LlamaConfig

    cfg = model.cfg
    arch = cfg.original_architecture
    _cfg_checks(model, arch, "LlamaForCausalLM", {**LLAMA_FIELDS, "rotary_dim": cfg.d_head,
                                                    "attn_scale": math.sqrt(cfg.d_head)})
    if cfg.d_model % cfg.n_heads:
        raise ValueError(f"cannot export as LlamaForCausalLM: d_model={cfg.d_model} is not a multiple of "
                         f"n_heads={cfg.n_heads}")
    return LlamaConfig(
        vocab_size=cfg.d_vocab, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_key_value_heads or cfg.n_heads, head_dim=cfg.d_head, hidden_act=cfg.act_fn,
        max_position_embeddings=cfg.n_ctx, rms_norm_eps=cfg.eps, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rotary_base)},
        attention_bias=attn_bias, mlp_bias=mlp_bias, architectures=["LlamaForCausalLM"],
    )


GPT2_FIELDS = {
    "normalization_type": "LN", "positional_embedding_type": "standard", "gated_mlp": False,
    "use_local_attn": False, "parallel_attn_mlp": False, "use_qk_norm": False,
    "output_logits_soft_cap": None, "attn_scores_soft_cap": None,
}


def _gpt2_state_dict(model: HookedTransformer) -> dict[str, torch.Tensor]:
    cfg = model.cfg
    params = {n: p.detach() for n, p in model.named_parameters()}
    sd = {"transformer.wte.weight": params.pop("embed.W_E"), "transformer.wpe.weight": params.pop("pos_embed.W_pos")}
    for l in range(cfg.n_layers):
        pre, hf = f"blocks.{l}.", f"transformer.h.{l}."
        for tl_ln, hf_ln in (("ln1", "ln_1"), ("ln2", "ln_2")):
            sd[hf + f"{hf_ln}.weight"] = params.pop(pre + f"{tl_ln}.w")
            sd[hf + f"{hf_ln}.bias"] = params.pop(pre + f"{tl_ln}.b")
        qkv = [_attn_tensors(params, l, k) for k in ("Q", "K", "V")]
        sd[hf + "attn.c_attn.weight"] = torch.cat([einops.rearrange(w, "i m h -> m (i h)") for w, _ in qkv], dim=1)
        sd[hf + "attn.c_attn.bias"] = torch.cat([b.reshape(-1) for _, b in qkv])
        sd[hf + "attn.c_proj.weight"] = einops.rearrange(params.pop(pre + "attn.W_O"), "i h m -> (i h) m")
        sd[hf + "attn.c_proj.bias"] = params.pop(pre + "attn.b_O")
        sd[hf + "mlp.c_fc.weight"] = params.pop(pre + "mlp.W_in")
        sd[hf + "mlp.c_fc.bias"] = params.pop(pre + "mlp.b_in")
        sd[hf + "mlp.c_proj.weight"] = params.pop(pre + "mlp.W_out")
        sd[hf + "mlp.c_proj.bias"] = params.pop(pre + "mlp.b_out")
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = params.pop("ln_final.w"), params.pop("ln_final.b")
    sd["lm_head.weight"] = params.pop("unembed.W_U").T
    _check_zero(params, "unembed.b_U", "GPT2LMHeadModel (lm_head has no bias)")
    if params:
        raise ValueError(f"parameters with no slot in GPT2LMHeadModel: {sorted(params)[:5]}")
    return sd


def _gpt2_config(model: HookedTransformer, tied: bool):
    from transformers import GPT2Config
    from transformers.activations import ACT2FN

    cfg = model.cfg
    checks = dict(GPT2_FIELDS)
    if cfg.use_attn_scale:
        checks["attn_scale"] = math.sqrt(cfg.d_head)
    _cfg_checks(model, cfg.original_architecture, "GPT2LMHeadModel", checks)
    if cfg.d_head * cfg.n_heads != cfg.d_model:
        raise ValueError(f"cannot export as GPT2LMHeadModel: d_head*n_heads={cfg.d_head * cfg.n_heads} != "
                         f"d_model={cfg.d_model}")
    if cfg.act_fn not in ACT2FN:
        raise ValueError(f"cannot export as GPT2LMHeadModel: activation act_fn={cfg.act_fn!r} "
                         "is unknown to transformers")
    return GPT2Config(
        vocab_size=cfg.d_vocab, n_positions=model.pos_embed.W_pos.shape[0], n_embd=cfg.d_model,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=cfg.act_fn,
        layer_norm_epsilon=cfg.eps, scale_attn_weights=bool(cfg.use_attn_scale),
        scale_attn_by_inverse_layer_idx=bool(cfg.scale_attn_by_inverse_layer_idx), tie_word_embeddings=tied,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, architectures=["GPT2LMHeadModel"],
    )


def hf_checkpoint(model: HookedTransformer) -> tuple[Any, dict[str, torch.Tensor]]:
    """The transformers config and state dict equivalent to ``model`` (see module docstring).

    Raises:
        ValueError: naming the architecture when it is not exportable, or the parameter /
            config field the target architecture cannot hold.
    """
    arch = getattr(model.cfg, "original_architecture", None)
    if arch not in EXPORTABLE:
        raise ValueError(f"cannot export architecture {arch!r} to transformers; exportable: {', '.join(EXPORTABLE)}")
    tied = bool(torch.equal(model.embed.W_E, model.unembed.W_U.T))
    if arch in LLAMA_STYLE:
        sd, attn_bias, mlp_bias = _llama_state_dict(model)
        config = _llama_config(model, tied, attn_bias, mlp_bias)
    else:
        sd = _gpt2_state_dict(model)
        config = _gpt2_config(model, tied)
    tok = model.tokenizer
    if tok is not None:
        config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
        config.pad_token_id = tok.pad_token_id
    config.dtype = model.cfg.dtype
    if tied:
        sd.pop("lm_head.weight")
    return config, sd


def to_hf_model(model: HookedTransformer) -> Any:
    """An in-memory transformers ``*ForCausalLM`` computing the same logits as ``model``
    (weights copied, eval mode, frozen, on the model's device and dtype)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config, sd = hf_checkpoint(model)
    with warnings.catch_warnings(), no_init_weights():  # every weight is overwritten below
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_config(config, torch_dtype=model.cfg.dtype)
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:  # a bug in the mapping, not bad input
        raise RuntimeError(f"export mapping does not fit {type(hf).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.to(model.cfg.device or "cpu").eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf


def generation_config_for(model: HookedTransformer) -> Any:
    """Greedy generation defaults stopping at EOS and the chat end tokens, as ``neurorit eval`` does."""
    from transformers import GenerationConfig

    tok = model.tokenizer
    if tok is None:
        return GenerationConfig(do_sample=False)
    stops = stop_ids_of(tok)
    return GenerationConfig(do_sample=False, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                            eos_token_id=stops[0] if len(stops) == 1 else (stops or None))


def _save_tokenizer(model: HookedTransformer, out: Path) -> None:
    """Save the tokenizer so that ``tokenizer(text).input_ids == model.to_tokens(text)``.

    TL keeps a copy of the tokenizer that always adds BOS and strips it per its
    ``default_prepend_bos``; the exported one adds BOS exactly when TL prepends it.
    """
    from transformers import AutoTokenizer

    model.tokenizer.save_pretrained(str(out))
    tok = model.tokenizer
    if tok.bos_token is not None and hasattr(tok, "add_bos_token"):
        tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
        tok.add_bos_token = bool(model.cfg.default_prepend_bos)  # rebuilds the post-processor
        tok.save_pretrained(str(out))


def _source(model_or_dir: HookedTransformer | str | os.PathLike) -> tuple[HookedTransformer, Path | None]:
    if isinstance(model_or_dir, HookedTransformer):
        return model_or_dir, None
    from neurorit_lens.models.saved import load_saved_model

    src = Path(model_or_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"no model folder at {src} (expected the model/ folder written by `neurorit train`)")
    return load_saved_model(src), src.resolve()


def _check_out_dir(out: Path, src: Path | None, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export target {out} exists and is not a folder")
    if src is not None and (out.resolve() == src or src.is_relative_to(out.resolve())):
        raise ValueError(f"export target {out} would overwrite the source model folder {src}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"export target {out} is not empty; pass force=True (CLI: --force) to replace it")


def export_hf(model_or_dir: HookedTransformer | str | os.PathLike, out_dir: str | os.PathLike,
              force: bool = False) -> Path:
    """Write a transformers checkpoint (safetensors, config.json, generation_config.json,
    tokenizer files) that ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads offline.

    Args:
        model_or_dir: a HookedTransformer, or a folder written by ``neurorit train``
            (:func:`neurorit_lens.models.saved.save_trained_model`).
        out_dir: target folder; must be absent or empty unless ``force``.
        force: replace a non-empty ``out_dir``.

    Returns:
        The folder path. It is built in a temporary sibling and renamed into place.

    Raises:
        ValueError: unexportable architecture / parameter (named), non-empty target without
            ``force``, or a target that is the source folder.
    """
    model, src = _source(model_or_dir)
    out = Path(out_dir)
    _check_out_dir(out, src, force)
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        log.warning("the model has hooks registered; they are not part of the exported weights "
                    "(bake a deactivation with training.methods.bake_deactivation first)")
    hf = to_hf_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        hf.generation_config = generation_config_for(model)
        hf.save_pretrained(str(tmp))
        if model.tokenizer is not None:
            _save_tokenizer(model, tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s as %s to %s", model.cfg.original_architecture, type(hf).__name__, out)
    return out


def _demo_llama() -> HookedTransformer:
    """A tiny random Llama-architecture HookedTransformer (for the doctest)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from neurorit_lens.models.convert import hf_to_hooked
    from neurorit_lens.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    return hf_to_hooked(hf, tok, model_name="demo", tokenizer_dir=tempfile.mkdtemp(prefix="nrl_demo_tok_"))
