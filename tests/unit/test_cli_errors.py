"""The CLI's failure lines without a process: which secrets are masked, how settings errors read.

The same paths run end to end, through the installed entry point, in
tests/integration/test_cli_errors.py; these pin the parts whose inputs a test there cannot vary
cheaply (every DSN form, a hypothetical future message that quotes a secret).
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from mediavec.cli_errors import CliError, explain, mask, secret_values, settings_error
from mediavec.settings import Settings
from stores.settings import PostgresSettings, QdrantSettings
from streams.settings import KafkaSettings


@pytest.mark.parametrize(
    ("dsn", "password"),
    [
        ("host=db port=5432 user=u password=pw-plain dbname=x", "pw-plain"),
        ("host=db password = 'pw quoted\\'s' dbname=x", "pw quoted's"),
        ("postgresql://u:pw-in-url@db:5432/x?sslmode=verify-full", "pw-in-url"),
        ("postgresql://u@db/x?password=pw-in-query", "pw-in-query"),
    ],
)
def test_a_dsn_password_is_masked_wherever_a_message_quotes_it(dsn: str, password: str) -> None:
    settings = Settings(postgres=PostgresSettings(dsn=SecretStr(dsn)))
    message = f'connection failed: bad value "{password}" near {dsn[:12]}'
    masked = mask(message, secret_values(settings))
    assert password not in masked and "***" in masked


def test_secrets_of_every_group_are_masked_and_a_url_stays_readable() -> None:
    settings = Settings(
        kafka=KafkaSettings(sasl_password=SecretStr("sasl-pw-1"), oauthbearer_client_secret=SecretStr("oidc-s-2")),
        qdrant=QdrantSettings(url="https://reader:url-pw-3@qdrant.example:6333", api_key=SecretStr("api-key-4")),
    )
    secrets = secret_values(settings)
    line = "sasl-pw-1 oidc-s-2 api-key-4 https://reader:url-pw-3@qdrant.example:6333"
    assert mask(line, secrets) == "*** *** *** https://reader:***@qdrant.example:6333"


def test_a_settings_error_names_the_variable_and_never_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(kafka={"security_protocol": "secret-looking-value"}, fetch={"allow_cidrs": 7})
    text = settings_error(caught.value)
    assert text.startswith("MEDIAVEC_KAFKA__SECURITY_PROTOCOL (kafka.security_protocol): Input should be")
    assert "; MEDIAVEC_FETCH__ALLOW_CIDRS (fetch.allow_cidrs): " in text
    assert "secret-looking-value" not in text


def test_an_unknown_error_is_no_expected_failure_and_a_cli_error_is_its_own_line() -> None:
    assert explain(KeyError("x"), None) is None  # a bug: the internal-error line, status 70
    failure = explain(CliError("alias set", "needs --to", status=2), None)
    assert failure is not None and failure.line() == "mediavec: alias set: needs --to" and failure.status == 2
