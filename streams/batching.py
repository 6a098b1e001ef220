"""Cross-event batches from a consumer: bounded by size and by a deadline from the first event."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams import metrics
from streams.errors import FatalKafkaError, is_fatal

logger = logging.getLogger(__name__)


class Batcher:
    """Collects polled events; a rebalance drops those of revoked partitions (never processed twice)."""

    def __init__(self, name: str, batch_size: int, deadline_s: float) -> None:
        self.name = name
        self.batch_size = batch_size
        self.deadline_s = deadline_s
        self._buffer: list[Message] = []

    def fill(self, consumer: Consumer, stop: threading.Event) -> list[Message]:
        """Poll until the batch is full or its deadline passes; [] after ~0.5 s of idleness."""
        started = time.monotonic()
        deadline: float | None = None
        while len(self._buffer) < self.batch_size and not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            timeout = 0.5 if deadline is None else max(0.0, deadline - now)
            for m in consumer.consume(self.batch_size - len(self._buffer), timeout=timeout):
                err = m.error()
                if err is None:
                    self._buffer.append(m)
                elif is_fatal(err):
                    raise FatalKafkaError(str(err))
                elif err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("%s: consumer error: %s", self.name, err)
            if self._buffer and deadline is None:
                deadline = time.monotonic() + self.deadline_s
            if deadline is None:
                return []  # idle: give the caller a chance to stop
        batch, self._buffer = self._buffer, []
        if batch:
            metrics.BATCH_FILL_S.labels(self.name).observe(time.monotonic() - started)
        return batch

    def drop(self, partitions: list[TopicPartition]) -> None:
        """Forget buffered events of revoked partitions: their new owner reads them again."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        before = len(self._buffer)
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in gone]
        if before != len(self._buffer):
            logger.info("%s: rebalance dropped %d buffered events", self.name, before - len(self._buffer))

    def clear(self) -> None:
        self._buffer = []
