"""Every CLI failure is one clear line: each subcommand in its failure modes, run as a user runs it.

Each case runs the installed ``mediavec`` entry point in a fresh process, with its settings in
the environment: a broker address nothing listens on (a bound, never listening loopback socket),
a PostgreSQL DSN likewise (with a password), no model weights anywhere, a store held by another
process, missing or wrong files, bad arguments, invalid settings. Every case must exit non-zero
with its last stderr line a single line that starts with ``mediavec`` (argparse's usage error
starts so too), no traceback anywhere and none of the secrets from its environment in its output.
A table row is one case; a subcommand the parser declares without a row fails
``test_every_subcommand_has_failure_cases``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from mediavec.cli import parser
from mediavec.cli_errors import EXIT_INTERNAL, EXIT_USAGE
from mediavec.settings import Settings

pytestmark = pytest.mark.integration

MEDIAVEC = Path(sys.executable).with_name("mediavec")  # the console script, as installed
TOKEN = uuid.uuid4().hex[:8]
SECRETS = {
    "pg": f"pg-secret-{uuid.uuid4().hex}",
    "qdrant": f"qdrant-secret-{uuid.uuid4().hex}",
    "sasl": f"sasl-secret-{uuid.uuid4().hex}",
    "index": f"zz{uuid.uuid4().hex}",  # not a key (64 hex characters): refused without being printed
    "registry": f"registry-secret-{uuid.uuid4().hex}",
}
RANDOM = {"MEDIAVEC_MODEL__ALLOW_RANDOM_WEIGHTS": "true", "MEDIAVEC_CONCEPT__ALLOW_RANDOM_WEIGHTS": "true"}
QDRANT_DOWN = {"MEDIAVEC_QDRANT__URL": "http://127.0.0.1:{dead}"}
SASL = {
    "MEDIAVEC_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "MEDIAVEC_KAFKA__SASL_MECHANISM": "PLAIN",
    "MEDIAVEC_KAFKA__SASL_USERNAME": "mediavec",
    "MEDIAVEC_KAFKA__SASL_PASSWORD": SECRETS["sasl"],
}
REGISTRY_DOWN = {
    "MEDIAVEC_SCHEMA_REGISTRY__URL": "http://127.0.0.1:{dead}/apis/ccompat/v7",
    "MEDIAVEC_SCHEMA_REGISTRY__FRAMING": "confluent",
    "MEDIAVEC_SCHEMA_REGISTRY__USERNAME": "mediavec",
    "MEDIAVEC_SCHEMA_REGISTRY__PASSWORD": SECRETS["registry"],
}
A_FILE = {"MEDIAVEC_DATA_DIR": "{tmp}/a-file"}  # a data directory that is a regular file
BROKER_DOWN = "Kafka at 127.0.0.1:{dead} (PLAINTEXT): nothing accepts connections there"
PG_DOWN = 'PostgreSQL: connection failed: connection to server at "127.0.0.1", port {dead} failed'


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    mode: str  # the failure mode, for the test id
    expect: str  # found in the last stderr line, after {placeholders} are filled in
    env: Mapping[str, str] = field(default_factory=dict)  # on top of base_env()
    files: Mapping[str, str] = field(default_factory=dict)  # written under {tmp} first
    status: int | None = None  # the exit status where it is a contract; any non-zero otherwise
    needs: tuple[str, ...] = ()  # "stack": a live broker (the test stack); "held": the store held elsewhere

    @property
    def id(self) -> str:
        return f"{' '.join(self.args) or 'none'} [{self.mode}]"


def usage(*args: str, expect: str = "error:") -> Case:
    """argparse's own usage error: exit status 2, ``mediavec <command>: error: ...``."""
    return Case(args, "bad arguments", expect, status=EXIT_USAGE)


