"""The collectives the pipeline needs: all-reduces, gradient sync, broadcasts, FSDP sharding.

Mining (data parallel over examples). The per-neuron selection statistics are *additive*
(example count, per-neuron keep counts, per-neuron score sums), so one ``all_reduce(SUM)``
of them (:func:`all_reduce_additive`) gives every rank exactly the statistics a single
process would have accumulated. The volume is ``2 * n_layers * d_mlp * 4`` bytes (+ one
counter) per condition, whatever the number of examples: 3.7 MB for an 8B model.

Training (data parallel over the global batch). Every rank holds the whole model with the
same gradient masks and forward hooks; after ``backward`` the gradients of the *trainable*
parameters only are summed with one bucketed ``all_reduce`` (:class:`GradientSync`). With
losses normalised by the *global* token count (:func:`global_token_count`), the summed
gradient is exactly the single-process gradient of the global batch. This is what DDP
does, without DDP's need to own ``forward`` (TransformerLens' hooks and helpers stay
reachable). Training every weight: :func:`~neurorit_lens.distributed.fsdp.shard_model_fsdp`
(re-exported here) applies FSDP2's ``fully_shard`` per transformer block instead.

Every function is a no-op (or returns its input) in a single process.

>>> all_reduce_scalar(2.5)   # one process: the value itself
2.5
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from neurorit_lens.distributed.fsdp import shard_model_fsdp
from neurorit_lens.distributed.process import get_rank, get_world_size, is_distributed

log = logging.getLogger(__name__)

T = TypeVar("T")

def _comm_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place, on whatever device it lives on; returns it.

    Tensors on the wrong device for the backend (CPU tensors with NCCL) are moved there
    and back. A no-op in a single process.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"all_reduce_sum needs a tensor, got {type(tensor).__name__}")
    if not is_distributed():
        return tensor
    dev = _comm_device()
    if tensor.device == dev and tensor.is_contiguous():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor
    buf = tensor.detach().to(dev).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    tensor.copy_(buf.to(tensor.device))
    return tensor


def all_reduce_scalar(value: float | int, average: bool = False) -> float:
    """Sum (or average) a Python number over ranks (float64 on the wire)."""
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    all_reduce_sum(t)
    out = t.item()
    return out / get_world_size() if average else out


ADDITIVE_STAT_FIELDS = ("n_examples", "keep_count", "score_sum")


def all_reduce_additive(obj: T, fields: Sequence[str] = ADDITIVE_STAT_FIELDS) -> T:
    """Sum additive statistics of ``obj`` over ranks, in place; returns ``obj``.

    Every named field must be a tensor or a Python number. All tensors are flattened into
    one buffer per dtype, so one collective call per dtype moves everything; integer
    counts travel as int64 and stay exact. After the call every rank holds the totals, so
    the merged statistics equal those of one process that saw every example.

    Args:
        obj: e.g. a ``SelectionStats``.
        fields: the attribute names to sum.

    Returns:
        ``obj``, modified in place.
    """
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, float | int] = {}
    for name in fields:
        if not hasattr(obj, name):
            raise ValueError(f"{type(obj).__name__} has no field {name!r} to all-reduce")
        v = getattr(obj, name)
        if isinstance(v, torch.Tensor):
            tensors[name] = v
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            numbers[name] = v
        else:
            raise ValueError(f"field {name!r} of {type(obj).__name__} is {type(v).__name__}, not a tensor or number")
    if not is_distributed():
        return obj
    dev = _comm_device()
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, t in tensors.items():
        by_dtype.setdefault(t.dtype, []).append(name)
    for names in by_dtype.values():
        flat = torch.cat([tensors[n].detach().reshape(-1).to(dev) for n in names])
        all_reduce_sum(flat)
        offset = 0
        for n in names:
            t = tensors[n]
            t.copy_(flat[offset: offset + t.numel()].view_as(t).to(t.device))
            offset += t.numel()
    if numbers:
        names = list(numbers)
        buf = torch.tensor([float(numbers[n]) for n in names], dtype=torch.float64, device=dev)
        all_reduce_sum(buf)
        for n, v in zip(names, buf.tolist(), strict=True):
            setattr(obj, n, int(round(v)) if isinstance(numbers[n], int) else v)
    return obj


def stats_comm_bytes(obj: Any, fields: Sequence[str] = ADDITIVE_STAT_FIELDS) -> int:
    """Bytes one :func:`all_reduce_additive` of ``obj`` puts on the wire per rank (payload)."""
    total = 0
    for name in fields:
        v = getattr(obj, name)
        total += v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 8
    return total


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Pickle-gather one object per rank to ``dst`` (a list in rank order there, ``None`` elsewhere).

    For small things (per-example score summaries, metadata). Large per-example score
    tensors should rather be written by each rank into a shared folder.
    """
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast_parameters(params: Iterable[torch.nn.Parameter], src: int = 0) -> None:
    """Make every rank's parameters equal to rank ``src``'s (call once before training)."""
    if not is_distributed():
        return
    dev = _comm_device()
    for p in params:
        buf = p.data.to(dev)
        dist.broadcast(buf, src=src)
        if buf.data_ptr() != p.data.data_ptr():
            p.data.copy_(buf.to(p.device))


