"""Atomic file writes and run-folder metadata (seed, library versions)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file + ``os.replace`` so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open() honours the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter before 3.13)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dict keys sorted; configs via ``to_dict``).

    >>> fingerprint({"b": 1, "a": [1, 2]}) == fingerprint({"a": (1, 2), "b": 1})
    True
    >>> len(fingerprint(None))
    16
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# module name -> distribution name (transformer_lens has no __version__; ask the installer's metadata)
_VERSIONED = {"transformer_lens": "transformer-lens", "transformers": "transformers", "numpy": "numpy",
              "neurorit_lens": "neurorit_lens"}


def environment_info(seed: int | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Seed, library versions, thread count and load: recorded in every output folder."""
    import torch

    info: dict[str, Any] = {
        "seed": seed,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    for mod, dist in _VERSIONED.items():
        try:
            info[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # e.g. running from a source tree
            info[mod] = getattr(importlib.import_module(mod), "__version__", None)
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        info["loadavg"] = None
    if extra:
        info.update(extra)
    return info


def write_run_metadata(out_dir: str | os.PathLike, seed: int | None, **extra: Any) -> Path:
    return atomic_write_json(Path(out_dir) / "environment.json", environment_info(seed, extra))
