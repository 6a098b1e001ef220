"""Decoding in child processes (media.decode_pool): the same frames as decoding in a thread, the
same refusals, and an image that kills its decoder fails alone while the rest are decoded."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.samples import find_sample_photos
from media.decode import DecodedImage, DecodeError, decode_image
from media.decode_pool import DecodePool
from media.settings import FetchSettings
from streams import metrics

PHOTOS = sorted(find_sample_photos()[0])[:6]
SETTINGS = FetchSettings(max_side=256)
CRASH = b"CRASH"


def crashing_decoder(data: bytes, settings: FetchSettings) -> DecodedImage:
    """decode_image, but bytes that start with CRASH kill the process, as a decoder bug would."""
    if data.startswith(CRASH):
        os._exit(70)
    return decode_image(data, settings)


def slow_decoder(data: bytes, settings: FetchSettings) -> DecodedImage:
    time.sleep(0.5)
    return decode_image(data, settings)


@pytest.fixture
def photos() -> list[bytes]:
    assert len(PHOTOS) == 6
    return [path.read_bytes() for path in PHOTOS]


def test_children_make_the_frames_a_thread_makes(photos: list[bytes]) -> None:
    pool = DecodePool(SETTINGS, 2)
    try:
        got = [f.result(60) for f in [pool.submit(data) for data in photos]]
    finally:
        pool.close()
    assert got == [decode_image(data, SETTINGS) for data in photos]


def test_a_refusal_comes_back_with_its_class_and_reason() -> None:
    pool = DecodePool(SETTINGS, 1)
    try:
        with pytest.raises(DecodeError) as caught:
            pool.submit(b"plain text, not an image").result(60)
        empty = pool.submit(b"")
        with pytest.raises(DecodeError, match="empty_body"):
            empty.result(60)
    finally:
        pool.close()
    assert caught.value.error_class == "not_an_image"
    assert "not a supported image" in caught.value.reason


def test_an_image_that_kills_its_decoder_fails_alone(photos: list[bytes]) -> None:
    deaths = metrics.DECODER_DEATHS._value.get()
    pool = DecodePool(SETTINGS, 2, decoder=crashing_decoder)
    try:
        batch = [*photos[:3], CRASH + b" a poison pill", *photos[3:]]
        futures = [pool.submit(data) for data in batch]
        concurrent.futures.wait(futures, timeout=120)
        assert all(f.done() for f in futures)
        with pytest.raises(DecodeError) as caught:
            futures[3].result()
        good = [f.result() for i, f in enumerate(futures) if i != 3]
        assert good == [decode_image(data, SETTINGS) for data in photos]
        assert caught.value.error_class == "decoder_crashed"
        assert pool.crashes >= 1 and pool.culprits == 1
        assert metrics.DECODER_DEATHS._value.get() >= deaths + 2  # the pool it broke, then its quarantine child
        assert pool.submit(photos[0]).result(60) == decode_image(photos[0], SETTINGS)  # a new pool goes on
    finally:
        pool.close()


def test_two_poison_pills_are_each_refused_and_nothing_else(photos: list[bytes]) -> None:
    pool = DecodePool(SETTINGS, 2, decoder=crashing_decoder)
    try:
        batch = [CRASH + b"1", *photos[:2], CRASH + b"2", *photos[2:4]]
        futures = [pool.submit(data) for data in batch]
        concurrent.futures.wait(futures, timeout=120)
        classes = []
        for f in futures:
            try:
                f.result(0)
                classes.append("ok")
            except DecodeError as exc:
                classes.append(exc.error_class)
    finally:
        pool.close()
    assert classes == ["decoder_crashed", "ok", "ok", "decoder_crashed", "ok", "ok"]
    assert pool.culprits == 2


def test_closing_answers_every_image(photos: list[bytes]) -> None:
    pool = DecodePool(SETTINGS, 1, decoder=slow_decoder)
    futures = [pool.submit(data) for data in photos]
    time.sleep(0.2)
    pool.close()
    assert all(f.done() for f in futures)  # decoded, or cancelled: none waits for ever
    assert any(f.cancelled() for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(photos[0])


def test_a_pool_needs_a_process() -> None:
    with pytest.raises(ValueError):
        DecodePool(SETTINGS, 0)


@pytest.mark.parametrize(
    "field, value", [("decode_workers", 0), ("decode_processes", -1), ("concurrency", 0), ("jpeg_quality", 101)]
)
def test_settings_refuse_what_no_worker_could_run(field: str, value: int) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        FetchSettings(**{field: value})


@st.composite
def hostile_images(draw: st.DrawFn) -> bytes:
    """Bytes a stranger's URL may serve: random, or a real photo cut, flipped or spliced."""
    photo = draw(st.sampled_from(PHOTOS)).read_bytes()
    kind = draw(st.sampled_from(["random", "cut", "flipped", "spliced"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "cut":
        return photo[: draw(st.integers(0, len(photo) - 1))]
    data = bytearray(photo)
    for _ in range(draw(st.integers(1, 16))):
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flipped":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[DecodePool]:
    pool = DecodePool(SETTINGS, 2)
    yield pool
    pool.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hostile_images())
def test_hostile_bytes_become_a_frame_or_a_refusal_as_in_a_thread(shared_pool: DecodePool, data: bytes) -> None:
    """Whatever the bytes, the child answers what decode_image in this process answers."""
    try:
        expected: DecodedImage | str = decode_image(data, SETTINGS)
    except DecodeError as exc:
        expected = exc.error_class
    try:
        got: DecodedImage | str = shared_pool.submit(data).result(60)
    except DecodeError as exc:
        got = exc.error_class
    assert got == expected
    assert shared_pool.crashes == 0
