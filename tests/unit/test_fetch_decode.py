"""Decoding real photos and hostile or unusual variants into bounded RGB baseline JPEGs."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from devstack.mediaserver import write_pixel_bomb
from devstack.samples import find_sample_photos
from media.decode import DecodedImage, DecodeError, decode_image
from media.settings import FetchSettings

PHOTOS = {path.name: path for path in find_sample_photos()[0]}
DEFAULT = FetchSettings()


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def opened(result: DecodedImage) -> Image.Image:
    im = Image.open(io.BytesIO(result.jpeg))
    im.load()
    return im


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    b = b.convert("RGB").resize(a.size, Image.Resampling.BILINEAR)
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


def decode_error(data: bytes, s: FetchSettings = DEFAULT) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_image(data, s)
    return info.value


@pytest.mark.parametrize(
    ("path", "size"),
    [
        (PHOTOS["bus.jpg"], (768, 1024)),  # 810x1080, bounded on the long side
        (PHOTOS["zidane.jpg"], (1024, 576)),  # 1280x720
        (PHOTOS["astronaut.png"], (512, 512)),
        (PHOTOS["coffee.png"], (600, 400)),
        (PHOTOS["chelsea.png"], (451, 300)),
        (PHOTOS["hubble_deep_field.jpg"], (1000, 872)),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else None,
)
def test_real_photos(path: Path, size: tuple[int, int]) -> None:
    data = path.read_bytes()
    result = decode_image(data, DEFAULT)
    out = opened(result)
    assert (result.width, result.height) == size == out.size
    assert out.format == "JPEG" and out.mode == "RGB"
    assert not out.info.get("progressive")
    assert result.content_sha256 == hashlib.sha256(data).hexdigest()
    assert mean_abs_diff(out, Image.open(path)) < 6.0  # same picture, JPEG noise only


def test_exif_orientation_applied() -> None:
    original = Image.open(PHOTOS["zidane.jpg"])  # landscape 1280x720
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    result = decode_image(encode(original, "JPEG", quality=95, exif=exif.tobytes()), DEFAULT)
    out = opened(result)
    assert (result.width, result.height) == (576, 1024)
    upright = original.transpose(Image.Transpose.ROTATE_270)
    wrong_way = original.transpose(Image.Transpose.ROTATE_90)
    assert mean_abs_diff(out, upright) < 6.0
    assert mean_abs_diff(out, wrong_way) > 20.0


def test_rgba_composited_on_white() -> None:
    im = Image.new("RGBA", (64, 32), (255, 0, 0, 255))
    im.paste((0, 0, 255, 0), (32, 0, 64, 32))  # right half fully transparent (blue underneath)
    out = np.asarray(opened(decode_image(encode(im, "PNG"), DEFAULT)))
    assert out.shape == (32, 64, 3)
    assert out[16, 8, 0] > 230 and out[16, 8, 1:].max() < 30  # red stays red
    assert (out[16, 56] > 245).all()  # transparent becomes white, not blue or black


def test_palette_with_transparency() -> None:
    im = Image.new("P", (40, 40), 0)
    im.putpalette([0, 128, 0] + [255, 0, 255] + [0, 0, 0] * 254)
    im.paste(1, (20, 0, 40, 40))
    data = encode(im, "PNG", transparency=1)
    out = np.asarray(opened(decode_image(data, DEFAULT)))
    assert out.shape == (40, 40, 3)
    assert abs(int(out[20, 5, 1]) - 128) < 10 and out[20, 5, 0] < 20  # green
    assert (out[20, 35] > 245).all()  # the transparent index is white


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (30, 20), c) for c in ((200, 0, 0), (0, 200, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(opened(decode_image(data, DEFAULT)))
    assert out.shape == (20, 30, 3)
    assert out[10, 15, 0] > 150 and out[10, 15, 1] < 50


def test_cmyk_jpeg_becomes_rgb() -> None:
    chelsea = Image.open(PHOTOS["chelsea.png"]).convert("RGB")
    result = decode_image(encode(chelsea.convert("CMYK"), "JPEG", quality=95), DEFAULT)
    out = opened(result)
    assert out.mode == "RGB" and out.size == chelsea.size
    assert mean_abs_diff(out, chelsea) < 8.0


def test_16bit_grayscale_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (32, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(opened(decode_image(data, DEFAULT))).astype(int)
    assert out.shape == (32, 256, 3)
    assert out[16, 2].max() < 12 and out[16, 253].min() > 240
    assert abs(out[16, 128, 0] - 128) < 8  # mid-grey, where clipping would give white


def _png_16bit_rgb(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    rows = b"".join(b"\x00" + struct.pack(">HHH", 65535, 32768, 0) * width for _ in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_16bit_rgb_png() -> None:
    out = np.asarray(opened(decode_image(_png_16bit_rgb(24, 16), DEFAULT))).astype(int)
    assert out.shape == (16, 24, 3)
    r, g, b = out[8, 12]
    assert r > 240 and abs(g - 128) < 10 and b < 15


def test_grayscale_becomes_rgb() -> None:
    gray = Image.open(PHOTOS["astronaut.png"]).convert("L")
    out = opened(decode_image(encode(gray, "PNG"), DEFAULT))
    pixels = np.asarray(out).astype(int)
    assert pixels.shape == (512, 512, 3)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 3
    assert mean_abs_diff(out, gray) < 4.0


def test_big_image_bounded_keeping_aspect() -> None:
    big = Image.open(PHOTOS["coffee.png"]).resize((3000, 2000))
    data = encode(big, "JPEG", quality=90)
    assert decode_image(data, DEFAULT).width == 1024
    small = decode_image(data, FetchSettings(max_side=256))
    assert (small.width, small.height) == (256, 171)
    assert opened(small).size == (256, 171)


def test_truncated_jpeg() -> None:
    data = PHOTOS["bus.jpg"].read_bytes()
    assert decode_error(data[: len(data) // 2]).error_class == "truncated_image"
    assert decode_error(data[:-200]).error_class == "truncated_image"


def test_truncated_png() -> None:
    data = PHOTOS["astronaut.png"].read_bytes()
    assert decode_error(data[: len(data) // 2]).error_class == "truncated_image"


def test_html_is_not_an_image() -> None:
    html = b"<!DOCTYPE html><html><head><title>404</title></head><body>gone</body></html>"
    err = decode_error(html)
    assert err.error_class == "not_an_image"
    assert "HTML" in err.reason


@pytest.mark.parametrize("data", [b"\x00" * 100, b"GIF", b'<svg xmlns="http://www.w3.org/2000/svg"/>', b"%PDF-1.7\n"])
def test_other_bytes_are_not_images(data: bytes) -> None:
    assert decode_error(data).error_class == "not_an_image"


def test_zero_bytes() -> None:
    assert decode_error(b"").error_class == "empty_body"


def test_pixel_bomb_over_pillow_limit(tmp_path: Path) -> None:
    data = write_pixel_bomb(tmp_path / "bomb.png").read_bytes()
    assert len(data) < 8 * 1024
    assert decode_error(data).error_class == "pixel_bomb"


def test_pixel_bomb_over_our_limit(tmp_path: Path) -> None:
    data = write_pixel_bomb(tmp_path / "bomb.png", 9000, 9000).read_bytes()  # 81 Mpx > 64 Mpx default
    err = decode_error(data)
    assert err.error_class == "pixel_bomb"
    assert "9000x9000" in err.reason


def test_max_pixels_setting_applies() -> None:
    data = PHOTOS["astronaut.png"].read_bytes()  # 512x512
    assert decode_error(data, FetchSettings(max_pixels=100_000)).error_class == "pixel_bomb"
    assert decode_image(data, FetchSettings(max_pixels=512 * 512)).width == 512


def test_not_an_image_while_ultralytics_patches_pil_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: importing ultralytics replaces PIL.Image.open with a wrapper that pip-installs a
    # HEIF plugin on unidentified bytes (ModuleNotFoundError offline). Decoding must not use it.
    from ultralytics.utils import patches

    monkeypatch.setattr(Image, "open", patches.image_open)  # restored after the test
    assert decode_error(b"<html>not an image</html>").error_class == "not_an_image"


def test_broken_exif_is_ignored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.open(PHOTOS["chelsea.png"]).convert("RGB"), "JPEG", exif=exif.tobytes())
    start = data.index(b"Exif\x00\x00")
    broken = data[: start + 6] + b"\xff" * 16 + data[start + 22 :]  # garbage TIFF header, same length
    result = decode_image(broken, DEFAULT)
    assert (result.width, result.height) == (451, 300)


def _baseline() -> bytes:
    return encode(Image.open(PHOTOS["coffee.png"]).convert("RGB"), "JPEG", quality=90)


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_baseline, id="baseline"),
        pytest.param(
            lambda: encode(Image.open(PHOTOS["coffee.png"]).convert("RGB"), "JPEG", icc_profile=_srgb_profile()),
            id="srgb-profile",
        ),
    ],
)
def test_baseline_jpeg_within_bounds_is_its_own_frame(make: object) -> None:
    data = make()  # type: ignore[operator]
    result = decode_image(data, DEFAULT)
    assert result.jpeg == data and not result.reencoded
    assert (result.width, result.height) == (600, 400) == opened(result).size
    assert decode_image(PHOTOS["bus.jpg"].read_bytes(), DEFAULT).reencoded  # over 1024 px
    hubble = PHOTOS["hubble_deep_field.jpg"].read_bytes()  # a camera file: EXIF, XMP, "sRGB IEC61966-2.1"
    assert decode_image(hubble, DEFAULT).jpeg == hubble


def test_truncated_jpeg_within_bounds_is_still_refused() -> None:
    data = _baseline()
    assert decode_error(data[: len(data) // 2]).error_class == "truncated_image"
    assert decode_error(data[:-200]).error_class == "truncated_image"


def _rotated(im: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", exif=exif.tobytes())


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda im: encode(im, "JPEG", progressive=True), id="progressive"),
        pytest.param(_rotated, id="exif-rotated"),
        pytest.param(lambda im: encode(im, "JPEG", icc_profile=b"\0" * 128), id="icc-profile"),
        pytest.param(lambda im: encode(im.convert("L"), "JPEG"), id="greyscale"),
        pytest.param(lambda im: encode(im.convert("CMYK"), "JPEG"), id="cmyk"),
        pytest.param(lambda im: encode(im, "PNG"), id="png"),
    ],
)
def test_what_needs_work_is_reencoded(make: object) -> None:
    source = Image.open(PHOTOS["chelsea.png"]).convert("RGB")
    result = decode_image(make(source), DEFAULT)  # type: ignore[operator]
    out = opened(result)
    assert result.reencoded and out.mode == "RGB" and not out.info.get("progressive")
    assert not out.info.get("icc_profile")


@pytest.mark.parametrize("size", [(5000, 120), (2047, 1500), (1025, 1025), (4096, 4096)])
def test_bound_steps_keep_size_and_picture(size: tuple[int, int]) -> None:
    big = Image.open(PHOTOS["coffee.png"]).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    result = decode_image(encode(big, "PNG"), DEFAULT)
    scale = 1024 / max(size)
    want = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    assert (result.width, result.height) == want == opened(result).size
    assert mean_abs_diff(opened(result), big.resize(want, Image.Resampling.LANCZOS)) < 6.0
