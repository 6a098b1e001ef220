"""Shared fixtures: one real Kafka + PostgreSQL stack per test session, isolated settings per test.

- ``stack`` (session): starts the dev stack once, on ports of its own (29192/29193/25532) and in a
  data directory of its own (``<repo>/.mediavec/test-stack``, or ``$MEDIAVEC_TEST_STACK_DIR``), so
  a running demo stack is left alone. It fails, never skips, when the stack cannot start. It is
  stopped at the end of the session unless ``MEDIAVEC_TEST_KEEP_STACK=1`` (faster reruns).
- ``stack_settings`` (session): the settings the stack runs under. Pass these, not ``settings``,
  to ``devstack.stack`` functions such as ``restart_kafka``: they name its data directory.
- ``settings`` (function): settings pointing at the stack with a unique topic prefix, a fresh
  PostgreSQL database, and ``tmp_path`` as the data directory for embedded stores.

Fixtures are lazy: a test that requests neither ``stack`` nor ``settings`` starts nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumers.embed.settings import EmbedSettings
from devstack import postgres
from devstack.settings import DevSettings, DevStackSettings
from devstack.stack import StackInfo, purge, up
from media.settings import FetchSettings
from mediavec.settings import Settings
from models.settings import ModelSettings
from stores.settings import PostgresSettings
from streams.settings import KafkaSettings, TopicSettings

REPO = Path(__file__).resolve().parents[1]
TEST_DEVSTACK = DevStackSettings(kafka_port=29192, controller_port=29193, postgres_port=25532)


def _stack_dir() -> Path:
    """The test stack's data directory, somewhere the ``postgres`` user can reach when we are root."""
    override = os.environ.get("MEDIAVEC_TEST_STACK_DIR")
    if override:
        return Path(override).resolve()
    in_repo = REPO / ".mediavec" / "test-stack"
    if postgres.owner_can_reach(in_repo):
        return in_repo
    digest = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"mediavec-test-stack-{digest}"


@pytest.fixture(scope="session")
def stack_settings() -> DevSettings:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{TEST_DEVSTACK.kafka_port}")
    return DevSettings(data_dir=_stack_dir(), devstack=TEST_DEVSTACK, kafka=kafka)


@pytest.fixture(scope="session")
def stack(stack_settings: DevSettings) -> Iterator[StackInfo]:
    try:
        info = up(stack_settings)
    except Exception as exc:
        pytest.fail(f"the test stack (Kafka + PostgreSQL) did not start: {exc}", pytrace=False)
    yield info
    if os.environ.get("MEDIAVEC_TEST_KEEP_STACK") != "1":
        # A fresh stack per session: nothing of this run's topics or databases is left on disk.
        purge(stack_settings)


def _token(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:32].strip("-")
    return f"{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(
    stack: StackInfo, stack_settings: DevSettings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    token = _token(request.node.name)
    database = "t_" + token.replace("-", "_")
    postgres.ensure_database(stack_settings, database)
    dsn = f"host=127.0.0.1 port={stack_settings.devstack.postgres_port} dbname={database} user={postgres.SUPERUSER}"
    yield DevSettings(
        data_dir=tmp_path,
        # Short sessions: a killed static member's partitions move on after 10 s, not 45 s.
        kafka=stack_settings.kafka.model_copy(update={"session_timeout_ms": 10_000}),
        devstack=stack_settings.devstack,
        topics=TopicSettings(prefix=f"test.{token}."),
        fetch=FetchSettings(allow_cidrs=("127.0.0.1/32",)),
        model=ModelSettings(allow_random_weights=True),
        # The exactly-once and store tests embed scene vectors only (CPU time); every space runs
        # end to end in tests/e2e/test_footage.py.
        embed=EmbedSettings(spaces=("scene",)),
        postgres=PostgresSettings(dsn=SecretStr(dsn)),
    )
    postgres.drop_database(stack_settings, database)
