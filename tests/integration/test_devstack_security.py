"""The dev stack's authenticated doors: Kafka's SASL listeners (PLAIN, SCRAM-SHA-512; over TLS also
OAUTHBEARER with JWTs from the stack's OIDC issuer) and a PostgreSQL role whose password is
checked; their generated passwords, keys and client secret stay in 0600 files."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic
from pydantic import SecretStr

from devstack import credentials, kafka, oidc, postgres, tls
from devstack.stack import StackInfo, status
from mediavec.settings import Settings
from streams.kafka import admin, producer
from tests.kafkautil import read_topic

pytestmark = pytest.mark.integration


def _sasl(stack_settings: Settings, mechanism: credentials.SaslMechanism) -> Settings:
    return stack_settings.model_copy(update={"kafka": credentials.kafka_sasl_settings(stack_settings, mechanism)})


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_sasl_listener_logs_in_with_the_generated_password(
    stack: StackInfo, stack_settings: Settings, mechanism: credentials.SaslMechanism
) -> None:
    settings = _sasl(stack_settings, mechanism)
    topic = f"devstack-sasl.{uuid.uuid4().hex[:10]}"
    client = admin(settings)  # referenced until the future resolves
    client.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = producer(settings)
    p.produce(topic, value=mechanism.encode())
    assert p.flush(30) == 0

    assert [m.value for m in read_topic(settings, topic)] == [mechanism.encode()]
    brokers = client.list_topics(timeout=10).brokers.values()
    assert [(b.host, b.port) for b in brokers] == [("127.0.0.1", credentials.sasl_port(stack_settings))]
    assert stack.sasl_bootstrap_servers == f"127.0.0.1:{stack.kafka.port + 2}"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_sasl_listener_refuses_a_wrong_password(stack: StackInfo, stack_settings: Settings, mechanism: str) -> None:
    settings = _sasl(stack_settings, mechanism)  # type: ignore[arg-type]
    wrong = settings.kafka.model_copy(update={"sasl_password": SecretStr("not-the-password")})
    client = admin(settings.model_copy(update={"kafka": wrong}))
    with pytest.raises(KafkaException) as refused:
        client.list_topics(timeout=3)
    assert refused.value.args[0].name() == "_TRANSPORT"


def test_sasl_listener_refuses_a_client_without_sasl(stack: StackInfo, stack_settings: Settings) -> None:
    plain_client = stack_settings.kafka.model_copy(update={"bootstrap_servers": stack.sasl_bootstrap_servers})
    with pytest.raises(KafkaException):
        admin(stack_settings.model_copy(update={"kafka": plain_client})).list_topics(timeout=3)


def test_postgres_app_role_needs_its_password(stack: StackInfo, stack_settings: Settings) -> None:
    dsn = credentials.postgres_dsn(stack_settings, postgres.DATABASE).get_secret_value()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (postgres.APP_ROLE,)
    without, _ = dsn.split(" password=")
    for attempt in (f"{without} password=wrong", without):
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(attempt, connect_timeout=5)
        assert "password" in str(refused.value)
    with psycopg.connect(stack.postgres_dsn) as conn:  # the superuser is trusted, as before
        assert conn.execute("SELECT current_user").fetchone() == (postgres.SUPERUSER,)


def test_app_role_owns_a_database_made_for_it(stack: StackInfo, stack_settings: Settings) -> None:
    name = f"sec_{uuid.uuid4().hex[:10]}"
    postgres.ensure_database(stack_settings, name, owner=postgres.APP_ROLE)
    try:
        with psycopg.connect(credentials.postgres_dsn(stack_settings, name).get_secret_value()) as conn:
            conn.execute("CREATE TABLE t (x int)")  # the public schema belongs to the database owner
            conn.execute("INSERT INTO t VALUES (1)")
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        postgres.drop_database(stack_settings, name)


def test_passwords_live_in_private_files_and_are_never_described(stack: StackInfo, stack_settings: Settings) -> None:
    creds = credentials.load_or_create(stack_settings)
    passwords = [creds.kafka_password.get_secret_value(), creds.postgres_password.get_secret_value()]
    for path in (credentials.path(stack_settings), kafka.KafkaPaths.of(stack_settings).config):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    info = status(stack_settings)
    shown = info.describe() + repr(info) + repr(info.as_dict()) + repr(creds)
    assert info.credentials_file == credentials.path(stack_settings) and str(info.credentials_file) in shown
    assert info.sasl_bootstrap_servers in shown
    assert not [p for p in passwords if p in shown]
    assert kafka.config_current(stack_settings)


def test_broker_and_postgres_logs_hold_no_password(stack: StackInfo, stack_settings: Settings) -> None:
    creds = credentials.load_or_create(stack_settings)
    passwords = [creds.kafka_password.get_secret_value().encode(), creds.postgres_password.get_secret_value().encode()]
    logs = [kafka.KafkaPaths.of(stack_settings).logs, postgres.PostgresPaths.of(stack_settings).log_dir]
    files = [p for d in logs for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "server.log" for p in files)
    assert not [(p, i) for p in files for i, pw in enumerate(passwords) if pw in p.read_bytes()]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_tls_listener_verifies_the_broker_and_logs_in(
    stack: StackInfo, stack_settings: Settings, mechanism: credentials.SaslMechanism
) -> None:
    settings = stack_settings.model_copy(update={"kafka": tls.kafka_tls_settings(stack_settings, mechanism)})
    topic = f"devstack-tls.{uuid.uuid4().hex[:10]}"
    client = admin(settings)
    client.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = producer(settings)
    p.produce(topic, value=b"over TLS")
    assert p.flush(30) == 0
    assert [m.value for m in read_topic(settings, topic)] == [b"over TLS"]
    brokers = client.list_topics(timeout=10).brokers.values()
    assert [(b.host, b.port) for b in brokers] == [("127.0.0.1", tls.port(stack_settings))]
    assert stack.tls_bootstrap_servers == f"127.0.0.1:{stack.kafka.port + 3}"
    assert stack.tls_ca_file == tls.TlsFiles.of(stack_settings).ca_cert


def test_tls_listener_is_refused_by_a_client_that_trusts_another_ca(
    stack: StackInfo, stack_settings: Settings, tmp_path: Path
) -> None:
    other = tls.ensure(stack_settings.model_copy(update={"data_dir": tmp_path}))  # a CA the broker never used
    untrusting = tls.kafka_tls_settings(stack_settings, ca=other.ca_cert)
    with pytest.raises(KafkaException) as refused:
        admin(stack_settings.model_copy(update={"kafka": untrusting})).list_topics(timeout=5)
    assert refused.value.args[0].name() == "_TRANSPORT"
    no_tls = credentials.kafka_sasl_settings(stack_settings).model_copy(
        update={"bootstrap_servers": stack.tls_bootstrap_servers}
    )
    with pytest.raises(KafkaException):  # SASL without TLS on the TLS port
        admin(stack_settings.model_copy(update={"kafka": no_tls})).list_topics(timeout=3)


def test_tls_keys_are_private_files(stack: StackInfo, stack_settings: Settings) -> None:
    files = tls.TlsFiles.of(stack_settings)
    for key in (files.ca_key, files.broker_pem):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    ca = files.ca_cert.read_bytes()
    assert b"PRIVATE KEY" not in ca
    assert tls.ensure(stack_settings) == files and files.ca_cert.read_bytes() == ca, "kept while valid"


def test_oauthbearer_over_tls_logs_in_with_a_token_from_the_oidc_endpoint(
    stack: StackInfo, stack_settings: Settings
) -> None:
    with oidc.TokenEndpoint(stack_settings) as endpoint:
        settings = stack_settings.model_copy(update={"kafka": oidc.kafka_oidc_settings(stack_settings, endpoint.url)})
        assert settings.kafka.client_config()["sasl.oauthbearer.method"] == "oidc"
        topic = f"devstack-oidc.{uuid.uuid4().hex[:10]}"
        client = admin(settings)
        client.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        p = producer(settings)
        p.produce(topic, value=b"with a JWT")
        assert p.flush(30) == 0
        assert [m.value for m in read_topic(settings, topic)] == [b"with a JWT"]
        assert endpoint.issued and endpoint.refused == 0, "every client fetched its own token"
    assert "OAUTHBEARER" in stack.describe()


def test_oauthbearer_is_refused_a_wrong_secret_and_a_token_from_another_issuer(
    stack: StackInfo, stack_settings: Settings, tmp_path: Path
) -> None:
    with oidc.TokenEndpoint(stack_settings) as endpoint:
        wrong = oidc.kafka_oidc_settings(stack_settings, endpoint.url, secret=SecretStr("not-the-secret"))
        with pytest.raises(KafkaException):
            admin(stack_settings.model_copy(update={"kafka": wrong})).list_topics(timeout=5)
        assert endpoint.refused >= 1 and not endpoint.issued, "no token for a wrong secret"
    stranger = stack_settings.model_copy(update={"data_dir": tmp_path})  # its own key and client
    with oidc.TokenEndpoint(stranger) as elsewhere:
        foreign = oidc.kafka_oidc_settings(stranger, elsewhere.url).model_copy(
            update={"bootstrap_servers": stack.tls_bootstrap_servers, "ssl_ca_location": str(stack.tls_ca_file)}
        )
        with pytest.raises(KafkaException) as refused:
            admin(stack_settings.model_copy(update={"kafka": foreign})).list_topics(timeout=5)
        assert elsewhere.issued, "a well-formed token from an issuer the broker does not trust"
    assert refused.value.args[0].name() in ("_TRANSPORT", "_AUTHENTICATION"), refused.value
