"""A full run with every secret configured prints none of them, anywhere.

The run: fetch, embed and the three sinks as worker processes (logging at DEBUG), fetch logged in
with SASL/PLAIN on the broker's SASL_PLAINTEXT listener (and logging JSON lines), the encrypted
index's sink with OAUTHBEARER on the SASL_SSL listener (JWTs from the stack's OIDC token endpoint,
fetched with a client secret), the others with SCRAM-SHA-512 on that TLS listener (the broker's
certificate checked against the stack's CA); PostgreSQL through a DSN that carries the stack
role's password (pg_hba checks it: scram-sha-256); a Qdrant API key set (the store is embedded,
so the key is unused, but it is in every worker's settings and must not be printed either); the
encrypted index key in an environment variable. Real photos and a few bad inputs go through it,
so the error and DLQ paths log too. Then CLI commands that print settings, progress and errors
run with the same environment, some of them with a wrong password, a wrong client secret or a broken setting.

Afterwards every worker log, every CLI output, every file under the run's data directory
(embedded Qdrant, encrypted index, media), the DLQ and the other pipeline topics, a text dump of
the PostgreSQL tables, and the broker's and PostgreSQL's own logs are searched for each secret:
the passwords, the OIDC client secret, every access token issued and the API key as given, the
index key raw, as hex (both cases) and as base64.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from devstack import credentials, kafka, oidc, postgres, tls
from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from stores.encindex.keys import generate_key
from streams.admin import ensure_topics
from streams.topics import topics
from tests.e2e.corpus import Corpus, loopback_fetch_settings
from tests.e2e.test_image_pipeline import _assert_dlq, _assert_stores, _publish_invalid, _requests
from tests.kafkautil import read_topic, wait_sinks_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

STAGES = ("fetch", "embed", "sink-qdrant", "sink-postgres", "sink-encrypted")
KEY_ENV = "MV_TEST_INDEX_KEY"  # not MEDIAVEC_*: it is the key's own variable, named by encindex.key_env
N_GOOD = 6


@dataclass(frozen=True, repr=False)  # no repr: a failing assertion must not print them either
class Secrets:
    kafka_password: str
    postgres_password: str
    postgres_dsn: str
    qdrant_api_key: str
    index_key: bytes
    wrong_kafka_password: str  # what a misconfigured client sends is just as secret
    wrong_postgres_password: str
    tls_key_line: bytes  # the first base64 line of the broker's private key (PEM)
    oidc_client_secret: str
    wrong_oidc_secret: str

    def needles(self) -> dict[str, bytes]:
        key = self.index_key
        return {
            "Kafka SASL password": self.kafka_password.encode(),
            "PostgreSQL password": self.postgres_password.encode(),
            "PostgreSQL DSN": self.postgres_dsn.encode(),
            "Qdrant API key": self.qdrant_api_key.encode(),
            "wrong Kafka password": self.wrong_kafka_password.encode(),
            "wrong PostgreSQL password": self.wrong_postgres_password.encode(),
            "index key (raw)": key,
            "index key (hex)": key.hex().encode(),
            "index key (HEX)": key.hex().upper().encode(),
            "index key (base64)": base64.b64encode(key),
            "broker TLS private key": self.tls_key_line,
            "OIDC client secret": self.oidc_client_secret.encode(),
            "wrong OIDC client secret": self.wrong_oidc_secret.encode(),
        }


@dataclass(frozen=True)
class Secured:
    scram: Settings  # every stage but fetch, and most CLI commands
    plain: Settings  # the fetch worker and a few CLI commands
    oauth: Settings  # the encrypted index's sink and a CLI command: OAUTHBEARER with OIDC tokens
    tokens: oidc.TokenEndpoint  # what issued them (its ``issued`` are secrets too)
    secrets: Secrets
    env: dict[str, str]  # what each process gets besides its settings: the index key variable


def _over_sasl(
    settings: Settings, stack_settings: Settings, mechanism: credentials.SaslMechanism, *, over_tls: bool
) -> Settings:
    if over_tls:  # SASL_SSL: the broker's certificate verified against the stack's CA
        sasl = tls.kafka_tls_settings(stack_settings, mechanism)
    else:
        sasl = credentials.kafka_sasl_settings(stack_settings, mechanism)  # the stack's credentials file
    fields: tuple[str, ...] = (
        "bootstrap_servers",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
    )
    fields += ("ssl_ca_location",)  # None on SASL_PLAINTEXT
    kafka_settings = settings.kafka.model_copy(update={f: getattr(sasl, f) for f in fields})
    return settings.model_copy(update={"kafka": kafka_settings})


def _over_oidc(settings: Settings, stack_settings: Settings, token_url: str) -> Settings:
    login = oidc.kafka_oidc_settings(stack_settings, token_url)
    fields = [f for f in type(login).model_fields if f.startswith(("oauthbearer_", "sasl_", "ssl_"))]
    fields += ["bootstrap_servers", "security_protocol"]
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={f: getattr(login, f) for f in fields})}
    )


@pytest.fixture
def secured(settings: Settings, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Secured]:
    database = f"s_{uuid.uuid4().hex[:12]}"
    postgres.ensure_database(stack_settings, database, owner=postgres.APP_ROLE)
    dsn = credentials.postgres_dsn(stack_settings, database)
    creds = credentials.load_or_create(stack_settings)
    key = generate_key().reveal()
    monkeypatch.setenv(KEY_ENV, key.hex())  # this process reads the encrypted index too
    api_key = secrets.token_urlsafe(24)
    base = settings.model_copy(
        update={
            "log_level": "DEBUG",
            "fetch": loopback_fetch_settings(),
            "postgres": settings.postgres.model_copy(update={"dsn": dsn}),
            "qdrant": settings.qdrant.model_copy(update={"api_key": SecretStr(api_key)}),
            "encindex": settings.encindex.model_copy(update={"key_env": KEY_ENV, "key_file": None}),
        }
    )
    found = Secrets(
        kafka_password=creds.kafka_password.get_secret_value(),
        postgres_password=creds.postgres_password.get_secret_value(),
        postgres_dsn=dsn.get_secret_value(),
        qdrant_api_key=api_key,
        index_key=key,
        wrong_kafka_password=secrets.token_urlsafe(24),
        wrong_postgres_password=secrets.token_urlsafe(24),
        tls_key_line=tls.ensure(stack_settings).broker_pem.read_bytes().splitlines()[1],
        oidc_client_secret=oidc.client(stack_settings).client_secret.get_secret_value(),
        wrong_oidc_secret=secrets.token_urlsafe(24),
    )
    scram = _over_sasl(base, stack_settings, "SCRAM-SHA-512", over_tls=True)
    # The PLAIN side also logs as JSON objects, so both formatters are searched.
    plain = _over_sasl(base, stack_settings, "PLAIN", over_tls=False).model_copy(update={"log_format": "json"})
    # Every Kafka client of the run authenticates: SCRAM over TLS, PLAIN over the SASL listener.
    env = scram.to_env()
    assert env["MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS"] == tls.bootstrap_servers(stack_settings)
    assert env["MEDIAVEC_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["MEDIAVEC_KAFKA__SSL_CA_LOCATION"] == str(tls.TlsFiles.of(stack_settings).ca_cert)
    env = plain.to_env()
    assert env["MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS"] == credentials.sasl_bootstrap_servers(stack_settings)
    assert env["MEDIAVEC_KAFKA__SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    with oidc.TokenEndpoint(stack_settings) as endpoint:
        oauth = _over_oidc(base, stack_settings, endpoint.url)
        env = oauth.to_env()
        assert env["MEDIAVEC_KAFKA__SASL_MECHANISM"] == "OAUTHBEARER"
        assert env["MEDIAVEC_KAFKA__OAUTHBEARER_METHOD"] == "oidc"
        assert env["MEDIAVEC_KAFKA__OAUTHBEARER_CLIENT_SECRET"] == found.oidc_client_secret
        yield Secured(scram, plain, oauth, endpoint, found, env={KEY_ENV: key.hex()})
    postgres.drop_database(stack_settings, database)


def _small_corpus(root: Path, samples: list[Path], server: MediaServer) -> Corpus:
    """A few real photos, and bad inputs that fail in fetch for different reasons."""
    corpus = Corpus()
    for i, photo in enumerate(samples[:N_GOOD]):
        name = f"photo{i}{photo.suffix}"
        shutil.copyfile(photo, root / name)
        corpus.files[f"good-{i}"] = root / name
        corpus.good[f"good-{i}"] = server.url(name)
    jpeg = next(p for p in samples if p.suffix == ".jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    corpus.bad = {
        "bad-truncated": (server.url("truncated.jpg"), "truncated_image"),
        "bad-404": (server.url("/status/404/missing.jpg"), "http_404"),
        "bad-html": (server.url("/html/page.jpg"), "not_an_image"),
        "bad-empty": (server.url("/empty/e.jpg"), "empty_body"),
        "bad-scheme": ("ftp://127.0.0.1/a.jpg", "bad_scheme"),
    }
    corpus.invalid_json["bad-invalid"] = (
        b'{"schema_version":1,"media_id":"bad-invalid","kind":"image","url":"http://127.0.0.1/x",'
        b'"run_id":"RUN","colour":"red"}'
    )
    return corpus


def _run_pipeline(sec: Secured, corpus: Corpus, log_dir: Path) -> str:
    """Publish the corpus and wait until every input is stored or dead-lettered; returns the run id."""
    total = len(corpus.good) + len(corpus.bad) + len(corpus.invalid_json)
    ensure_topics(sec.scram)
    run_id = new_run_id()
    tracker = RunTracker(sec.scram, run_id, total)
    fetch = LocalWorkers(sec.plain, log_dir, "secrets", extra_env=sec.env).start(STAGES[:1])
    rest = LocalWorkers(sec.scram, log_dir, "secrets", extra_env=sec.env).start(STAGES[1:4])
    oauth = LocalWorkers(sec.oauth, log_dir, "secrets", extra_env=sec.env).start(STAGES[4:])
    try:
        publish(sec.scram, _requests(corpus, run_id), show_progress=False)
        _publish_invalid(sec.plain, corpus, run_id)
        deadline = time.monotonic() + 300
        while tracker.poll(1.0).done < total:
            dead = fetch.dead() + rest.dead() + oauth.dead()
            assert not dead, f"workers exited: {dead}; see {log_dir}"
            assert time.monotonic() < deadline, f"stuck at {tracker.progress}"
        assert tracker.progress.stored == len(corpus.good)
        wait_sinks_caught_up(sec.scram, list(STAGES[2:]))
    finally:
        tracker.close()
        fetch.stop()
        rest.stop()
        oauth.stop()
    return run_id


@dataclass(frozen=True)
class CliRun:
    args: tuple[str, ...]
    returncode: int
    output: bytes


def _cli(settings: Settings, extra_env: dict[str, str], out_dir: Path, *args: str) -> CliRun:
    """Run ``mediavec ARGS`` in a fresh process; its stdout and stderr are kept in ``out_dir`` too."""
    env = {**os.environ, **settings.to_env(), **extra_env}
    done = subprocess.run(
        [sys.executable, "-m", "mediavec.cli", *args], env=env, capture_output=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    (out_dir / f"cli-{len(list(out_dir.iterdir())):02d}.out").write_bytes(output)
    return CliRun(args, done.returncode, output)


def _run_cli_commands(sec: Secured, run_id: str, out_dir: Path, n_letters: int) -> list[CliRun]:
    """Commands that print settings-driven state and errors; each one's outcome is checked."""
    out_dir.mkdir()
    scram, plain, env = sec.scram, sec.plain, sec.env
    runs = [
        _cli(scram, env, out_dir, "-v", "status"),
        _cli(plain, env, out_dir, "status", "--run", run_id),
        _cli(scram, env, out_dir, "dlq", "list"),
        _cli(plain, env, out_dir, "-v", "dlq", "list", "--stage", "fetch"),
        _cli(scram, env, out_dir, "-v", "search", "--text", "a photo", "--collection", "e2e", "--store", "all"),
        _cli(scram, env, out_dir, "search", "--text", "a photo", "--collection", "no-such-collection"),
        _cli(scram, env, out_dir, "-v", "metadb", "migrate"),
        _cli(sec.oauth, env, out_dir, "-v", "status"),
    ]
    ok = {r.args: r for r in runs}
    assert all(r.returncode == 0 for r in runs[:5] + runs[6:]), [(r.args, r.output[-2000:]) for r in runs]
    assert b"sink-postgres" in ok[("-v", "status")].output
    assert f"stored {N_GOOD} of".encode() in ok[("status", "--run", run_id)].output
    assert f"{n_letters} entries".encode() in ok[("dlq", "list")].output
    assert b"http_404" in ok[("-v", "dlq", "list", "--stage", "fetch")].output
    assert b"good-" in runs[4].output, runs[4].output[-2000:]
    assert runs[5].returncode == 2 and b"no-such-collection" in runs[5].output
    assert b"schema is up to date" in runs[6].output
    assert b"sink-encrypted" in runs[7].output, runs[7].output[-2000:]
    return runs + _failing_cli_commands(sec, out_dir)


