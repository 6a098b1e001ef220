"""streams.loopthread: coroutines from synchronous code, and a stop that always ends the thread."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.loopthread import LoopThread


def test_run_returns_results_and_stop_cancels_what_still_runs() -> None:
    thread = LoopThread("t-run").start()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert thread.run(add(2, 3), timeout=5) == 5
    pending = thread.submit(forever())
    thread.stop()
    assert cancelled.is_set() and pending.cancelled()
    assert not thread.alive and thread.loop.is_closed()


def test_a_task_that_ignores_cancellation_does_not_hang_stop(caplog: pytest.LogCaptureFixture) -> None:
    thread = LoopThread("t-stubborn").start()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    thread.submit(stubborn())
    with caplog.at_level(logging.WARNING, logger="streams.loopthread"):
        thread.stop(cancel_timeout_s=0.2)
    assert not thread.alive and thread.loop.is_closed()
    assert "t-stubborn: tasks still running" in caplog.text


def test_stop_before_start_closes_the_loop() -> None:
    thread = LoopThread("t-never")
    thread.stop()
    assert thread.loop.is_closed()
