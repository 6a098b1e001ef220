"""Image decoding in child processes, so that one fetch worker can use every core, and so that an
image which kills its decoder kills a child, never the worker.

Decoding in threads shares the worker's GIL with its event loop, its transactions and its
seen table: on two cores one fetch worker left a fifth of the machine idle. A
:class:`DecodePool` runs :func:`media.decode.decode_image` in ``processes`` children (the
``forkserver`` start method: the worker has librdkafka's threads, which ``fork`` must not copy).
The bytes go to a child and the frame comes back pickled; a :class:`DecodeError` comes back as
its class and reason.

A child that dies (a decoder crash, the kernel's OOM killer) breaks the whole pool, and every image
in it fails with :class:`BrokenProcessPool`. Those images are not lost: a new pool takes the next
ones, and the ones caught in the break are decoded again one at a time, each alone in a
quarantine child. An image that kills its quarantine child too is the culprit: it fails with
``decoder_crashed``, and the rest go on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from media.decode import DecodedImage, DecodeError, decode_image
from media.settings import FetchSettings
from streams import metrics

logger = logging.getLogger(__name__)

Decoder = Callable[[bytes, FetchSettings], DecodedImage]
_Answer = DecodedImage | tuple[str, str]

_child_settings: FetchSettings | None = None
_child_decoder: Decoder = decode_image


def _child_start(settings: FetchSettings, decoder: Decoder) -> None:
    global _child_settings, _child_decoder
    _child_settings, _child_decoder = settings, decoder


def _child_decode(data: bytes) -> _Answer:
    if _child_settings is None:
        raise RuntimeError("decoder child was not started")
    try:
        return _child_decoder(data, _child_settings)
    except DecodeError as exc:  # its class and reason: the exception itself need not pickle
        return exc.error_class, exc.reason


class DecodePool:
    """Decode images in ``processes`` child processes; :meth:`submit` answers a future per image."""

    def __init__(self, settings: FetchSettings, processes: int, decoder: Decoder = decode_image) -> None:
        if processes < 1:
            raise ValueError("a decode pool needs at least one process")
        self._settings = settings
        self._processes = processes
        self._decoder = decoder
        self._lock = threading.Lock()
        self._closed = False
        self._pool = self._new_pool(processes)
        self._quarantine: concurrent.futures.ProcessPoolExecutor | None = None
        self._suspects: collections.deque[tuple[bytes, concurrent.futures.Future[DecodedImage]]] = collections.deque()
        self._examining = False
        self.crashes = 0  # pools broken by a dying child
        self.culprits = 0  # images that killed a quarantine child

    def _new_pool(self, processes: int) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_child_start,
            initargs=(self._settings, self._decoder),
        )

    def submit(self, data: bytes) -> concurrent.futures.Future[DecodedImage]:
        """A future of the frame, or of a :class:`DecodeError`; ``RuntimeError`` once closed."""
        done: concurrent.futures.Future[DecodedImage] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            pool = self._pool
            try:
                child = pool.submit(_child_decode, data)
            except BrokenProcessPool:  # broken before its images reported it: replace it now
                child = None
        if child is None:
            self._broken(pool)
            self._suspect(data, done)
            return done
        child.add_done_callback(lambda c: self._answered(c, data, done, pool))
        return done

    def _answered(
        self,
        child: concurrent.futures.Future[_Answer],
        data: bytes,
        done: concurrent.futures.Future[DecodedImage],
        pool: concurrent.futures.ProcessPoolExecutor,
    ) -> None:
        if child.cancelled():  # closed with it queued
            done.cancel()
            return
        exc = child.exception()
        if isinstance(exc, BrokenProcessPool):
            self._broken(pool)
            self._suspect(data, done)
            return
        _settle(done, child)

    def _broken(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Replace ``pool`` once, whichever of its images reports the break first."""
        with self._lock:
            if self._closed or pool is not self._pool:
                return
            self.crashes += 1
            self._pool = self._new_pool(self._processes)
        metrics.DECODER_DEATHS.inc()
        logger.warning("an image decoder process died; its images are decoded again one at a time")
        pool.shutdown(wait=False, cancel_futures=True)

    def _suspect(self, data: bytes, done: concurrent.futures.Future[DecodedImage]) -> None:
        with self._lock:
            if self._closed:
                done.cancel()
                return
            self._suspects.append((data, done))
        self._examine_next()

    def _examine_next(self) -> None:
        """Decode the next suspect alone in the quarantine child, unless one is being decoded."""
        with self._lock:
            if self._closed or self._examining or not self._suspects:
                return
            self._examining = True
            data, done = self._suspects.popleft()
            if self._quarantine is None:
                self._quarantine = self._new_pool(1)
            child = self._quarantine.submit(_child_decode, data)
        child.add_done_callback(lambda c: self._examined(c, done))

    def _examined(
        self, child: concurrent.futures.Future[_Answer], done: concurrent.futures.Future[DecodedImage]
    ) -> None:
        if child.cancelled():
            done.cancel()
        elif isinstance(child.exception(), BrokenProcessPool):
            with self._lock:
                broken, self._quarantine = self._quarantine, None
                self.culprits += 1
            metrics.DECODER_DEATHS.inc()
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            logger.warning("an image killed its decoder process twice; it goes to the DLQ as decoder_crashed")
            done.set_exception(DecodeError("decoder_crashed", "the image decoder process died decoding it, twice"))
        else:
            _settle(done, child)
        with self._lock:
            self._examining = False
        self._examine_next()

    def close(self) -> None:
        """Stop the children; images not yet decoded are cancelled."""
        with self._lock:
            self._closed = True
            pools = [self._pool, self._quarantine]
            suspects = list(self._suspects)
            self._suspects.clear()
        for _, done in suspects:
            done.cancel()
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _settle(done: concurrent.futures.Future[DecodedImage], child: concurrent.futures.Future[Any]) -> None:
    exc = child.exception()
    if exc is not None:
        done.set_exception(exc)
        return
    answer = child.result()
    if isinstance(answer, DecodedImage):
        done.set_result(answer)
    else:
        done.set_exception(DecodeError(*answer))
