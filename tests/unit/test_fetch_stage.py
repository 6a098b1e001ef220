"""FetchStage.process on a mixed batch, against a real local media server (no Kafka)."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

import consumers.fetch.stage as fetch_stage
from consumers.fetch.stage import FetchStage
from devstack.mediaserver import Canary, MediaServer, write_pixel_bomb
from devstack.samples import find_sample_photos
from media.decode import DecodedImage, decode_image
from media.decode_pool import DecodePool
from media.settings import FetchSettings
from mediavec.settings import Settings
from schemas.codec import decode_dead_letter, decode_frame, encode_request
from schemas.models import DeadLetter, MediaRequest
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch

PHOTOS = {path.name: path for path in find_sample_photos()[0]}
BUS = PHOTOS["bus.jpg"]
COFFEE = PHOTOS["coffee.png"]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[MediaServer]:
    shutil.copy(BUS, tmp_path / "bus.jpg")
    shutil.copy(COFFEE, tmp_path / "coffee.png")
    write_pixel_bomb(tmp_path / "bomb.png")
    with MediaServer(tmp_path) as srv:
        yield srv


@pytest.fixture(params=[0, 1], ids=["decode-threads", "decode-processes"])
def stage(request: pytest.FixtureRequest) -> Iterator[FetchStage]:
    fetch = FetchSettings(
        allow_cidrs=("127.0.0.1/32",),
        retries=1,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        decode_processes=request.param,
    )
    s = FetchStage(Settings(fetch=fetch))
    s.start()
    yield s
    s.close()


def record(value: bytes, offset: int) -> InputRecord:
    return InputRecord(topic="media.requests", partition=0, offset=offset, key=None, value=value)


def request(media_id: str, url: str, **fields: object) -> bytes:
    return encode_request(MediaRequest(media_id=media_id, url=url, **fields))  # type: ignore[arg-type]


def skipped(result: Result) -> DeadLetter:
    """The record of a media skipped as a duplicate: an ordinary output, alone, to the skipped topic."""
    assert isinstance(result, list) and [r.topic for r in result] == ["skipped"], result
    letter = decode_dead_letter(result[0].value)
    assert letter.stage == "fetch" and letter.error_class == "duplicate_media"
    return letter


def test_mixed_batch(server: MediaServer, stage: FetchStage) -> None:
    with Canary() as canary:
        values = [
            request(
                "bus",
                server.url("bus.jpg"),
                collection="street",
                metadata={"camera": "a"},
                options={"prompts": ["bus", "person"]},
                run_id="run-1",
                published_at=1700000000.5,
            ),
            request("missing", server.url("status/404/x.jpg")),
            b"{not json",
            request("coffee", server.url("flaky/1/coffee.png")),
            request("clip", server.url("bus.jpg"), kind="video", start_s=0.0, end_s=2.0),
            request("page", server.url("html/x.jpg")),
            request("cut", server.url("truncated/bus.jpg")),
            request("bomb", server.url("bomb.png")),
            request("sneaky", server.url("redirect?to=" + quote(canary.url("x.jpg"), safe=""))),
            request("ftp", "ftp://127.0.0.1/bus.jpg"),
            json.dumps({"schema_version": 1, "media_id": "no-url", "kind": "image"}).encode(),
        ]
        results = stage.process([record(v, i) for i, v in enumerate(values)])
        assert canary.hits == 0

    assert len(results) == len(values)
    expected_failures = {
        1: ("http_404", "missing"),
        2: ("invalid_request", ""),
        4: ("not_a_video", "clip"),  # a photo asked for as a video
        5: ("not_an_image", "page"),
        6: ("truncated_image", "cut"),
        7: ("pixel_bomb", "bomb"),
        8: ("ssrf_refused", "sneaky"),
        9: ("bad_scheme", "ftp"),
        10: ("invalid_request", ""),
    }
    for index, (error_class, media_id) in expected_failures.items():
        failure = results[index]
        assert isinstance(failure, Failure), index
        assert (failure.error_class, failure.media_id) == (error_class, media_id)
        assert failure.reason

    bus_all, coffee_all = results[0], results[3]
    assert isinstance(bus_all, list) and isinstance(coffee_all, list)
    assert sorted(r.topic for r in bus_all) == ["frames", "seen", "seen"]  # the dedup table's URL and content keys
    bus_out = [r for r in bus_all if r.topic == "frames"]
    coffee_out = [r for r in coffee_all if r.topic == "frames"]
    assert len(bus_out) == len(coffee_out) == 1
    assert all(isinstance(r, OutputRecord) and r.topic == "frames" for r in bus_out + coffee_out)
    assert (bus_out[0].key, coffee_out[0].key) == (b"bus", b"coffee")

    bus = decode_frame(bus_out[0].value)
    assert (bus.media_id, bus.frame_index, bus.timestamp_s, bus.frames_in_media) == ("bus", 0, 0.0, 1)
    assert (bus.width, bus.height) == (768, 1024)
    assert Image.open(io.BytesIO(bus.jpeg)).size == (768, 1024)
    assert bus.source_url == server.url("bus.jpg")
    assert (bus.collection, bus.metadata, bus.run_id, bus.published_at) == (
        "street",
        {"camera": "a"},
        "run-1",
        1700000000.5,
    )
    assert bus.options == {"prompts": ["bus", "person"]}

    coffee = decode_frame(coffee_out[0].value)
    assert (coffee.width, coffee.height) == (600, 400)
    assert coffee.collection == "default"
    assert server.hits("flaky/1/coffee.png") == 2

    assert stage.outcomes["ok"] == 2 and stage.outcomes["invalid_request"] == 2
    assert stage.bytes_downloaded >= BUS.stat().st_size + COFFEE.stat().st_size


def test_userinfo_stripped_from_frame_and_reason(server: MediaServer, stage: FetchStage) -> None:
    good = server.url("bus.jpg").replace("http://", "http://user:hunter2@")
    bad = server.url("status/410/x.jpg?sig=s3cr3t").replace("http://", "http://user:hunter2@")
    ok, failed = stage.process([record(request("a", good), 0), record(request("b", bad), 1)])
    assert isinstance(ok, list)
    assert "hunter2" not in decode_frame(ok[0].value).source_url
    assert isinstance(failed, Failure) and failed.error_class == "http_410"
    text = failed.reason + json.dumps(failed.details)
    assert "hunter2" not in text and "s3cr3t" not in text


def test_empty_batch(stage: FetchStage) -> None:
    assert stage.process([]) == []


def test_process_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        FetchStage(Settings()).process([])


def test_dead_event_loop_asks_for_a_batch_retry(server: MediaServer) -> None:
    stage = FetchStage(Settings(fetch=FetchSettings(allow_cidrs=("127.0.0.1/32",))))
    stage.start()
    try:
        runner, downloader = stage._runner, stage._downloader
        assert runner is not None and downloader is not None
        runner.run(downloader.close())
        runner.stop()  # the loop thread dies under the stage
        with pytest.raises(RetryBatch):
            stage.process([record(request("a", server.url("bus.jpg")), 0)])
    finally:
        stage.close()


def test_same_url_or_content_is_processed_once_unless_reprocess(server: MediaServer, stage: FetchStage) -> None:
    shutil.copy(server.root / "bus.jpg", server.root / "bus-copy.jpg")
    first = stage.process(
        [
            record(request("a", server.url("bus.jpg")), 0),
            record(request("b", server.url("bus.jpg")), 1),  # same URL, same batch
            record(request("c", server.url("bus-copy.jpg")), 2),  # same bytes, other URL
            record(request("d", server.url("bus.jpg"), collection="other"), 3),  # another collection
        ]
    )
    assert isinstance(first[0], list) and isinstance(first[3], list)
    for i, media, what in ((1, "b", "URL"), (2, "c", "content")):
        dup = skipped(first[i])
        assert (dup.media_id, dup.details["duplicate_of"], dup.source_offset) == (media, "a", i)
        assert f"the same {what} was already processed as media 'a'" in dup.reason and "reprocess=true" in dup.reason
        assert dup.original_value == request(media, server.url("bus.jpg" if i == 1 else "bus-copy.jpg"))
    assert stage.outcomes["duplicate_media"] == 2 and stage.outcomes["ok"] == 2
    hits = server.hits("bus.jpg")
    again = stage.process([record(request("e", server.url("bus.jpg")), 4)])
    assert skipped(again[0]).details["duplicate_of"] == "a"
    assert server.hits("bus.jpg") == hits, "a known URL must be skipped before it is downloaded"
    forced = stage.process([record(request("a", server.url("bus.jpg"), reprocess=True), 5)])
    assert isinstance(forced[0], list) and [r.key for r in forced[0] if r.topic == "frames"] == [b"a"]


def test_an_aborted_batch_takes_its_seen_writes_back(server: MediaServer, stage: FetchStage) -> None:
    batch = [record(request("a", server.url("bus.jpg")), 0)]
    assert isinstance(stage.process(batch)[0], list)
    stage.aborted()  # the transaction failed: the runner will hand the same batch again
    redo = stage.process(batch)[0]
    assert isinstance(redo, list) and [r.key for r in redo if r.topic == "frames"] == [b"a"]
    stage.committed()
    again = stage.process([record(request("b", server.url("bus.jpg")), 1)])[0]
    assert skipped(again).details["duplicate_of"] == "a"


def buggy_decoder(data: bytes, settings: FetchSettings) -> DecodedImage:
    """decode_image with a bug that PNGs reach."""
    if data.startswith(b"\x89PNG"):
        raise ZeroDivisionError("a bug")
    return decode_image(data, settings)


def test_a_decoder_bug_fails_its_own_request_only(
    server: MediaServer, stage: FetchStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding runs on the pool, chained to the download: what it raises is that request's dead letter."""
    if stage._decoders is None:
        monkeypatch.setattr(fetch_stage, "decode_image", buggy_decoder)
    else:  # a child process imports the decoder it is given: patching this process would not reach it
        stage._decoders.close()
        stage._decoders = DecodePool(stage.settings.fetch, 1, decoder=buggy_decoder)
    results = stage.process(
        [record(request("a", server.url("bus.jpg")), 0), record(request("b", server.url("coffee.png")), 1)]
    )
    assert isinstance(results[0], list) and [r.topic for r in results[0]] == ["frames", "seen", "seen"]
    failure = results[1]
    assert isinstance(failure, Failure) and failure.error_class == "fetch_internal_error"
    assert failure.reason == "unexpected ZeroDivisionError" and failure.media_id == "b"


