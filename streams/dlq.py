"""Dead letters: list them and redrive them (``streams.stage.dead_letter`` builds them).

The ``skipped`` topic holds media skipped on purpose (duplicates of earlier media) in the same
schema; :func:`read_entries` lists it too. Those are not failures and are not redriven.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from schemas import DeadLetter, SchemaError, decode_dead_letter
from streams.kafka import producer, read_to_end
from streams.settings import StreamSettings
from streams.stage import dead_letter
from streams.topics import topics

logger = logging.getLogger(__name__)
__all__ = ["DlqEntry", "dead_letter", "read_entries", "redrive"]


@dataclass(frozen=True)
class DlqEntry:
    partition: int
    offset: int
    letter: DeadLetter

    def line(self) -> str:
        """One tab-separated line: where, stage, cause, media id, reason, details as key=value."""
        dl = self.letter
        details = " ".join(f"{k}={v}" for k, v in sorted(dl.details.items()))
        return "\t".join((f"{self.partition}@{self.offset}", dl.stage, dl.error_class, dl.media_id, dl.reason, details))

    def summary(self) -> dict[str, object]:
        """Every field but the original event's bytes, for JSON."""
        dl = self.letter
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            **{f: getattr(dl, f) for f in _SUMMARY_FIELDS},
            "details": dict(dl.details),
        }


_SUMMARY_FIELDS = (
    "stage",
    "error_class",
    "reason",
    "media_id",
    "source_topic",
    "source_partition",
    "source_offset",
    "failed_at",
    "redrive_count",
)


def read_entries(
    settings: StreamSettings,
    timeout_s: float = 10.0,
    *,
    topic: Literal["dlq", "skipped"] = "dlq",
    unreadable: list[str] | None = None,
) -> Iterator[DlqEntry]:
    """Every committed entry now in the DLQ (or the skipped) topic, oldest first per partition (no group state).

    A record that is not a dead letter (another producer wrote to the topic) is passed over, so it
    never hides the entries after it: logged, and ``partition@offset: why`` appended to ``unreadable``.
    """
    reader = f"{settings.topics.prefix}mediavec.{topic}-reader"
    for msg in read_to_end(settings, topics(settings).by_name(topic).name, reader, timeout_s=timeout_s):
        where = f"{msg.partition() or 0}@{msg.offset() or 0}"
        try:
            letter = decode_dead_letter(msg.value() or b"")
        except SchemaError as exc:
            logger.warning("%s %s is not a dead letter, passed over: %s", topic, where, exc)
            if unreadable is not None:
                unreadable.append(f"{where}: {exc}")
            continue
        yield DlqEntry(msg.partition() or 0, msg.offset() or 0, letter)


def redrive(settings: StreamSettings, entries: list[DlqEntry], flush_timeout_s: float = 30.0) -> int:
    """Republish the original events to their source topics; returns how many were sent.

    A letter whose original was cut (over ``MAX_ORIGINAL_BYTES``) is not sent: its event is gone.
    """
    p = producer(settings)
    sent = 0
    for e in entries:
        dl = e.letter
        if dl.details.get("original_truncated") == "true":
            logger.warning("not redriving %d@%d: its original event was cut to 1 MiB", e.partition, e.offset)
            continue
        headers: list[tuple[str, str | bytes | None]] = [
            (h.key, h.value) for h in dl.original_headers if h.key != "mediavec-redrive-count"
        ]
        headers.append(("mediavec-redrive-count", str(dl.redrive_count + 1).encode()))
        p.produce(dl.source_topic, key=dl.original_key, value=dl.original_value, headers=headers)
        p.poll(0)
        sent += 1
    left = p.flush(flush_timeout_s)
    if left:
        raise RuntimeError(f"{left} redriven events were not acknowledged in {flush_timeout_s}s")
    return sent
