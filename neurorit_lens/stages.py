"""Resumable stage folders: one record of what produced a folder, one rule for skipping it.

A stage folder (the runner's ``mining/``, ``train/<method>/``, ...; a comparison's
``train/<run>/``, ``eval/<run>/``, ``mining/``) holds ``stage.json``: the fingerprint of the
inputs that produced it (:func:`neurorit_lens.io.fingerprint`), the inputs themselves and
whether the work finished. :func:`run_stage` applies the rule every caller shares:

- record current and complete, outputs on disk: skip;
- record current but unfinished: run again in place (a training resumes from its checkpoints);
- record of other inputs (*stale*): ``stale="restart"`` removes the folder and runs afresh,
  ``stale="refuse"`` raises, naming the folder;
- no record: ``unrecorded="restart"`` removes what is there and runs; ``unrecorded="adopt"``
  takes the folder as made from these inputs (folders written before records existed): with
  its outputs on disk it is recorded complete and skipped, else it is run in place.

:func:`open_stage` applies the same rule to a folder that collects units one file at a time
(a comparison's ``eval/<run>/``): the record names the inputs, each unit file is written
atomically, so a unit is done when its file exists.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from neurorit_lens.io import atomic_write_json, fingerprint, read_json

STAGE_FILE = "stage.json"
Unrecorded = Literal["restart", "adopt"]
Stale = Literal["restart", "refuse"]


def read_record(folder: str | Path) -> dict[str, Any]:
    """The folder's ``stage.json`` (``{}`` when it has none)."""
    path = Path(folder) / STAGE_FILE
    return read_json(path) if path.exists() else {}


def write_record(folder: str | Path, name: str, inputs: Any, complete: bool, **extra: Any) -> None:
    atomic_write_json(Path(folder) / STAGE_FILE, {"stage": name, "fingerprint": fingerprint(inputs),
                                                  "complete": complete, "inputs": inputs, **extra})


def _outputs_exist(folder: Path, outputs: Iterable[str]) -> bool:
    return all((folder / o).exists() for o in outputs)


def _prepare(folder: Path, name: str, inputs: Any, outputs: Iterable[str], unrecorded: Unrecorded,
             stale: Stale) -> bool:
    """Apply the rule of the module docstring; True when the stage is done (skip it)."""
    record, fp = read_record(folder), fingerprint(inputs)
    if not record:
        if folder.exists() and unrecorded == "adopt":
            if _outputs_exist(folder, outputs):
                write_record(folder, name, inputs, True, adopted=True)
                return True
            return False
        if folder.exists():
            shutil.rmtree(folder)
        return False
    if record.get("fingerprint") != fp:
        if stale == "refuse":
            raise ValueError(f"{folder}: made from other inputs than this run's ({STAGE_FILE} fingerprint "
                             f"{record.get('fingerprint')}, expected {fp}); move it away to redo it")
        shutil.rmtree(folder)
        return False
    return bool(record.get("complete")) and _outputs_exist(folder, outputs)


def run_stage(folder: str | Path, inputs: Any, outputs: Iterable[str], fn: Callable[[], Any], *,
              name: str | None = None, unrecorded: Unrecorded = "restart", stale: Stale = "restart") -> bool:
    """Run ``fn`` to fill ``folder`` unless it is done for ``inputs``; True when ``fn`` ran.

    ``outputs``: paths relative to ``folder`` that a finished stage holds.
    """
    folder, outputs = Path(folder), list(outputs)
    name = name or folder.name
    if _prepare(folder, name, inputs, outputs, unrecorded, stale):
        return False
    write_record(folder, name, inputs, False)
    fn()
    write_record(folder, name, inputs, True)
    return True


def open_stage(folder: str | Path, inputs: Any, *, name: str | None = None, unrecorded: Unrecorded = "restart",
               stale: Stale = "restart") -> None:
    """Check (and record) a folder of unit files for ``inputs``; its unit files stay as they are."""
    folder = Path(folder)
    name = name or folder.name
    if _prepare(folder, name, inputs, (), unrecorded, stale):
        return
    if read_record(folder).get("fingerprint") != fingerprint(inputs):
        write_record(folder, name, inputs, True)
