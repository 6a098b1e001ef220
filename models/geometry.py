"""Box geometry shared by the per-frame backends: detections, the patch grid, spatial phrases.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the frame they were found in, ``x1 < x2``, ``y1 < y2``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

# Two boxes side by side may overlap this much of the narrower one and still count as "left of".
SIDE_OVERLAP = 0.3
# Their centres must also lie at least this fraction of the frame width apart.
MIN_SEPARATION = 0.05
# A box counts as "in" another when this much of its area lies inside the other.
INSIDE = 0.9


@dataclass(frozen=True)
class Detection:
    """One object found in a frame."""

    box: Box
    label: str
    score: float


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """The box clipped inside a ``width`` x ``height`` frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        min(max(x1, 0.0), float(width)),
        min(max(y1, 0.0), float(height)),
        min(max(x2, 0.0), float(width)),
        min(max(y2, 0.0), float(height)),
    )


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def grid_boxes(width: int, height: int, n: int = 4) -> list[tuple[int, int, int, int]]:
    """The ``n`` x ``n`` patch grid, row by row: integer boxes that tile the frame exactly.

    Edges are rounded from ``i * width / n``, so patches differ by at most one pixel and
    neighbours share their edge (no gap, no overlap).
    """
    if width <= 0 or height <= 0 or n <= 0:
        raise ValueError(f"grid needs a positive size and count, got {width}x{height}, n={n}")
    xs = [round(i * width / n) for i in range(n + 1)]
    ys = [round(j * height / n) for j in range(n + 1)]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(n) for i in range(n)]


def _overlap(a1: float, a2: float, b1: float, b2: float) -> float:
    return max(0.0, min(a2, b2) - max(a1, b1))


def _inside(inner: Box, outer: Box) -> bool:
    area = box_area(inner)
    if area <= 0 or box_area(outer) <= area:
        return False
    inter = _overlap(inner[0], inner[2], outer[0], outer[2]) * _overlap(inner[1], inner[3], outer[1], outer[3])
    return inter / area >= INSIDE


def _left_of(a: Box, b: Box, width: int) -> bool:
    narrower = min(a[2] - a[0], b[2] - b[0])
    if narrower <= 0 or _overlap(a[0], a[2], b[0], b[2]) > SIDE_OVERLAP * narrower:
        return False
    return (b[0] + b[2]) / 2 - (a[0] + a[2]) / 2 >= MIN_SEPARATION * width


def _above(a: Box, b: Box) -> bool:
    shorter = min(a[3] - a[1], b[3] - b[1])
    if shorter <= 0 or _overlap(a[1], a[3], b[1], b[3]) > SIDE_OVERLAP * shorter:
        return False
    return (a[1] + a[3]) / 2 < (b[1] + b[3]) / 2


def _pair_phrases(a: Detection, b: Detection, width: int) -> list[str]:
    """Every relation of an unordered pair, each phrased with its subject first."""
    phrases = []
    for first, second in ((a, b), (b, a)):
        if _inside(first.box, second.box):
            phrases.append(f"{first.label} in {second.label}")
        if _left_of(first.box, second.box, width):
            phrases.append(f"{first.label} left of {second.label}")
        if _above(first.box, second.box):
            phrases.append(f"{first.label} above {second.label}")
    return phrases


def pair_strength(a: Detection, b: Detection) -> float:
    """How much a relation between two objects is worth saying: the smaller of their areas, weighted
    by both scores (two large, sure objects first; a tiny or doubtful one ranks its pairs low)."""
    return min(box_area(a.box), box_area(b.box)) * a.score * b.score


def spatial_phrases(detections: Sequence[Detection], width: int, max_phrases: int = 20) -> list[str]:
    """Short relations between any two objects (same label included), strongest pairs first.

    Rules (deterministic, duplicates dropped, at most ``max_phrases``):

    * ``A in B`` when at least 90 % of A's area lies inside the larger box B;
    * ``A left of B`` when the boxes overlap horizontally by at most 30 % of the narrower one
      and A's centre lies at least 5 % of the frame width left of B's;
    * ``A above B`` when they overlap vertically by at most 30 % of the shorter one and A's
      centre is higher.

    Pairs are taken by :func:`pair_strength`, highest first, ties in detection order. Pairs with
    the same label count too: with a person-only detector "person left of person" is the only
    relation a frame can have.
    """
    pairs = sorted(combinations(detections, 2), key=lambda ab: -pair_strength(*ab))
    phrases: list[str] = []
    for a, b in pairs:
        for phrase in _pair_phrases(a, b, width):
            if len(phrases) >= max_phrases:
                return phrases
            if phrase not in phrases:
                phrases.append(phrase)
    return phrases