CASES = [
    # the local stack
    Case(("dev", "up"), "port taken", "dev stack: cannot start Kafka", {"MEDIAVEC_DEVSTACK__KAFKA_PORT": "{busy}"}),
    Case(("dev", "down"), "data dir is a file", "MEDIAVEC_DATA_DIR", A_FILE, files={"a-file": "x"}),
    Case(("dev", "status"), "data dir is a file", "Not a directory", A_FILE, files={"a-file": "x"}),
    usage("dev", "sideways"),
    Case(("demo",), "port taken", "dev stack: cannot start Kafka", {"MEDIAVEC_DEVSTACK__KAFKA_PORT": "{busy}"}),
    # the broker
    Case(("topics",), "broker down", BROKER_DOWN),
    Case(("topics",), "broker down, SASL", "Kafka at 127.0.0.1:{dead} (SASL_PLAINTEXT, PLAIN): nothing accepts", SASL),
    Case(("topics",), "broker silent", "no answer within", {"MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{busy}"}),
    Case(("dlq", "list"), "broker down", BROKER_DOWN),
    Case(("dlq", "redrive"), "broker down", BROKER_DOWN),
    usage("dlq", "purge"),
    Case(("status",), "broker down", BROKER_DOWN),
    Case(("status", "--run", "run-x"), "broker down", BROKER_DOWN),
    Case(("status", "--run", "run-nope"), "no such run", "status: no request with run id", status=2, needs=("stack",)),
    usage("status", "--interval", "soon"),
    usage("status", "--watch", "--interval", "0", expect="argument --interval: must be above 0: '0'"),
    usage("replay", "--target", "v2", "--from-offset", "-3", expect="argument --from-offset: must be at least 0: '-3'"),
    usage("search", "--text", "a bus", "--limit", "0", expect="argument --limit: must be at least 1: '0'"),
    usage("metadb", "drop-partitions", "--older-than-days", "-1", expect="--older-than-days: must be at least 0"),
    Case(("replay", "--target", "v2"), "broker down", BROKER_DOWN),
    usage("replay", "--target", "v2", "--from-time", "yesterday", expect="not an ISO-8601 time"),
    usage("replay"),
    # workers
    Case(("run", "fetch"), "broker down", BROKER_DOWN),
    Case(("run", "fetch", "--workers", "2"), "broker down, supervised", BROKER_DOWN),
    Case(("run", "embed"), "no weights", "weights: No weights for open_clip", needs=("stack",)),
    Case(
        ("run", "fetch"),
        "schema registry down",
        "schema registry: schema registry at http://127.0.0.1:{dead}/apis/ccompat/v7 unreachable",
        REGISTRY_DOWN,
        needs=("stack",),
    ),
    Case(("run", "sink-qdrant"), "store held", "vector store in use", needs=("stack", "held")),
    Case(("run", "sink-postgres"), "PostgreSQL down", PG_DOWN, needs=("stack",)),
    Case(("run", "sink-encrypted"), "no index key", "encrypted index key: no index key configured", needs=("stack",)),
    usage("run", "nope"),
    usage("run", "fetch", "--workers", "0", expect="argument --workers: must be at least 1: '0'"),
    usage("run", "embed", "--workers-per-gpu", "-2", expect="argument --workers-per-gpu: must be at least 1: '-2'"),
    usage("run", "embed", "--stagger", "nan", expect="argument --stagger: not a finite number: 'nan'"),
    # publishing
    Case(
        ("publish", "images", "{tmp}/urls.txt"), "broker down", BROKER_DOWN, files={"urls.txt": "http://a.test/x.jpg"}
    ),
    Case(("publish", "images", "{tmp}/missing.txt"), "missing file", "missing.txt", needs=("stack",)),
    Case(
        ("publish", "images", "{tmp}/urls.txt"),
        "schema registry down",
        "schema registry: schema registry at http://127.0.0.1:{dead}/apis/ccompat/v7 unreachable",
        REGISTRY_DOWN,
        files={"urls.txt": "http://a.test/x.jpg"},
        needs=("stack",),
    ),
    Case(("publish", "images", "{tmp}/missing.txt"), "broker down, file missing: the file first", "missing.txt"),
    Case(("publish", "video", "{tmp}/missing.mp4"), "broker down, no source: it first", "nothing published"),
    Case(("publish", "video", "{tmp}/missing.mp4"), "missing file", "nothing published", needs=("stack",)),
    usage("publish", "images"),
    # searching
    Case(("search", "--text", "a bus"), "no weights", "weights: No weights for open_clip"),
    # A search reads a held store through its owner (stores/vectorstore/shared.py): the empty store
    # has no collection, which it can only say once the owner answered.
    Case(("search", "--text", "a bus"), "store held", "unknown collection", RANDOM, needs=("held",), status=2),
    Case(("search", "--text", "a bus"), "Qdrant down", "Qdrant at http://127.0.0.1:{dead}", {**RANDOM, **QDRANT_DOWN}),
    Case(
        ("search", "--text", "a bus", "--collection", "nope"),
        "unknown collection",
        "unknown collection",
        RANDOM,
        status=2,
    ),
    Case(("search", "--image", "{tmp}/missing.jpg"), "missing file", "missing.jpg: No such file", RANDOM),
    Case(("search", "--image", "{tmp}/a.jpg"), "not an image", "image: cannot identify", RANDOM, files={"a.jpg": "hi"}),
    Case(("search", "--text", "a bus", "--space", "face"), "query misfit", "search: the face space", RANDOM, status=2),
    Case(
        ("search", "--text", "a bus", "--store", "encrypted"),
        "bad index key",
        "encrypted index key: the index key variable CLIERR_INDEX_KEY must hold",
        {**RANDOM, "MEDIAVEC_ENCINDEX__KEY_ENV": "CLIERR_INDEX_KEY", "CLIERR_INDEX_KEY": SECRETS["index"]},
    ),
    usage("search"),
    Case(("spaces",), "Qdrant down", "Qdrant at http://127.0.0.1:{dead}", QDRANT_DOWN),
    Case(("serve", "--port", "{busy}"), "port taken", "address already in use"),
    usage("serve", "--port", "eighty"),
    usage("serve", "--port", "99999", expect="argument --port: not a TCP port (0 to 65535): '99999'"),
    usage("spaces", "--bogus"),
    # aliases
    Case(("alias", "set", "shop", "--to", "shop-v2"), "no weights", "weights: No weights for open_clip"),
    Case(("alias", "set", "shop"), "no target", "alias set: needs --to", status=2),
    Case(("alias", "list"), "Qdrant down", "Qdrant at http://127.0.0.1:{dead}", QDRANT_DOWN),
    Case(
        ("alias", "list"),
        "corrupt aliases.json",
        "internal error: JSONDecodeError",
        files={"data/qdrant/aliases.json": "{not json"},
        status=EXIT_INTERNAL,
    ),
    Case(("alias", "delete"), "no name", "alias delete: needs a name", status=2),
    Case(("alias", "drop", "shop-v1"), "store held", "vector store in use", needs=("held",)),
    Case(("alias", "drop"), "no name", "alias drop: needs a name", status=2),
    # PostgreSQL
    Case(("metadb", "migrate"), "PostgreSQL down", PG_DOWN),
    Case(("metadb", "drop-partitions"), "PostgreSQL down", PG_DOWN),
    Case(
        ("metadb", "migrate"),
        "malformed DSN",
        'PostgreSQL: missing "=" after "junk"',
        {"MEDIAVEC_POSTGRES__DSN": f"host=127.0.0.1 password={SECRETS['pg']} junk"},
    ),
    usage("metadb", "vacuum"),
    # model weights
    Case(("models", "pull"), "hub unreachable", "unreachable", {"HF_ENDPOINT": "http://127.0.0.1:{dead}"}),
    Case(("models", "pull", "bogus"), "unknown model", "no configured model named 'bogus'", status=2),
    # invalid settings: every command reads them first
    Case(
        ("spaces",),
        "invalid setting",
        "invalid settings: MEDIAVEC_KAFKA__SECURITY_PROTOCOL (kafka.security_protocol): Input should be",
        {"MEDIAVEC_KAFKA__SECURITY_PROTOCOL": "BOGUS"},
        status=2,
    ),
    Case(
        ("topics",),
        "setting not JSON",
        "invalid settings: MEDIAVEC_FETCH__*",
        {"MEDIAVEC_FETCH__ALLOW_CIDRS": "x"},
        status=2,
    ),
    Case(
        ("status",),
        "unknown setting",
        "MEDIAVEC_KAFKA__NOPE (kafka.nope): unknown setting",
        {"MEDIAVEC_KAFKA__NOPE": "1"},
    ),
    Case(
        ("models", "list"),
        "invalid setting",
        "MEDIAVEC_MODEL__STORE_DIM",
        {"MEDIAVEC_MODEL__STORE_DIM": "wide"},
        status=2,
    ),
    Case(
        ("search", "--text", "a bus"),
        "invalid encrypted index setting",
        "invalid settings: MEDIAVEC_ENCINDEX__RETRAIN_GROWTH (encindex.retrain_growth): Input should be greater than 1",
        {"MEDIAVEC_ENCINDEX__KEY_ENV": "CLIERR_INDEX_KEY", "MEDIAVEC_ENCINDEX__RETRAIN_GROWTH": "0.5"},
        status=2,
    ),
]