def test_closing_with_decodes_queued_answers_every_submitted_request(
    server: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode the closing pool never started still ends its future (cancelled): no runner waits for ever."""
    entered, release = threading.Event(), threading.Event()
    real = fetch_stage.decode_image

    def slow(data: bytes, settings: FetchSettings) -> DecodedImage:
        entered.set()
        release.wait(10)
        return real(data, settings)

    monkeypatch.setattr(fetch_stage, "decode_image", slow)
    fetch = FetchSettings(allow_cidrs=("127.0.0.1/32",), decode_workers=1)
    stage = FetchStage(Settings(fetch=fetch))
    stage.start()
    pool = stage._executor
    assert pool is not None
    real_shutdown = pool.shutdown

    def shutdown(wait: bool = True, *, cancel_futures: bool = False) -> None:
        real_shutdown(wait=False, cancel_futures=cancel_futures)  # the queued decodes are cancelled here
        release.set()  # only then may the running one finish
        real_shutdown(wait=wait, cancel_futures=cancel_futures)

    monkeypatch.setattr(pool, "shutdown", shutdown)
    futures = [stage.submit(record(request(f"m{i}", server.url("bus.jpg"), reprocess=True), i)) for i in range(3)]
    wait_until(lambda: entered.is_set() and pool._work_queue.qsize() == 2)  # one decode runs, two wait
    closing = threading.Thread(target=stage.close)
    closing.start()
    closing.join(20)
    assert not closing.is_alive()
    # done() as the runner asks it (concurrent.futures.wait() does not count a plain cancel() as done)
    assert all(f.done() for f in futures), "a request the closing pool never decoded was left without an answer"
    outcomes = sorted("cancelled" if f.cancelled() else type(f.result()).__name__ for f in futures)
    assert outcomes == ["cancelled", "cancelled", "tuple"]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
