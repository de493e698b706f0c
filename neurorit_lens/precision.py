"""Mixed precision: bf16 autocast around forward passes, fp32 master weights.

``precision="bf16"`` (a field of the mining, ablation, evaluation and training configs)
runs the matrix products of a forward pass in bfloat16 through :func:`torch.autocast`, on
CPU (AVX512-BF16 and AMX run them about twice as fast as fp32) and on GPU alike. Nothing
else changes: the weights stay in their dtype (fp32 master weights, so the optimizer
updates them in fp32), the residual stream is the sum of an fp32 embedding and bf16 block
outputs and stays fp32, gradients of fp32 leaves are fp32, and Integrated Gradients'
sum over integration points is accumulated in an fp32 tensor
(:func:`neurorit_lens.neurons.attribution.attribute`). ``fp32`` (the default) is a no-op.

How close bf16 comes to fp32 (IG scores, selected neurons, training losses, generation) is
measured in ``benchmarks/results/bf16.md``; docs/training.md and docs/mining.md say where
it holds.

>>> import torch
>>> with autocast("bf16", "cpu"):
...     (torch.ones(2, 3) @ torch.ones(3, 2)).dtype
torch.bfloat16
>>> with autocast("fp32", "cpu"):
...     (torch.ones(2, 3) @ torch.ones(3, 2)).dtype
torch.float32
"""

from __future__ import annotations

import contextlib
from typing import Any, get_args

import torch

from neurorit_lens.config import Precision

PRECISIONS = get_args(Precision)


def autocast(precision: str, device: str | torch.device | None = None) -> contextlib.AbstractContextManager[Any]:
    """A context in which forward passes run at ``precision`` on ``device`` (default CPU).

    ``fp32``: nothing changes. ``bf16``: :func:`torch.autocast` with ``dtype=torch.bfloat16``
    on the device's type (``cpu``, ``cuda``, ...). Backward passes need no context: autograd
    runs each operation's backward in the dtype its forward used.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device or "cpu").type, dtype=torch.bfloat16)


__all__ = ["PRECISIONS", "autocast"]
