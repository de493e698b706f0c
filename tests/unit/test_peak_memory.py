"""The per-unit peak resident memory the comparison harness records (benchmarks/peak_memory.py)."""

from __future__ import annotations

import os

import pytest

from benchmarks.peak_memory import PeakRSS, reset_peak, status_kb

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs") or not reset_peak(),
                                reason="needs Linux /proc/self/clear_refs")

MB = 1024 * 1024


def test_peak_sees_a_freed_allocation_and_resets_between_blocks():
    before = status_kb("VmRSS") / 1024
    with PeakRSS() as big:
        buf = bytearray(300 * MB)  # zero-filled by the kernel on touch: write every page
        buf[::4096] = b"\x01" * len(buf[::4096])
        del buf
    with PeakRSS() as small:
        sum(range(1000))
    assert big.peak_mb is not None and small.peak_mb is not None
    assert big.peak_mb >= before + 250
    # the reset brought the high-water mark back down: the second block did not see the 300 MB
    assert small.peak_mb < big.peak_mb - 200
