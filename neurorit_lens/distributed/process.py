"""Scale mining and training past one process with PyTorch's own stack (``torch.distributed``).

Nothing here is a scheduler: processes are started by ``torchrun`` (or any launcher that
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``), and this
module only reads those variables, opens the process group, and provides the few
collectives the pipeline needs:

Mining (data parallel over examples). Rank ``r`` of ``W`` attributes ``examples[r::W]``.
The per-neuron selection statistics are *additive* (example count, per-neuron keep counts,
per-neuron score sums), so one ``all_reduce(SUM)`` of them gives every rank exactly the
statistics a single process would have accumulated; rank 0 then selects and writes. The
volume is ``2 * n_layers * d_mlp * 4`` bytes (+ one counter) per condition, whatever the
number of examples: 3.7 MB for an 8B model, i.e. communication is negligible next to IG.

Training (data parallel over the global batch). Every rank holds the whole model with the
same gradient masks and forward hooks; each rank takes its slice of the global batch,
and after ``backward`` the gradients of the *trainable* parameters only are summed with
one bucketed ``all_reduce`` (:class:`GradientSync`). With losses normalised by the
*global* token count (:func:`global_token_count`), the summed gradient is exactly the
single-process gradient of the global batch, so optimiser steps and the loss trajectory
match a single process (up to float summation order). This is what DDP does, without DDP's
need to own ``forward`` (TransformerLens' hooks and helpers stay reachable);
:func:`wrap_ddp` is offered for users who prefer DDP itself. Models that do not fit one
GPU: :func:`shard_model_fsdp` applies FSDP2's ``fully_shard`` per transformer block, and
single-process layer splitting uses TransformerLens' ``n_devices`` (see docs/distributed.md).

Everything is a no-op in a single process, so the same code path serves both.

>>> env = dist_env()   # None unless launched by torchrun with WORLD_SIZE > 1
>>> shard_indices(10, rank=1, world_size=3)
[1, 4, 7]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import torch
import torch.distributed as dist
from jaxtyping import Float

from neurorit_lens.config import DistBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKENDS = get_args(DistBackend)


# --------------------------------------------------------------------------------------
# environment and process group
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job (from torchrun's environment variables)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DistributedConfig:
    """How the process group is opened (CLI flags ``--dist-backend``, ``--dist-timeout-s``).

    Kept out of :mod:`neurorit_lens.config` on purpose: it describes the *launch*, not the
    experiment, so it is not saved into run configs (a run repeats on any world size).
    """

    backend: str = "auto"  # auto (nccl with CUDA, else gloo) | gloo | nccl
    timeout_s: int = 1800

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose from {BACKENDS}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _env_int(name: str, environ: dict[str, str]) -> int:
    raw = environ.get(name)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from e


def dist_env(environ: dict[str, str] | None = None) -> DistEnv | None:
    """Read torchrun's variables; ``None`` when not launched as a multi-process job.

    Args:
        environ: mapping to read (default ``os.environ``).

    Returns:
        A :class:`DistEnv` when ``WORLD_SIZE`` > 1, else ``None``.

    Raises:
        ValueError: if ``WORLD_SIZE`` > 1 but ``RANK`` is missing or out of range.
    """
    environ = dict(os.environ if environ is None else environ)
    if "WORLD_SIZE" not in environ:
        return None
    world = _env_int("WORLD_SIZE", environ)
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    if world == 1:
        return None
    if "RANK" not in environ:
        raise ValueError("WORLD_SIZE > 1 but RANK is not set (launch with torchrun)")
    rank = _env_int("RANK", environ)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} out of range for WORLD_SIZE={world}")
    local = _env_int("LOCAL_RANK", environ) if "LOCAL_RANK" in environ else rank
    return DistEnv(rank=rank, world_size=world, local_rank=local,
                   master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
                   master_port=_env_int("MASTER_PORT", environ) if "MASTER_PORT" in environ else 29500)


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` -> ``nccl`` when CUDA is available, else ``gloo``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


def init_distributed(
    cfg: DistributedConfig | None = None, environ: dict[str, str] | None = None
) -> DistEnv | None:
    """Open the default process group when launched by torchrun (idempotent, no-op otherwise).

    With CUDA, each process is pinned to ``cuda:LOCAL_RANK``.

    Args:
        cfg: backend and timeout.
        environ: mapping to read instead of ``os.environ`` (tests).

    Returns:
        The :class:`DistEnv`, or ``None`` in a single process.
    """
    cfg = cfg or DistributedConfig()
    env = dist_env(environ)
    if env is None:
        return None
    if dist.is_initialized():
        return env
    backend = resolve_backend(cfg.backend)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=cfg.timeout_s),
    )
    log.info("process group: rank %d/%d (%s)", env.rank, env.world_size, backend)
    return env


def destroy_distributed() -> None:
    """Close the default process group if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(cfg: DistributedConfig | None = None) -> Iterator[DistEnv | None]:
    """``with distributed_session() as env:`` opens the group (if launched so) and always closes it."""
    opened_here = not (dist.is_available() and dist.is_initialized())
    env = init_distributed(cfg)
    try:
        yield env
    finally:
        if opened_here and env is not None:
            destroy_distributed()


