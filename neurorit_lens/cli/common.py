"""What the subcommand modules share: the common options, the model/out flags, flat config sections, loading.

A long-running command's ``Args`` dataclass derives from :class:`Common` (``--progress``,
``--device``, ``--threads``, ``--seed``) and declares its other flags with these pieces::

    @dataclass
    class Args(Common):
        model: ModelName = DEFAULT_MODEL
        out: OutDir = "runs/eval"
        data: Flat[DataFlags] = field(default_factory=DataFlags)          # DataFlags = without(DataConfig, "seed")
        eval: Flat[EvalFlags] = field(default_factory=EvalFlags)          # EvalFlags = without(EvalConfig, "seed")

and its ``run`` turns them back into configs with :func:`config_of` and starts with
:func:`load_examples` / :func:`load_model` / :func:`write_config`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tyro

from neurorit_lens.config import DataConfig, DistBackend

C = TypeVar("C")

DEFAULT_MODEL = "smollm2-135m-instruct"

ModelName = Annotated[str, tyro.conf.arg(
    metavar="NAME", help="Model name (smollm2-135m-instruct, gemma-3-270m, tiny, ...) or a local checkpoint folder.")]
OutDir = Annotated[str, tyro.conf.arg(metavar="DIR", help="Output folder; created if missing.")]
Device = Annotated[str, tyro.conf.arg(metavar="DEVICE", help="Torch device: cpu, cuda, cuda:1, mps, ...")]
Progress = Annotated[bool, tyro.conf.arg(help="Show tqdm progress bars.")]
Threads = Annotated[int | None, tyro.conf.arg(
    metavar="N", help="Torch CPU threads (torch.set_num_threads; none = torch's default).")]
Seed = Annotated[int, tyro.conf.arg(
    help="Random seed for the split, the noisy contexts and every later random draw.")]
NeuronsFile = Annotated[str, tyro.conf.arg(metavar="FILE", help="neurons.json written by `neurorit mine`.")]

Flat = tyro.conf.OmitArgPrefixes
"""``field: Flat[SomeConfig]`` gives ``SomeConfig``'s fields as unprefixed flags (``--n-passages``)."""


def without(cls: type[C], *names: str) -> type[C]:
    """A subclass of config ``cls`` whose fields ``names`` get no flag (they keep their defaults).

    Used where two flat sections share a field name (``seed``) or a command fixes a field.
    :func:`config_of` turns an instance back into a plain ``cls``.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    ns: dict[str, Any] = {"__annotations__": {n: Annotated[hints[n], tyro.conf.Suppress] for n in names},
                          "__doc__": cls.__doc__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                          "_config_class": cls}
    for n in names:
        ns[n] = defaults[n]
    return dataclass(type(cls.__name__, (cls,), ns))  # type: ignore[return-value]


def config_of(obj: Any, **overrides: Any) -> Any:
    """The plain config behind a parsed section (undoing :func:`without`), with ``overrides`` applied."""
    cls = getattr(type(obj), "_config_class", type(obj))
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}
    return cls(**{**values, **overrides})


@dataclass(kw_only=True)
class Common:
    """The options every long-running command takes (``run``, ``mine``, ``ablate``, ``train``, ``eval``,
    ``neuron``). :func:`neurorit_lens.cli.main.main` calls :meth:`apply` before the command runs;
    the command passes ``progress``, ``device`` and ``seed`` on (``seed`` to each config section it
    builds)."""

    progress: Progress = True
    device: Device = "cpu"
    threads: Threads = None
    seed: Seed = 0

    def apply(self) -> None:
        """Process-wide settings: the torch thread count."""
        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {self.threads}")
            import torch

            torch.set_num_threads(self.threads)


@dataclass
class Launch:
    """How the process group is opened when launched by torchrun (see docs/distributed.md)."""

    # Process-group backend under torchrun: nccl with CUDA else gloo (auto), gloo or nccl.
    dist_backend: DistBackend = "auto"
    dist_timeout_s: int = 1800  # Seconds a collective operation may wait under torchrun before it fails.

    def config(self):
        """The :class:`~neurorit_lens.distributed.process.DistributedConfig` these flags describe."""
        from neurorit_lens.distributed.process import DistributedConfig

        return DistributedConfig(backend=self.dist_backend, timeout_s=self.dist_timeout_s)


def load_model(name: str, device: str | None):
    """Load ``name`` on ``device`` (``None``: the loader's default device)."""
    from neurorit_lens.models import load_model as _load

    return _load(name, device=device) if device else _load(name)


def load_examples(data_cfg: DataConfig) -> list:
    """The examples of ``data_cfg``'s split; ``ValueError`` when there are none."""
    from neurorit_lens.data import load_split

    examples = load_split(data_cfg)
    if not examples:
        raise ValueError(f"no examples in split {data_cfg.split!r} of {data_cfg.data!r}")
    return examples


def write_config(out: Path, command: str, seed: int, record: dict[str, Any], write: bool = True) -> None:
    """Create ``out`` and write ``config.json`` (``{"command": ..., **record}``) and ``environment.json``.

    ``record`` holds ``model`` and ``device`` (for environment.json) and the config sections as dicts.
    ``write=False`` (a non-main rank) only creates the folder.
    """
    from neurorit_lens.io import atomic_write_json, write_run_metadata

    out.mkdir(parents=True, exist_ok=True)
    if not write:
        return
    atomic_write_json(out / "config.json", {"command": command, **record})
    write_run_metadata(out, seed, command=command, model=record["model"], device=record["device"])
