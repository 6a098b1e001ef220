"""The built-in bank of natural-language prompts that labels each grid patch of a frame.

The concept model embeds these once per worker; every patch (and the whole frame) is labelled with
the prompt it matches best, so a search can filter or read what a corner shows without a
detector class for it. Replace it per deployment with ``MEDIAVEC_EMBED__PROMPT_BANK``.
"""

from __future__ import annotations

DEFAULT_PROMPT_BANK: tuple[str, ...] = (
    "a person walking",
    "a group of people",
    "a face",
    "a child",
    "a car",
    "a bus",
    "a bicycle",
    "a motorcycle",
    "a truck",
    "a traffic light",
    "a street sign",
    "a shop front",
    "a building",
    "a window",
    "a door",
    "a road",
    "a sidewalk",
    "a crosswalk",
    "a tree",
    "grass",
    "the sky",
    "water",
    "a dog",
    "a cat",
    "a bird",
    "a horse",
    "food on a plate",
    "a cup",
    "a bottle",
    "a table",
    "a chair",
    "a screen",
    "a phone",
    "a bag",
    "printed text",
    "a logo",
    "a poster",
    "an animal",
    "a plant",
    "a flower",
    "snow",
    "a beach",
    "mountains",
    "an empty room",
    "darkness",
    "a blurry image",
)
