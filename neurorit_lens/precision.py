"""Mixed precision: bf16 autocast around forward passes, fp32 master weights.

``precision="bf16"`` (a field of the mining, ablation, evaluation and training configs)
runs the matrix products of a forward pass in bfloat16 through :func:`torch.autocast`, on
CPU (AVX512-BF16 and AMX run them about twice as fast as fp32) and on GPU alike. Nothing
else changes: the weights stay in their dtype (fp32 master weights, so the optimizer
updates them in fp32), the residual stream is the sum of an fp32 embedding and bf16 block
outputs and stays fp32, gradients of fp32 leaves are fp32, and Integrated Gradients'
sum over integration points is accumulated in an fp32 tensor
(:func:`neurorit_lens.neurons.attribution.attribute`). ``fp32`` is a no-op.

Defaults (:func:`resolve_precision`): mining's ``auto`` (``MiningConfig.precision``) is bf16
for ``ig`` and ``ig_joint`` where the device runs bf16 natively, fp32 otherwise; grad_x_act,
training, evaluation and ablation default to fp32. How close bf16 comes to fp32 (IG scores,
selected neurons, training losses, generation) is measured in ``benchmarks/results/bf16.md``;
docs/training.md and docs/mining.md say where it holds.

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

from neurorit_lens.config import MiningPrecision, Precision

PRECISIONS = get_args(Precision)
# Attribution methods whose bf16 scores agree with fp32 (see resolve_precision).
BF16_METHODS = ("ig", "ig_joint")


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


def bf16_supported(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` (default CPU) runs bf16 matrix products natively.

    CUDA: :func:`torch.cuda.is_bf16_supported`. CPU: oneDNN present and reporting bf16 support
    (AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower than fp32). Other devices, or any
    error while asking: ``False``.
    """
    kind = torch.device(device or "cpu").type
    try:
        if kind == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        if kind == "cpu":
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False
    return False


def resolve_precision(precision: str, method: str, device: str | torch.device | None = None) -> str:
    """The precision a mining run uses: ``fp32``/``bf16`` as given; ``auto`` is ``bf16`` for IG
    (``method`` ``ig`` or ``ig_joint``) on a device that runs bf16 natively (:func:`bf16_supported`),
    else ``fp32``.

    Why (SmolLM2-135M, ``python -m benchmarks.bench_bf16`` and ``python -m
    benchmarks.bench_ig_precision``): per-layer IG in bf16 takes 2.22x less CPU time, scores within
    1.8-4.0% relative error of fp32, the top neurons' Jaccard index 0.98-1.00 per prompt and 1.00 for
    the selected set; on 14 of the component study's examples (all 30 layers) 0.92-0.99 per example
    and 0.96 for the set, above the 0.9 the agreement goal asks. ``ig_joint`` is the same computation.
    grad_x_act over all layers reaches a set Jaccard of 0.88 only, so it stays fp32; generation,
    training and ablation (6 of 8 greedy outputs identical, dev answer log-probs drifting by
    0.15-0.25 nats after 32 steps) keep fp32 in their own configs, which have no ``auto``.

    >>> resolve_precision("auto", "grad_x_act")
    'fp32'
    >>> resolve_precision("fp32", "ig")
    'fp32'
    """
    allowed = get_args(MiningPrecision)
    if precision not in allowed:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(allowed)}")
    if precision != "auto":
        return precision
    return "bf16" if method in BF16_METHODS and bf16_supported(device) else "fp32"


__all__ = ["BF16_METHODS", "PRECISIONS", "autocast", "bf16_supported", "resolve_precision"]
