"""The converted-model cache: fp32 HookedTransformer weights, TL config and tokenizer on disk.

Dequantising a GGUF file and converting it to TL format takes tens of seconds; loading
the converted fp32 weights back takes a few. An entry is a directory::

    <cache_dir>/models/<name>/
        tl_config.json      TL config dict (full context window; n_ctx is capped at load)
        model.safetensors   fp32 TL-format state dict
        tokenizer/          the HF tokenizer, saved (TL reloads tokenizers from a path)
        entry.json          written last: format, source key, library versions

An entry is built in a sibling staging directory and moved into place with one
``os.replace``, and ``entry.json`` must exist and carry the expected source key, so an
interrupted conversion is never read as complete; a stale or partial entry is rebuilt.

The cache dir is ``$NEURORIT_CACHE`` or ``~/.cache/neurorit_lens``. A cache dir that
cannot be written raises :class:`CacheDirError` (a ``PermissionError``) naming the
directory and the environment variable, but only when something must be written: a
complete read-only cache still loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.io import atomic_write_json, read_json

CACHE_ENV = "NEURORIT_CACHE"
FORMAT_VERSION = 1
_CONFIG = "tl_config.json"
_WEIGHTS = "model.safetensors"
_TOKENIZER = "tokenizer"
_ENTRY = "entry.json"


class CacheDirError(PermissionError):
    """The model cache directory cannot be created or written."""


def default_cache_dir() -> Path:
    """``$NEURORIT_CACHE`` if set, else ``~/.cache/neurorit_lens``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurorit_lens"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def ensure_writable(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check a file can be written in it.

    Raises:
        CacheDirError: naming the directory and how to choose another one.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CacheDirError(
            f"model cache dir {str(path)!r} is not writable ({e.__class__.__name__}: {e.strerror or e}); "
            f"set {CACHE_ENV} or pass cache_dir= to a writable directory"
        ) from e
    return path


def entry_dir(cache_dir: str | os.PathLike, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(cache_dir) / "models" / safe


def read_entry(path: Path, source_key: dict[str, Any]) -> dict[str, Any] | None:
    """The entry's metadata if it is complete and was built from ``source_key``, else None."""
    meta_path = path / _ENTRY
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path)
    except (ValueError, OSError):
        return None
    if meta.get("format") != FORMAT_VERSION or meta.get("source") != json.loads(json.dumps(source_key)):
        return None
    if not all((path / p).exists() for p in (_CONFIG, _WEIGHTS, _TOKENIZER)):
        return None
    return meta


def write_entry(
    cache_dir: str | os.PathLike,
    name: str,
    source_key: dict[str, Any],
    tl_config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    tokenizer: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete entry atomically (staging dir + ``os.replace``); returns its path."""
    from safetensors.torch import save_file

    final = entry_dir(cache_dir, name)
    ensure_writable(final.parent)
    for old in final.parent.glob(f".{final.name}.staging-*"):  # left by killed conversions
        try:
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    try:
        os.chmod(stage, 0o755)  # mkdtemp makes it 0700; the entry is an ordinary cache dir
        cfg = {k: v for k, v in tl_config.items() if k not in ("dtype", "device")}
        atomic_write_json(stage / _CONFIG, cfg)
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, str(stage / _WEIGHTS))
        tokenizer.save_pretrained(str(stage / _TOKENIZER))
        meta = {"format": FORMAT_VERSION, "name": name, "source": source_key, "created": time.time(),
                "versions": _versions(), **(extra or {})}
        atomic_write_json(stage / _ENTRY, meta)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(stage, final)
        except OSError:
            if read_entry(final, source_key) is None:  # not a concurrent writer's complete entry
                raise
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return final


def load_entry(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """(TL config dict, fp32 state dict, tokenizer) of a complete entry."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    cfg = read_json(path / _CONFIG)
    state_dict = load_file(str(path / _WEIGHTS))
    tok = AutoTokenizer.from_pretrained(str(path / _TOKENIZER), local_files_only=True)
    return cfg, state_dict, tok


def tokenizer_dir(path: Path) -> Path:
    return path / _TOKENIZER


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "transformer-lens", "gguf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
