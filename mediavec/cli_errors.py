"""How a command fails: one clear line on stderr and a non-zero status, never a traceback.

Expected failures (a service down or refusing us, a locked store, missing weights, a missing or
unreadable file, a bad setting) are the project's own error types and a few of its libraries';
:func:`explain` turns each into ``mediavec: <what>: <why>``, with a hint where one helps. Anything
else is a bug: one line naming it and exit status 70, its traceback only with ``-v``. Every line is
masked: no configured secret (a DSN password, an API key, an index key) is printed, whatever a
library put into its message. :func:`require_broker` makes a command that needs Kafka fail in
bounded time, naming the bootstrap servers, instead of waiting on a broker that is not there.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from mediavec.settings import Settings

logger = logging.getLogger("mediavec.cli")

EXIT_FAILED = 1
EXIT_USAGE = 2  # as argparse: bad arguments or settings
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): a bug
BROKER_CONNECT_S = 3.0  # per bootstrap address: does anything accept a connection?
BROKER_ANSWER_S = 10.0  # then: does a broker answer a metadata request?
MAX_WHY = 400
BROKER_HINT = "is it up? `mediavec dev up` starts the local one; MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS names another"
CREDENTIALS_HINT = "check the MEDIAVEC_KAFKA__SECURITY_PROTOCOL, __SASL_* and __SSL_* settings"
POSTGRES_HINT = "is it up? `mediavec dev up` starts the local one; MEDIAVEC_POSTGRES__DSN names another"
_PG_UNREACHABLE = ("Connection refused", "timeout expired", "could not translate host name", "No route to host")
_SECRET_NAME = re.compile(r"(PASSWORD|SECRET|API_KEY|DSN|OAUTHBEARER_CONFIG)$")  # variables that hold one
_DSN_PASSWORD = re.compile(r"password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))")  # libpq key=value, quoted or not
_URL_PASSWORD = re.compile(r"://[^/:@\s]*:([^@\s]+)@")


class CliError(Exception):
    """A failure a command reports as it is: ``mediavec: <what>: <why>`` (and a hint)."""

    def __init__(self, what: str, why: str, *, hint: str = "", status: int = EXIT_FAILED) -> None:
        super().__init__(f"{what}: {why}")
        self.failure = Failure(what, why, hint, status)


@dataclass(frozen=True)
class Failure:
    what: str
    why: str
    hint: str = ""
    status: int = EXIT_FAILED

    def line(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        return f"mediavec: {self.what}: {self.why}{hint}"


def report(exc: BaseException, settings: Settings | None, verbose: bool) -> int:
    """Print the one line for ``exc`` (after its traceback, with -v); return the exit status."""
    secrets = secret_values(settings)
    try:
        failure = explain(exc, settings)
    except Exception:  # explaining must never end in a traceback of its own
        logger.debug("could not explain %s", type(exc).__name__, exc_info=True)
        failure = None
    if failure is None:
        first = one_line(str(exc), 200)
        failure = Failure(
            "internal error",
            f"{type(exc).__name__}: {first}" if first else type(exc).__name__,
            "run with -v for the traceback",
            EXIT_INTERNAL,
        )
    if verbose and failure.status != EXIT_USAGE:  # a bad argument or setting: its traceback says nothing more
        print(mask("".join(traceback.format_exception(exc)).rstrip(), secrets), file=sys.stderr)
        if failure.hint.startswith("run with -v"):
            failure = replace(failure, hint="")
    print(mask(failure.line(), secrets), file=sys.stderr, flush=True)
    return failure.status


def explain(exc: BaseException, settings: Settings | None) -> Failure | None:
    """The failure ``exc`` stands for, or None when it is not an expected one (a bug)."""
    if isinstance(exc, CliError):
        return exc.failure
    table = _explainers()
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls](exc, settings)
    if type(exc).__module__.startswith("qdrant_client.http"):
        return _qdrant(exc, settings)
    return None


def one_line(text: str, limit: int = MAX_WHY) -> str:
    """A message's lines joined into one, cut to ``limit`` characters."""
    joined = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _first_line(text: str) -> tuple[str, bool]:
    """(first line, whether more lines follow) of a message whose first line stands alone."""
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(lines[0] if lines else text), len(lines) > 1


def kafka_where(settings: Settings | None) -> str:
    """``Kafka at <bootstrap servers> (<protocol>[, <mechanism>])``."""
    if settings is None:
        return "Kafka"
    kafka = settings.kafka
    how = kafka.security_protocol + (f", {kafka.sasl_mechanism}" if kafka.sasl_mechanism else "")
    return f"Kafka at {kafka.bootstrap_servers} ({how})"


# -- explainers: exception -> Failure ----------------------------------------------------------

Explainer = Callable[[Any, "Settings | None"], Failure]


def _kafka(exc: Exception, settings: Settings | None) -> Failure:
    from confluent_kafka import KafkaError

    err = exc.args[0] if exc.args else None
    why = err.str() if isinstance(err, KafkaError) else str(exc)
    return Failure(kafka_where(settings), one_line(why))


