"""Memory-aware batch sizes: split a batch that would not fit instead of crashing.

A batch's memory is estimated from the model shape and sequence length; when
``batch_size`` rows would need more than ``fraction`` of the memory available right now
(RAM on CPU, free device memory on CUDA), the batch size is lowered with a warning.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory available now on ``device`` (CPU: free + reclaimable RAM)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def generation_bytes_per_row(cfg, n_tokens: int, itemsize: int = 4) -> int:
    """Rough peak bytes one generating row needs: KV cache, one layer's activations, logits."""
    kv = 2 * cfg.n_layers * n_tokens * cfg.n_heads * cfg.d_head
    acts = n_tokens * (4 * cfg.d_model + 2 * (cfg.d_mlp or 4 * cfg.d_model) + cfg.n_heads * n_tokens)
    logits = cfg.d_vocab
    return int((kv + acts + logits) * itemsize)


def backward_bytes_per_row(cfg, n_tokens: int, n_blocks: int, n_answer: int, itemsize: int = 4,
                           kappa: float = 2.0) -> int:
    """Rough peak bytes of one row's forward + backward through ``n_blocks`` blocks.

    Per block and token autograd keeps ~12 ``d_model``-sized tensors (norms, q/k/v, z,
    attention output, residuals), ~4 ``d_mlp``-sized ones and the attention scores and
    pattern (``2 h T``); ``kappa`` = 2 is the measured / modelled ratio of
    ``benchmarks/bench_memory.py``. The answer positions' logits, their softmax and
    gradient add ``3 n_answer d_vocab`` float32 values.
    """
    f = cfg.d_mlp or 4 * cfg.d_model
    per_block = n_tokens * (12 * cfg.d_model + 4 * f + 2 * cfg.n_heads * n_tokens)
    return int(kappa * n_blocks * per_block * itemsize + 3 * n_answer * cfg.d_vocab * 4)


def fit_batch_size(requested: int, bytes_per_row: int, device: torch.device | str = "cpu",
                   fraction: float = 0.5, what: str = "batch", budget: int | None = None) -> int:
    """The largest batch size <= ``requested`` whose estimate fits ``fraction`` of free memory."""
    if requested < 1:
        raise ValueError(f"batch size must be >= 1, got {requested}")
    budget = int(fraction * available_bytes(device)) if budget is None else budget
    fits = max(1, budget // max(bytes_per_row, 1))
    if fits < requested:
        log.warning("%s of %d rows would need ~%.1f GB (budget %.1f GB): split into batches of %d",
                    what, requested, requested * bytes_per_row / 1e9, budget / 1e9, fits)
        return int(fits)
    return requested
