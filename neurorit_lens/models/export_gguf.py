"""Export a Llama-style HookedTransformer (or a ``neurorit train`` folder) as a GGUF file.

The tensors are those of the transformers export (:func:`.export.hf_checkpoint`: trained
``b_in`` folded into the down-projection bias, a baked deactivation, tied embeddings
when ``W_E == W_U.T``), renamed to llama.cpp's ``llama`` architecture with gguf's own
name map, and written unquantised (fp32, or f16 / bf16 with ``dtype``). As llama.cpp's
``convert_hf_to_gguf.py`` does for Llama, the rows of ``q_proj``/``k_proj`` are permuted
from transformers' rotate-half layout to llama.cpp's interleaved-pair rotary layout
(:func:`permute_rotary`). Optional biases (``attention_bias`` / ``mlp_bias``) are written
as ``blk.N.attn_q.bias`` ... ``blk.N.ffn_down.bias``; the metadata holds the
hyper-parameters and the byte-level BPE tokenizer (tokens, types, merges, special ids,
``add_bos_token``, chat template). GPT-2 exports are refused (transformers export only).

>>> import tempfile
>>> from neurorit_lens.models.export import _demo_llama
>>> path = export_gguf(_demo_llama(), tempfile.mkdtemp() + "/m.gguf")
>>> import gguf; sorted(t.name for t in gguf.GGUFReader(str(path)).tensors)[:2]
['blk.0.attn_k.weight', 'blk.0.attn_norm.weight']
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.models.export import _source, hf_checkpoint
from neurorit_lens.tl_backend import HookedTransformer

GGUF_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def permute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's Q/K row permutation (``convert_hf_to_gguf.LlamaModel.permute``): per head,
    rows ``[x_0..x_{d/2-1}, y_0..y_{d/2-1}]`` become ``[x_0, y_0, x_1, y_1, ...]``."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of :func:`permute_rotary`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: HookedTransformer) -> tuple[Any, dict[str, torch.Tensor]]:
    """The HF Llama config and ``{gguf tensor name: tensor}`` of ``model`` (Q/K permuted).

    Raises:
        ValueError: for a model that does not export as ``LlamaForCausalLM``, or a tensor
            gguf's Llama name map does not know.
    """
    import gguf

    config, sd = hf_checkpoint(model)
    if list(config.architectures or []) != ["LlamaForCausalLM"]:
        raise ValueError(f"GGUF export supports Llama-style models only; this one exports as "
                         f"{config.architectures}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if ".q_proj." in name:
            t = permute_rotary(t, config.num_attention_heads)
        elif ".k_proj." in name:
            t = permute_rotary(t, config.num_key_value_heads)
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"tensor {name} has no name in GGUF's llama architecture")
        out[new] = t.detach().cpu().contiguous()
    return config, out


def _add_hparams(w: Any, config: Any, model: HookedTransformer) -> None:
    w.add_name(str(model.cfg.model_name))
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_rope_dimension_count(config.head_dim)
    w.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_vocab_size(config.vocab_size)


def _add_tokenizer(w: Any, model: HookedTransformer, n_vocab: int) -> None:
    """Byte-level BPE vocabulary, merges and special tokens (``tokenizer.ggml.*``)."""
    import gguf

    from neurorit_lens.models.export import _save_tokenizer

    tok = model.tokenizer
    if tok is None:
        return
    vocab = tok.get_vocab()
    if len(vocab) > n_vocab:
        raise ValueError(f"the tokenizer has {len(vocab)} tokens but the model's vocabulary {n_vocab}")
    by_id = {i: t for t, i in vocab.items()}
    special = set(tok.all_special_tokens)
    added = set(tok.get_added_vocab())
    tokens, types = [], []
    for i in range(n_vocab):  # ids the tokenizer lacks are padding rows of the embedding
        t = by_id.get(i, f"[PAD{i}]")
        tokens.append(t)
        types.append(gguf.TokenType.CONTROL if t in special else gguf.TokenType.USER_DEFINED if t in added
                     else gguf.TokenType.UNUSED if i not in by_id else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    with tempfile.TemporaryDirectory(prefix="nrl_gguf_tok_") as d:
        _save_tokenizer(model, Path(d))  # adds BOS exactly when TL prepends it
        gguf.SpecialVocab(d, load_merges=True, n_vocab=n_vocab).add_to_gguf(w, quiet=True)


def export_gguf(model_or_dir: HookedTransformer | str | os.PathLike, out_file: str | os.PathLike,
                force: bool = False, dtype: str = "float32") -> Path:
    """Write ``model_or_dir`` as one GGUF file (llama.cpp ``llama`` architecture).

    Args:
        model_or_dir: a Llama-style HookedTransformer or a ``neurorit train`` model folder.
        out_file: the ``.gguf`` path; must not exist unless ``force``.
        force: replace an existing file.
        dtype: ``float32`` (default, exact), ``float16`` or ``bfloat16`` for the matrices
            (norm weights and biases stay fp32, as llama.cpp's converter keeps them).

    Raises:
        ValueError: non-Llama model, unknown dtype, existing target without ``force``, or
            anything :func:`.export.hf_checkpoint` refuses (named).
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"unknown GGUF dtype {dtype!r}; choose from {', '.join(GGUF_DTYPES)}")
    out = Path(out_file)
    if out.is_dir():
        raise ValueError(f"GGUF export target {out} is a folder; give a file name ending in .gguf")
    if out.exists() and not force:
        raise ValueError(f"GGUF export target {out} exists; pass force=True (CLI: --force) to replace it")
    model, _ = _source(model_or_dir)
    config, tensors = gguf_tensors(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        w = gguf.GGUFWriter(str(tmp), "llama")
        _add_hparams(w, config, model)
        w.add_file_type({"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                         "bfloat16": gguf.LlamaFileType.MOSTLY_BF16}[dtype])
        _add_tokenizer(w, model, config.vocab_size)
        for name, t in tensors.items():
            low = t.ndim >= 2 and dtype != "float32"
            arr = t.to(GGUF_DTYPES[dtype] if low else torch.float32)
            if arr.dtype == torch.bfloat16:  # numpy has no bfloat16: pass the raw bits
                w.add_tensor(name, arr.view(torch.int16).numpy(), raw_dtype=gguf.GGMLQuantizationType.BF16)
            else:
                w.add_tensor(name, arr.numpy())
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
