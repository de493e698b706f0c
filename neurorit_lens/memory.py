"""Peak resident memory of a stretch of work in this process (Linux).

``VmHWM`` in ``/proc/self/status`` is the process's resident high-water mark; writing ``5``
to ``/proc/self/clear_refs`` resets it to the current resident size, so the peak of one
unit of work can be read without a sampling thread. Where either file is missing (not
Linux) the peak is ``None``, never a guess.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def status_kb(field: str) -> int:
    """One ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...)."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident size; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as p: work()`` then ``p.peak_mb``: the resident high-water mark
    during the block, in MiB (``None`` when it cannot be measured here)."""

    def __init__(self) -> None:
        self.peak_mb: float | None = None
        self._ok = False

    def __enter__(self) -> PeakRSS:
        self._ok = reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ok:
            try:
                self.peak_mb = status_kb("VmHWM") / 1024
            except (OSError, RuntimeError):
                self.peak_mb = None
