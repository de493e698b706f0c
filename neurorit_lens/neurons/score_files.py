"""Per-example score files of a mining run: names, atomic writes, fingerprints, resume.

Each file ``out_dir/scores/<condition>/<safe id>.safetensors`` holds one example's
``[layer, d_mlp]`` scores, stamped with a fingerprint of the model, the settings that change
the scores and the exact tokens, so a resumed run never mixes in scores of other settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.io import atomic_write_bytes

log = logging.getLogger(__name__)

CONDITIONS = ("R", "I")

__all__ = ["CONDITIONS", "check_condition", "fingerprint", "read_tensor", "score_path", "try_resume",
           "write_tensor"]


def check_condition(condition: str) -> None:
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")



def score_path(out_dir: str | os.PathLike, condition: str, example_id: str) -> Path:
    """``out_dir/scores/<condition>/<safe id>.safetensors`` (ids with odd characters get a hash suffix)."""
    check_condition(condition)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(example_id))[:80]
    if safe.startswith("."):
        safe = "_" + safe.lstrip(".")
    if safe != str(example_id):
        safe = f"{safe}-{hashlib.sha1(str(example_id).encode()).hexdigest()[:10]}"
    return Path(out_dir) / "scores" / condition / f"{safe}.safetensors"


def write_tensor(path: Path, t: torch.Tensor, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    return atomic_write_bytes(path, save({"scores": t.contiguous()}, metadata=metadata))


def read_tensor(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    from safetensors import safe_open

    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("scores"), dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"{path}: not a readable scores file ({e})") from e


def fingerprint(model_name: str, shape: tuple[int, int], cfg_fields: dict[str, Any], tokens: list[int],
                extra: dict[str, Any] | None = None) -> str:
    """sha256 of what a per-example score depends on: model, settings, the exact tokens."""
    obj = {"model": model_name, "shape": list(shape), "tokens": tokens, "cfg": cfg_fields}
    if extra:  # only for non-default I definitions, so the gold fingerprints stay as they were
        obj["extra"] = extra
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()


def try_resume(path: Path, fingerprint: str, shape: tuple[int, int]) -> torch.Tensor | None:
    if not path.exists():
        return None
    try:
        t, md = read_tensor(path)
    except ValueError as e:
        log.warning("recomputing %s: %s", path, e)
        return None
    if md.get("fingerprint") != fingerprint or tuple(t.shape) != shape:
        log.info("recomputing %s: written with other settings, tokens or model", path)
        return None
    return t
