"""A global, changelog-backed key-value table: a compacted topic read in full by every worker.

Writes go to the topic inside the writer's own transaction (as ordinary outputs), so the table
changes exactly when the data it describes commits. Each worker loads every partition up to the
end at start (``read_committed``), then a background thread tails the topic; its own writes are
applied locally at once (:meth:`GlobalTable.put_local`) so a partition's owner never misses
what it just wrote. Workers see each other's writes after the tail delay (well under a second).
A writer marks its records with :attr:`GlobalTable.headers` (a token of this table object), and
its follower passes over its own records: they are in the local table already (an aborted one
never reaches a ``read_committed`` reader), so applying them again cost a JSON parse and an
SQLite write per key for nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from pathlib import Path

from confluent_kafka import KafkaError, TopicPartition

from schemas.models import Header
from streams.kafka import consumer
from streams.kvtable import LocalTable
from streams.settings import StreamSettings

logger = logging.getLogger(__name__)


WRITER_HEADER = "mediavec-table-writer"


class GlobalTable(LocalTable):
    def __init__(self, settings: StreamSettings, topic: str, path: Path | None = None) -> None:
        super().__init__(path)
        self.settings = settings
        self.topic = topic
        self._writer = secrets.token_hex(8).encode()  # this object's, so a restarted worker reads all again
        self.headers = (Header(WRITER_HEADER, self._writer),)
        self.skipped_own = 0  # records of this table's own writes the follower passed over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()

    def start(self, timeout_s: float = 120.0) -> None:
        """Load the whole topic, then keep following it in the background."""
        self._thread = threading.Thread(target=self._follow, name=f"table-{self.topic}", daemon=True)
        self._thread.start()
        if not self._loaded.wait(timeout_s):
            raise TimeoutError(f"table {self.topic} did not load in {timeout_s}s")
        logger.info("table %s loaded: %d keys", self.topic, len(self))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        super().close()

    def _follow(self) -> None:
        c = consumer(
            self.settings,
            f"{self.settings.topics.prefix}mediavec.table-reader",
            overrides={"enable.partition.eof": True},
        )
        try:
            parts = c.list_topics(self.topic, timeout=30).topics[self.topic].partitions
            c.assign([TopicPartition(self.topic, p, 0) for p in parts])
            pending = set(parts)
            while not self._stop.is_set():
                records = []
                for msg in c.consume(500, timeout=0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                        continue
                    if (WRITER_HEADER, self._writer) in (msg.headers() or ()):
                        self.skipped_own += 1
                        continue
                    record = self._record(msg.key(), msg.value())
                    if record is not None:
                        records.append(record)
                if records:
                    self._apply_raw(records)
                if not pending:
                    self._loaded.set()
        except Exception:
            logger.exception("table %s follower died", self.topic)
            time.sleep(1)
        finally:
            c.close()

    def _record(self, key: bytes | None, value: bytes | None) -> tuple[str, bytes | None] | None:
        """A changelog message as a table record; None for one without a key or with a value that is not JSON."""
        if key is None:
            return None
        k = key.decode("utf-8", "replace")
        if value is not None:
            try:
                json.loads(value)
            except ValueError:
                logger.warning("table %s: undecodable value for %s", self.topic, k)
                return None
        return k, value