def _with(settings: Settings, **groups: dict[str, object]) -> Settings:
    """``settings`` with some fields of some groups replaced (``kafka={"sasl_password": ...}``)."""
    update = {name: getattr(settings, name).model_copy(update=fields) for name, fields in groups.items()}
    return settings.model_copy(update=update)


def _failing_cli_commands(sec: Secured, out_dir: Path) -> list[CliRun]:
    """Errors print too: a settings validation error, refused logins, a missing database."""
    bad_setting = {**sec.env, "MEDIAVEC_KAFKA__SECURITY_PROTOCOL": "BOGUS"}
    invalid = _cli(sec.scram, bad_setting, out_dir, "-v", "dlq", "list")
    assert invalid.returncode == 2 and b"security_protocol" in invalid.output, invalid.output[-2000:]
    assert b"mediavec: invalid settings" in invalid.output and b"Traceback" not in invalid.output
    wrong = _with(sec.scram, kafka={"sasl_password": SecretStr(sec.secrets.wrong_kafka_password)})
    refused = _cli(wrong, sec.env, out_dir, "-v", "dlq", "list")
    assert refused.returncode == 1 and b"Authentication failed" in refused.output, refused.output[-2000:]
    assert b"mediavec: Kafka at " in refused.output, refused.output[-2000:]
    dsn = sec.secrets.postgres_dsn
    wrong_pw = dsn.split(" password=")[0] + f" password={sec.secrets.wrong_postgres_password}"
    no_login = _cli(_with(sec.scram, postgres={"dsn": SecretStr(wrong_pw)}), sec.env, out_dir, "metadb", "migrate")
    assert no_login.returncode == 1 and b"password authentication failed" in no_login.output, no_login.output[-2000:]
    assert b"mediavec: PostgreSQL: " in no_login.output and b"Traceback" not in no_login.output
    no_db = _with(sec.scram, postgres={"dsn": SecretStr(dsn.replace("dbname=", "dbname=no_such_db_"))})
    missing = _cli(no_db, sec.env, out_dir, "-v", "metadb", "migrate")
    assert missing.returncode != 0 and b"does not exist" in missing.output, missing.output[-2000:]
    wrong_oidc = _with(sec.oauth, kafka={"oauthbearer_client_secret": SecretStr(sec.secrets.wrong_oidc_secret)})
    no_token = _cli(wrong_oidc, sec.env, out_dir, "-v", "dlq", "list")
    assert no_token.returncode == 1 and b"invalid_client" in no_token.output, no_token.output[-2000:]
    assert b"Failed to retrieve OIDC token" in no_token.output and b"mediavec: Kafka at " in no_token.output
    return [invalid, refused, no_login, missing, no_token]


