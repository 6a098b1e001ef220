"""The vector spaces, declared once: every stage, store, search and CLI choice derives from this."""

from __future__ import annotations

from typing import Literal, get_args

SpaceName = Literal["scene", "object", "grid", "text", "face"]
ALL_SPACES: tuple[SpaceName, ...] = get_args(SpaceName)
