"""The search page in a real headless browser: Debian's chromium, driven by playwright.

The service is the real one (:class:`ServiceServer`, open_clip query models on random weights)
over the real embedded Qdrant store, which a real :class:`QdrantSink` holds open and keeps
writing to while the page is up, as in a running pipeline: the page's searches and counters read
through the sink. The rows are the photos of test_search_spaces (each photo's scene, two object
crops with their boxes, a text row and a 2x2 grid), so the top hit of each query is known.

The browser types a query and presses Enter, pages on, drops an image, picks a file, sees the
boxes of object hits, watches the counters follow the ingest, and is told an API error in words.
A screenshot of the object hits goes to ``$MEDIAVEC_TEST_ARTIFACTS/search-page.png`` (default
``tests/artifacts/``). A missing chromium or playwright fails the test: nothing is skipped.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from pydantic import SecretStr

from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_qdrant.sink import QdrantSink
from devstack import postgres
from devstack.settings import DevSettings
from devstack.stack import StackInfo
from mediavec.search import QueryModels
from mediavec.service.app import ServiceServer
from mediavec.service.page import CSP
from mediavec.service.settings import ServeSettings
from mediavec.settings import Settings
from models.images import thumbnail_jpeg
from schemas import VectorBatch, encode_vector_batch
from stores.settings import PostgresSettings
from streams.stage import InputRecord
from tests.unit.test_search_spaces import CONCEPT, PHOTOS, RANDOM, SKIMAGE_DATA, TEXTS, _boxes, _frame_batches
from tests.unit.test_service import call, post_json

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "shop"  # the collection _frame_batches writes
WAIT_MS = 120_000  # a search embeds on CPU, on two shared cores
TOPIC = "t.vectors"
PER_PHOTO = 8  # scene, two objects, one text, four grid cells
FRAME = (224, 160)
THUMBNAIL_SIDE = 128


@dataclass
class Live:
    """The stores under ingest: the sinks hold them open; ``write`` adds one photo's rows and thumbnail."""

    settings: Settings
    models: QueryModels
    files: dict[str, Path]
    pending: list[list[VectorBatch]]  # rows of photos not stored yet, one list per photo
    sinks: tuple[QdrantSink, PostgresSink]
    offset: int = 0
    stored: int = 0

    def write(self) -> None:
        batches = self.pending.pop(0)
        now_ms = int(time.time() * 1000)
        records = [
            InputRecord(TOPIC, 0, self.offset + i, b"k", encode_vector_batch(b), timestamp_ms=now_ms)
            for i, b in enumerate(batches)
        ]
        self.offset += len(records)
        for sink in self.sinks:
            good, bad = sink.split(records)
            assert len(good) == len(batches) and not bad
            sink.write(good, {(TOPIC, 0): self.offset})
        self.stored += sum(len(b.rows) for b in batches)


def framed(batches: list[VectorBatch], image: Image.Image) -> list[VectorBatch]:
    """The frame's batches as the embed stage sends them: each with the frame's size, the first with its thumbnail."""
    w, h = image.size
    jpeg = thumbnail_jpeg(image, THUMBNAIL_SIDE, 70)
    return [
        dataclasses.replace(b, frame_width=w, frame_height=h, thumbnail=jpeg if i == 0 else None)
        for i, b in enumerate(batches)
    ]


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.fail("Debian's chromium is not installed (scripts/setup.sh installs it)", pytrace=False)
    return found


