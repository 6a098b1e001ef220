"""Every secret field of Settings is masked wherever settings get printed or serialised.

The secret fields are found by walking the model (any field typed ``SecretStr``), so a secret
added later is covered too; the walk must find at least the ones known today.
"""

from __future__ import annotations

import json
import logging
import secrets
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from devstack.credentials import DevCredentials
from mediavec.settings import Settings

KNOWN_SECRETS = {
    "kafka.sasl_password",
    "kafka.ssl_key_password",
    "kafka.oauthbearer_config",
    "kafka.oauthbearer_client_secret",
    "qdrant.api_key",
    "postgres.dsn",
}


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_secret(arg) for arg in typing.get_args(annotation))
    return False


def _secret_fields() -> list[tuple[str, str]]:
    """(group, field) of every SecretStr field in a settings group."""
    found = []
    for group, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            found += [(group, name) for name, f in model.model_fields.items() if _is_secret(f.annotation)]
    return found


def _values() -> dict[tuple[str, str], str]:
    return {field: f"secret-{secrets.token_hex(12)}" for field in _secret_fields()}


def _with_secrets(values: dict[tuple[str, str], str]) -> Settings:
    base = Settings(data_dir=Path("/nonexistent"))
    update: dict[str, Any] = {}
    for (group, name), value in values.items():
        current = update.get(group, getattr(base, group))
        update[group] = current.model_copy(update={name: SecretStr(value)})
    return base.model_copy(update=update)


def _printed(settings: Settings) -> dict[str, str]:
    """Every way settings commonly reach a log line, an error message or a file."""
    return {
        "repr": repr(settings),
        "str": str(settings),
        "format": f"{settings} {settings!r}",
        "model_dump_json": settings.model_dump_json(),
        "model_dump(json)": json.dumps(settings.model_dump(mode="json")),
        "model_dump": repr(settings.model_dump()),
        "groups": " ".join(repr(getattr(settings, group)) for group in Settings.model_fields),
        "group dumps": " ".join(
            getattr(settings, g).model_dump_json() for g, f in Settings.model_fields.items() if _is_model(f.annotation)
        ),
    }


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def test_the_walk_finds_every_known_secret_field() -> None:
    found = {f"{g}.{n}" for g, n in _secret_fields()}
    assert not KNOWN_SECRETS - found


def test_no_secret_appears_when_settings_are_printed_or_serialised() -> None:
    values = _values()
    settings = _with_secrets(values)
    for (group, name), value in values.items():  # they are set, and reachable where meant to be
        assert getattr(getattr(settings, group), name).get_secret_value() == value
    for how, text in _printed(settings).items():
        assert not [f for f, v in values.items() if v in text], how
        assert "**********" in text, how


def test_secrets_read_from_the_environment_are_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _values()
    for (group, name), value in values.items():
        monkeypatch.setenv(f"MEDIAVEC_{group.upper()}__{name.upper()}", value)
    settings = Settings()
    for how, text in _printed(settings).items():
        assert not [f for f, v in values.items() if v in text], how


def test_a_logged_settings_object_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    values = _values()
    settings = _with_secrets(values)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test.settings").info("settings: %s / %r / %s", settings, settings, settings.kafka)
    assert caplog.text and not [v for v in values.values() if v in caplog.text]


def test_a_validation_error_does_not_echo_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _values()
    for (group, name), value in values.items():
        monkeypatch.setenv(f"MEDIAVEC_{group.upper()}__{name.upper()}", value)
    monkeypatch.setenv("MEDIAVEC_KAFKA__SECURITY_PROTOCOL", "BOGUS")
    with pytest.raises(ValueError) as invalid:
        Settings()
    assert "security_protocol" in str(invalid.value)
    assert not [v for v in values.values() if v in str(invalid.value) or v in repr(invalid.value)]


def test_an_incomplete_oidc_login_names_what_is_missing_and_echoes_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _values()
    for (group, name), value in values.items():
        monkeypatch.setenv(f"MEDIAVEC_{group.upper()}__{name.upper()}", value)
    monkeypatch.setenv("MEDIAVEC_KAFKA__SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("MEDIAVEC_KAFKA__OAUTHBEARER_METHOD", "oidc")
    monkeypatch.setenv("MEDIAVEC_KAFKA__OAUTHBEARER_CLIENT_ID", "mediavec-fetch")
    with pytest.raises(ValueError) as invalid:
        Settings()
    assert "MEDIAVEC_KAFKA__OAUTHBEARER_TOKEN_ENDPOINT_URL" in str(invalid.value)
    assert "CLIENT_SECRET" not in str(invalid.value), "the secret is set; only the URL is missing"
    assert not [v for v in values.values() if v in str(invalid.value) or v in repr(invalid.value)]
    monkeypatch.setenv("MEDIAVEC_KAFKA__OAUTHBEARER_TOKEN_ENDPOINT_URL", "https://127.0.0.1:1/token")
    conf = Settings().kafka.client_config()
    assert conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.client.secret"] == values[("kafka", "oauthbearer_client_secret")]


def test_workers_receive_the_secrets_through_their_environment_only() -> None:
    """``to_env`` must reveal them (a worker process needs them); that is its one job."""
    values = _values()
    env = _with_secrets(values).to_env()
    for (group, name), value in values.items():
        assert env[f"MEDIAVEC_{group.upper()}__{name.upper()}"] == value


def test_kafka_client_config_reveals_the_password_for_librdkafka_only() -> None:
    values = _values()
    settings = _with_secrets(values)
    conf = settings.kafka.client_config()
    assert conf["sasl.password"] == values[("kafka", "sasl_password")]
    assert values[("kafka", "sasl_password")] not in repr(settings.kafka)


def test_dev_stack_credentials_do_not_print_their_passwords() -> None:
    kafka_pw, pg_pw = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    creds = DevCredentials("mediavec", SecretStr(kafka_pw), "mediavec_app", SecretStr(pg_pw))
    shown = f"{creds} {creds!r}"
    assert "mediavec_app" in shown and kafka_pw not in shown and pg_pw not in shown