def _postgres(exc: Exception, settings: Settings | None) -> Failure:
    import psycopg

    unreachable = isinstance(exc, psycopg.OperationalError) and any(s in str(exc) for s in _PG_UNREACHABLE)
    # libpq's own hint ("Is the server running on that host...?") gives way to ours, which says how
    lines = [line for line in str(exc).splitlines() if not (unreachable and "Is the server running" in line)]
    return Failure("PostgreSQL", one_line("\n".join(lines)), POSTGRES_HINT if unreachable else "")


def _weights(exc: Exception, _settings: Settings | None) -> Failure:
    first, more = _first_line(str(exc))
    first = re.sub(r"\s*\((?:or )?see below\)", "", first)  # below is in the traceback that -v shows
    return Failure("weights", first, "run with -v for where it looked and every way to supply them" if more else "")


def _store_locked(exc: Exception, settings: Settings | None) -> Failure:
    qdrant = settings is not None and str(settings.qdrant_path) in str(exc)
    hint = (
        "stop sink-qdrant, or set MEDIAVEC_QDRANT__URL so that every process shares a Qdrant server"
        if qdrant or settings is None
        else "stop the process that holds it (sink-encrypted?)"
    )
    why = str(exc).split("; ")[0]  # the rest says what the hint says
    return Failure("vector store in use", one_line(why), hint)


def _os_error(exc: OSError, settings: Settings | None) -> Failure:
    if type(exc).__module__.startswith("PIL"):
        return Failure("image", one_line(str(exc)))
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    what = " -> ".join(names) if names else type(exc).__name__
    why = exc.strerror or one_line(str(exc)) or type(exc).__name__
    return Failure(what, why, _os_hint(exc, names, settings))


def _os_hint(exc: OSError, names: list[str], settings: Settings | None) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    data_dir = settings.data_dir.resolve() if settings is not None else None
    inside = data_dir is not None and any(_under(Path(n), data_dir) for n in names)
    if inside and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "MEDIAVEC_DATA_DIR must name a directory this user can write"
    if inside and exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "MEDIAVEC_DATA_DIR must name a directory"
    return ""


def _under(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder) or folder.is_relative_to(path.resolve())
    except OSError:
        return False


def _qdrant(exc: BaseException, settings: Settings | None) -> Failure:
    url = settings.qdrant.url if settings is not None else None
    if url:
        from stores.vectorstore.server import _safe_url

        return Failure(f"Qdrant at {_safe_url(url)}", one_line(str(exc)) or type(exc).__name__)
    return Failure("Qdrant", one_line(str(exc)) or type(exc).__name__)


def _simple(what: str, status: int = EXIT_FAILED, hint: str = "") -> Explainer:
    return lambda exc, _settings: Failure(what, one_line(str(exc)) or type(exc).__name__, hint, status)


def first_of(what: str) -> Explainer:
    """Tell an error by its message's first line (and say -v shows the rest)."""

    def explain_first(exc: Exception, _settings: Settings | None) -> Failure:
        first, more = _first_line(str(exc))
        return Failure(what, first, "run with -v for the rest" if more else "")

    return explain_first


@cache
def _explainers() -> dict[type, Explainer]:
    """Each expected error type and how to tell it; the most derived class of an error wins."""
    import psycopg
    from confluent_kafka import KafkaException
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from mediavec.aliases import VersionInUse
    from mediavec.cli_plugins import plugins
    from mediavec.publish import PublishError
    from mediavec.query_models import SearchError
    from models.remote.client import ItemRefused, ItemsRefused, ProviderUnavailable
    from models.remote.settings import ProviderSettingsError
    from models.weights import WeightsNotFound
    from schemas import SchemaError
    from stores.encindex.keys import IndexKeyError
    from stores.metadb.migrate import MigrationError
    from stores.vectorstore import StoreLockedError, UnknownCollectionError, VectorStoreError
    from streams.errors import FatalKafkaError
    from streams.registry import SchemaRegistryError

    def settings_problem(exc: Exception, _settings: Settings | None) -> Failure:
        return Failure("invalid settings", settings_error(exc), status=EXIT_USAGE)

    return {
        KafkaException: _kafka,
        FatalKafkaError: _kafka,
        psycopg.OperationalError: _postgres,
        psycopg.InterfaceError: _postgres,
        psycopg.ProgrammingError: _postgres,  # a malformed DSN, a missing table or privilege
        WeightsNotFound: _weights,
        StoreLockedError: _store_locked,
        UnknownCollectionError: _simple("unknown collection"),
        VectorStoreError: _simple("vector store"),
        SearchError: _simple("search", EXIT_USAGE),
        IndexKeyError: _simple("encrypted index key", hint="see docs/encrypted-index.md"),
        VersionInUse: _simple("refused"),
        MigrationError: _simple("metadb"),
        PublishError: _simple("publish"),
        SchemaError: _simple("invalid event"),
        SchemaRegistryError: _simple("schema registry", hint="check MEDIAVEC_SCHEMA_REGISTRY__URL"),
        ProviderUnavailable: _simple("embedding provider", hint="check MEDIAVEC_REMOTE__URL and the key"),
        ItemsRefused: _simple("embedding provider refused the input"),
        ItemRefused: _simple("embedding provider refused the input"),
        ProviderSettingsError: _simple("invalid settings", EXIT_USAGE),
        ValidationError: settings_problem,
        SettingsError: settings_problem,
        OSError: _os_error,
    } | {kind: how for plugin in plugins() for kind, how in plugin.explainers().items()}


