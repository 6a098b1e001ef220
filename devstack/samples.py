"""Real sample photos for the demo and the end-to-end tests, taken from installed packages.

scikit-image ships a handful of real photographs inside its wheel (others in its gallery are
only downloadable, and are skipped here), and ultralytics ships two street photos. They are
copied into one directory that a local HTTP server then serves, so nothing touches the internet.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

# Colour photographs that are in the installed wheels themselves (not fetched through pooch).
PHOTOS: dict[str, tuple[str, ...]] = {
    "skimage": (
        "data/astronaut.png",
        "data/chelsea.png",
        "data/coffee.png",
        "data/hubble_deep_field.jpg",
        "data/motorcycle_left.png",
        "data/rocket.jpg",
    ),
    "ultralytics": ("assets/bus.jpg", "assets/zidane.jpg"),
}
MIN_SAMPLES = 5


class SampleImagesMissing(RuntimeError):
    """Too few sample photos are installed to run the demo or the end-to-end tests."""


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it (ultralytics imports torch)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_sample_photos() -> tuple[list[Path], list[str]]:
    """The sample photos found in installed packages, and a description of each one missing."""
    found: list[Path] = []
    missing: list[str] = []
    for package, files in PHOTOS.items():
        root = _package_dir(package)
        for rel in files:
            path = root / rel if root is not None else None
            if path is not None and path.is_file():
                found.append(path)
            else:
                missing.append(f"{package}/{rel}" + ("" if root is not None else f" ({package} is not installed)"))
    return found, missing


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.exists() and dest.stat().st_size == src.stat().st_size and dest.read_bytes() == src.read_bytes():
        return
    shutil.copyfile(src, dest)


def sample_images(dest: Path) -> list[Path]:
    """Copy the sample photos into ``dest`` (idempotent) and return the copies, sorted.

    Raises :class:`SampleImagesMissing`, listing what is missing, when fewer than
    ``MIN_SAMPLES`` photos are installed.
    """
    found, missing = find_sample_photos()
    if len(found) < MIN_SAMPLES:
        raise SampleImagesMissing(
            f"only {len(found)} sample photos found, {MIN_SAMPLES} needed; missing: {', '.join(missing)}. "
            "Install scikit-image and ultralytics (pip install -e '.[dev]')."
        )
    if missing:
        logger.warning("sample photos missing (continuing with %d): %s", len(found), ", ".join(missing))
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for src in found:
        target = dest / src.name
        _copy_if_changed(src, target)
        copies.append(target)
    return sorted(copies)
