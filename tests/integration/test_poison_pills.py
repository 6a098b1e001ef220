"""No record can stop a worker: a record that makes a stage raise is found and dead-lettered alone.

Regressions of what a stranger's producer did to wave 1: a request nested thousands of levels
deep made the request decoder raise ``RecursionError``; the pipelined runner took it for a fault
of the stage, redid the batch five times and exited, and every restart read the same event again.
Here each runner meets a stage that raises on one record (with no per-record cause it could
read): the runner isolates the record, dead-letters it with the exception text (``stage_fault``),
and the records around it, in its partition and others, go on. A store that is down, though,
still ends a sink worker, with nothing dead-lettered and nothing skipped.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from PIL import Image

from devstack.mediaserver import MediaServer
from mediavec import workers
from mediavec.settings import Settings
from schemas import MediaRequest, decode_dead_letter, decode_frame
from schemas.codec import encode_request
from streams import metrics
from streams.admin import ensure_topics
from streams.dlq import read_entries, redrive
from streams.kafka import producer
from streams.pipelined import PipelinedRunner
from streams.runner import TransactionalRunner
from streams.sink_runner import StoreSinkRunner
from streams.stage import Failure, InputRecord, OutputRecord, Result, TopicKey
from streams.topics import topics
from tests import hostile
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration

POISON = b'{"poison": true}'


def _publish(settings: Settings, values: list[tuple[bytes, bytes]], topic: str = "requests") -> None:
    p = producer(settings)
    for key, value in values:
        p.produce(topics(settings).by_name(topic).name, key=key, value=value)
    assert p.flush(30) == 0


def _letters(settings: Settings) -> list[Any]:
    return [decode_dead_letter(m.value) for m in read_topic(settings, topics(settings).dlq.name)]


def _outputs(settings: Settings) -> list[bytes]:
    return [m.value for m in read_topic(settings, topics(settings).frames.name)]


def _events(n: int, poison_at: set[int]) -> list[tuple[bytes, bytes]]:
    """n events on two keys (two partitions at most); the ones at ``poison_at`` are poison."""
    return [(f"k{i % 2}".encode(), POISON if i in poison_at else f"v{i}".encode()) for i in range(n)]


def test_a_request_nested_thousands_deep_is_dead_lettered_and_the_partition_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "media"
    root.mkdir()
    names = [f"ok{i}" for i in range(4)]
    for i, name in enumerate(names):
        (root / f"{name}.jpg").write_bytes(hostile.jpeg(i))
    ensure_topics(settings)
    with MediaServer(root) as server:
        good = [
            (b"same-key", encode_request(MediaRequest(media_id=n, url=server.url(f"{n}.jpg"), collection="c")))
            for n in names
        ]
        deep = b'{"schema_version": 1, "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        _publish(settings, [good[0], (b"same-key", deep), *good[1:]])  # one key: one partition, in order
        with ThreadWorker(workers.build("fetch", settings, instance="deep")) as worker:
            wait_for(lambda: len(_outputs(settings)) == len(names), 90, "the requests behind the deep one")
            wait_for(lambda: len(_letters(settings)) == 1, 30, "the deep request's dead letter")
            assert worker.thread.is_alive()
    assert sorted(decode_frame(v).media_id for v in _outputs(settings)) == names
    (letter,) = _letters(settings)
    assert letter.error_class == "invalid_request" and "not UTF-8 JSON" in letter.reason
    assert letter.original_value == deep and letter.source_offset == 1


class RaisesOnPoison:
    """requests -> frames, one output per event; a batch holding a poison event raises RecursionError."""

    name = "poisoned"
    input_topic: TopicKey = "requests"

    def __init__(self) -> None:
        self.calls = 0

    def start(self) -> None: ...

    def close(self) -> None: ...

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        self.calls += 1
        if any(r.value == POISON for r in batch):
            raise RecursionError("maximum recursion depth exceeded while decoding")
        return [[OutputRecord("frames", r.key or b"", r.value)] for r in batch]

    # the pipelined contract: the future of a poison event raises
    def submit(self, record: InputRecord) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(self.process([record])[0])
        except RecursionError as exc:
            future.set_exception(exc)
        return future

    def finish(self, done: Sequence[tuple[InputRecord, Any]]) -> list[Result]:
        return [result for _, result in done]


def _expect_isolated(settings: Settings, n: int, poison: set[int]) -> None:
    outs = _outputs(settings)
    assert sorted(outs) == sorted(f"v{i}".encode() for i in range(n) if i not in poison), "every good event, once"
    letters = _letters(settings)
    assert len(letters) == len(poison)
    for letter in letters:
        assert letter.error_class == "stage_fault" and letter.original_value == POISON
        assert "RecursionError: maximum recursion depth" in letter.reason
        assert letter.details["exception"] == "RecursionError"


def test_the_batch_runner_isolates_a_record_that_makes_the_stage_raise(settings: Settings) -> None:
    ensure_topics(settings)
    poison = {3, 17}
    _publish(settings, _events(30, poison))
    runner = TransactionalRunner(settings, RaisesOnPoison(), batch_size=8, batch_deadline_s=0.2, instance="iso")
    with ThreadWorker(runner) as worker:
        wait_for(lambda: len(_outputs(settings)) == 28, 90, "the good events around the poison")
        wait_for(lambda: len(_letters(settings)) == 2, 30, "two dead letters")
        assert worker.thread.is_alive()
    _expect_isolated(settings, 30, poison)


def test_the_pipelined_runner_retries_then_dead_letters_a_record_whose_work_raises(settings: Settings) -> None:
    ensure_topics(settings)
    poison = {0, 11}
    _publish(settings, _events(24, poison))
    stage = RaisesOnPoison()
    runner = PipelinedRunner(settings, stage, max_in_flight=4, commit_size=4, commit_interval_s=0.2, instance="pl")
    with ThreadWorker(runner) as worker:
        wait_for(lambda: len(_outputs(settings)) == 22, 90, "the good events around the poison")
        wait_for(lambda: len(_letters(settings)) == 2, 30, "two dead letters")
        assert worker.thread.is_alive()
    _expect_isolated(settings, 24, poison)
    assert stage.calls == 24 + 2, "each poison event was tried twice, every other event once"


class DictSink:
    """A store in a dict that refuses to write a poison record (or anything, while ``down``)."""

    name = "sink-test"
    input_topic: TopicKey = "requests"

    def __init__(self) -> None:
        self.rows: dict[bytes, int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.down = False

    def start(self) -> None: ...

    def close(self) -> None: ...

    def split(self, records: Sequence[InputRecord]) -> tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]:
        return list(records), []

    def write(self, records: Sequence[InputRecord], offsets: dict[tuple[str, int], int]) -> None:
        if self.down:
            raise ConnectionError("the store is down")
        if any(r.value == POISON for r in records):
            raise ValueError(f"cannot store {POISON!r}")
        for r in records:
            self.rows[r.value] = self.rows.get(r.value, 0) + 1
        self.offsets.update(offsets)

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self.offsets)


def test_the_sink_runner_dead_letters_a_record_the_store_refuses_and_writes_the_rest(settings: Settings) -> None:
    ensure_topics(settings)
    poison = {5}
    _publish(settings, _events(20, poison))
    sink = DictSink()
    with ThreadWorker(StoreSinkRunner(settings, sink, batch_size=8, batch_deadline_s=0.2, instance="s")):
        wait_for(lambda: len(sink.rows) == 19 and len(_letters(settings)) == 1, 90, "19 rows and one dead letter")
    assert sink.rows == {f"v{i}".encode(): 1 for i in range(20) if i not in poison}
    (letter,) = _letters(settings)
    assert letter.error_class == "stage_fault" and "ValueError: cannot store" in letter.reason
    ends = {p: o for (_, p), o in sink.offsets.items()}
    assert sum(ends.values()) == 20, "the recorded offsets are past every record, the poison one included"


def test_a_store_that_is_down_ends_the_sink_worker_with_nothing_dead_lettered(settings: Settings) -> None:
    ensure_topics(settings)
    _publish(settings, _events(6, {2}))
    sink = DictSink()
    sink.down = True
    worker = ThreadWorker(StoreSinkRunner(settings, sink, batch_size=8, batch_deadline_s=0.2, instance="down"))
    with pytest.raises(ConnectionError, match="the store is down"), worker:
        worker.thread.join(120)
    assert not sink.rows and not sink.offsets and not _letters(settings)


def test_a_value_near_the_message_limit_is_dead_lettered_cut_with_its_size_and_hash(settings: Settings) -> None:
    ensure_topics(settings)
    big = json.dumps({"x": "y" * hostile.NEAR_LIMIT}).encode()
    _publish(settings, [(b"big", big), (b"k", b"v1")])
    runner = TransactionalRunner(settings, RefusesBig(), batch_size=8, batch_deadline_s=0.2, instance="big")
    with ThreadWorker(runner):
        wait_for(lambda: len(_letters(settings)) == 1 and len(_outputs(settings)) == 1, 60, "the letter and v1")
    (letter,) = _letters(settings)
    assert len(letter.original_value) == 1024 * 1024 and big.startswith(letter.original_value)
    assert letter.details["original_truncated"] == "true" and letter.details["original_bytes"] == str(len(big))
    assert redrive(settings, list(read_entries(settings))) == 0, "a cut original is not republished"


class RefusesBig(RaisesOnPoison):
    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        return [
            Failure("too_big", "over the limit") if len(r.value) > 1000 else [OutputRecord("frames", b"k", r.value)]
            for r in batch
        ]


def _gradient_png(seed: int, width: int = 1400, height: int = 1000) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = (x * [1.0, 0.5, 0.2] + y * [0.1, 0.4, 0.8] + seed * 7) % 256
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _kill_decoder_children() -> list[int]:
    """SIGKILL the image decoder processes (children of this process's multiprocessing forkserver),
    as the kernel's OOM killer would."""
    killed = []
    for child in psutil.Process().children():
        if any("forkserver" in part for part in child.cmdline()):
            for decoder in child.children():
                decoder.kill()
                killed.append(decoder.pid)
    return killed


def test_a_decoder_process_that_dies_loses_no_image(settings: Settings, tmp_path: Path) -> None:
    """Images decode in a child process (fetch.decode_processes); killed, it takes none with it."""
    fetch = settings.fetch.model_copy(update={"decode_processes": 1})
    settings = settings.model_copy(update={"fetch": fetch})
    root = tmp_path / "media"
    root.mkdir()
    names = [f"img{i:02d}" for i in range(24)]
    for i, name in enumerate(names):  # over the 1024 px bound: decoded, resized and encoded again
        (root / f"{name}.png").write_bytes(_gradient_png(i))
    ensure_topics(settings)
    deaths = metrics.DECODER_DEATHS._value.get()
    with MediaServer(root) as server:
        requests = [
            (n.encode(), encode_request(MediaRequest(media_id=n, url=server.url(f"{n}.png"), collection="c")))
            for n in names
        ]
        _publish(settings, requests[:12])
        with ThreadWorker(workers.build("fetch", settings, instance="decoders")) as worker:
            wait_for(lambda: len(_outputs(settings)) >= 1, 90, "the first frame")
            assert _kill_decoder_children(), "no decoder process to kill"
            _publish(settings, requests[12:])
            wait_for(lambda: len(_outputs(settings)) >= len(names), 120, "every image's frame")
            assert worker.thread.is_alive()
    assert sorted(decode_frame(v).media_id for v in _outputs(settings)) == names  # each once
    assert _letters(settings) == []
    assert metrics.DECODER_DEATHS._value.get() > deaths
