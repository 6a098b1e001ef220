"""What a hit must be besides near: one filter type every store applies with the same meaning.

A :class:`SearchFilter` narrows a search to some media, labels, a time range within a video and
request metadata values, and can leave points out (more-like-this leaves out the point it starts
from). The Qdrant backends turn it into their own filter (``edge_filter`` in
:mod:`~stores.vectorstore.edge`, ``server_filter`` in :mod:`~stores.vectorstore.server`), so the
engine filters while it searches; the encrypted index holds its payloads encrypted, so it
searches wider and keeps the hits that :meth:`SearchFilter.matches`. ``matches`` is the reference
meaning; the tests hold the engines' filters to it.

Conditions combine with AND; a list (media ids, labels) matches any of its values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stores.vectorstore.base import VectorStoreError, canonical_ids

__all__ = ["MAX_FILTER_VALUES", "META_KEY_RE", "FilterError", "SearchFilter"]

MAX_FILTER_VALUES = 100  # media ids, labels or excluded ids in one filter
MAX_META_CONDITIONS = 16
META_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a metadata key, safe inside a payload path


class FilterError(VectorStoreError):
    """A filter that cannot be applied (too many values, a metadata key outside the pattern)."""


@dataclass(frozen=True)
class SearchFilter:
    """Payload conditions a hit must meet; empty fields do not narrow anything."""

    media_ids: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    time_from_s: float | None = None
    time_to_s: float | None = None
    meta: tuple[tuple[str, str], ...] = ()  # (key, value) pairs of the request metadata, all required
    exclude_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what, values in (("media ids", self.media_ids), ("labels", self.labels), ("ids", self.exclude_ids)):
            if len(values) > MAX_FILTER_VALUES:
                raise FilterError(f"a filter takes at most {MAX_FILTER_VALUES} {what}, not {len(values)}")
        if len(self.meta) > MAX_META_CONDITIONS:
            raise FilterError(f"a filter takes at most {MAX_META_CONDITIONS} metadata conditions")
        for key, _ in self.meta:
            if not META_KEY_RE.fullmatch(key):
                raise FilterError(f"metadata key {key[:70]!r} must match {META_KEY_RE.pattern}")
        for bound in (self.time_from_s, self.time_to_s):
            if bound is not None and not math.isfinite(bound):
                raise FilterError("time bounds must be finite numbers of seconds")
        if self.time_from_s is not None and self.time_to_s is not None and self.time_from_s > self.time_to_s:
            raise FilterError(
                f"time_from_s {self.time_from_s:g} is after time_to_s {self.time_to_s:g}: nothing could match"
            )
        if self.exclude_ids:
            object.__setattr__(self, "exclude_ids", tuple(canonical_ids(list(self.exclude_ids))))

    def __bool__(self) -> bool:
        return any((self.media_ids, self.labels, self.meta, self.exclude_ids)) or self.timed

    @property
    def timed(self) -> bool:
        return self.time_from_s is not None or self.time_to_s is not None

    def matches(self, point_id: str, payload: Mapping[str, Any]) -> bool:
        """Whether a stored point meets every condition (the meaning the engines' filters share)."""
        if point_id in self.exclude_ids:
            return False
        if self.media_ids and payload.get("media_id") not in self.media_ids:
            return False
        if self.labels and payload.get("label") not in self.labels:
            return False
        if self.timed and not self._in_time(payload.get("timestamp_s")):
            return False
        meta = payload.get("meta")
        return all(isinstance(meta, Mapping) and meta.get(k) == v for k, v in self.meta)

    def _in_time(self, t: Any) -> bool:
        if not isinstance(t, int | float) or isinstance(t, bool):
            return False
        return (self.time_from_s is None or t >= self.time_from_s) and (self.time_to_s is None or t <= self.time_to_s)

    def to_json(self) -> dict[str, Any]:
        """The filter as JSON (the shared stores send it to the owner of an embedded store)."""
        return {
            "media_ids": list(self.media_ids),
            "labels": list(self.labels),
            "time_from_s": self.time_from_s,
            "time_to_s": self.time_to_s,
            "meta": [list(kv) for kv in self.meta],
            "exclude_ids": list(self.exclude_ids),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> SearchFilter | None:
        if not doc:
            return None
        return cls(
            media_ids=tuple(str(v) for v in doc.get("media_ids", ())),
            labels=tuple(str(v) for v in doc.get("labels", ())),
            time_from_s=_number(doc.get("time_from_s")),
            time_to_s=_number(doc.get("time_to_s")),
            meta=tuple((str(k), str(v)) for k, v in doc.get("meta", ())),
            exclude_ids=tuple(str(v) for v in doc.get("exclude_ids", ())),
        )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
