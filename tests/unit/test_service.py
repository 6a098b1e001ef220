"""The HTTP search service (``mediavec serve``) over real parts: open_clip models on random weights
embed the queries, the real embedded Qdrant store answers, requests travel over loopback HTTP.

The stored rows are made as in test_search_spaces (the same helpers): each photo's scene, two
object crops, a text row and a 2x2 concept grid, so the right top hit of each query is known.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from consumers.sink_qdrant.sink import QdrantSink
from mediavec.search import QueryModels
from mediavec.service.api import ENDPOINTS
from mediavec.service.app import ServiceServer
from mediavec.service.settings import ServeSettings
from mediavec.settings import Settings
from models.settings import ModelSettings
from schemas import VectorBatch, point_id
from tests.unit.test_search_spaces import CONCEPT, PHOTOS, RANDOM, SKIMAGE_DATA, TEXTS, _boxes, _frame_batches, _write

KEY = "k3y-" + uuid.uuid4().hex  # the API key of the guarded service; must never reach a log or a reply


@dataclass(frozen=True)
class Stored:
    settings: Settings
    models: QueryModels
    files: dict[str, bytes]  # "p2" (the photo, PNG), "p2-object-1" (a crop, PNG)
    vision: str
    concept: str


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", self.body[:200]
        return json.loads(self.body)


def call(
    server: ServiceServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def post_json(server: ServiceServer, path: str, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    return call(server, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})


def multipart(field: str, data: bytes, filename: str = "query.png") -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    root = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=root, model=RANDOM, concept=CONCEPT)
    models = QueryModels(settings)
    vision = models.clip("vision", models.model_id("vision"))
    concept = models.clip("concept", models.model_id("concept"))
    files: dict[str, bytes] = {}
    batches: list[VectorBatch] = []
    for i, (name, text) in enumerate(zip(PHOTOS, TEXTS, strict=True)):
        with Image.open(SKIMAGE_DATA / name) as im:
            im.convert("RGB").resize((224, 160)).save(root / f"p{i}.png")
        with Image.open(root / f"p{i}.png") as im:
            image = im.convert("RGB")
        files[f"p{i}"] = (root / f"p{i}.png").read_bytes()
        for part, box in _boxes(image).items():
            image.crop(box).save(root / f"p{i}-{part}.png")
            files[f"p{i}-{part}"] = (root / f"p{i}-{part}.png").read_bytes()
        batches += _frame_batches(f"p{i}", image, text, vision, concept)
    _write(QdrantSink(settings), batches)
    return Stored(settings, models, files, vision.model_id, concept.model_id)


def serving(settings: Settings, models: QueryModels | None) -> Iterator[ServiceServer]:
    with ServiceServer(settings, models) as server:
        yield server


@pytest.fixture(scope="module")
def server(stored: Stored) -> Iterator[ServiceServer]:
    yield from serving(stored.settings, stored.models)


def with_serve(settings: Settings, **serve: Any) -> Settings:
    return settings.model_copy(update={"serve": ServeSettings(**serve)})


def test_a_text_query_finds_its_text_row_with_every_hit_field(server: ServiceServer, stored: Stored) -> None:
    r = post_json(server, "/v1/search", {"text": TEXTS[3], "collection": "shop", "space": "text", "limit": 3})
    assert r.status == 200
    page = r.json()
    top = page["hits"][0]
    assert top["id"] == point_id(stored.vision, "p3", 0, "text") and top["score"] == pytest.approx(1.0, abs=5e-3)
    assert {k: v for k, v in top.items() if k not in ("id", "score")} == {
        "media_id": "p3",
        "frame_index": 0,
        "timestamp_s": 1.5,
        "box": None,
        "label": TEXTS[3],
        "space": "text",
        "source_url": "http://127.0.0.1/p3.png",
        "collection": "shop",
        "model": stored.vision,
        "frame_width": None,  # these batches were made without a frame size
        "frame_height": None,
        "thumbnail_url": "/v1/thumbnail?media_id=p3&frame_index=0",
    }
    assert len(page["hits"]) == 3 and page["offset"] == 0 and page["limit"] == 3 and page["next_offset"] == 3


def test_an_uploaded_image_finds_its_scene_raw_and_multipart(server: ServiceServer, stored: Stored) -> None:
    raw = call(
        server, "POST", "/v1/search/image?collection=shop&limit=2", stored.files["p1"], {"Content-Type": "image/png"}
    )
    assert raw.status == 200, raw.body
    assert raw.json()["hits"][0]["id"] == point_id(stored.vision, "p1", 0, "scene")
    body, headers = multipart("image", stored.files["p4"])
    form = call(server, "POST", "/v1/search/image?collection=shop&space=scene", body, headers)
    assert form.status == 200, form.body
    hits = form.json()["hits"]
    assert hits[0]["id"] == point_id(stored.vision, "p4", 0, "scene") and hits[0]["score"] > hits[1]["score"]


def test_an_uploaded_crop_finds_its_object_and_box(server: ServiceServer, stored: Stored) -> None:
    r = call(server, "POST", "/v1/search/image?collection=shop&space=object&limit=3", stored.files["p2-object-1"])
    top = r.json()["hits"][0]
    assert top["id"] == point_id(stored.vision, "p2", 0, "object", 1)
    assert top["box"] == [112.0, 80.0, 224.0, 160.0] and top["label"] == "thing" and top["space"] == "object"


def test_pages_follow_each_other_without_overlap(server: ServiceServer) -> None:
    def page(offset: int, limit: int) -> dict[str, Any]:
        query = {"text": TEXTS[0], "collection": "shop", "space": "all", "offset": offset, "limit": limit}
        r = post_json(server, "/v1/search", query)
        assert r.status == 200, r.body
        return dict(r.json())

    first, second, both = page(0, 4), page(4, 4), page(0, 8)
    ids = [h["id"] for h in first["hits"]] + [h["id"] for h in second["hits"]]
    assert len(set(ids)) == 8 and ids == [h["id"] for h in both["hits"]]
    assert first["next_offset"] == 4 and second["next_offset"] == 8
    last = page(40, 10)  # 5 photos: 5 scene + 10 object + 5 text + 20 grid rows = 40
    assert last["hits"] == [] and last["next_offset"] is None
    assert page(36, 10)["next_offset"] is None and len(page(36, 10)["hits"]) == 4


def test_the_layout_lists_each_space_with_its_count(server: ServiceServer, stored: Stored) -> None:
    r = call(server, "GET", "/v1/collections/shop/spaces")
    assert r.status == 200
    rows = {(s["space"], s["model"]): (s["count"], s["dim"]) for s in r.json()["spaces"]}
    n = len(PHOTOS)
    assert rows == {
        ("scene", stored.vision): (n, 256),
        ("object", stored.vision): (2 * n, 256),
        ("text", stored.vision): (n, 256),
        ("grid", stored.concept): (4 * n, 256),
    }
    missing = call(server, "GET", "/v1/collections/nowhere/spaces")
    assert missing.status == 404 and "nowhere" in missing.json()["error"]
    assert call(server, "GET", "/v1/collections/..%2Fetc/spaces").status == 400


def test_bad_queries_are_told_in_one_line_never_500(server: ServiceServer) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"text": "x", "limit": 0}, 400, "limit: Input should be greater than or equal to 1"),
        ({"text": "x", "space": "moon"}, 400, "space: unknown space 'moon': one of scene"),
        ({"text": "x", "colour": "red"}, 400, "colour: unknown field"),
        ({"limit": 3}, 400, "text: Field required"),
        ({"text": "x", "collection": "../../etc"}, 400, "collection: String should match pattern"),
        ({"text": "a face", "collection": "shop", "space": "face"}, 400, "the face space takes an image query"),
        ({"text": "x", "collection": "nothing-here"}, 404, "nothing to search for 'nothing-here'"),
        ([1, 2], 400, "body: Input should be an object"),
    ]
    for doc, status, says in cases:
        r = post_json(server, "/v1/search", doc)
        assert (r.status, says in r.json()["error"]) == (status, True), (doc, r.body)
    broken = call(server, "POST", "/v1/search", b'{"text": ', {"Content-Type": "application/json"})
    assert broken.status == 400 and "Invalid JSON" in broken.json()["error"]
    not_image = call(server, "POST", "/v1/search/image?collection=shop", b"<html>hello</html>")
    assert not_image.status == 400 and "not_an_image" in not_image.json()["error"]
    body, headers = multipart("picture", b"\x89PNG")
    assert call(server, "POST", "/v1/search/image", body, headers).status == 400
    twice = call(server, "POST", "/v1/search/image?limit=1&limit=2", b"x")
    assert twice.status == 400 and "more than once" in twice.json()["error"]
    assert call(server, "GET", "/v1/search").json()["error"].startswith("GET is not allowed here")
    assert call(server, "GET", "/nowhere").status == 404


def test_health_readiness_and_metrics(server: ServiceServer, stored: Stored, tmp_path: Path) -> None:
    assert call(server, "GET", "/healthz").json() == {"status": "alive"}
    assert call(server, "GET", "/readyz").json() == {"status": "ready"}
    before = _requests(server, "/v1/collections/{name}/spaces", "GET", "200")
    for _ in range(3):
        assert call(server, "GET", "/v1/collections/shop/spaces").status == 200
    assert _requests(server, "/v1/collections/{name}/spaces", "GET", "200") == before + 3
    text = call(server, "GET", "/metrics").body.decode()
    assert 'mediavec_http_request_seconds_count{endpoint="/v1/collections/{name}/spaces"}' in text
    (tmp_path / "qdrant").write_text("a file where the store directory should be")
    with ServiceServer(stored.settings.model_copy(update={"data_dir": tmp_path}), stored.models) as broken:
        r = call(broken, "GET", "/readyz")
        assert r.status == 503 and r.json()["error"].startswith("vector store not ready")
        assert call(broken, "GET", "/healthz").status == 200


def _requests(server: ServiceServer, endpoint: str, method: str, status: str) -> float:
    text = call(server, "GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "mediavec_http_requests_total" and s.labels == {
                "endpoint": endpoint,
                "method": method,
                "status": status,
            }:
                return s.value
    return 0.0


def test_missing_weights_are_a_503(stored: Stored, tmp_path: Path) -> None:
    no_weights = ModelSettings(pretrained="no-such-weights", model_dir=tmp_path, device="cpu")
    settings = stored.settings.model_copy(update={"model": no_weights})
    with ServiceServer(settings) as server:
        r = post_json(server, "/v1/search", {"text": "a cat", "collection": "shop"})
        assert r.status == 503 and r.json()["error"]


def test_the_openapi_document_is_valid_and_covers_every_route(server: ServiceServer) -> None:
    doc = call(server, "GET", "/openapi.json").json()
    validate(doc)
    routes = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert routes == {(e.path, e.method) for e in ENDPOINTS}
    search = doc["paths"]["/v1/search"]["post"]
    assert search["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TextSearch"}
    assert {"200", "400", "404", "413", "503"} <= set(search["responses"])
    image = doc["paths"]["/v1/search/image"]["post"]
    options = {"collection", "space", "limit", "offset", "per_space", "store"}
    assert {p["name"] for p in image["parameters"]} == options | {"media_id", "label", "time_from_s", "time_to_s"}
    thumbnail = doc["paths"]["/v1/thumbnail"]["get"]
    assert set(thumbnail["responses"]["200"]["content"]) == {"image/jpeg"}
    assert {p["name"] for p in thumbnail["parameters"]} == {"media_id", "frame_index"}
    assert "multipart/form-data" in image["requestBody"]["content"]
    hit = {"media_id", "box", "timestamp_s", "model", "frame_width", "frame_height", "thumbnail_url"}
    assert set(doc["components"]["schemas"]["HitOut"]["properties"]) >= hit


def test_an_api_key_is_asked_for_and_never_told(stored: Stored, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = with_serve(stored.settings, api_key=SecretStr(KEY))
    query = {"text": TEXTS[1], "collection": "shop", "limit": 1}
    with ServiceServer(settings, stored.models) as server:
        bare = post_json(server, "/v1/search", query)
        assert bare.status == 401 and "API key" in bare.json()["error"] and bare.headers["WWW-Authenticate"]
        assert post_json(server, "/v1/search", query, {"Authorization": "Bearer wrong"}).status == 401
        assert post_json(server, "/v1/search", query, {"X-API-Key": KEY[:-1]}).status == 401
        assert post_json(server, "/v1/search", query, {"Authorization": f"Bearer {KEY}"}).status == 200
        assert post_json(server, "/v1/search", query, {"X-API-Key": KEY}).status == 200
        assert call(server, "GET", "/metrics").status == 401
        assert call(server, "GET", "/healthz").status == 200 and call(server, "GET", "/readyz").status == 200
        doc = call(server, "GET", "/openapi.json")
        assert doc.status == 200 and KEY.encode() not in doc.body
    assert KEY not in caplog.text and "mediavec.service" in {r.name.rsplit(".", 1)[0] for r in caplog.records}


def test_a_body_over_the_limit_is_a_413(stored: Stored) -> None:
    with ServiceServer(with_serve(stored.settings, max_request_bytes=4096), stored.models) as server:
        big = call(server, "POST", "/v1/search/image", b"\0" * 5000)
        assert big.status == 413 and "over the limit of 4096" in big.json()["error"]
        padded = post_json(server, "/v1/search", {"text": "x" * 1000, "collection": "shop", "pad": "y" * 5000})
        assert padded.status == 413
        body, headers = multipart("image", stored.files["p0"])  # a 224x160 PNG: well over 4 KiB
        assert len(body) > 4096 and call(server, "POST", "/v1/search/image", body, headers).status == 413
        chunked = _chunked(server, "/v1/search/image", b"\0" * 5000)
        assert chunked == 413


def _chunked(server: ServiceServer, path: str, data: bytes) -> int:
    """Send ``data`` without a Content-Length (chunked), so only reading it can find it too large."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request("POST", path, body=iter([data[:2000], data[2000:]]), encode_chunked=True)
        return conn.getresponse().status
    finally:
        conn.close()


