"""Fetch stage: media.requests -> media.frames.

- :mod:`~consumers.fetch.guard`: SSRF guard (address decisions, guarded DNS resolver).
- :mod:`~consumers.fetch.download`: bounded, retrying aiohttp downloader.
- :mod:`~consumers.fetch.decode`: bytes -> bounded RGB baseline JPEG.
- :mod:`~consumers.fetch.stage`: :class:`FetchStage`, the pure transform the runner calls.
"""

from consumers.fetch.decode import DecodedImage, DecodeError, decode_image
from consumers.fetch.download import Download, Downloader, FetchError, redact_url
from consumers.fetch.guard import AddressRefused, Allow, Decision, GuardedResolver, check_address, check_url
from consumers.fetch.stage import FetchStage

__all__ = [
    "AddressRefused",
    "Allow",
    "Decision",
    "DecodeError",
    "DecodedImage",
    "Download",
    "Downloader",
    "FetchError",
    "FetchStage",
    "GuardedResolver",
    "check_address",
    "check_url",
    "decode_image",
    "redact_url",
]
