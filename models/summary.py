"""A frame's scene summary: one short English sentence from what was detected and read.

"Two people and a bus; person left of bus; text: "EXIT"." The sentence goes through the text
model like any other string of the frame, so a query such as "two people next to a bus" can
match it. It is written from the frame's detections alone (source ``detections``); a captioning
model could write it instead, and the stored label says which source wrote it.

A summary row is told apart from the frame's other text rows (object labels, OCR reads, spatial
phrases, prompt classes) by its label, ``summary (<source>): <sentence>`` (:func:`summary_label`,
read back by :func:`parse_summary_label`), while its vector is the embedding of the sentence alone.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

logger = logging.getLogger(__name__)

SOURCE_DETECTIONS = "detections"
MAX_LABELS = 5  # distinct labels counted; the rest are left out (most frequent first)
MAX_RELATIONS = 2
MAX_TEXT_CHARS = 60  # of the quoted OCR text
MAX_CHARS = 200  # of the whole sentence

_NUMBERS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)
_IRREGULAR = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "foot": "feet",
    "tooth": "teeth",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
}
_LABEL = re.compile(r"^summary \(([a-z0-9_.-]+)\): (.*)$", re.DOTALL)


def plural(noun: str) -> str:
    """The plural of a label; only its last word changes ("traffic light" -> "traffic lights")."""
    head, _, last = noun.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR:
        word = _IRREGULAR[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def counted(noun: str, count: int) -> str:
    """``a bus``, ``an apple``, ``two people``, ``21 cars``."""
    if count == 1:
        return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
    number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    return f"{number} {plural(noun)}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _quoted(reads: Sequence[str], limit: int) -> str:
    text = " ".join(dict.fromkeys(" ".join(r.split()) for r in reads if r.strip())).replace('"', "'")
    return f'"{text if len(text) <= limit else text[: limit - 1].rstrip() + "…"}"'


def scene_summary(
    labels: Sequence[str],
    phrases: Sequence[str] = (),
    reads: Sequence[str] = (),
    *,
    max_relations: int = MAX_RELATIONS,
    max_chars: int = MAX_CHARS,
) -> str | None:
    """The sentence for a frame's object ``labels`` (one per detection), its spatial ``phrases``
    (strongest first, see :func:`models.geometry.spatial_phrases`) and OCR ``reads``.

    Counts by label, most frequent first (ties in first-seen order), then the first
    ``max_relations`` phrases, then the text read, quoted; at most ``max_chars`` characters.
    None when nothing was detected or read (an empty frame has nothing to summarise).
    """
    parts = []
    counts = Counter(labels)
    if counts:
        ranked = sorted(counts, key=lambda label: -counts[label])[:MAX_LABELS]  # sorted() is stable
        parts.append(_join([counted(label, counts[label]) for label in ranked]))
    parts += list(phrases[:max_relations]) if counts else []
    if any(r.strip() for r in reads):
        parts.append(f"text: {_quoted(reads, MAX_TEXT_CHARS)}")
    if not parts:
        return None
    sentence = "; ".join(parts)
    sentence = sentence[:1].upper() + sentence[1:]
    if len(sentence) + 1 > max_chars:
        sentence = sentence[: max_chars - 2].rstrip() + "…"
    return sentence + "."


def summary_label(sentence: str, source: str = SOURCE_DETECTIONS) -> str:
    """The label a summary row is stored with: its source, then the sentence."""
    return f"summary ({source}): {sentence}"


def parse_summary_label(label: str | None) -> tuple[str, str] | None:
    """``(source, sentence)`` of a summary row's label; None for any other row's label."""
    match = _LABEL.match(label or "")
    return (match.group(1), match.group(2)) if match else None