def test_cors_is_off_unless_origins_are_listed(server: ServiceServer, stored: Stored) -> None:
    origin = {"Origin": "http://page.example"}
    assert "Access-Control-Allow-Origin" not in call(server, "GET", "/healthz", headers=origin).headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert call(server, "OPTIONS", "/v1/search", headers=preflight).status == 405
    with ServiceServer(with_serve(stored.settings, cors_origins=("http://page.example",)), stored.models) as open_:
        r = call(open_, "GET", "/healthz", headers=origin)
        assert r.headers["Access-Control-Allow-Origin"] == "http://page.example"
        pre = call(open_, "OPTIONS", "/v1/search", headers=preflight)
        assert pre.status == 204 and "POST" in pre.headers["Access-Control-Allow-Methods"]
        other = call(open_, "GET", "/healthz", headers={"Origin": "http://elsewhere.example"})
        assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers


def test_serve_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAVEC_SERVE__PORT", "9123")
    monkeypatch.setenv("MEDIAVEC_SERVE__API_KEY", KEY)
    monkeypatch.setenv("MEDIAVEC_SERVE__CORS_ORIGINS", '["http://page.example"]')
    serve = Settings().serve
    assert (serve.host, serve.port, serve.cors_origins) == ("127.0.0.1", 9123, ("http://page.example",))
    assert serve.api_key is not None and serve.api_key.get_secret_value() == KEY and KEY not in repr(serve)


def test_mediavec_serve_answers_until_interrupted(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "mediavec"), "serve", "--port", str(port)]
    env = {**os.environ, "MEDIAVEC_DATA_DIR": str(tmp_path)}
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == f"mediavec serve: http://127.0.0.1:{port} (the API: /openapi.json)"
        server = ServiceServer(Settings(), port=port)  # only its address: never started
        while child.poll() is None:
            try:
                reply = call(server, "GET", "/healthz")
                break
            except ConnectionRefusedError:
                time.sleep(0.05)  # the socket opens just after the line is printed
        assert child.poll() is None and reply.json() == {"status": "alive"}
        assert call(server, "GET", "/readyz").json() == {"status": "ready"}
    finally:
        child.terminate()
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