def artifacts() -> Path:
    folder = Path(os.environ.get("MEDIAVEC_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def database(stack: StackInfo, stack_settings: DevSettings) -> Iterator[str]:
    """A fresh PostgreSQL database of the test stack for the module (thumbnails); its DSN."""
    name = f"t_page_{uuid.uuid4().hex[:8]}"
    postgres.ensure_database(stack_settings, name)
    yield f"host=127.0.0.1 port={stack_settings.devstack.postgres_port} dbname={name} user={postgres.SUPERUSER}"
    postgres.drop_database(stack_settings, name)


@pytest.fixture(scope="module")
def live(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("page")
    settings = Settings(
        data_dir=root, model=RANDOM, concept=CONCEPT, postgres=PostgresSettings(dsn=SecretStr(database))
    )
    models = QueryModels(settings)
    vision = models.clip("vision", models.model_id("vision"))
    concept = models.clip("concept", models.model_id("concept"))
    files: dict[str, Path] = {}
    pending = []
    for i, (name, text) in enumerate(zip(PHOTOS, TEXTS, strict=True)):
        with Image.open(SKIMAGE_DATA / name) as im:
            image = im.convert("RGB").resize(FRAME)
        files[f"p{i}"] = root / f"p{i}.png"  # PNG: the query reads back the same pixels
        image.save(files[f"p{i}"])
        for part, box in _boxes(image).items():
            files[f"p{i}-{part}"] = root / f"p{i}-{part}.png"
            image.crop(box).save(files[f"p{i}-{part}"])
        pending.append(framed(_frame_batches(f"p{i}", image, text, vision, concept), image))
    sinks = (QdrantSink(settings), PostgresSink(settings))
    for sink in sinks:
        sink.start()
    state = Live(settings, models, files, pending, sinks)
    try:
        for _ in range(len(PHOTOS) - 1):  # the last photo arrives while the page watches
            state.write()
        yield state
    finally:
        for sink in sinks:
            sink.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True)
        yield b
        b.close()


class Watched:
    """A page whose console errors and uncaught exceptions are kept."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(WAIT_MS)
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        response = self.page.goto(url)
        assert response is not None and response.status == 200, "the page did not load"

    def _console(self, msg: ConsoleMessage) -> None:
        # An HTTP error the page asked for (a 404 of an unknown collection) is logged by chromium
        # as "Failed to load resource"; the page shows those itself. Anything else is a fault.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource: the server responded"):
            self.problems.append(msg.text)

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def cards(self) -> int:
        return self.page.locator("#results .card").count()

    def search(self, query: str, space: str, collection: str = COLLECTION) -> None:
        self.page.fill("#collection", collection)
        self.page.select_option("#space", space)
        self.page.fill("#query", query)
        self.page.press("#query", "Enter")
        self.settled()

    def settled(self) -> None:
        self.page.wait_for_function(
            "() => !document.querySelector('#results').hasAttribute('aria-busy')"
            " && !document.querySelector('#status').textContent.startsWith('Searching')"
        )

    def drop(self, data: bytes, name: str) -> None:
        """A real drop event on the drop zone, its DataTransfer holding the file."""
        transfer = self.page.evaluate_handle(
            """([b64, name]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], name, { type: "image/png" }));
                return dt;
            }""",
            [base64.b64encode(data).decode(), name],
        )
        self.page.dispatch_event("#drop", "dragenter", {"dataTransfer": transfer})
        self.page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
        self.settled()

    def top(self, selector: str) -> str:
        return self.page.locator(f"#results .card >> nth=0 >> {selector}").inner_text()


@pytest.fixture(scope="module")
def server(live: Live) -> Iterator[ServiceServer]:
    with ServiceServer(live.settings, live.models) as s:
        yield s


def url(server: ServiceServer) -> str:
    return f"http://{server.host}:{server.port}/"


def test_the_page_and_its_files_come_with_a_strict_policy(server: ServiceServer) -> None:
    for path, kind in (("/", "text/html"), ("/page/app.js", "text/javascript"), ("/page/style.css", "text/css")):
        r = call(server, "GET", path)
        assert r.status == 200 and r.headers.get_content_type() == kind, (path, r.status)
        assert r.headers["Content-Security-Policy"] == CSP and r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'; img-src 'self' data: blob:" in CSP
    for path in ("/page/page.py", "/page/..%2Fpage.py", "/page/", "/page/index.htm"):
        r = call(server, "GET", path)
        assert r.status == 404 and "error" in r.json(), path
    for name in ("/", "/page/app.js", "/page/style.css"):  # nothing from elsewhere: the page works offline
        assert b"://" not in call(server, "GET", name).body, name


def test_the_counters_follow_the_ingest(server: ServiceServer, browser: Browser, live: Live) -> None:
    w = Watched(browser, url(server))
    try:
        w.page.fill("#collection", COLLECTION)
        w.page.dispatch_event("#collection", "change")
        _counted(w, live.stored)
        live.write()  # ingest goes on; the next poll sees it
        assert live.stored == len(PHOTOS) * PER_PHOTO
        w.page.wait_for_function(
            "(n) => document.querySelector('#counter-points').textContent === String(n)"
            " && parseFloat(document.querySelector('#counter-rate').textContent) > 0",
            arg=live.stored,
        )
        assert w.page.locator("#live-dot.on").count() == 1
        assert w.text("#counter-collection") == COLLECTION
        options = w.page.eval_on_selector_all("#collections option", "els => els.map(e => e.value)")
        assert COLLECTION in options  # the picker lists what is stored
        assert not w.problems, w.problems
    finally:
        w.page.close()


def _counted(w: Watched, points: int) -> None:
    w.page.wait_for_function("(n) => document.querySelector('#counter-points').textContent === String(n)", arg=points)


def test_a_typed_query_finds_its_text_row_and_pages_on(server: ServiceServer, browser: Browser, live: Live) -> None:
    w = Watched(browser, url(server))
    try:
        w.search(TEXTS[3], "text")
        assert w.cards() == live.stored // PER_PHOTO  # one text row per photo stored
        assert w.top(".label") == TEXTS[3] and float(w.top(".score")) >= 0.99
        assert re.fullmatch(r"-?\d\.\d{3}", w.top(".score"))
        assert w.top(".media") == "p3" and w.top(".time") == "0:01.5"  # a frame 1.5 s into its media
        href = w.page.locator("#results .card >> nth=0 >> a.source").get_attribute("href")
        assert href == "http://127.0.0.1/p3.png#t=1.5"

        w.search("a photo", "all")  # every space that fits a text: more than one page of hits
        assert w.cards() == 24 and w.page.is_enabled("#next") and not w.page.is_enabled("#prev")
        first = w.top(".media") + w.top(".score")
        w.page.click("#next")
        w.settled()
        assert 0 < w.cards() <= 24 and w.page.is_enabled("#prev") and w.text("#page-info") == "page 2"
        w.page.click("#prev")
        w.settled()
        assert w.text("#page-info") == "page 1" and w.top(".media") + w.top(".score") == first
        assert w.page.is_hidden("#error") and not w.problems, w.problems
    finally:
        w.page.close()


def test_a_dropped_image_finds_its_object_with_its_box_drawn(
    server: ServiceServer, browser: Browser, live: Live
) -> None:
    w = Watched(browser, url(server))
    try:
        w.page.fill("#collection", COLLECTION)
        w.page.set_input_files("#file", str(live.files["p1"]))  # the file picker: a whole photo
        w.settled()
        assert w.cards() > 0 and w.top(".media") == "p1" and float(w.top(".score")) >= 0.99

        w.page.select_option("#space", "object")
        crop = live.files["p2-object-1"].read_bytes()
        w.drop(crop, "crop.png")
        assert w.cards() > 0 and w.top(".media") == "p2" and w.top(".label") == "thing"
        assert w.top(".chip") == "object" and float(w.top(".score")) >= 0.99
        _assert_thumbnails_shown(w, server, crop)
        _assert_boxes_drawn(w, "object-1")  # over the thumbnails: p2's object 1, the bottom right quarter
        assert w.page.is_hidden("#error") and not w.problems, w.problems
        w.page.screenshot(path=str(artifacts() / "search-page.png"), full_page=True)
    finally:
        w.page.close()


def _assert_boxes_drawn(w: Watched, top: str | None = "object-1") -> None:
    """Every card of an object hit has its box drawn inside its frame; where the frame's size is
    known (``top``: the box of the top hit), the top one where it is in the frame."""
    boxes = w.page.eval_on_selector_all(
        "#results .card",
        """cards => cards.map(c => {
            const box = c.querySelector('.box');
            if (!box) return null;
            const f = c.querySelector('.frame').getBoundingClientRect(), b = box.getBoundingClientRect();
            return [(b.left - f.left) / f.width, (b.top - f.top) / f.height,
                    (b.right - f.left) / f.width, (b.bottom - f.top) / f.height];
        })""",
    )
    assert boxes and all(b is not None and -0.01 <= b[0] < b[2] <= 1.01 and -0.01 <= b[1] < b[3] <= 1.01 for b in boxes)
    if top is None:
        return
    w_, h_ = FRAME
    x0, y0, x1, y1 = _boxes(Image.new("RGB", FRAME))[top]
    assert boxes[0] == pytest.approx([x0 / w_, y0 / h_, x1 / w_, y1 / h_], abs=0.02), boxes[0]


def _assert_thumbnails_shown(w: Watched, server: ServiceServer, image: bytes) -> None:
    """Each card shows, loaded, the thumbnail the API links its hit to (every stored frame has one)."""
    path = f"/v1/search/image?collection={COLLECTION}&space=object&limit=24"
    hits = call(server, "POST", path, image, {"Content-Type": "image/png"}).json()["hits"]
    assert hits and all(h["thumbnail_url"] for h in hits)
    w.page.wait_for_function(
        "(n) => [...document.querySelectorAll('#results .card img.thumbnail')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === n",
        arg=len(hits),
    )
    assert w.cards() == len(hits)
    sizes = w.page.eval_on_selector_all(
        "#results img.thumbnail",
        "els => els.map(i => [i.naturalWidth, i.naturalHeight])",
    )
    side = THUMBNAIL_SIDE
    assert all(s == [side, round(FRAME[1] * side / FRAME[0])] for s in sizes), sizes


def test_without_thumbnails_the_boxes_are_drawn_on_placeholders(live: Live, browser: Browser) -> None:
    settings = live.settings.model_copy(update={"serve": ServeSettings(thumbnails=False)})
    with ServiceServer(settings, live.models) as bare:
        w = Watched(browser, url(bare))
        try:
            w.page.fill("#collection", COLLECTION)
            w.page.select_option("#space", "object")
            w.drop(live.files["p0-object-0"].read_bytes(), "crop.png")
            assert w.cards() > 0 and w.top(".media") == "p0" and w.top(".label") == "person"
            assert w.page.locator("#results img").count() == 0
            assert w.page.locator("#results .frame.placeholder").count() == w.cards()
            _assert_boxes_drawn(w, None)
            assert not w.problems, w.problems
            w.page.screenshot(path=str(artifacts() / "search-page-no-thumbnails.png"))
        finally:
            w.page.close()


def test_an_api_error_is_told_on_the_page(server: ServiceServer, browser: Browser) -> None:
    told = post_json(server, "/v1/search", {"text": "a cat", "collection": "nosuch"})
    assert told.status == 404
    w = Watched(browser, url(server))
    try:
        w.search("a cat", "scene", collection="nosuch")
        assert w.page.is_visible("#error") and w.text("#error") == f"Error: {told.json()['error']}"
        assert w.cards() == 0 and w.page.locator("header").is_visible()
        assert not w.problems, w.problems
    finally:
        w.page.close()


def test_more_like_this_searches_by_the_hit(server: ServiceServer, browser: Browser, live: Live) -> None:
    w = Watched(browser, url(server))
    try:
        w.search(TEXTS[0], "scene")
        # one scene row per photo; a CI run once saw none here: say what the page said
        seen = f"status {w.text('#status')!r}, error {w.text('#error')!r}, {w.problems}"
        assert w.cards() == live.stored // PER_PHOTO, seen
        source = w.top(".media")
        w.page.locator("#results .card >> nth=0 >> button.similar").click()
        w.settled()
        assert w.text("#status").startswith(f"more like {source}:") and w.page.is_hidden("#error")
        media = w.page.eval_on_selector_all("#results .card .media", "els => els.map(e => e.textContent)")
        assert len(media) == live.stored // PER_PHOTO - 1 and source not in media  # the others, not itself
        assert w.page.input_value("#space") == "scene" and not w.problems, w.problems
    finally:
        w.page.close()


def test_the_api_key_is_asked_for_kept_and_sent(live: Live, browser: Browser) -> None:
    key = "page-k3y-" + base64.b32encode(os.urandom(10)).decode().lower()
    settings = live.settings.model_copy(update={"serve": ServeSettings(api_key=SecretStr(key))})
    with ServiceServer(settings, live.models) as guarded:
        w = Watched(browser, url(guarded))
        try:
            w.search(TEXTS[1], "text")
            assert w.text("#error").startswith("Error: this service needs an API key") and w.cards() == 0
            w.page.fill("#api-key", key)
            w.page.dispatch_event("#api-key", "change")
            w.search(TEXTS[1], "text")
            assert w.page.is_hidden("#error") and w.top(".label") == TEXTS[1]
            w.page.wait_for_function(  # the thumbnails too: fetched with the key, shown as blob: URLs
                "() => [...document.querySelectorAll('#results .card')].every(c =>"
                " c.querySelector('img.thumbnail[src^=\"blob:\"]')?.naturalWidth > 0)"
            )
            w.page.reload()
            assert w.page.input_value("#api-key") == key  # kept in localStorage
            assert not w.problems, w.problems
        finally:
            w.page.close()
