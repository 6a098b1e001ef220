"""Heap trimming: freed memory goes back to the kernel (glibc), at most once per interval."""

from __future__ import annotations

import ctypes

from streams.memory import HeapTrimmer


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_trim_returns_freed_heap_memory() -> None:
    trimmer = HeapTrimmer(interval_s=0.0)
    assert trimmer.available, "the test machine runs glibc"
    trimmer.maybe_trim()
    # Many small blocks come from the heap (below the mmap threshold) and stay there when freed.
    blocks = [ctypes.create_string_buffer(64 * 1024) for _ in range(2000)]  # ~128 MB
    pin = ctypes.create_string_buffer(100 * 1024)  # carved from the top, above them: free() cannot shrink past it
    held = _rss_bytes()
    del blocks
    assert _rss_bytes() > held - 16 * 1024 * 1024, "freed blocks below the top stay resident"
    assert trimmer.maybe_trim()
    assert _rss_bytes() < held - 64 * 1024 * 1024
    del pin


def test_trim_waits_for_its_interval() -> None:
    trimmer = HeapTrimmer(interval_s=3600.0)
    assert not trimmer.maybe_trim()
    assert trimmer.trims == 0
