"""Our trained-model folder: save a HookedTransformer after training, load it back offline.

Layout of ``DIR``::

    model.safetensors     the model's parameters (deactivation already baked in)
    config.json           the HookedTransformerConfig as a dict (dtype as a string)
    tokenizer/            tokenizer.save_pretrained
    neuron_sets.json      neuron sets used (R_excl, I_excl, deactivated, trained_neurons ...)
    train_log.jsonl       one line per optimizer step
    neurorit_model.json   marker + metadata (base model, method, trainable params, seed,
                          versions); written last, so its presence means the folder is complete

The folder is built in a temporary sibling and renamed into place, so a killed save
never leaves a half-written ``DIR`` that looks complete. Buffers (attention masks,
rotary tables) are not stored: the model rebuilds them from the config.

>>> import tempfile, torch
>>> from neurorit_lens.models import tiny_model
>>> m = tiny_model()
>>> d = tempfile.mkdtemp()
>>> _ = save_trained_model(m, d + "/model", extra={"method": "full"})
>>> m2 = load_saved_model(d + "/model")
>>> toks = m.to_tokens("hello")
>>> torch.equal(m(toks), m2(toks))
True
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurorit_lens.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    read_json,
)
from neurorit_lens.neuron_sets import NeuronSet, save_neuron_sets
from neurorit_lens.tl_backend import HookedTransformer, HookedTransformerConfig

MARKER = "neurorit_model.json"
FORMAT = "neurorit_lens.trained_model"
FORMAT_VERSION = 1
# computed by HookedTransformerConfig.__post_init__ or runtime-only: not passed back in
_DROP_KEYS = ("device", "n_params")


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete folder written by :func:`save_trained_model`."""
    return (Path(path) / MARKER).is_file()


def config_to_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    """A JSON-safe dict of a HookedTransformerConfig (dtype as its name, numpy scalars as Python)."""
    out: dict[str, Any] = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, torch.dtype):
            v = str(v).removeprefix("torch.")
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, torch.device):
            v = str(v)
        try:
            json.dumps(v)
        except TypeError as e:
            raise ValueError(f"config field {k!r} is not JSON serialisable: {type(v).__name__}") from e
        out[k] = v
    return out


def config_from_dict(d: Mapping[str, Any], device: str = "cpu",
                     dtype: torch.dtype | None = None) -> HookedTransformerConfig:
    """Inverse of :func:`config_to_dict` (``dtype`` overrides the stored one)."""
    d = {k: v for k, v in d.items() if k not in _DROP_KEYS}
    stored = d.get("dtype", "float32")
    d["dtype"] = dtype if dtype is not None else getattr(torch, stored)
    d["device"] = device
    return HookedTransformerConfig.from_dict(d)


def save_trained_model(
    model: HookedTransformer,
    dir: str | os.PathLike,
    sets: Mapping[str, NeuronSet] | None = None,
    extra: Mapping[str, Any] | None = None,
    train_log: Sequence[Any] | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` to ``dir`` (see module docstring for the layout).

    Args:
        model: the (trained, deactivation baked) model.
        dir: target folder; an existing folder there is replaced.
        sets: neuron sets to record in ``neuron_sets.json``.
        extra: metadata merged into ``neurorit_model.json`` (method, base model, trainable
            parameters, seed ...).
        train_log: step outputs (objects with ``to_dict()`` or dicts) for ``train_log.jsonl``.
        tensors: the weights to write instead of ``model.named_parameters()`` (same names and
            order), e.g. the full weights gathered from an FSDP2-sharded model.

    Returns:
        The folder path.
    """
    from safetensors.torch import save as st_save

    dir = Path(dir)
    dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dir.parent, prefix=f".{dir.name}.partial-"))
    try:
        named = tensors.items() if tensors is not None else model.named_parameters()
        tensors = {n: p.detach().to("cpu").contiguous().clone() for n, p in named}
        atomic_write_bytes(tmp / "model.safetensors", st_save(tensors, metadata={"format": FORMAT}))
        atomic_write_json(tmp / "config.json", config_to_dict(model.cfg))
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        save_neuron_sets(tmp / "neuron_sets.json", dict(sets or {}),
                         {"model_shape": [model.cfg.n_layers, model.cfg.d_mlp]})
        lines = [json.dumps(o.to_dict() if hasattr(o, "to_dict") else dict(o)) + "\n" for o in (train_log or [])]
        atomic_write_text(tmp / "train_log.jsonl", "".join(lines))
        meta: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                                "n_params": int(sum(t.numel() for t in tensors.values())),
                                "model_shape": [model.cfg.n_layers, model.cfg.d_mlp],
                                "has_tokenizer": model.tokenizer is not None}
        meta.update(extra or {})
        meta["versions"] = environment_info(meta.get("seed"))
        atomic_write_json(tmp / MARKER, meta)
        old = None
        if dir.exists():
            old = Path(tempfile.mkdtemp(dir=dir.parent, prefix=f".{dir.name}.old-"))
            os.replace(dir, old / dir.name)
        os.replace(tmp, dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dir


def load_saved_model(dir: str | os.PathLike, device: str = "cpu",
                     dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """Load a folder written by :func:`save_trained_model` (offline; no hub access).

    Raises:
        ValueError: when ``dir`` is not a complete saved model or its weights do not fit
            its config.
    """
    from safetensors.torch import load_file

    dir = Path(dir)
    if not is_saved_model(dir):
        raise ValueError(f"{dir} is not a neurorit_lens trained-model folder (no {MARKER}; incomplete save?)")
    meta = read_json(dir / MARKER)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{dir}: unsupported format {meta.get('format')!r} v{meta.get('format_version')}")
    cfg_dict = read_json(dir / "config.json")
    tokenizer = None
    if (dir / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(dir / "tokenizer"), local_files_only=True)
    else:
        cfg_dict["tokenizer_name"] = None  # never fetch a tokenizer from the hub
    cfg = config_from_dict(cfg_dict, device=device, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = load_file(str(dir / "model.safetensors"))
    params = {n for n, _ in model.named_parameters()}
    missing, unexpected = params - set(state), set(state) - params
    if missing or unexpected:
        raise ValueError(f"{dir}: weights do not match the config (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)  # buffers come from cfg
    model.to(device, print_details=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_saved_sets(dir: str | os.PathLike) -> dict[str, NeuronSet]:
    """The neuron sets recorded with a saved model."""
    from neurorit_lens.neuron_sets import load_neuron_sets

    return load_neuron_sets(Path(dir) / "neuron_sets.json")