def is_distributed() -> bool:
    """True when a process group with more than one rank is open."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def rank_zero_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: run ``fn`` on rank 0 only (returns ``None`` elsewhere)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        return fn(*args, **kwargs) if is_main_process() else None

    return wrapper


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Indices of ``n`` items that ``rank`` handles: ``range(rank, n, world_size)``.

    Strided (not blocked) so ranks get similar mixes of prompt lengths.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad shard: rank {rank} of world size {world_size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(range(rank, n, world_size))


def current_shard() -> tuple[int, int] | None:
    """``(rank, world_size)`` for ``mine(..., shard=...)``, or ``None`` in a single process."""
    return (get_rank(), get_world_size()) if is_distributed() else None


# --------------------------------------------------------------------------------------
# collectives
# --------------------------------------------------------------------------------------
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


# The additive fields of ``selection.SelectionStats`` (see DESIGN.md, 'Aggregation').
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


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank gets the list of every rank's object (in rank order)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def interleave(per_rank: Sequence[Sequence[T]]) -> list[T]:
    """Undo :func:`shard_indices`: rank ``r``'s ``i``-th item was global item ``i * W + r``."""
    world = len(per_rank)
    n = sum(len(x) for x in per_rank)
    out: list[Any] = [None] * n
    for r, items in enumerate(per_rank):
        for i, item in enumerate(items):
            out[i * world + r] = item
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


# --------------------------------------------------------------------------------------
# data-parallel training
# --------------------------------------------------------------------------------------
def global_token_count(local_count: int | torch.Tensor) -> int:
    """Sum of answer-token counts over ranks (the denominator of the global SFT mean).

    Normalising each rank's summed token loss by this number, and *summing* gradients
    (``GradientSync(average=False)``), reproduces the gradient of the single-process loss
    on the global batch exactly; averaging per-rank means would not when ranks hold
    different numbers of answer tokens.
    """
    n = int(local_count.item()) if isinstance(local_count, torch.Tensor) else int(local_count)
    return int(round(all_reduce_scalar(n)))


