"""Convert an in-memory Hugging Face causal LM into a :class:`HookedTransformer`, offline.

TransformerLens' ``from_pretrained`` only accepts its official names, resolves them on
the Hub, and picks some architectures from the *path string* (anything containing
"llama" or "gemma" is treated as a named checkpoint). This module sidesteps all three:

1. the HF config is written (without any ``quantization_config``, which GGUF loads
   carry) to a fresh temp dir whose name contains no model-family word, and TL's own
   ``convert_hf_model_config`` reads it from there, so TL's per-architecture mapping is
   reused unchanged; Gemma 1/2/3 (text), which TL 3.9 only maps by official name, get
   the equivalent config built from the HF fields (:func:`gemma_config_dict`);
2. TL's weight conversion runs on the already loaded HF model (no download);
3. the tokenizer is saved to a directory and reloaded from it, because TL re-instantiates
   tokenizers from ``name_or_path`` (an in-memory tokenizer gives ``KeyError``).

Weights are loaded *unprocessed* (no LayerNorm folding, no centring): the HookedTransformer
then computes exactly what the HF model computes, MLP neuron activations at
``blocks.{l}.mlp.hook_post`` are the HF ones, and W_in / W_out rows map 1:1 back to HF
tensors, which the trainer relies on when it bakes neuron edits into an exported model.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.tl_backend import HookedTransformer, HookedTransformerConfig, tl_loading

log = logging.getLogger(__name__)

#: HF ``model_type`` -> architecture class name, for configs without ``architectures`` (GGUF).
ARCH_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}

#: Architectures this loader converts (each is TL-supported; the tested ones are in docs/models.md).
SUPPORTED_ARCHITECTURES = tuple(sorted(set(ARCH_BY_MODEL_TYPE.values())))

#: Default cap on ``n_ctx``. TL allocates an ``n_ctx x n_ctx`` causal mask per layer, so
#: SmolLM2's 8192 would cost 2 GB of masks; TL's own Llama-3.2 configs cap at 2048 too.
DEFAULT_MAX_CTX = 2048

_FAMILY_WORDS = ("llama", "gemma", "codellama", "tinystories", "neelnanda", "arthurconmy", "baidicoot")


def architecture_of(hf_config: Any) -> str:
    """The ``*ForCausalLM`` class name of an HF config (from ``architectures`` or ``model_type``).

    Raises:
        ValueError: if the architecture is not one this loader converts.
    """
    archs = list(getattr(hf_config, "architectures", None) or [])
    arch = archs[0] if archs else ARCH_BY_MODEL_TYPE.get(getattr(hf_config, "model_type", ""), "")
    if arch == "Gemma3ForConditionalGeneration":
        raise ValueError("multimodal Gemma 3 (Gemma3ForConditionalGeneration) is not supported; "
                         "use a text-only Gemma 3 checkpoint (270m, 1b)")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture {arch or '(unknown)'!r} (model_type "
            f"{getattr(hf_config, 'model_type', None)!r}); supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return arch


def clean_hf_config_dict(hf_config: Any) -> dict[str, Any]:
    """HF config as a dict with quantisation settings removed and ``architectures`` set."""
    d = hf_config.to_dict()
    d.pop("quantization_config", None)
    d["architectures"] = [architecture_of(hf_config)]
    if d.get("model_type") == "gpt2":  # TL reads n_ctx, which transformers 5 no longer writes
        d.setdefault("n_ctx", d.get("n_positions", 1024))
    return d


def _neutral_tmpdir() -> Path:
    for _ in range(20):
        d = Path(tempfile.mkdtemp(prefix="nrl_cfg_"))
        if not any(w in str(d).lower() for w in _FAMILY_WORDS):
            return d
        shutil.rmtree(d, ignore_errors=True)
    raise RuntimeError("could not create a temp dir whose path avoids TL's name-based dispatch")


def _rope_theta(hf_config: Any, layer_type: str | None = None, default: float = 10000.0) -> float:
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict):
        if layer_type is not None and isinstance(params.get(layer_type), dict):
            return float(params[layer_type].get("rope_theta", default))
        if "rope_theta" in params:
            return float(params["rope_theta"])
    theta = getattr(hf_config, "rope_theta", None)
    if layer_type == "sliding_attention":
        theta = getattr(hf_config, "rope_local_base_freq", None) or theta
    return float(theta) if theta is not None else default


def gemma_config_dict(hf_config: Any, arch: str = "Gemma3ForCausalLM") -> dict[str, Any]:
    """TL config dict of a Gemma 1/2/3 (text) model, built from its HF config.

    TL 3.9 maps Gemma only by official name (hard-coded dicts per size); this builds the
    same fields from the HF config so a local or GGUF Gemma converts too (a unit test checks
    it reproduces TL's dict for ``google/gemma-3-270m``).
    """
    n_layers = hf_config.num_hidden_layers
    d_head = int(getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads)
    act = getattr(hf_config, "hidden_activation", None) or getattr(hf_config, "hidden_act", None) or "gelu_pytorch_tanh"
    cfg: dict[str, Any] = {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": n_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": act,
        "initializer_range": getattr(hf_config, "initializer_range", 0.02),
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "use_attn_scale": True,
        "n_key_value_heads": hf_config.num_key_value_heads,
        "gated_mlp": True,
        "final_rms": True,
    }
    if arch == "GemmaForCausalLM":
        cfg["rotary_base"] = _rope_theta(hf_config)
        return cfg
    layer_types = list(getattr(hf_config, "layer_types", None) or [])
    if not layer_types:
        pattern = int(getattr(hf_config, "sliding_window_pattern", None)
                      or getattr(hf_config, "_sliding_window_pattern", None)
                      or (2 if arch == "Gemma2ForCausalLM" else 6))
        layer_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    cfg.update({
        "use_normalization_before_and_after": True,
        "window_size": hf_config.sliding_window,
        "use_local_attn": True,
        "attn_types": ["global" if t == "full_attention" else "local" for t in layer_types],
    })
    if arch == "Gemma3ForCausalLM":
        cfg.pop("rotary_dim")
        cfg.update(use_qk_norm=True, rotary_base=_rope_theta(hf_config, "full_attention", 1_000_000.0),
                   rotary_base_local=_rope_theta(hf_config, "sliding_attention", 10_000.0))
    else:
        cfg["rotary_base"] = _rope_theta(hf_config)
    qpas = getattr(hf_config, "query_pre_attn_scalar", None)
    if qpas is not None and not math.isclose(float(qpas), float(d_head)):
        cfg["attn_scale"] = float(qpas) ** 0.5
    for hf_name, what in (("attn_logit_softcapping", "attn_scores_soft_cap"),
                          ("final_logit_softcapping", "output_logits_soft_cap")):
        if getattr(hf_config, hf_name, None):
            cfg[what] = float(getattr(hf_config, hf_name))
    return cfg


def tl_config_dict(hf_config: Any) -> tuple[dict[str, Any], Path]:
    """TL config dict for an HF config, plus the neutral dir holding its cleaned config.json.

    The caller removes the returned dir (TL's weight dispatch needs an existing path).
    """
    arch = architecture_of(hf_config)
    tmp = _neutral_tmpdir()
    (tmp / "config.json").write_text(json.dumps(clean_hf_config_dict(hf_config), default=str))
    if arch in ("GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        cfg = gemma_config_dict(hf_config, arch)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = tl_loading.convert_hf_model_config(str(tmp))
    cfg["original_architecture"] = arch
    cfg["quantization_method"] = None
    return cfg, tmp


def prepare_tokenizer(tokenizer: Any, save_dir: str | Path) -> Any:
    """Save ``tokenizer`` to ``save_dir`` and reload it from there, with a pad token set.

    Pad token: the tokenizer's own if it is distinct from EOS and BOS; else a dedicated
    unused special (``<|endoftext|>``, ``<pad>``, ``<|pad|>``) when the vocabulary has
    one; else EOS. A distinct pad keeps TL's pad-based attention masks from hiding a real
    EOS/BOS that sits at the edge of a prompt.
    """
    from transformers import AutoTokenizer

    specials = {tokenizer.eos_token, tokenizer.bos_token} - {None}
    if tokenizer.pad_token is None or tokenizer.pad_token in specials:
        vocab = tokenizer.get_vocab()
        for cand in ("<pad>", "<|pad|>", "<|endoftext|>", "[PAD]"):
            if cand in vocab and cand not in specials:
                tokenizer.pad_token = cand
                break
        else:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(save_dir))
    return AutoTokenizer.from_pretrained(str(save_dir), local_files_only=True)


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the HF tokenizer itself puts BOS in front of plain text."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a").input_ids
    return len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def resolve_n_ctx(max_positions: int, n_ctx: int | None) -> int:
    """``n_ctx`` to build the model with: the request, else min(model window, DEFAULT_MAX_CTX)."""
    if n_ctx is None:
        return min(int(max_positions), DEFAULT_MAX_CTX)
    if n_ctx < 1:
        raise ValueError(f"n_ctx must be positive, got {n_ctx}")
    if n_ctx > max_positions:
        raise ValueError(f"n_ctx={n_ctx} exceeds the model's window of {max_positions} positions")
    return int(n_ctx)


def build_config(
    cfg_dict: dict[str, Any],
    *,
    model_name: str,
    n_ctx: int | None,
    dtype: torch.dtype,
    device: str,
    default_prepend_bos: bool,
) -> HookedTransformerConfig:
    """A HookedTransformerConfig from a TL config dict plus our loading choices."""
    d = dict(cfg_dict)
    d["n_ctx_max"] = d["n_ctx"]
    d["n_ctx"] = resolve_n_ctx(d.pop("n_ctx_max"), n_ctx)
    d.update(model_name=model_name, dtype=dtype, device=device, init_weights=False, n_devices=1,
             default_prepend_bos=default_prepend_bos, tokenizer_name=None, from_checkpoint=False)
    return HookedTransformerConfig.from_dict(d)


def fit_state_dict(state_dict: dict[str, torch.Tensor], cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    """Trim learned positional embeddings (GPT-2, NeoX-style absolute) to ``cfg.n_ctx``."""
    w_pos = state_dict.get("pos_embed.W_pos")
    if w_pos is not None and w_pos.shape[0] > cfg.n_ctx:
        state_dict = dict(state_dict)
        state_dict["pos_embed.W_pos"] = w_pos[: cfg.n_ctx]
    return state_dict


def finalize(model: HookedTransformer) -> HookedTransformer:
    """Eval mode and frozen parameters (callers unfreeze what they train)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class Converted:
    """An HF model in TL form: config dict (full window), fp32 state dict, prepared tokenizer."""

    cfg_dict: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: Any
    default_prepend_bos: bool


def hf_to_tl(hf_model: Any, tokenizer: Any, tokenizer_dir: str | Path,
             default_prepend_bos: bool | None = None) -> Converted:
    """Convert a loaded HF causal LM and its tokenizer to TL's format (fp32, CPU).

    Args:
        hf_model: a ``*ForCausalLM`` instance (its parameters are cast to fp32 in place).
        tokenizer: its HF tokenizer; saved to ``tokenizer_dir`` and reloaded from there.
        default_prepend_bos: TL's BOS default; None = mimic the HF tokenizer, so
            ``model.to_tokens(text)`` equals ``tokenizer(text).input_ids``.
    """
    cfg_dict, tmp = tl_config_dict(hf_model.config)
    try:
        tok = prepare_tokenizer(tokenizer, tokenizer_dir)
        if default_prepend_bos is None:
            default_prepend_bos = tokenizer_adds_bos(tok)
        cfg = build_config(cfg_dict, model_name="conversion", n_ctx=int(cfg_dict["n_ctx"]), dtype=torch.float32,
                           device="cpu", default_prepend_bos=default_prepend_bos)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if any(p.dtype != torch.float32 for p in hf_model.parameters()):
                # GGUF loads are flagged quantised (``.float()`` refuses) but already fp32
                for p in hf_model.parameters():
                    p.data = p.data.float()
            state_dict = tl_loading.get_pretrained_state_dict(str(tmp), cfg, hf_model=hf_model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state_dict = {k: v.detach().float().contiguous() for k, v in state_dict.items()}
    return Converted(cfg_dict, state_dict, tok, default_prepend_bos)


def hf_to_hooked(
    hf_model: Any,
    tokenizer: Any,
    *,
    model_name: str,
    tokenizer_dir: str | Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None,
    default_prepend_bos: bool | None = None,
) -> HookedTransformer:
    """Convert a loaded HF causal LM (+ tokenizer) to a frozen HookedTransformer.

    Args:
        hf_model: a ``*ForCausalLM`` instance.
        tokenizer: its HF tokenizer (saved to ``tokenizer_dir``, which must outlive the model).
        model_name: value of ``model.cfg.model_name``.
        device, dtype: where and in which precision the HookedTransformer lives.
        n_ctx: context length to build with (default: min(window, 2048)).
        default_prepend_bos: see :func:`hf_to_tl`.
    """
    conv = hf_to_tl(hf_model, tokenizer, tokenizer_dir, default_prepend_bos)
    return from_converted(conv.cfg_dict, conv.state_dict, conv.tokenizer, model_name=model_name, device=device,
                          dtype=dtype, n_ctx=n_ctx, default_prepend_bos=conv.default_prepend_bos)


def from_converted(
    cfg_dict: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    tokenizer: Any,
    *,
    model_name: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None,
    default_prepend_bos: bool = False,
) -> HookedTransformer:
    """A frozen HookedTransformer from a TL config dict, TL state dict and tokenizer."""
    cfg = build_config(cfg_dict, model_name=model_name, n_ctx=n_ctx, dtype=dtype, device=device,
                       default_prepend_bos=default_prepend_bos)
    return instantiate(cfg, tokenizer, state_dict, device=device, dtype=dtype)


def instantiate(
    cfg: HookedTransformerConfig,
    tokenizer: Any,
    state_dict: dict[str, torch.Tensor],
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedTransformer:
    """Build a HookedTransformer from a config and a TL-format state dict, unprocessed.

    The config's dtype and device are replaced by ``dtype`` and ``device``; the state dict
    (usually fp32 on CPU) is copied into the parameters.
    """
    cfg = HookedTransformerConfig.from_dict({**cfg.to_dict(), "dtype": dtype, "device": str(device)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)
        # TL's load_and_process_state_dict with every processing flag off amounts to this, but
        # loads key by key (one module-tree walk per key: ~20 s for SmolLM2); one call is enough.
        full = model.fill_missing_keys(fit_state_dict(state_dict, cfg))
    result = model.load_state_dict(full, strict=False)
    params = {name for name, _ in model.named_parameters()}
    missing = sorted(params & set(result.missing_keys))
    unexpected = sorted(k for k in result.unexpected_keys if not k.endswith((".IGNORE", ".mask")))
    if missing or unexpected:
        raise ValueError(f"converted weights do not fit the {cfg.original_architecture} model: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return finalize(model)
