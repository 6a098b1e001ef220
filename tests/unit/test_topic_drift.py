"""What ``mediavec topics --check`` calls drift, from a declaration and the broker's view as plain values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.settings import StreamSettings, TopicSettings
from streams.topiccheck import Declared, Drift, TopicState, declared, drift, topic_config
from streams.topics import topics

WANT = Declared("vectors", 16, 3, {"cleanup.policy": "delete", "retention.ms": "604800000", "min.insync.replicas": "2"})
AS_DECLARED = TopicState(replicas=(3,) * 16, config={**WANT.config, "segment.ms": "604800000"})


def _cluster_settings(**topic_fields: object) -> StreamSettings:
    return StreamSettings(topics=TopicSettings.model_validate({"replication_factor": 3, **topic_fields}))


def test_a_topic_as_declared_has_no_drift_and_more_partitions_are_not_drift() -> None:
    assert drift(WANT, AS_DECLARED) == []
    assert drift(WANT, TopicState(replicas=(3,) * 32, config=AS_DECLARED.config)) == []


def test_a_missing_topic_is_one_drift() -> None:
    assert [d.line() for d in drift(WANT, None)] == ["vectors: missing"]


def test_each_difference_is_one_line() -> None:
    config = {**AS_DECLARED.config, "min.insync.replicas": "1", "cleanup.policy": "compact"}
    del config["retention.ms"]
    have = TopicState(replicas=(3, 1, 3, 3), config=config)
    assert [d.line() for d in drift(WANT, have)] == [
        "vectors: partitions is 4, declared 16",
        "vectors: replication factor is 1, 3, declared 3",
        "vectors: cleanup.policy is compact, declared delete",
        "vectors: retention.ms is unset, declared 604800000",
        "vectors: min.insync.replicas is 1, declared 2",
    ]


def test_a_single_replica_topic_drifts_from_a_cluster_declaration() -> None:
    assert drift(WANT, TopicState(replicas=(1,) * 16, config=WANT.config)) == [
        Drift("vectors", "replication factor", "3", "1")
    ]


def test_min_insync_replicas_is_declared_only_when_set() -> None:
    spec = topics(StreamSettings()).vectors
    assert "min.insync.replicas" not in topic_config(StreamSettings(), spec)
    settings = _cluster_settings(min_insync_replicas=2)
    assert topic_config(settings, spec)["min.insync.replicas"] == "2"
    want = declared(settings, spec)
    assert (want.replication_factor, want.config["cleanup.policy"]) == (3, "delete")


def test_a_compacted_topic_declares_compaction() -> None:
    settings = StreamSettings()
    assert declared(settings, topics(settings).seen).config["cleanup.policy"] == "compact"


def test_more_in_sync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(ValidationError, match="exceeds replication_factor"):
        TopicSettings(replication_factor=1, min_insync_replicas=2)
