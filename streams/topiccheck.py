"""Drift between the declared topics and the broker's, as ``mediavec topics --check`` reports it.

``ensure_topics`` creates a missing topic as declared but leaves an existing one alone, so a
topic made by hand, by an older version or on a one-broker stack keeps whatever it was given: too
few partitions (fewer consumers can share the work), one replica where three are declared (one
broker's loss loses data), a ``min.insync.replicas`` lower than declared (an ``acks=all`` write is
acknowledged by fewer copies). This module compares a declaration with what the broker reports,
both as plain values, so it is tested without a broker; :func:`streams.admin.check_topics` asks
the broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.settings import StreamSettings
from streams.topics import TopicSpec

# What a declaration that does not name these still means: a topic that is not compacted deletes.
IMPLIED_CONFIG = {"cleanup.policy": "delete"}


@dataclass(frozen=True)
class TopicState:
    """What the broker reports about one topic."""

    replicas: tuple[int, ...]  # the number of replicas of each partition, in partition order
    config: Mapping[str, str] = field(default_factory=dict)  # effective values, defaults included

    @property
    def partitions(self) -> int:
        return len(self.replicas)


@dataclass(frozen=True)
class Declared:
    """What a topic should be: from its :class:`TopicSpec` and the topic settings."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True)
class Drift:
    topic: str
    what: str  # "topic", "partitions", "replication factor" or a config name
    declared: str
    actual: str

    def line(self) -> str:
        if self.what == "topic":
            return f"{self.topic}: missing"
        return f"{self.topic}: {self.what} is {self.actual}, declared {self.declared}"


def topic_config(settings: StreamSettings, spec: TopicSpec) -> dict[str, str]:
    """The topic configuration a declared topic is created with."""
    conf = spec.config()
    if settings.topics.min_insync_replicas is not None:
        conf["min.insync.replicas"] = str(settings.topics.min_insync_replicas)
    return conf


def declared(settings: StreamSettings, spec: TopicSpec) -> Declared:
    config = {**IMPLIED_CONFIG, **topic_config(settings, spec)}
    return Declared(spec.name, spec.partitions, settings.topics.replication_factor, config)


def drift(want: Declared, have: TopicState | None) -> list[Drift]:
    """Every way ``have`` differs from ``want``; more partitions than declared is not drift."""
    if have is None:
        return [Drift(want.name, "topic", "present", "missing")]
    found: list[Drift] = []
    if have.partitions < want.partitions:
        found.append(Drift(want.name, "partitions", str(want.partitions), str(have.partitions)))
    counts = sorted(set(have.replicas))
    if counts != [want.replication_factor]:
        actual = ", ".join(str(c) for c in counts) or "none"
        found.append(Drift(want.name, "replication factor", str(want.replication_factor), actual))
    for key, value in want.config.items():
        if have.config.get(key) != value:
            found.append(Drift(want.name, key, value, have.config.get(key, "unset")))
    return found
