"""The per-unit peak resident memory the comparison harness records (neurorit_lens/memory.py)."""

from __future__ import annotations

import mmap
import os

import pytest

from neurorit_lens.memory import PeakRSS, reset_peak, status_kb

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs") or not reset_peak(),
                                reason="needs Linux /proc/self/clear_refs")

MB = 1024 * 1024


def test_peak_sees_a_freed_allocation_and_resets_between_blocks():
    with PeakRSS() as big:
        before = status_kb("VmRSS") / 1024
        # a fresh anonymous mapping (never memory the allocator already holds), every page
        # written, then unmapped: resident only inside this block
        buf = mmap.mmap(-1, 300 * MB)
        for off in range(0, 300 * MB, mmap.PAGESIZE):
            buf[off] = 1
        buf.close()
    with PeakRSS() as small:
        sum(range(1000))
    assert big.peak_mb is not None and small.peak_mb is not None
    assert big.peak_mb >= before + 250
    # the reset brought the high-water mark back down: the second block did not see the 300 MB
    assert small.peak_mb < big.peak_mb - 200