def global_token_count(local_count: int | torch.Tensor) -> int:
    """Sum of answer-token counts over ranks (the denominator of the global SFT mean).

    Normalising each rank's summed token loss by this number, and *summing* gradients
    (``GradientSync(average=False)``), reproduces the gradient of the single-process loss
    on the global batch exactly; averaging per-rank means would not when ranks hold
    different numbers of answer tokens.
    """
    n = int(local_count.item()) if isinstance(local_count, torch.Tensor) else int(local_count)
    return int(round(all_reduce_scalar(n)))


class GradientSync:
    """All-reduce the gradients of the trainable parameters after ``backward``.

    Only parameters with ``requires_grad`` take part (the trainable subset of Neuro-RIT:
    the chosen neurons' rows/columns under gradient masks, or the targeted layers), and
    they are packed into flat buckets of at most ``bucket_mb`` megabytes so each bucket is
    one collective. Gradient masks stay intact: masked entries are zero on every rank and
    their sum is zero. Parameters whose ``.grad`` is ``None`` on this rank are treated as
    zero (and given a zero ``.grad`` so every rank sends the same layout).

    Args:
        params: the parameters to synchronise (those without ``requires_grad`` are dropped).
        average: divide the sum by the world size (DDP semantics, for per-rank *mean*
            losses over equal local batches); ``False`` when losses are already normalised
            by the global count (:func:`global_token_count`).
        bucket_mb: bucket size.
        only_trainable: drop parameters without ``requires_grad`` now (pass ``False`` when
            ``params`` is already the trainable list and flags are set later).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], average: bool = True, bucket_mb: float = 25.0,
                 only_trainable: bool = True):
        self.params = [p for p in params if p.requires_grad or not only_trainable]
        if bucket_mb <= 0:
            raise ValueError("bucket_mb must be positive")
        self.average = average
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.bytes_per_step = sum(p.numel() * p.element_size() for p in self.params)

    def _buckets(self) -> list[list[torch.nn.Parameter]]:
        buckets: list[list[torch.nn.Parameter]] = []
        cur: list[torch.nn.Parameter] = []
        size = 0
        dtype = None
        for p in self.params:
            b = p.numel() * p.element_size()
            if cur and (size + b > self.bucket_bytes or p.dtype != dtype):
                buckets.append(cur)
                cur, size = [], 0
            cur.append(p)
            size += b
            dtype = p.dtype
        if cur:
            buckets.append(cur)
        return buckets

    @torch.no_grad()
    def __call__(self) -> None:
        """Synchronise now (call between ``backward()`` and ``optimizer.step()``)."""
        if not is_distributed():
            return
        world = get_world_size()
        dev = _comm_device()
        for bucket in self._buckets():
            for p in bucket:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            flat = torch.cat([p.grad.reshape(-1).to(dev) for p in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            if self.average:
                flat /= world
            offset = 0
            for p in bucket:
                n = p.numel()
                p.grad.copy_(flat[offset: offset + n].view_as(p.grad).to(p.grad.device))
                offset += n


__all__ = [
    "ADDITIVE_STAT_FIELDS",
    "GradientSync",
    "all_reduce_additive",
    "all_reduce_scalar",
    "all_reduce_sum",
    "broadcast_parameters",
    "gather_objects",
    "global_token_count",
    "shard_model_fsdp",
    "stats_comm_bytes",
]
