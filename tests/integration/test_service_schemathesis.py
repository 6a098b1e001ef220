"""schemathesis against the real search service, over every operation of its own OpenAPI document.

The service is the real one (``ServiceServer``: aiohttp on loopback, open_clip query models on
random weights) over real stores: the embedded Qdrant store and the encrypted index holding the
photos of test_search_spaces (the ``default`` collection is an alias of theirs, so requests that
name no collection find hits), and a PostgreSQL database of the test stack for the thumbnails.
Every store it can read is configured, so no request has a reason to meet a 5xx.

The document is read from the running service's ``/openapi.json``. For each operation,
schemathesis sends its boundary cases (the coverage phase: each field at and past its limits,
missing, of the wrong type, unexpected methods) and requests it generates from the schemas, valid
and invalid. Every response must pass ``CHECKS``: no 5xx, a status code the document lists for
the operation, the content type it gives for that status, and a body its schema accepts.

Nothing passes by doing nothing: the operations tested are the endpoint table's and must be the
document's; each test counts the requests it sent; text search must find hits, and the requests
held to stored data (a collection, an image, a point) must be answered with them.

schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) cannot run here: it
sets ``request.node._nodeid``, which pytest 9.2 no longer has. These tests drive the same
generators (``iter_coverage_cases``, ``APIOperation.as_strategy``) through plain pytest and
hypothesis instead.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation, BaseSchema

from devstack import postgres
from devstack.settings import DevSettings
from devstack.stack import StackInfo
from mediavec.aliases import FileAliases
from mediavec.cli_errors import one_line
from mediavec.search import QueryModels
from mediavec.service.api import ENDPOINTS
from mediavec.service.app import ServiceServer
from schemas import point_id
from schemas.collections import collection_for
from stores.settings import PostgresSettings
from tests.unit.test_search_spaces import Indexed, indexed, models

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration  # the test stack's PostgreSQL holds the thumbnails

__all__ = ["indexed", "models"]  # test_search_spaces' module fixtures, built again for this module

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    # lead: fix the 400 that aiohttp's HTTP parser sends, before any middleware, for a request line
    # (or a header) over 8190 bytes: text/plain "400, message: Got more than 8190 bytes when
    # reading ...", where the document promises application/json {"error": ...} for every status.
    # Valid requests meet it too: POST /v1/search/image?label=<2,000 characters, as the document
    # allows> is a request line of up to ~24 KB once UTF-8 is percent-encoded ("é" * 2000: 12 KB).
    # Fails here on the negative requests of GET /v1/thumbnail and POST /v1/search/image.
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [f"{e.method} {e.path}" for e in ENDPOINTS]
WITH_INPUT = [f"{e.method} {e.path}" for e in ENDPOINTS if e.query or e.body or e.path_params]
EXAMPLES = 25  # generated requests per operation and mode: the module runs in about a minute on 2 cores

# schemathesis has sample files for JPEG, PNG, GIF and WebP bodies only; the other image types the
# image search accepts are sent as raw bytes (which the service must then refuse with a 400).
for _media_type in ("image/bmp", "image/tiff"):
    schemathesis.serializer.alias(_media_type, "application/octet-stream")


@pytest.fixture(scope="module")
def database(stack: StackInfo, stack_settings: DevSettings) -> Iterator[str]:
    """A fresh database of the test stack: sink-postgres never ran there, so no frame has a thumbnail."""
    name = f"t_schemathesis_{uuid.uuid4().hex[:8]}"  # the stack is shared: a name of this run's own
    postgres.ensure_database(stack_settings, name)
    yield f"host=127.0.0.1 port={stack_settings.devstack.postgres_port} dbname={name} user={postgres.SUPERUSER}"
    postgres.drop_database(stack_settings, name)


@pytest.fixture(scope="module")
def server(indexed: Indexed, models: QueryModels, database: str) -> Iterator[ServiceServer]:
    FileAliases(indexed.settings.qdrant_path).switch("default", collection_for("shop", indexed.vision))
    service_settings = indexed.settings.model_copy(update={"postgres": PostgresSettings(dsn=SecretStr(database))})
    with ServiceServer(service_settings, models) as server:
        yield server


@pytest.fixture(scope="module")
def api(server: ServiceServer) -> BaseSchema:
    return schemathesis.openapi.from_url(f"http://{server.host}:{server.port}/openapi.json")


def _operation(api: BaseSchema, label: str) -> APIOperation:
    operation = api.find_operation_by_label(label)
    assert operation is not None, f"{label} is in the endpoint table but not in /openapi.json"
    return operation


def _fetches_beyond_loopback(case: schemathesis.Case) -> bool:
    """Whether ``case`` asks the service to fetch an http(s) URL off this machine (the URL search).

    The generated URLs so far never have a scheme, and the service refuses them before any lookup;
    should the document ever make schemathesis generate real URLs, the test stops rather than
    sending the service after the internet."""
    url = case.body.get("url") if isinstance(case.body, dict) else None
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
    except ValueError:
        return False
    return scheme in ("http", "https") and host not in (None, "", "localhost", "127.0.0.1", "::1")


def _send(case: schemathesis.Case, answered: Counter[int], failures: list[str]) -> None:
    """Send ``case``, count its status, and note every check it fails."""
    assert not _fetches_beyond_loopback(case), f"would fetch beyond loopback: {case.body!r}"
    response = case.call(timeout=120)
    answered[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        checks = "; ".join(f"{f.title}: {one_line(f.message, 300)}" for f in group.exceptions)
        sent = one_line(case.as_curl_command(), 400)
        failures.append(f"{sent}\n  -> {response.status_code} {one_line(response.text, 200)}\n  {checks}")


def _fuzz(strategy: st.SearchStrategy[schemathesis.Case]) -> tuple[Counter[int], list[str]]:
    """Send ``EXAMPLES`` requests hypothesis draws from ``strategy``: the statuses and the failures."""
    answered: Counter[int] = Counter()
    failures: list[str] = []

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def send(case: schemathesis.Case) -> None:
        _send(case, answered, failures)

    send()
    return answered, failures


def test_the_document_has_exactly_the_operations_tested(api: BaseSchema) -> None:
    # From the document itself: schemathesis leaves the document's own URL out of get_all_operations.
    documented = [f"{method.upper()} {path}" for path, ops in api.raw_schema["paths"].items() for method in ops]
    assert sorted(documented) == sorted(OPERATIONS)
    assert {"POST /v1/search", "POST /v1/search/image", "GET /readyz", "GET /openapi.json"} <= set(documented)


@pytest.mark.parametrize("label", OPERATIONS)
def test_boundary_cases_keep_the_documented_contract(api: BaseSchema, label: str) -> None:
    operation = _operation(api, label)
    cases = api.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=api.config.generation_for(operation=operation, phase="coverage"),
    )
    answered: Counter[int] = Counter()
    failures: list[str] = []
    for case in cases:
        _send(case, answered, failures)
    logger.info("%s, boundary cases: statuses %s", label, dict(answered))
    assert answered[405] > 0 and answered.total() > answered[405], answered  # its own method too
    assert not failures, f"{len(failures)} of {answered.total()} cases failed:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize(
    ("label", "mode"),
    [(label, GenerationMode.POSITIVE) for label in OPERATIONS]
    + [(label, GenerationMode.NEGATIVE) for label in WITH_INPUT],  # nothing to make invalid in the others
)
def test_generated_requests_keep_the_documented_contract(api: BaseSchema, label: str, mode: GenerationMode) -> None:
    answered, failures = _fuzz(_operation(api, label).as_strategy(generation_mode=mode))
    logger.info("%s, %s requests: statuses %s", label, mode.value, dict(answered))
    # hypothesis sent what it was asked for: an operation that takes no input has one request to make
    assert answered.total() >= (min(EXAMPLES, 5) if label in WITH_INPUT else 1), answered
    assert not failures, f"{len(failures)} of {answered.total()} requests failed:\n" + "\n".join(failures[:10])
    if label == "POST /v1/search" and mode is GenerationMode.POSITIVE:
        assert answered[200] > 0, answered  # valid text queries into the default collection find hits


REACHING = ("GET /v1/collections/{name}/spaces", "POST /v1/search/image", "POST /v1/search/similar")


@pytest.mark.parametrize("label", REACHING)
def test_requests_that_reach_stored_points_keep_the_documented_contract(
    api: BaseSchema, indexed: Indexed, label: str
) -> None:
    """Generated requests rarely name a stored collection, a decodable image or a stored point: hold
    that one part fixed (the rest is generated), so the answers with hits are checked too."""
    fixed: dict[str, dict[str, Any]] = {
        REACHING[0]: {"path_parameters": {"name": "default"}},
        REACHING[1]: {"body": indexed.files["p1"].read_bytes(), "media_type": "image/png"},
        REACHING[2]: {"body": {"id": point_id(indexed.vision, "p2", 0, "scene")}},
    }
    answered, failures = _fuzz(_operation(api, label).as_strategy(**fixed[label]))
    logger.info("%s, requests that reach stored points: statuses %s", label, dict(answered))
    assert not failures, f"{len(failures)} of {answered.total()} requests failed:\n" + "\n".join(failures[:10])
    assert answered[200] > 0, answered
