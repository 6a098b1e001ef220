"""The service's other queries over the same stored photos as test_service: filters, more like this,
an image by URL (through the fetch stage's address guard), the collection list and thumbnails
without PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mediavec.service.app import ServiceServer
from mediavec.settings import Settings
from schemas import point_id
from tests.unit.test_search_spaces import PHOTOS, TEXTS
from tests.unit.test_service import Stored, call, post_json, server, stored  # noqa: F401  (fixtures)


def hits(svc: ServiceServer, path: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    r = post_json(svc, path, doc)
    assert r.status == 200, r.body
    return list(r.json()["hits"])


def test_filters_narrow_every_query_kind(server: ServiceServer, stored: Stored) -> None:  # noqa: F811
    only_p2 = {"filter": {"media_ids": ["p2"]}}
    found = hits(server, "/v1/search", {"text": TEXTS[0], "collection": "shop", "space": "all", "limit": 50, **only_p2})
    assert found and {h["media_id"] for h in found} == {"p2"} and len(found) == 8  # scene, 2 objects, text, 4 cells
    people = hits(server, "/v1/search", {"text": "a person", "collection": "shop", "space": "object", "limit": 50,
                                         "filter": {"labels": ["person"]}})  # fmt: skip
    assert len(people) == len(PHOTOS) and {h["label"] for h in people} == {"person"}
    late = {"filter": {"time_from_s": 2.0}}  # every stored frame is at 1.5 s
    assert hits(server, "/v1/search", {"text": "x", "collection": "shop", **late}) == []
    r = call(server, "POST", "/v1/search/image?collection=shop&space=object&label=thing&limit=50", stored.files["p1"])
    assert r.status == 200 and {h["label"] for h in r.json()["hits"]} == {"thing"}
    r = call(server, "POST", "/v1/search/image?collection=shop&media_id=p4", stored.files["p1"])
    assert [h["media_id"] for h in r.json()["hits"]] == ["p4"]


def test_bad_filters_are_a_400_that_says_why(server: ServiceServer) -> None:  # noqa: F811
    cases = [
        ({"metadata": {"no spaces": "x"}}, "metadata key"),
        ({"media_ids": [f"m{i}" for i in range(101)]}, "at most 100"),
        ({"time_from_s": -1}, "time_from_s"),
        ({"colour": "red"}, "unknown field"),
        ({"time_from_s": 5, "time_to_s": 2}, "nothing could match"),
    ]
    for where, told in cases:
        r = post_json(server, "/v1/search", {"text": "x", "collection": "shop", "filter": where})
        assert r.status == 400 and told in r.json()["error"], (where, r.body)


def test_more_like_this_searches_with_the_points_own_vector(server: ServiceServer, stored: Stored) -> None:  # noqa: F811
    crop = point_id(stored.vision, "p2", 0, "object", 1)
    found = hits(server, "/v1/search/similar", {"id": crop, "collection": "shop", "limit": 50})
    assert crop not in {h["id"] for h in found}
    assert len(found) == 2 * len(PHOTOS) - 1 and {h["space"] for h in found} == {"object"}
    # the uploaded crop itself finds the stored crop first; more-like-this from it ranks the rest the same way
    r = call(server, "POST", "/v1/search/image?collection=shop&space=object&limit=50", stored.files["p2-object-1"])
    assert [h["id"] for h in r.json()["hits"] if h["id"] != crop][:5] == [h["id"] for h in found][:5]
    scenes = hits(server, "/v1/search/similar", {"id": crop, "collection": "shop", "space": "scene", "limit": 50})
    assert {h["space"] for h in scenes} == {"scene"} and len(scenes) == len(PHOTOS)
    wide = hits(server, "/v1/search/similar", {"id": crop, "collection": "shop", "space": "all", "limit": 50})
    assert {h["space"] for h in wide} == {"scene", "object", "text"}  # the vision model's spaces, not the grid
    grid = post_json(server, "/v1/search/similar", {"id": crop, "collection": "shop", "space": "grid"})
    assert grid.status == 400 and "holds no grid space" in grid.json()["error"]
    unknown = post_json(
        server, "/v1/search/similar", {"id": "00000000-0000-4000-8000-000000000000", "collection": "shop"}
    )
    assert unknown.status == 404 and "no point" in unknown.json()["error"]
    assert post_json(server, "/v1/search/similar", {"id": "not-a-uuid"}).status == 400


def test_the_collections_list_counts_every_stored_point(server: ServiceServer) -> None:  # noqa: F811
    r = call(server, "GET", "/v1/collections")
    assert r.status == 200
    assert r.json() == {"collections": [{"name": "shop", "points": 40 * 1, "alias_of": None}]}


def test_thumbnails_without_postgresql_are_a_503_and_off_is_a_404(server: ServiceServer, stored: Stored) -> None:  # noqa: F811
    r = call(server, "GET", "/v1/thumbnail?media_id=p1&frame_index=0")
    assert r.status == 503 and r.json()["error"].startswith("thumbnails unavailable: no PostgreSQL DSN")
    assert call(server, "GET", "/v1/thumbnail?media_id=p1&frame_index=-1").status == 400
    assert call(server, "GET", "/v1/thumbnail?media_id=p1").status == 400
    off = stored.settings.model_copy(update={"serve": stored.settings.serve.model_copy(update={"thumbnails": False})})
    with ServiceServer(off, stored.models) as quiet:
        assert call(quiet, "GET", "/v1/thumbnail?media_id=p1&frame_index=0").status == 404
        found = hits(quiet, "/v1/search", {"text": "x", "collection": "shop"})
        assert found and all(h["thumbnail_url"] is None for h in found)


@pytest.fixture(scope="module")
def photo_server(stored: Stored, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    root = tmp_path_factory.mktemp("photos")
    (root / "p3.png").write_bytes(stored.files["p3"])
    (root / "notes.txt").write_text("not an image")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _allowing_loopback(settings: Settings) -> Settings:
    fetch = settings.fetch.model_copy(update={"allow_cidrs": ("127.0.0.0/8",)})
    return settings.model_copy(update={"fetch": fetch})


def test_an_image_by_url_is_fetched_through_the_address_guard(
    server: ServiceServer,  # noqa: F811
    stored: Stored,  # noqa: F811
    photo_server: str,
) -> None:
    url = f"{photo_server}/p3.png"
    refused = post_json(server, "/v1/search/url", {"url": url, "collection": "shop"})
    assert refused.status == 422 and "could not fetch" in refused.json()["error"]
    assert "loopback" in refused.json()["error"]  # the guard says which kind of address it refused
    with ServiceServer(_allowing_loopback(stored.settings), stored.models) as allowed:
        found = hits(allowed, "/v1/search/url", {"url": url, "collection": "shop", "limit": 2})
        assert found[0]["id"] == point_id(stored.vision, "p3", 0, "scene")
        text = post_json(allowed, "/v1/search/url", {"url": f"{photo_server}/notes.txt", "collection": "shop"})
        assert text.status == 400, text.body
        gone = post_json(allowed, "/v1/search/url", {"url": f"{photo_server}/nothing.png", "collection": "shop"})
        assert gone.status == 422 and "404" in gone.json()["error"]
        odd = post_json(allowed, "/v1/search/url", {"url": "ftp://127.0.0.1/x.png", "collection": "shop"})
        assert odd.status == 400 and "bad_scheme" in odd.json()["error"], odd.body  # not a URL the service fetches
