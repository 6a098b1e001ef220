"""One bounded queue per model call, pooling work items across frames into full batches.

Each :class:`ModelQueue` owns a worker thread and one model function ``fn(items) -> outputs``.
Callers :meth:`~ModelQueue.submit` single items (a frame, a crop, a patch, a string) and get a
:class:`~concurrent.futures.Future`; the worker takes items until the batch is full, or until
``deadline_s`` has passed since the first one, or until a caller says :meth:`~ModelQueue.flush`
(nothing more is coming for now). So frames of busy and quiet footage alike fill the same
batches: a quiet frame adds one crop less, the next frame's items take its place.

The queue is bounded (``depth_batches`` full batches): a producer faster than the model blocks
in ``submit`` rather than growing memory. A batch that raises is retried item by item, so one
poison input fails alone and its neighbours still get their outputs; when every item fails on
its own, the fault is the model's (out of memory, a lost device) and all of them carry it. A model
may also answer an exception in one item's place (a remote provider refusing that input): that
item fails alone, the others keep their outputs. An exception of a ``fatal`` type (the remote
provider is down) fails the whole batch at once, without the item-by-item retry.

The model runs in the worker thread only, so a model is never called from two threads at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

MODEL_BATCH = Histogram(
    "mediavec_model_batch_size", "Items per model call", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
MODEL_SECONDS = Histogram("mediavec_model_seconds", "Model time per batch", ["model"])
MODEL_FILL = Histogram("mediavec_model_fill_seconds", "Time from a batch's first item to its call", ["model"])
QUEUE_DEPTH = Gauge("mediavec_model_queue_depth", "Items waiting for a model", ["model"])
MODEL_ITEM_ERRORS = Counter("mediavec_model_item_errors_total", "Items a model failed on alone", ["model"])


class _Flush:
    """Marker: run what is pending now."""


_FLUSH = _Flush()


@dataclass
class _Item(Generic[In, Out]):
    value: In
    future: Future[Out]


class ModelQueue(Generic[In, Out]):
    """A bounded queue and a worker thread calling ``fn`` on batches of up to ``batch_size`` items."""

    def __init__(
        self,
        name: str,
        fn: Callable[[list[In]], Sequence[Out]],
        *,
        batch_size: int,
        deadline_s: float,
        depth_batches: int = 4,
        fatal: tuple[type[Exception], ...] = (),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"{name}: batch size must be at least 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.deadline_s = deadline_s
        self.batches_run = 0
        self.items_run = 0
        self._fn = fn
        self._fatal = fatal
        self._queue: queue.Queue[_Item[In, Out] | _Flush | None] = queue.Queue(
            maxsize=batch_size * max(1, depth_batches)
        )
        self._thread = threading.Thread(target=self._work, name=f"model-{name}", daemon=True)
        self._thread.start()

    def submit(self, value: In) -> Future[Out]:
        """Queue one item; blocks while the queue is full."""
        if not self._thread.is_alive():
            raise RuntimeError(f"model queue {self.name} is closed")
        future: Future[Out] = Future()
        self._queue.put(_Item(value, future))
        QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        return future

    def map(self, values: Sequence[In]) -> list[Future[Out]]:
        return [self.submit(v) for v in values]

    def flush(self) -> None:
        """Nothing more is coming for now: run a partial batch without waiting for its deadline."""
        self._queue.put(_FLUSH)

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=60)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if isinstance(first, _Flush):
                continue
            batch, stop = self._collect(first)
            self._run(batch)
            if stop:
                return

    def _collect(self, first: _Item[In, Out]) -> tuple[list[_Item[In, Out]], bool]:
        """Items until the batch is full, the deadline passes, a flush or the close marker."""
        batch = [first]
        started = time.monotonic()
        deadline = started + self.deadline_s
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            if isinstance(item, _Flush):
                break
            batch.append(item)
        MODEL_FILL.labels(self.name).observe(time.monotonic() - started)
        QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        return batch, False

    def _run(self, batch: list[_Item[In, Out]]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            outputs = self._call([item.value for item in live])
        except Exception as exc:
            if len(live) == 1 or isinstance(exc, self._fatal):
                for item in live:
                    item.future.set_exception(exc)
            else:
                logger.warning("%s: a batch of %d failed (%s); retrying item by item", self.name, len(live), exc)
                self._run_alone(live)
            return
        finally:
            MODEL_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        MODEL_BATCH.labels(self.name).observe(len(live))
        self.batches_run += 1
        self.items_run += len(live)
        for item, output in zip(live, outputs, strict=True):
            _settle(item.future, output, self.name)

    def _run_alone(self, items: list[_Item[In, Out]]) -> None:
        for item in items:
            try:
                (output,) = self._call([item.value])
            except Exception as exc:
                MODEL_ITEM_ERRORS.labels(self.name).inc()
                item.future.set_exception(exc)
                if isinstance(exc, self._fatal):  # the model is down: the rest would fail alike
                    for rest in items[items.index(item) + 1 :]:
                        rest.future.set_exception(exc)
                    return
            else:
                self.batches_run += 1
                self.items_run += 1
                _settle(item.future, output, self.name)

    def _call(self, values: list[In]) -> Sequence[Out]:
        outputs = self._fn(values)
        if len(outputs) != len(values):
            raise RuntimeError(f"{self.name}: {len(values)} inputs gave {len(outputs)} outputs")
        return outputs


def _settle(future: Future[Out], output: Out, model: str) -> None:
    """An item's output, or the exception the model answered in its place."""
    if isinstance(output, Exception):
        MODEL_ITEM_ERRORS.labels(model).inc()
        future.set_exception(output)
    else:
        future.set_result(output)
