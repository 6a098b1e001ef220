"""Error classification and settings, without a broker."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException
from pydantic import SecretStr

from mediavec.settings import Settings
from streams.errors import Action, ClientHung, backoff_s, bounded, classify
from streams.settings import KafkaSettings
from streams.topics import topics


def _exc(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "x", **flags))


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (_exc(KafkaError._TIMED_OUT, retriable=True), Action.RETRY),
        (_exc(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True), Action.RETRY),
        (_exc(KafkaError._STATE, txn_requires_abort=True), Action.ABORT),
        (_exc(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True), Action.ABORT),
        (_exc(KafkaError._FENCED, fatal=True), Action.FATAL),
        (_exc(KafkaError.PRODUCER_FENCED), Action.FATAL),
        (_exc(KafkaError.INVALID_PRODUCER_EPOCH), Action.FATAL),
        (_exc(KafkaError.UNKNOWN_TOPIC_OR_PART), Action.ABORT),
        (RuntimeError("not kafka"), Action.FATAL),
    ],
)
def test_classify(exc: BaseException, action: Action) -> None:
    assert classify(exc) is action


def test_backoff_is_bounded_jittered_and_grows() -> None:
    assert all(
        0 <= backoff_s(a, base=0.1, cap=2.0) <= min(2.0, 0.1 * 2 ** (a - 1)) for a in range(1, 12) for _ in range(50)
    )
    assert max(backoff_s(8, base=0.1, cap=100) for _ in range(200)) > 0.1 * 2  # later attempts wait longer


def test_secrets_are_masked_but_reach_the_client_config() -> None:
    k = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password=SecretStr("hunter2-secret"),
    )
    assert "hunter2-secret" not in repr(k) and "hunter2-secret" not in str(Settings(kafka=k))
    assert k.client_config()["sasl.password"] == "hunter2-secret"


def test_every_setting_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("MEDIAVEC_FETCH__MAX_BYTES", "1234")
    monkeypatch.setenv("MEDIAVEC_TOPICS__PREFIX", "t1.")
    monkeypatch.setenv("MEDIAVEC_QDRANT__API_KEY", "k-secret")
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:1" and s.fetch.max_bytes == 1234
    assert topics(s).requests.name == "t1.media.requests" and topics(s).dlq.name == "t1.media.dlq"
    assert s.qdrant.api_key is not None and s.qdrant.api_key.get_secret_value() == "k-secret"
    assert "k-secret" not in repr(s)


def test_topic_names_are_declared_once() -> None:
    t = topics(Settings())
    names = ["media.requests", "media.frames", "vectors", "media.dlq", "media.seen", "media.skipped"]
    assert [s.name for s in t.all()] == names
    assert t.seen.config()["cleanup.policy"] == "compact"
    assert all(s.dlq == "media.dlq" for s in (t.requests, t.frames, t.vectors))
    assert t.by_name("frames") is t.frames and t.by_name("media.frames") is t.frames


def test_settings_survive_the_trip_through_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from media.settings import FetchSettings
    from models.settings import ModelSettings
    from streams.settings import TopicSettings

    s = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:5", sasl_password=SecretStr("pw")),
        topics=TopicSettings(prefix="x."),
        fetch=FetchSettings(allow_cidrs=("127.0.0.1/32",), max_bytes=99),
        model=ModelSettings(allow_random_weights=True),
    )
    for k, v in s.to_env().items():
        monkeypatch.setenv(k, v)
    assert Settings() == s


def test_a_fenced_static_member_is_fatal_for_the_consumer() -> None:
    from streams.errors import is_fatal

    assert is_fatal(KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer"))
    assert is_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID, "x"))
    assert is_fatal(KafkaError(KafkaError.UNKNOWN, "x", fatal=True))
    assert not is_fatal(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))


def test_bounded_returns_the_calls_value_and_raises_its_error() -> None:
    assert bounded(lambda: 42, 5, "answer") == 42
    with pytest.raises(KafkaException):
        bounded(_raise_fenced, 5, "fenced")


def _raise_fenced() -> None:
    raise KafkaException(KafkaError(KafkaError._FENCED))


def test_a_call_that_never_returns_is_a_hung_client_and_holds_nothing() -> None:
    release = threading.Event()
    with pytest.raises(ClientHung, match="send_offsets_to_transaction did not return within 0 s"):
        bounded(release.wait, 0.2, "send_offsets_to_transaction")
    stuck = [t for t in threading.enumerate() if t.name == "bounded send_offsets_to_transaction"]
    assert stuck and all(t.daemon for t in stuck), "a hung call must not hold the interpreter's exit"
    assert classify(ClientHung("x")) is Action.FATAL
    release.set()
