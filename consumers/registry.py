"""Every pipeline stage, declared once: its name, the topic it reads, its kind and how it is built.

The name is the stage's consumer group (``group_id(settings, name)``), the argument of
``mediavec run``, the label of its metrics and the row of ``mediavec status``; the CLI choices, the
workers, status, the supervisor and the stage classes' ``name`` all read it from here, and
``tests/unit/test_declared_once.py`` fails when a stage name is spelled anywhere else in code.

Kinds, by how a stage commits (ARCHITECTURE.md, "Commit order"):

- ``pipelined``: Kafka -> Kafka, inputs worked on concurrently, committed in transactions
  (:class:`streams.pipelined.PipelinedRunner`);
- ``transactional``: Kafka -> Kafka, batch in, batch out, one transaction per batch
  (:class:`streams.runner.TransactionalRunner`);
- ``sink``: Kafka -> store, write then record the offsets in the store
  (:class:`streams.sink_runner.StoreSinkRunner`).

Each entry's ``build`` imports its stage's package only when called, inside the worker, so that
reading the registry (the CLI's argument parser, ``mediavec status``) loads no model and no store
client. Adding a stage is one package under ``consumers/`` plus one entry in :data:`STAGES`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from consumers.settings import ConsumerSettings
    from streams.sink_runner import StoreSink
    from streams.stage import TopicKey

StageKind = Literal["pipelined", "transactional", "sink"]


class Runner(Protocol):
    """A built stage worker: polls, transforms, produces or writes, commits, until ``stop`` is set."""

    def run(self, stop: threading.Event) -> None: ...


@dataclass(frozen=True)
class StageSpec:
    """One stage: what ``mediavec run <name>`` starts."""

    name: str  # the stage and its consumer group (before the group prefix)
    input: TopicKey  # the logical topic it reads, a key of streams.topics.Topics
    kind: StageKind
    description: str  # one line, for ``mediavec run --help`` and the docs
    build: Callable[[ConsumerSettings, str | None], Runner]  # (settings, instance) -> runner, not started


def _fetch(settings: ConsumerSettings, instance: str | None) -> Runner:
    from consumers.fetch.dedup import table_file
    from consumers.fetch.stage import FetchStage
    from streams.pipelined import PipelinedRunner
    from streams.table import GlobalTable
    from streams.topics import topics

    f = settings.fetch
    seen = GlobalTable(settings, topics(settings).seen.name, table_file(settings))
    return PipelinedRunner(
        settings,
        FetchStage(settings, seen),
        max_in_flight=f.max_in_flight,
        commit_size=f.concurrency,
        commit_interval_s=f.commit_interval_s,
        instance=instance,
    )


def _embed(settings: ConsumerSettings, instance: str | None) -> Runner:
    from consumers.embed.stage import EmbedStage
    from streams.runner import TransactionalRunner

    e = settings.embed
    return TransactionalRunner(
        settings,
        EmbedStage(settings),
        batch_size=e.frames_per_batch,
        batch_deadline_s=e.batch_deadline_s,
        instance=instance,
    )


def _sink_runner(settings: ConsumerSettings, sink: StoreSink, instance: str | None) -> Runner:
    from streams.sink_runner import StoreSinkRunner

    s = settings.sink
    return StoreSinkRunner(
        settings, sink, batch_size=s.batch_size, batch_deadline_s=s.batch_deadline_s, instance=instance
    )


def _sink_qdrant(settings: ConsumerSettings, instance: str | None) -> Runner:
    from consumers.sink_qdrant.sink import QdrantSink

    return _sink_runner(settings, QdrantSink(settings), instance)


def _sink_postgres(settings: ConsumerSettings, instance: str | None) -> Runner:
    from consumers.sink_postgres.sink import PostgresSink

    return _sink_runner(settings, PostgresSink(settings), instance)


def _sink_encrypted(settings: ConsumerSettings, instance: str | None) -> Runner:
    from consumers.sink_encrypted.sink import EncryptedSink

    return _sink_runner(settings, EncryptedSink(settings), instance)


FETCH = StageSpec("fetch", "requests", "pipelined", "media requests -> frames: download, guard, decode", _fetch)
EMBED = StageSpec("embed", "frames", "transactional", "frames -> fp16 vectors of every configured space", _embed)
SINK_QDRANT = StageSpec("sink-qdrant", "vectors", "sink", "vectors -> Qdrant (embedded or server)", _sink_qdrant)
SINK_POSTGRES = StageSpec(
    "sink-postgres", "vectors", "sink", "vectors -> frame and object metadata in PostgreSQL", _sink_postgres
)
SINK_ENCRYPTED = StageSpec(
    "sink-encrypted", "vectors", "sink", "vectors -> the encrypted index (cyborgdb-core)", _sink_encrypted
)

# The pipeline, in the order a request walks it (and ``mediavec status`` lists it).
STAGES: tuple[StageSpec, ...] = (FETCH, EMBED, SINK_QDRANT, SINK_POSTGRES, SINK_ENCRYPTED)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage(name: str) -> StageSpec:
    """The stage called ``name``; a ValueError naming the choices when there is none."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}")


def sink_names() -> tuple[str, ...]:
    """The stages that write a store (they all read the vectors topic)."""
    return tuple(s.name for s in STAGES if s.kind == "sink")


def describe_stages() -> str:
    """One line per stage, name and job: the epilog of ``mediavec run --help``."""
    width = max(len(n) for n in STAGE_NAMES)
    return "\n".join(f"  {s.name:<{width}}  {s.description}" for s in STAGES)
