"""Whatever a stranger sends the search service, the answer is a 2xx or a 4xx with a JSON error, never
a 500: arbitrary JSON bodies, arbitrary bytes, arbitrary query strings and collection names, to
every endpoint, through the real service over a real store (the fixture of test_service)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediavec.search import SPACE_CHOICES
from mediavec.service.api import ENDPOINTS
from mediavec.service.app import ServiceServer
from tests.unit.test_service import TEXTS, Reply, Stored, call, serving, stored

__all__ = ["stored"]  # the module fixture, imported so that pytest finds it here

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATHS = [(e.method, e.path.replace("{name}", "shop")) for e in ENDPOINTS]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
plausible = {
    "text": st.sampled_from(TEXTS) | st.text(max_size=30) | json_values,
    "collection": st.sampled_from(["shop", "default", "nope", ""]) | json_values,
    "space": st.sampled_from(SPACE_CHOICES) | json_values,
    "limit": st.integers(-2, 120) | json_values,
    "offset": st.integers(-2, 1100) | json_values,
    "per_space": st.none() | st.integers(-1, 5) | json_values,
    "store": st.sampled_from(["auto", "qdrant", "encrypted", "all", "disk"]) | json_values,
}
search_bodies = st.fixed_dictionaries({}, optional=plausible) | json_values


@pytest.fixture(scope="module")
def server(stored: Stored) -> Iterator[ServiceServer]:
    yield from serving(stored.settings, stored.models)


def _told(r: Reply) -> None:
    """A 2xx, or a 4xx whose body is ``{"error": "<one line>"}``."""
    assert 200 <= r.status < 300 or 400 <= r.status < 500, (r.status, r.body[:300])
    if r.status >= 400:
        error = r.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error


@FUZZ
@given(doc=search_bodies)
def test_any_json_body_to_search(server: ServiceServer, doc: Any) -> None:
    _told(call(server, "POST", "/v1/search", json.dumps(doc).encode(), {"Content-Type": "application/json"}))


@FUZZ
@given(where=st.sampled_from(PATHS), data=st.binary(max_size=2048), content_type=st.sampled_from(
    ["application/json", "image/png", "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain"]
))  # fmt: skip
def test_any_bytes_to_every_endpoint(
    server: ServiceServer, where: tuple[str, str], data: bytes, content_type: str
) -> None:
    method, path = where
    for m in (method, "POST" if method == "GET" else "GET"):
        _told(call(server, m, path, data, {"Content-Type": content_type}))


query_pairs = st.lists(
    st.tuples(
        st.sampled_from(["collection", "space", "limit", "offset", "per_space", "store"]) | st.text(max_size=8),
        st.sampled_from(["shop", "all", "scene", "face", "1", "0", "-1", "1e9", ""]) | st.text(max_size=12),
    ),
    max_size=5,
)


@FUZZ
@given(pairs=query_pairs, name=st.text(max_size=70), photo=st.booleans())
def test_any_query_string_and_collection_name(
    server: ServiceServer, stored: Stored, pairs: list[tuple[str, str]], name: str, photo: bool
) -> None:
    query = urllib.parse.urlencode(pairs)
    body = stored.files["p0-object-0"] if photo else b""
    _told(call(server, "POST", f"/v1/search/image?{query}", body, {"Content-Type": "image/png"}))
    for method, path in PATHS:
        _told(call(server, method, f"{path}?{query}"))
    _told(call(server, "GET", f"/v1/collections/{urllib.parse.quote(name, safe='')}/spaces"))
