"""Local Hugging Face checkpoints and TL official names already in the HF cache, offline.

A local checkpoint dir (``config.json``, weights, tokenizer files) of a Llama, Mistral,
Qwen2/3, GPT-2, GPT-NeoX or Gemma 1/2/3 (text) model is read with
``local_files_only=True`` and converted by :mod:`.convert`. A TransformerLens official
name (``gpt2``, ``Qwen/Qwen2-0.5B`` ...) is resolved to its snapshot dir in the local HF
cache; if it is not there, loading fails with an error rather than downloading: this
toolkit never calls the Hub.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.models.convert import architecture_of, hf_to_hooked
from neurorit_lens.tl_backend import HookedTransformer, tl_loading


def load_hf_dir(
    path: str | Path,
    *,
    model_name: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None,
    default_prepend_bos: bool | None = None,
) -> HookedTransformer:
    """Load a local HF causal-LM checkpoint dir as a frozen HookedTransformer.

    Args:
        path: directory holding ``config.json``, the weights and the tokenizer.
        model_name: ``model.cfg.model_name`` (default: the directory name).
        default_prepend_bos: TL's BOS default (None = whatever the HF tokenizer does).

    Raises:
        ValueError: unsupported architecture, or no tokenizer in the dir.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser().resolve()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        architecture_of(hf_config)  # fail fast, before reading weights
        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: no usable tokenizer in the checkpoint dir ({e})") from e
        hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    hf.eval()
    tok_dir = tempfile.mkdtemp(prefix="neurorit_tok_")
    return hf_to_hooked(hf, tok, model_name=model_name or path.name, tokenizer_dir=tok_dir, device=device,
                        dtype=dtype, n_ctx=n_ctx, default_prepend_bos=default_prepend_bos)


def tl_official_name(name: str) -> str | None:
    """TL's official model name for ``name`` (or an alias), or None if TL does not know it."""
    try:
        return tl_loading.get_official_model_name(name)
    except ValueError:
        return None


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """The local HF-cache snapshot dir of ``repo_id`` if its config is cached, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    hit: Any = try_to_load_from_cache(repo_id=repo_id, filename="config.json")
    if isinstance(hit, str) and Path(hit).is_file():
        return Path(hit).parent
    return None


def load_tl_official(official: str, **kwargs: Any) -> HookedTransformer:
    """Load a TL official model from the local HF cache (never downloads).

    Raises:
        ValueError: if the model is not in the local HF cache.
    """
    snap = hf_cache_snapshot(official)
    if snap is None:
        raise ValueError(
            f"{official!r} is a TransformerLens model name but is not in the local Hugging Face cache; "
            "neurorit_lens never downloads. Put a checkpoint dir on disk and pass its path instead."
        )
    kwargs.setdefault("model_name", official.split("/")[-1])
    return load_hf_dir(snap, **kwargs)
