"""Give freed heap memory back to the kernel, so a worker's RSS tracks what it really holds.

Model workers allocate activations whose size follows the batch; glibc keeps what a large batch
freed in its arenas, so RSS steps up after every new largest batch and never comes down. That
looks like a leak on a soak's memory plot and hides a real one. :class:`HeapTrimmer` calls
``malloc_trim(0)`` (glibc only; elsewhere it does nothing) at most once per interval.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class HeapTrimmer:
    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._trim = _malloc_trim()
        self._last = time.monotonic()
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim if the interval has passed since the last trim; True when it trimmed."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self.interval_s:
            return False
        self._last = now
        self._trim(0)
        self.trims += 1
        return True
