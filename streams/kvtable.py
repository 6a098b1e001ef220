"""An in-process key-value table with undo, free of Kafka (the fetch stage's dedup uses it directly)."""

from __future__ import annotations

import threading
from typing import Any


class LocalTable:
    """The table of one process; :class:`streams.table.GlobalTable` adds a changelog topic."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to load for a local table."""

    def close(self) -> None:
        """Nothing to release for a local table."""

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._data.get(key)

    def put_local(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._data[key] = value

    def restore_local(self, key: str, previous: dict[str, Any] | None) -> None:
        """Undo a put_local whose transaction aborted."""
        with self._lock:
            if previous is None:
                self._data.pop(key, None)
            else:
                self._data[key] = previous

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