def settings_error(exc: Exception) -> str:
    """One line for a settings error: each field as its variable, with pydantic's reason (never the value)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = []
        for err in exc.errors():
            dotted = ".".join(str(part) for part in err["loc"])
            reason = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "value_error" and len(err["loc"]) == 1:  # a section's own check, across fields
                problems.append(f"{_env_name(err['loc'])}: {reason.removeprefix('Value error, ')}")
                continue
            problems.append(f"{_env_name(err['loc'])} ({dotted}): {reason}")
        return one_line("; ".join(problems))
    field = re.search(r'field "(\w+)"', str(exc))
    name = _env_name((field.group(1),)) if field else "MEDIAVEC_*"
    return one_line(f"{name}: {exc} (lists and groups are JSON)")


def _env_name(loc: Iterable[Any]) -> str:
    """The variable of a settings field: ``("kafka", "security_protocol")`` -> MEDIAVEC_KAFKA__SECURITY_PROTOCOL."""
    from pydantic import BaseModel

    parts = [str(p) for p in loc if not isinstance(p, int)][:2]
    if not parts:
        return "MEDIAVEC_*"
    field = Settings.model_fields.get(parts[0])
    group = field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    if group and len(parts) == 1:
        return f"MEDIAVEC_{parts[0].upper()}__*"
    return "MEDIAVEC_" + "__".join(p.upper() for p in parts)


# -- secrets ------------------------------------------------------------------------------------


def secret_values(settings: Settings | None) -> list[str]:
    """Every configured secret, longest first: settings' SecretStr values (and a DSN's or URL's
    password), the encrypted index key's variable, and MEDIAVEC_* variables named like secrets."""
    from pydantic import BaseModel, SecretStr

    found: set[str] = set()
    groups = [group for _, group in settings] if settings is not None else []
    for group in groups:
        for _, value in group if isinstance(group, BaseModel) else ():
            if isinstance(value, SecretStr):
                found.add(value.get_secret_value())
    for name, value in os.environ.items():
        if name.startswith("MEDIAVEC_") and _SECRET_NAME.search(name):
            found.add(value)
    key_env = settings.encindex.key_env if settings is not None else os.environ.get("MEDIAVEC_ENCINDEX__KEY_ENV")
    if key_env and os.environ.get(key_env):
        found.add(os.environ[key_env])
    for value in [*found, (settings.qdrant.url or "") if settings is not None else ""]:
        found.update(_embedded_passwords(value))
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _embedded_passwords(value: str) -> list[str]:
    """Passwords inside a libpq DSN (``password=...``) or a URL (``scheme://user:password@host``)."""
    found = [m.group(2) or m.group(1) or "" for m in _DSN_PASSWORD.finditer(value)]
    found += [f.replace("\\'", "'").replace("\\\\", "\\") for f in found]  # a quoted value, unescaped
    found += [m.group(1) for m in _URL_PASSWORD.finditer(value)]
    return [f for f in found if f]


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# -- the broker ---------------------------------------------------------------------------------


def require_broker(settings: Settings) -> None:
    """Raise CliError unless a broker answers at the bootstrap servers: at once when nothing listens
    there or the broker refuses our credentials, after BROKER_ANSWER_S when nothing answers."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.kafka import RDKAFKA_LOGGER

    where = kafka_where(settings)
    addresses = _addresses(settings.kafka.bootstrap_servers)
    if addresses and not any(_accepts(host, port) for host, port in addresses):
        raise CliError(where, "nothing accepts connections there", hint=BROKER_HINT)
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**settings.kafka.client_config(), "logger": RDKAFKA_LOGGER, "error_cb": errors.append}
    client = AdminClient(conf)
    deadline = time.monotonic() + BROKER_ANSWER_S
    while True:
        try:
            client.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            client.poll(0)  # serve the error callbacks: they hold the reason (authentication, TLS...)
            refused = [e for e in errors if e.fatal() or e.code() in _refusal_codes()]
            if refused:
                raise CliError(where, one_line(refused[-1].str()), hint=CREDENTIALS_HINT) from None
            if time.monotonic() >= deadline:
                reasons = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
                reason = one_line(reasons[-1]) if reasons else _kafka(exc, settings).why
                why = f"no answer within {BROKER_ANSWER_S:.0f} s: {reason}"
                raise CliError(where, why, hint=BROKER_HINT) from None


def _refusal_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED})


def _addresses(servers: str) -> list[tuple[str, int]]:
    """(host, port) of each bootstrap server; empty when one cannot be read (librdkafka decides then)."""
    out = []
    for entry in servers.split(","):
        entry = entry.strip().split("://")[-1]
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            return []
        out.append((host.strip("[]"), int(port)))
    return out


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=BROKER_CONNECT_S):
            return True
    except OSError:
        return False
