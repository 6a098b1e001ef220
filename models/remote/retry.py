"""Classify a remote provider's answer before acting on it, and how long to wait before a retry.

The issue's seed retried nothing and treated every failure alike. Here each answer gets one of four
outcomes, and every flow-control part (limiter, breaker, the client's retry loop) acts on the same
word:

- ``ok``: a 2xx.
- ``rate_limited``: a 429. The provider is up and asks us to slow down: the limiter cuts and honours
  ``Retry-After``; the breaker does not count it (a busy provider is not a broken one).
- ``retriable``: 408, 425, 5xx other than 501/505, timeouts and broken connections. Retried with
  jittered backoff; consecutive ones open the circuit breaker.
- ``permanent``: any other answer (another 4xx, 501, 505, a 1xx/3xx the client did not follow, an
  error that is not a transport fault). Retrying cannot help: that item becomes a dead letter with
  the provider's message.

Kept free of any HTTP client so it is testable in a line; transport errors of aiohttp are known by
class name (``_TRANSPORT_ERRORS``) because this layer does not import it.
"""

from __future__ import annotations

from typing import Literal

Outcome = Literal["ok", "retriable", "rate_limited", "permanent"]

RETRIABLE_STATUSES = frozenset({408, 425, 500, 502, 503, 504})
# a 5xx says the server failed, so it may succeed later; these two say it never will
PERMANENT_5XX = frozenset({501, 505})
# aiohttp's transport faults that are not OSError subclasses (ServerDisconnectedError and friends)
_TRANSPORT_ERRORS = frozenset({"ClientConnectionError", "ClientPayloadError", "ServerTimeoutError"})


def classify(status: int | None, exc: BaseException | None = None) -> Outcome:
    """The outcome of one call: from its HTTP status when there is one, else from the exception.

    ``status=None`` means no response arrived: a timeout or a connection fault is ``retriable``,
    anything else (a bug, a response that did not parse) is ``permanent``. ``(None, None)`` is a
    call that neither answered nor failed, which cannot be retried into success: ``permanent``.
    """
    if status is not None:
        return _classify_status(status)
    if exc is None:
        return "permanent"
    return "retriable" if _is_transport_fault(exc) else "permanent"


def _classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status in RETRIABLE_STATUSES or (500 <= status < 600 and status not in PERMANENT_5XX):
        return "retriable"
    return "permanent"


def _is_transport_fault(exc: BaseException) -> bool:
    # OSError covers TimeoutError (asyncio.TimeoutError is an alias since 3.11), ConnectionError
    # (resets, refusals) and a bare socket error
    if isinstance(exc, OSError):
        return True
    return any(cls.__name__ in _TRANSPORT_ERRORS for cls in type(exc).__mro__)
