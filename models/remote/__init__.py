"""Remote embedding providers: flow control (limiter, quota, breaker, retry) and the provider shapes.

The flow control is pure asyncio and the standard library; ``providers`` holds the request and
response shapes of the supported APIs, ``settings`` the provider's settings, and ``client`` (not
imported here: it brings aiohttp and a loop thread) the embedder that uses them all. See each
module's docstring for what it does and why the issue's seed needed it.
"""

from models.remote.breaker import CircuitBreaker, Ticket
from models.remote.budget import RequestBudget
from models.remote.hints import RateHint, parse_duration, parse_rate_headers
from models.remote.limiter import AdaptiveLimiter, Slot
from models.remote.providers import ApiRequest, Embedded, ProviderApi, ProviderError
from models.remote.quota import Quota, QuotaExceeded, estimate_text_tokens
from models.remote.retry import Outcome, classify
from models.remote.settings import RemoteSettings

__all__ = [
    "AdaptiveLimiter",
    "ApiRequest",
    "CircuitBreaker",
    "Embedded",
    "Outcome",
    "ProviderApi",
    "ProviderError",
    "Quota",
    "QuotaExceeded",
    "RateHint",
    "RemoteSettings",
    "RequestBudget",
    "Slot",
    "Ticket",
    "classify",
    "estimate_text_tokens",
    "parse_duration",
    "parse_rate_headers",
]
