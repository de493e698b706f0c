"""The training log and the resumable checkpoint of one trainer run.

- ``train_log.jsonl``: one :class:`StepOutput` per optimizer step.
- ``checkpoint.pt``: written atomically every ``checkpoint_every`` steps and at the end,
  with the trainable tensors, optimizer and scheduler state, RNG states, step, data
  position, the log so far and a *fingerprint* of the run (items, config, masks, hooks).
  A checkpoint is resumed only by a run with the same fingerprint, so a changed
  configuration never continues from another run's state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurorit_lens.io import atomic_write_bytes, atomic_write_text
from neurorit_lens.training.items import TrainItem

CHECKPOINT = "checkpoint.pt"
TRAIN_LOG = "train_log.jsonl"
CKPT_VERSION = 2  # 2: optimizer state holds only the trainable entries of masked parameters


@dataclass
class StepOutput:
    """What one optimizer step did (one line of ``train_log.jsonl``)."""

    step: int  # optimizer steps completed (offset by earlier stages for multi-stage runs)
    loss: float  # mean answer-token cross-entropy of the step's batch (before the update)
    lr: float  # learning rate used for this step
    grad_norm: float  # L2 norm of the masked gradient before clipping
    n_tokens: int  # answer tokens in the batch (EOS included)
    stage: str = ""
    dev_loss: float | None = None  # mean answer-token cross-entropy on the dev items
    dev_answer_logprob: float | None = None  # mean per-item log p(answer + EOS | prompt)
    items: list[int] = dataclasses.field(default_factory=list)  # indices of the step's global batch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepOutput:
        return cls(**d)


def log_lines(history: Sequence[StepOutput]) -> str:
    """``train_log.jsonl`` text of ``history``."""
    return "".join(json.dumps(o.to_dict()) + "\n" for o in history)


def write_train_log(path: str | os.PathLike, history: Sequence[StepOutput]) -> None:
    atomic_write_text(path, log_lines(history))


def read_train_log(path: str | os.PathLike) -> list[StepOutput]:
    """Read a ``train_log.jsonl`` back into :class:`StepOutput` s."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [StepOutput.from_dict(json.loads(line)) for line in lines if line.strip()]


def items_sha256(items: Sequence[TrainItem]) -> str:
    """Hash of the items' prompts and answers, in order."""
    h = hashlib.sha256()
    for it in items:
        h.update(it.prompt.encode())
        h.update(b"\0")
        h.update(it.answer.encode())
        h.update(b"\1")
    return h.hexdigest()


def _py_state_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_list(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=list))


def save_checkpoint(path: Path, *, step: int, position: int, complete: bool, fingerprint: Mapping[str, Any],
                    trainable: Mapping[str, torch.Tensor], optimizer: Any, scheduler: Any,
                    history: Sequence[StepOutput]) -> None:
    """Write one checkpoint atomically (``optimizer`` is ``None`` once the run is complete)."""
    state = {
        "version": CKPT_VERSION,
        "step": step,
        "position": position,
        "complete": complete,
        "fingerprint": _jsonable(fingerprint),
        "trainable": {n: t.detach().cpu().clone() for n, t in trainable.items()},
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": {"torch": torch.get_rng_state(), "python": list(_py_state_to_list(random.getstate()))},
        "log": [o.to_dict() for o in history],
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Read a checkpoint, check its version and fingerprint, restore the RNG states.

    Returns:
        The state (``step``, ``trainable``, ``optimizer``, ``scheduler``) with ``log`` as
        :class:`StepOutput` s.

    Raises:
        ValueError: another checkpoint version, or a checkpoint written by a different run.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != CKPT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {state.get('version')} (this version writes "
                         f"{CKPT_VERSION}); delete it or start without resuming")
    mine = _jsonable(fingerprint)
    if state["fingerprint"] != mine:
        diff = sorted(k for k in mine if state["fingerprint"].get(k) != mine[k])
        raise ValueError(f"{path} was written by a different run (differs in {diff}); "
                         "delete it or start without resuming")
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(_py_state_from_list(state["rng"]["python"]))
    state["log"] = [StepOutput.from_dict(d) for d in state["log"]]
    return state