def local_batch_slice(global_batch: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's part of one global batch (strided, like :func:`shard_indices`)."""
    return [global_batch[i] for i in shard_indices(len(global_batch), rank, world_size)]


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


def sync_gradients(params: Iterable[torch.nn.Parameter], average: bool = True) -> None:
    """One-off :class:`GradientSync` call."""
    GradientSync(params, average=average)()


def wrap_ddp(model: torch.nn.Module, find_unused_parameters: bool = True, **kwargs: Any) -> torch.nn.Module:
    """Wrap ``model`` in PyTorch's ``DistributedDataParallel`` (only ``requires_grad`` params sync).

    Set ``requires_grad`` (and gradient-mask hooks) *before* wrapping: DDP fixes its
    buckets at construction. Call the wrapper for the forward pass (``ddp(tokens)``) and
    reach TL helpers through ``ddp.module``. Returns the model unchanged in one process.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if dist.get_backend() == "nccl":
        kwargs.setdefault("device_ids", [torch.cuda.current_device()])
    return DDP(model, find_unused_parameters=find_unused_parameters, **kwargs)


def shard_model_fsdp(
    model: torch.nn.Module, reshard_after_forward: bool = True, sum_gradients: bool = False, **kwargs: Any
) -> torch.nn.Module:
    """Shard a HookedTransformer with FSDP2 (``fully_shard`` on every block, then the root).

    For models whose weights, gradients and optimiser state do not fit one GPU: each rank
    keeps ``1/W`` of every parameter (a ``DTensor`` sharded on dim 0) and gathers a block's
    weights just for its forward and backward. TL's hook points live inside the blocks and
    keep working, so deactivation hooks stay on. Intended for layer-level training (stage 2,
    the ``layers``/``full`` baselines: whole tensors trainable, no masks); entry-level masks
    would have to be applied to each rank's local shard of the gradient.

    Args:
        model: a HookedTransformer (``requires_grad`` already set on what trains).
        reshard_after_forward: free gathered weights after forward (ZeRO-3) or keep them (ZeRO-2).
        sum_gradients: sum instead of average gradients over ranks (use with losses already
            normalised by the global token count, :func:`global_token_count`).
        **kwargs: passed to ``fully_shard`` (e.g. ``mp_policy`` for bf16 compute).

    Returns:
        The same model, sharded in place (unchanged in one process).
    """
    if not is_distributed():
        return model
    from torch.distributed.fsdp import fully_shard

    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError("shard_model_fsdp expects a HookedTransformer-like model with .blocks")
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kwargs)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **kwargs)
    if sum_gradients:
        for m in [*blocks, model]:
            m.set_force_sum_reduction_for_comms(True)  # type: ignore[operator]  (gloo has no PREMUL_SUM)
            m.set_gradient_divide_factor(1.0)  # type: ignore[operator]
    return model


def split_across_devices(model: torch.nn.Module, n_devices: int, first_device: int = 0) -> torch.nn.Module:
    """Pipeline-free model splitting in one process: TransformerLens' ``n_devices``.

    Blocks go to ``cuda:first_device .. cuda:first_device+n_devices-1`` in contiguous
    groups (TL's ``get_device_for_block_index``), embeddings to the first GPU and
    ``ln_final``/``unembed`` to the last; TL's forward moves the residual stream between
    GPUs. Memory per GPU ~ weights / n_devices; no speed-up (one GPU works at a time).
    Combine with torchrun by giving each process its own ``CUDA_VISIBLE_DEVICES`` group.

    Args:
        model: a HookedTransformer on CPU or one GPU.
        n_devices: number of GPUs to spread it over (1 = leave it where it is).
        first_device: index of the first GPU to use.

    Raises:
        ValueError: ``n_devices`` < 1, or more GPUs requested than are visible.
    """
    if n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, got {n_devices}")
    if n_devices == 1:
        return model
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if first_device + n_devices > available:
        raise ValueError(f"n_devices={n_devices} from cuda:{first_device} needs {first_device + n_devices} GPUs, "
                         f"{available} visible")
    cfg = model.cfg  # type: ignore[attr-defined]
    cfg.n_devices = n_devices
    cfg.device = f"cuda:{first_device}"
    first, last = torch.device("cuda", first_device), torch.device("cuda", first_device + n_devices - 1)
    for name in ("embed", "hook_embed", "pos_embed", "hook_pos_embed"):
        if hasattr(model, name):
            getattr(model, name).to(first)
    for i, block in enumerate(model.blocks):  # type: ignore[attr-defined]
        block.to(torch.device("cuda", block_device_index(i, cfg.n_layers, n_devices, first_device)))
    for name in ("ln_final", "unembed"):
        if hasattr(model, name):
            getattr(model, name).to(last)
    return model


def block_device_index(layer: int, n_layers: int, n_devices: int, first_device: int = 0) -> int:
    """GPU index of block ``layer`` under TL's ``n_devices`` rule: contiguous, balanced groups.

    Same formula as TransformerLens' ``get_device_for_block_index``.

    >>> [block_device_index(i, 30, 4) for i in (0, 7, 8, 29)]
    [0, 0, 1, 3]
    """
    return first_device + (layer * n_devices) // n_layers


def rank_device(device: str, env: DistEnv | None = None) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun (each rank its own GPU); anything else unchanged."""
    env = env if env is not None else dist_env()
    if env is not None and device == "cuda":
        return f"cuda:{env.local_rank}"
    return device


def seed_everything(seed: int) -> None:
    """Same seed on every rank (parameters and data order must agree across ranks)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def grad_norm(params: Iterable[torch.nn.Parameter]) -> Float[torch.Tensor, ""]:
    """Global L2 norm of the gradients (after :class:`GradientSync` it is the same on every rank)."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.tensor(0.0)


__all__ = [
    "ADDITIVE_STAT_FIELDS",
    "DistEnv",
    "DistributedConfig",
    "GradientSync",
    "all_gather_objects",
    "all_reduce_additive",
    "all_reduce_scalar",
    "all_reduce_sum",
    "barrier",
    "block_device_index",
    "broadcast_object",
    "broadcast_parameters",
    "current_shard",
    "destroy_distributed",
    "dist_env",
    "distributed_session",
    "gather_objects",
    "get_rank",
    "get_world_size",
    "global_token_count",
    "grad_norm",
    "init_distributed",
    "interleave",
    "is_distributed",
    "is_main_process",
    "local_batch_slice",
    "rank_zero_only",
    "resolve_backend",
    "seed_everything",
    "shard_indices",
    "rank_device",
    "shard_model_fsdp",
    "split_across_devices",
    "stats_comm_bytes",
    "wrap_ddp",
    "sync_gradients",
]