def _postgres_dump(settings: Settings, stack_settings: Settings) -> bytes:
    """Every row of every table in the run's database, as text."""
    assert settings.postgres.dsn is not None
    dbname = settings.postgres.dsn.get_secret_value().split("dbname=")[1].split()[0]
    dump = []
    with psycopg.connect(postgres.dsn(stack_settings).replace("dbname=mediavec", f"dbname={dbname}")) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        for (table,) in tables:
            query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            dump += [row[0] for row in conn.execute(query).fetchall()]
    assert dump, "no PostgreSQL rows to scan"
    return "\n".join(dump).encode()


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file())


def _leaks(needles: dict[str, bytes], sources: Iterable[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(secret, where) for every secret found in a source."""
    return [(name, where) for where, data in sources for name, needle in needles.items() if needle in data]


def _file_sources(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        yield str(path), path.read_bytes()


def test_a_full_run_over_sasl_prints_no_secret_anywhere(
    secured: Secured, stack_settings: Settings, tmp_path: Path
) -> None:
    sec = secured
    root, log_dir = tmp_path / "media", tmp_path / "logs"
    root.mkdir()
    with MediaServer(root) as server:
        corpus = _small_corpus(root, sample_images(tmp_path / "samples"), server)
        run_id = _run_pipeline(sec, corpus, log_dir)
    _assert_dlq(sec.scram, corpus)
    _assert_stores(sec.scram, corpus)
    n_letters = len(corpus.bad) + len(corpus.invalid_json)
    cli_runs = _run_cli_commands(sec, run_id, tmp_path / "cli", n_letters)

    worker_logs = sorted(log_dir.glob("*.log"))
    assert [p.stem for p in worker_logs] == sorted(STAGES) and all(p.stat().st_size for p in worker_logs)
    enc_dir, qdrant_dir = tmp_path / "encindex", sec.scram.qdrant_path
    assert any(_files(enc_dir)) and any(_files(qdrant_dir)), "no store files to scan"
    t = topics(sec.scram)
    messages = [
        (f"topic {name}", m.value + (m.key or b""))
        for name in (t.dlq.name, t.requests.name, t.frames.name, t.vectors.name)
        for m in read_topic(sec.scram, name)
    ]
    assert sum(name.startswith(f"topic {t.dlq.name}") for name, _ in messages) == n_letters
    server_logs = _files(kafka.KafkaPaths.of(stack_settings).logs, postgres.PostgresPaths.of(stack_settings).log_dir)
    sources = [
        *_file_sources(_files(tmp_path)),  # worker logs, CLI outputs, Qdrant, the encrypted index, media
        *((f"cli {' '.join(r.args)}", r.output) for r in cli_runs),
        *messages,
        ("PostgreSQL tables", _postgres_dump(sec.scram, stack_settings)),
        *_file_sources(server_logs),
    ]
    assert sec.tokens.issued and sec.tokens.refused, "tokens were issued, and refused for the wrong secret"
    needles = sec.secrets.needles() | {f"OIDC access token {i}": t.encode() for i, t in enumerate(sec.tokens.issued)}

    leaks = _leaks(needles, sources)
    assert not leaks, f"secrets found (secret, where): {leaks}"
    for name, needle in needles.items():  # the scan itself can fail: a planted secret is found
        assert name in {hit for hit, _ in _leaks(needles, [("planted", b"<" + needle + b">")])}
