"""A circuit breaker: when the provider is down, stop calling it and pause, instead of failing items.

Retries with backoff ride out a few failed calls; they do not help when the provider is down for
minutes, and an embed stage that kept going would turn its whole input into dead letters. The
breaker counts consecutive ``retriable`` outcomes (5xx, timeouts, broken connections; a 429 means
the provider is up and busy, which is the limiter's business, and a ``permanent`` answer proves it
up):

- ``closed``: calls go through. ``failure_threshold`` consecutive retriable failures open it.
- ``open``: no call goes through for ``cooldown_s``; the cool-down doubles each time the circuit
  opens again without a success in between, up to ``max_cooldown_s``.
- ``half_open``: after the cool-down exactly one call (the probe) goes through; the others wait.
  Its success closes the circuit and resets the cool-down; its failure opens it again.

Callers go through ``async with breaker.admit() as ticket: ... ticket.record(outcome)``. A stage
that should stop consuming while the circuit is open awaits ``breaker.wait_closed()``; the probe is
sent by whoever is admitted next (the stage's own retry of the item in hand), so something must
keep calling ``admit()`` for the circuit to close again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

from models.remote.limiter import Clock, Sleep, loop_clock
from models.remote.retry import Outcome

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


class Ticket:
    """One admitted call; ``record(outcome)`` reports how it went (once)."""

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self.probe = probe
        self.recorded = False

    def record(self, outcome: Outcome) -> None:
        if not self.recorded:
            self.recorded = True
            self._breaker._on_record(self, outcome)


class CircuitBreaker:
    """Closed -> open after consecutive retriable failures -> half-open probe -> closed."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 1.0,
        max_cooldown_s: float = 60.0,
        clock: Clock = loop_clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if failure_threshold < 1 or not 0 < cooldown_s <= max_cooldown_s:
            raise ValueError("need failure_threshold >= 1 and 0 < cooldown_s <= max_cooldown_s")
        self.failure_threshold = failure_threshold
        self.base_cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self._clock, self._sleep = clock, sleep
        self._state: State = "closed"
        self._failures = 0
        self._cooldown_s = cooldown_s
        self._open_until = float("-inf")
        self._probe_out = False
        self._changed: asyncio.Event | None = None
        self.opened_total = 0

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open`` (an open circuit past its cool-down reads half-open)."""
        if self._state == "open" and self._clock() >= self._open_until:
            return "half_open"
        return self._state

    @property
    def open_for_s(self) -> float:
        """Seconds left in the current cool-down (0 unless open)."""
        return max(0.0, self._open_until - self._clock()) if self._state == "open" else 0.0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[Ticket]:
        """Wait until a call may go out, then yield its ticket; an unrecorded probe is given back."""
        ticket = await self._admit()
        try:
            yield ticket
        finally:
            if ticket.probe and not ticket.recorded:
                self._probe_out = False  # the probe never answered: let the next caller probe
                self._notify()

    async def wait_closed(self) -> None:
        """Return once the circuit is closed (at once if it is)."""
        while self._state != "closed":
            await self._event().wait()

    async def _admit(self) -> Ticket:
        while True:
            if self._state == "closed":
                return Ticket(self, probe=False)
            wait = self._open_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
            elif not self._probe_out:
                self._state = "half_open"
                self._probe_out = True
                logger.info("circuit half-open: sending one probe")
                return Ticket(self, probe=True)
            else:
                await self._event().wait()  # a probe is out: wait for its answer

    def _on_record(self, ticket: Ticket, outcome: Outcome) -> None:
        if outcome == "rate_limited":
            if ticket.probe:  # busy is alive enough, but not proof of health: let another probe
                self._probe_out = False
                self._notify()
            return
        if outcome == "retriable":
            self._failures += 1
            if ticket.probe or (self._state == "closed" and self._failures >= self.failure_threshold):
                self._open(after_probe=ticket.probe)
        elif ticket.probe or self._state == "closed":
            self._close()

    def _open(self, after_probe: bool) -> None:
        if after_probe:
            self._cooldown_s = min(self.max_cooldown_s, self._cooldown_s * 2)
        self._state = "open"
        self._probe_out = False
        self._open_until = self._clock() + self._cooldown_s
        self.opened_total += 1
        logger.warning("circuit open for %.1f s after %d retriable failures", self._cooldown_s, self._failures)
        self._notify()

    def _close(self) -> None:
        if self._state != "closed":
            logger.info("circuit closed: provider answered")
        self._state = "closed"
        self._failures = 0
        self._probe_out = False
        self._cooldown_s = self.base_cooldown_s
        self._notify()

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        """Wake everyone waiting on a state change; each re-checks the state."""
        if self._changed is not None:
            self._changed.set()
        self._changed = None
