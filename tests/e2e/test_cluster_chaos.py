"""Exactly-once on a three-broker cluster while its brokers crash: the active controller, the
leader of a worker's transaction coordinator partition, then another broker, each SIGKILLed
during ingest and restarted.

The cluster is the test's own (``mediavec dev up --brokers 3`` on free ports, topics replicated
3 times with 2 in sync); the pipeline runs as ``mediavec run`` processes (fetch, embed with
random weights and the scene space only, sink-qdrant, sink-postgres on the cluster's own
PostgreSQL), restarted whenever one exits while a broker is away, as a supervisor would
(:mod:`tests.e2e.cluster_chaos`); one whose Kafka client hangs on a coordinator that went away
(librdkafka #5456, #5511: about one run in five here) exits after 90 s and is restarted too.
Afterwards Qdrant and PostgreSQL hold exactly the good media (ids, vectors equal to the model's
own output), the frames and vectors topics hold each of them exactly once (committed reads: a
transaction doubled or half-kept would show there, where the stores' upserts would hide it), and
the DLQ holds exactly the planted bad inputs, once each.
``loadtest/chaos_cluster.py`` runs the same with more media and more kills.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.settings import DevSettings
from tests import cluster
from tests.e2e.cluster_chaos import ROLES, run_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture
def chaos_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSettings]:
    with cluster.running_cluster(tmp_path_factory.mktemp("chaos-cluster")) as settings:
        yield settings


def test_brokers_killed_by_role_during_ingest_change_nothing(chaos_cluster: DevSettings, tmp_path: Path) -> None:
    run = run_pipeline(chaos_cluster, tmp_path, n_good=48)
    kills = run.report.broker_kills
    assert [k.role for k in kills] == list(ROLES)
    assert kills[2].broker != kills[1].broker  # "another": not the one killed just before
    assert all(k.done < k.published for k in kills), f"a broker was killed with nothing in flight: {kills}"
