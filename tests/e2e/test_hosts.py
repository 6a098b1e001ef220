"""Workers on several hosts, one host lost: three network namespaces each run a fetch and an embed
worker (``mediavec run`` through ``ip netns exec``), against a broker and a media server that
listen only on the hub address of a bridge the test made. Mid-run one whole host is SIGKILLed.

The broker must see the groups spread over the three hosts' addresses before the kill, and each
group must settle on the two survivors, every partition assigned, after it; then the run ends
exactly as if nothing happened: every good photo stored once in Qdrant with the model's own
vector, and the DLQ holding exactly the planted bad inputs. How long the groups took to settle
is logged, never asserted (``loadtest/hosts_failover.py`` measures it).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumers.embed.settings import EmbedSettings
from consumers.registry import EMBED, FETCH, SINK_QDRANT
from devstack.hosts import Host, HostNet, group_spread, hub_broker
from devstack.mediaserver import Canary, MediaServer
from devstack.samples import sample_images
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from models.settings import ModelSettings
from streams.admin import ensure_topics
from streams.kafka import group_id
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import topics
from tests.e2e.corpus import build_corpus, loopback_fetch_settings
from tests.e2e.test_image_pipeline import _assert_dlq, _assert_store, _publish_invalid, _requests
from tests.kafkautil import wait_for, wait_sinks_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
logger = logging.getLogger(__name__)

HOSTS = 3
ON_HOSTS = (FETCH.name, EMBED.name)
KILL_AT = 0.3  # of the run done


@pytest.fixture
def host_net() -> Iterator[HostNet]:
    with HostNet(HOSTS) as net:
        yield net


@pytest.fixture
def hub_settings(host_net: HostNet, tmp_path: Path) -> Iterator[Settings]:
    """Pipeline settings against a broker of the test's own on the hub; Qdrant embedded, in the root namespace."""
    with hub_broker(host_net, tmp_path / "broker") as broker:
        yield Settings(
            data_dir=tmp_path / "root",
            # A lost static member's partitions move after the session timeout; a lost producer's open
            # transaction holds read_committed readers until the transaction timeout.
            kafka=KafkaSettings(
                bootstrap_servers=broker.kafka.bootstrap_servers,
                session_timeout_ms=6_000,
                transaction_timeout_ms=20_000,
            ),
            topics=TopicSettings(prefix=f"hosts.{uuid.uuid4().hex[:8]}."),
            fetch=loopback_fetch_settings().model_copy(update={"allow_cidrs": (f"{host_net.hub}/32",)}),
            model=ModelSettings(allow_random_weights=True),
            embed=EmbedSettings(spaces=("scene",)),
        )


def _start_host(host: Host, settings: Settings, logs: Path) -> None:
    """A fetch and an embed worker on ``host``, with a data directory of the host's own."""
    env = {**os.environ, **settings.to_env(), "MEDIAVEC_DATA_DIR": str(logs.parent / host.name)}
    host.start_workers(ON_HOSTS, env, logs)


def _inputs(settings: Settings) -> dict[str, tuple[str, str]]:
    """Each stage run on the hosts: (its consumer group, its input topic)."""
    declared = topics(settings)
    return {s.name: (group_id(settings, s.name), declared.by_name(s.input).name) for s in (FETCH, EMBED)}


def _settled_on(settings: Settings, addresses: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            spreads = [group_spread(settings.kafka.bootstrap_servers, g, t) for g, t in _inputs(settings).values()]
        except Exception as exc:  # KafkaException while a group is created or its coordinator moves
            logger.debug("group not described yet: %s", exc)
            return False
        return all(spread.settled_on(addresses) for spread in spreads)

    return check


def _until_done(tracker: RunTracker, live: list[Host], logs: Path, fraction: float, timeout_s: float) -> None:
    """Follow the run until ``fraction`` of it is done; fail if a worker of a live host exits."""
    deadline = time.monotonic() + timeout_s
    while tracker.poll(0.5).done < fraction * tracker.progress.total:
        exited = [p.args[-3:] for h in live for p in h.procs if p.poll() is not None]
        assert not exited, f"workers exited on a live host: {exited}; see {logs}"
        assert time.monotonic() < deadline, f"run stuck at {tracker.progress}; see {logs}"


def test_a_whole_host_killed_mid_run_loses_and_repeats_nothing(
    host_net: HostNet, hub_settings: Settings, tmp_path: Path
) -> None:
    settings, logs = hub_settings, tmp_path / "logs"
    media = tmp_path / "media"
    with MediaServer(media, host=host_net.hub) as server, Canary() as canary:
        corpus = build_corpus(media, sample_images(tmp_path / "samples"), server, canary, n_good=90, n_flaky=6)
        total = len(corpus.good) + len(corpus.bad) + len(corpus.invalid_json)
        ensure_topics(settings)
        sink = LocalWorkers(settings, logs, "root").start([SINK_QDRANT.name])
        run_id = new_run_id()
        tracker = RunTracker(settings, run_id, total)
        try:
            for host in host_net.hosts:
                _start_host(host, settings, logs)
            everyone = [h.address for h in host_net.hosts]
            wait_for(_settled_on(settings, everyone), 150, f"fetch and embed members on each of {everyone}")
            publish(settings, _requests(corpus, run_id), show_progress=False)
            _publish_invalid(settings, corpus, run_id)
            _until_done(tracker, host_net.hosts, logs, KILL_AT, 120)

            lost, live = host_net.hosts[0], host_net.hosts[1:]
            survivors = [h.address for h in live]
            killed_at = time.monotonic()
            assert lost.kill(), "the lost host ran nothing"
            wait_for(_settled_on(settings, survivors), 90, f"fetch and embed to settle on {survivors}")
            settled_s = time.monotonic() - killed_at
            logger.warning("host %s lost: the groups settled on %s after %.1f s", lost.address, survivors, settled_s)

            _until_done(tracker, live, logs, 1.0, 180)
            wait_sinks_caught_up(settings, [SINK_QDRANT.name], 120)
            assert not sink.dead(), f"the sink exited; see {logs}"
        finally:
            tracker.close()
            sink.stop()
        _assert_dlq(settings, corpus)
        _assert_store(settings, corpus)
        assert canary.hits == 0