@dataclass(frozen=True)
class Ports:
    dead: int  # bound, never listening: connections are refused
    busy: int  # listening, never accepting, never answering


@pytest.fixture(scope="module")
def ports() -> Iterator[Ports]:
    with socket.socket() as dead, socket.socket() as busy:
        dead.bind(("127.0.0.1", 0))
        busy.bind(("127.0.0.1", 0))
        busy.listen(16)
        yield Ports(dead.getsockname()[1], busy.getsockname()[1])


@pytest.fixture(scope="module")
def held_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory whose embedded vector store another process holds open, as sink-qdrant does."""
    data = tmp_path_factory.mktemp("held")
    code = (
        "import sys\nfrom stores.vectorstore import open_store\nfrom mediavec.settings import load_settings\n"
        "store = open_store(load_settings())\nprint('held', flush=True)\nsys.stdin.read()\nstore.close()\n"
    )
    env = {**_clean_environ(), "MEDIAVEC_DATA_DIR": str(data)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield data
    finally:
        holder.communicate(timeout=60)  # closes its stdin: it closes the store and exits


def _clean_environ() -> dict[str, str]:
    """This process's environment without any mediavec or Hugging Face settings of the developer's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAVEC_", "HF_"))}


def base_env(tmp: Path) -> dict[str, str]:
    """Settings every case starts from: nothing reachable, no weights, secrets that must not show."""
    for folder in ("data", "models", "hub"):
        (tmp / folder).mkdir(exist_ok=True)
    return {
        **_clean_environ(),
        "MEDIAVEC_DATA_DIR": "{tmp}/data",
        "MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{dead}",
        "MEDIAVEC_POSTGRES__DSN": f"host=127.0.0.1 port={{dead}} dbname=x user=u password={SECRETS['pg']}",
        "MEDIAVEC_QDRANT__API_KEY": SECRETS["qdrant"],
        "MEDIAVEC_TOPICS__PREFIX": f"test.cli-errors-{TOKEN}.",
        "MEDIAVEC_TOPICS__REQUESTS_PARTITIONS": "1",
        "MEDIAVEC_TOPICS__FRAMES_PARTITIONS": "1",
        "MEDIAVEC_TOPICS__VECTORS_PARTITIONS": "1",
        "MEDIAVEC_TOPICS__DLQ_PARTITIONS": "1",
        "MEDIAVEC_MODEL__ALLOW_RANDOM_WEIGHTS": "false",
        "MEDIAVEC_CONCEPT__ALLOW_RANDOM_WEIGHTS": "false",
        "MEDIAVEC_MODEL__MODEL_DIR": "{tmp}/models",
        "MEDIAVEC_CONCEPT__MODEL_DIR": "{tmp}/models",
        "MEDIAVEC_EMBED__SPACES": '["scene"]',
        "HF_HUB_CACHE": "{tmp}/hub",
        "HF_HOME": "{tmp}/hub",
        "HF_ENDPOINT": "http://127.0.0.1:{dead}",  # nothing ever leaves this machine
    }


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_case(case: Case, tmp: Path, places: Mapping[str, object]) -> Outcome:
    for name, text in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    env = {k: v.format_map(places) for k, v in {**base_env(tmp), **case.env}.items()}
    args = [a.format_map(places) for a in case.args]
    done = subprocess.run([str(MEDIAVEC), *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_one_clear_line(outcome: Outcome, expect: str) -> None:
    output = outcome.stdout + outcome.stderr
    assert outcome.status != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert outcome.last_line.startswith("mediavec"), output[-3000:]
    assert expect in outcome.last_line, output[-3000:]
    leaked = [name for name, secret in SECRETS.items() if secret in output]
    assert not leaked, f"secrets {leaked} printed: {output[-3000:]}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_failing_command_ends_in_one_clear_line(
    case: Case, ports: Ports, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    places: dict[str, object] = {"tmp": tmp_path, "dead": ports.dead, "busy": ports.busy}
    extra: dict[str, str] = {}
    if "stack" in case.needs:  # a live broker, so that the command gets as far as its own failure
        request.getfixturevalue("stack")
        stack_settings: Settings = request.getfixturevalue("stack_settings")
        extra["MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS"] = stack_settings.kafka.bootstrap_servers
    if "held" in case.needs:
        extra["MEDIAVEC_DATA_DIR"] = str(request.getfixturevalue("held_dir"))
    outcome = run_case(replace(case, env={**case.env, **extra}), tmp_path, places)
    assert_one_clear_line(outcome, case.expect.format_map(places))
    if case.status is not None:
        assert outcome.status == case.status, outcome.stderr[-3000:]


def test_verbose_shows_the_traceback_and_still_ends_in_the_line(ports: Ports, tmp_path: Path) -> None:
    """-v is how a bug gets reported: the traceback, then the same one line, and still no secret."""
    places = {"tmp": tmp_path, "dead": ports.dead, "busy": ports.busy}
    bug = Case(("-v", "alias", "list"), "", "", files={"data/qdrant/aliases.json": "{not json"})
    outcome = run_case(bug, tmp_path, places)
    assert outcome.status == EXIT_INTERNAL and "Traceback" in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.last_line.startswith("mediavec: internal error: JSONDecodeError"), outcome.stderr[-3000:]
    pg_down = run_case(Case(("-v", "metadb", "migrate"), "", ""), tmp_path, places)
    assert pg_down.status == 1 and pg_down.last_line.startswith("mediavec: PostgreSQL: "), pg_down.stderr[-3000:]
    assert SECRETS["pg"] not in pg_down.stdout + pg_down.stderr


def declared_commands() -> set[str]:
    """Every command the parser declares: ``topics``, ``publish images``, ``dlq list``, ``run embed``..."""
    commands = set()
    for name, sub in _subparsers(parser()).items():
        nested = _subparsers(sub)
        choices = next((a.choices for a in sub._actions if not a.option_strings and a.choices), None)
        words = nested or (choices if not isinstance(choices, dict) else None) or [""]
        commands |= {f"{name} {word}".strip() for word in words}
    return commands


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_subcommand_has_failure_cases() -> None:
    declared = declared_commands()
    covered = {" ".join(c.args[:2]) for c in CASES} | {c.args[0] for c in CASES if c.args}
    assert {"topics", "publish images", "dlq redrive", "run sink-qdrant", "alias drop"} <= declared
    assert not declared - covered, f"commands without failure cases: {sorted(declared - covered)}"
