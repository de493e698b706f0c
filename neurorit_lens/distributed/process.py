"""Where this process sits in a ``torchrun`` job: environment, process group, rank, barrier, shards.

Nothing here is a scheduler: processes are started by ``torchrun`` (or any launcher that
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``), and this
module only reads those variables, opens (and closes) the default process group, says
which rank this is, and splits work between ranks (strided: rank ``r`` of ``W`` takes
items ``r, r + W, ...``). The collectives that move data between ranks are in
:mod:`neurorit_lens.distributed.collectives`.

Everything is a no-op in a single process (rank 0 of a world of 1), so the same code path
serves both.

>>> env = dist_env()   # None unless launched by torchrun with WORLD_SIZE > 1
>>> shard_indices(10, rank=1, world_size=3)
[1, 4, 7]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import torch
import torch.distributed as dist

from neurorit_lens.config import DistBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKENDS = get_args(DistBackend)


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


def local_batch_slice(global_batch: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's part of one global batch (strided, like :func:`shard_indices`)."""
    return [global_batch[i] for i in shard_indices(len(global_batch), rank, world_size)]


def interleave(per_rank: Sequence[Sequence[T]]) -> list[T]:
    """Undo :func:`shard_indices`: rank ``r``'s ``i``-th item was global item ``i * W + r``."""
    world = len(per_rank)
    n = sum(len(x) for x in per_rank)
    out: list[Any] = [None] * n
    for r, items in enumerate(per_rank):
        for i, item in enumerate(items):
            out[i * world + r] = item
    return out


def current_shard() -> tuple[int, int] | None:
    """``(rank, world_size)`` for ``mine(..., shard=...)``, or ``None`` in a single process."""
    return (get_rank(), get_world_size()) if is_distributed() else None


def rank_device(device: str, env: DistEnv | None = None) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun (each rank its own GPU); anything else unchanged."""
    env = env if env is not None else dist_env()
    if env is not None and device == "cuda":
        return f"cuda:{env.local_rank}"
    return device


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


__all__ = [
    "BACKENDS",
    "DistEnv",
    "DistributedConfig",
    "barrier",
    "block_device_index",
    "current_shard",
    "destroy_distributed",
    "dist_env",
    "distributed_session",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "interleave",
    "is_distributed",
    "is_main_process",
    "local_batch_slice",
    "rank_device",
    "resolve_backend",
    "shard_indices",
    "split_across_devices",
]
