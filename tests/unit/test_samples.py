"""The bundled sample photos are real, decodable colour images, copied idempotently."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from devstack.samples import MIN_SAMPLES, sample_images


def test_sample_images_are_real_colour_photos(tmp_path: Path) -> None:
    paths = sample_images(tmp_path / "samples")

    assert len(paths) >= MIN_SAMPLES
    assert paths == sorted(paths)
    assert {"astronaut.png", "bus.jpg", "zidane.jpg"} <= {p.name for p in paths}
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) >= 256, path


def test_sample_images_is_idempotent_and_repairs_a_damaged_copy(tmp_path: Path) -> None:
    first = sample_images(tmp_path)
    damaged = first[0]
    original = damaged.read_bytes()
    damaged.write_bytes(b"not an image")

    second = sample_images(tmp_path)

    assert second == first
    assert damaged.read_bytes() == original
    assert sorted(tmp_path.iterdir()) == first
