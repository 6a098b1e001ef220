"""The remote provider's state on disk, every few seconds, for ``mediavec status`` on this host.

An embed worker that embeds through a remote provider writes ``<data_dir>/providers/<host>-<pid>.json``
(the provider's model id, concurrency limit, requests in flight, circuit state, requests/s and
tokens/min over the last minute with their quotas, 429s) from a daemon thread, atomically (write,
then rename), and removes it when the stage closes. ``mediavec status`` lists the files written in
the last :data:`FRESH_S` seconds. Workers on other hosts report through their Prometheus metrics
(``mediavec_provider_*``); this file is the view of one host without a Prometheus server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from models.remote.client import RemoteEmbedder

logger = logging.getLogger(__name__)

EVERY_S = 2.0
FRESH_S = 30.0


def reports_dir(data_dir: Path) -> Path:
    return data_dir / "providers"


class ProviderReporter:
    """A daemon thread writing the embedder's :meth:`~RemoteEmbedder.snapshot` every ``EVERY_S``."""

    def __init__(self, embedder: RemoteEmbedder, data_dir: Path) -> None:
        self.embedder = embedder
        self.path = reports_dir(data_dir) / f"{socket.gethostname()}-{os.getpid()}.json"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="provider-report", daemon=True)

    def start(self) -> ProviderReporter:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            try:
                self.write()
            except Exception as exc:  # a report must never take the worker down
                logger.debug("provider report not written: %s", exc)

    def write(self) -> None:
        snapshot: dict[str, Any] = {**self.embedder.snapshot(), "worker": self.path.stem, "at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_suffix(".part")
        part.write_text(json.dumps(snapshot))
        part.replace(self.path)


def read_reports(data_dir: Path, *, now: float | None = None) -> list[dict[str, Any]]:
    """The fresh reports of this host's workers, by worker name."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(reports_dir(data_dir).glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced, or not ours
        if isinstance(report, dict) and now - float(report.get("at", 0)) <= FRESH_S:
            out.append(report)
    return out
