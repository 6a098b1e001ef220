"""Frames as JPEG bytes to CLIP vectors with every image operation on the model's device.

The reference path (:class:`~models.clip.ClipEmbedder`) decodes with PIL, crops detector boxes
with ``Image.crop`` and runs open_clip's transform on the CPU, one image at a time. This path
does the same work in batches where the model runs, so a GPU is not starved by its host:

1. decode: ``torchvision.io.decode_jpeg`` over the whole batch (nvjpeg on a CUDA device);
2. scenes: each frame resized and centre-cropped as open_clip's transform does (bicubic with
   antialias, shortest side, or a squash), one ``interpolate`` per distinct frame size;
3. objects: every box of every frame of one size in one ``roi_align`` call (``aligned=True``,
   adaptive sampling), over the window of the frame that the reference's crop, resize and
   centre crop end in;
4. the model: fp16 on CUDA (fp32 elsewhere, as the reference), optionally ``torch.compile``
   (``reduce-overhead`` adds CUDA graphs) on fixed-size, padded batches;
5. out: rows L2-normalised in fp32 and cast to fp16 on the device, copied into pinned host
   memory without blocking the stream.

On CUDA, :meth:`TensorPath.prepare` runs on a side stream and hands back a CUDA event, so a
caller that prepares batch ``i + 1`` in one thread while :meth:`TensorPath.embed` runs batch
``i`` in another overlaps decoding and copies with the model. On the CPU the same code runs
without streams; tests hold its vectors to the reference (cosine >= 0.999).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.clip import ClipEmbedder
from models.geometry import Box

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
Window = tuple[float, float, float, float]


class UnreadableFrame(ValueError):
    """A frame's bytes are not a JPEG the decoder can read."""


@dataclass(frozen=True)
class PixelSpec:
    """The model's own preprocessing (open_clip's ``preprocess_cfg``), reproduced on the device."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str

    @classmethod
    def of(cls, model: Any) -> PixelSpec:
        """Read it from an open_clip model; raises ValueError for a transform this path lacks."""
        cfg = model.visual.preprocess_cfg
        size = cfg["size"]
        side = size if isinstance(size, int) else size[0]
        if not isinstance(size, int) and size[0] != size[1]:
            raise ValueError(f"non-square input {size} is not supported on the device path")
        spec = cls(int(side), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], cfg["resize_mode"])
        if spec.resize_mode not in RESIZE_MODES or spec.interpolation not in INTERPOLATIONS or cfg["mode"] != "RGB":
            raise ValueError(f"preprocessing {cfg} is not supported on the device path")
        return spec

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) open_clip's Resize gives an image before its centre crop."""
        if self.resize_mode == "squash":
            return self.size, self.size
        if width <= height:  # torchvision's Resize(int): the short side to size, the long one truncated
            return self.size, int(self.size * height / width)
        return int(self.size * width / height), self.size

    def window(self, box: tuple[int, int, int, int]) -> Window:
        """The part of the frame a crop of ``box``, resized and centre-cropped, shows: (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = box
        w, h = max(1, x2 - x1), max(1, y2 - y1)
        rw, rh = self.resized(w, h)
        left, top = round((rw - self.size) / 2), round((rh - self.size) / 2)  # torchvision's CenterCrop
        sx, sy = w / rw, h / rh
        return (x1 + left * sx, y1 + top * sy, x1 + (left + self.size) * sx, y1 + (top + self.size) * sy)


def int_box(box: Box) -> tuple[int, int, int, int]:
    """The pixel box the reference crops (``Image.crop`` of the rounded box)."""
    return (round(box[0]), round(box[1]), round(box[2]), round(box[3]))


@dataclass
class Prepared:
    """A batch's model input on the device: per frame its scene row (if asked) then its crop rows."""

    pixels: torch.Tensor
    counts: list[int]
    failures: dict[int, Exception]
    ready: Any = None  # the CUDA event the pixels are ready at; None off CUDA


class TensorPath:
    """Device-side decode, crops and preprocessing in front of a loaded :class:`ClipEmbedder`."""

    def __init__(self, embedder: ClipEmbedder, *, compile_mode: str = "none", batch_size: int = 256) -> None:
        import torch

        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {compile_mode!r}: one of {', '.join(COMPILE_MODES)}")
        self.embedder = embedder
        self.device = embedder.device
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if embedder.fp16 else torch.float32
        self.spec = PixelSpec.of(embedder.model)
        self.batch_size = max(1, batch_size)
        self.compile_mode = compile_mode if self.cuda else "none"
        if compile_mode != "none" and not self.cuda:
            logger.info("torch.compile is only used on CUDA; running eager on %s", self.device)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._encode: Callable[[torch.Tensor], torch.Tensor] = embedder.model.encode_image
        if self.compile_mode != "none":
            self._encode = torch.compile(embedder.model.encode_image, mode=self.compile_mode, dynamic=False)

    @property
    def decoder(self) -> str:
        return "nvjpeg (torchvision.io.decode_jpeg on CUDA)" if self.cuda else "libjpeg (torchvision.io.decode_jpeg)"

    # -- decode and pixels ----------------------------------------------------------------------

    def decode(self, jpegs: Sequence[bytes]) -> list[torch.Tensor | Exception]:
        """(3, H, W) uint8 RGB per frame on the device; one batched call, per frame when it fails."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        out: list[torch.Tensor | Exception] = [UnreadableFrame(f"frame {i}: no bytes") for i in range(len(jpegs))]
        slots = [i for i, j in enumerate(jpegs) if j]
        data = [torch.frombuffer(bytearray(jpegs[i]), dtype=torch.uint8) for i in slots]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device) if data else []
            for i, image in zip(slots, decoded, strict=True):
                out[i] = image
        except RuntimeError:  # one bad frame fails the batched call: find it, keep the others
            for i, one in zip(slots, data, strict=True):
                try:
                    out[i] = decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device)
                except RuntimeError as exc:
                    out[i] = UnreadableFrame(f"frame {i}: {exc}")
        return out

    def scene_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """Same-size (B, 3, H, W) uint8 frames to (B, 3, S, S) normalised float32: the whole frame."""
        import torch.nn.functional as F

        height, width = frames.shape[-2:]
        rw, rh = self.spec.resized(width, height)
        x = F.interpolate(frames.float(), size=(rh, rw), mode=self.spec.interpolation, antialias=True)
        top, left = round((rh - self.spec.size) / 2), round((rw - self.spec.size) / 2)
        x = x[:, :, top : top + self.spec.size, left : left + self.spec.size]
        return self._normalise(x)

    def crop_pixels(self, frames: torch.Tensor, boxes: Sequence[Sequence[Box]]) -> torch.Tensor:
        """Every box of same-size (B, 3, H, W) uint8 frames, frame by frame: (N, 3, S, S) float32."""
        import torch
        from torchvision.ops import roi_align

        rows = [(float(i), *self.spec.window(int_box(b))) for i, frame_boxes in enumerate(boxes) for b in frame_boxes]
        size = self.spec.size
        if not rows:
            return torch.zeros((0, 3, size, size), device=self.device)
        rois = self._to_device(torch.tensor(rows, dtype=torch.float32))
        x = roi_align(frames.float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8-range floats to the model's input: clamp as a uint8 resize would, then mean and std."""
        return (x.clamp(0.0, 255.0) - self._mean) / self._std

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor to the device through pinned memory, without blocking the stream."""
        if not self.cuda:
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    # -- batches --------------------------------------------------------------------------------

    @contextmanager
    def _side_stream(self) -> Iterator[None]:
        import torch

        if self._stream is None:
            yield
            return
        with torch.cuda.stream(self._stream):
            yield

    def prepare(self, jpegs: Sequence[bytes], boxes: Sequence[Sequence[Box]], *, scene: bool = True) -> Prepared:
        """Decode and preprocess a batch: frames of one size share each resize and crop call."""
        import torch

        if len(jpegs) != len(boxes):
            raise ValueError(f"{len(jpegs)} frames and {len(boxes)} box lists")
        with self._side_stream():
            decoded = self.decode(jpegs)
            failures = {i: d for i, d in enumerate(decoded) if isinstance(d, Exception)}
            images = {i: d for i, d in enumerate(decoded) if not isinstance(d, Exception)}
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, image in images.items():
                groups.setdefault(tuple(image.shape), []).append(i)
            parts: dict[int, list[torch.Tensor]] = {}
            for slots in groups.values():
                self._prepare_group([images[i] for i in slots], [boxes[i] for i in slots], slots, scene, parts)
            order = [t for i in range(len(jpegs)) for t in parts.get(i, [])]
            size = self.spec.size
            pixels = torch.cat(order) if order else torch.zeros((0, 3, size, size), device=self.device)
            pixels = pixels.to(self.dtype)
            counts = [sum(len(t) for t in parts.get(i, [])) for i in range(len(jpegs))]
            ready = None
            if self._stream is not None:
                ready = torch.cuda.Event()
                ready.record(self._stream)
        return Prepared(pixels, counts, failures, ready)

    def _prepare_group(
        self,
        frames: list[torch.Tensor],
        boxes: list[Sequence[Box]],
        slots: list[int],
        scene: bool,
        parts: dict[int, list[torch.Tensor]],
    ) -> None:
        """One frame size: the scenes in one resize, the crops in one roi_align, split back per frame."""
        import torch

        stacked = torch.stack(frames)
        scenes = self.scene_pixels(stacked) if scene else None
        crops = self.crop_pixels(stacked, boxes)
        start = 0
        for j, slot in enumerate(slots):
            mine = parts.setdefault(slot, [])
            if scenes is not None:
                mine.append(scenes[j : j + 1])
            n = len(boxes[j])
            if n:
                mine.append(crops[start : start + n])
            start += n

    def embed(self, prepared: Prepared) -> np.ndarray:
        """The prepared rows through the model: (N, dim) float16 unit rows on the host."""
        import torch

        if prepared.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(prepared.ready)
            prepared.pixels.record_stream(torch.cuda.current_stream(self.device))
        pixels = prepared.pixels
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embedder.dim), dtype=np.float16)
        with torch.inference_mode():
            rows = torch.cat(
                [self._forward(pixels[i : i + self.batch_size]) for i in range(0, len(pixels), self.batch_size)]
            )
            return self._to_host(rows)

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """One model call, padded to the fixed batch size when compiled (one shape, one graph)."""
        import torch

        n = chunk.shape[0]
        if self.compile_mode != "none" and n < self.batch_size:
            pad = chunk.new_zeros((self.batch_size - n, *chunk.shape[1:]))
            chunk = torch.cat([chunk, pad])
        if self.compile_mode in ("reduce-overhead", "max-autotune"):
            torch.compiler.cudagraph_mark_step_begin()
        features = self._encode(chunk)[:n].float()
        return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).half()

    def _to_host(self, rows: torch.Tensor) -> np.ndarray:
        """fp16 rows to numpy; on CUDA through a pinned buffer with a non-blocking copy."""
        import torch

        if not self.cuda:
            return rows.numpy().copy()
        host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
        host.copy_(rows, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy().copy()  # the pinned block goes back to the caching allocator

    def embed_frames(
        self, jpegs: Sequence[bytes], boxes: Sequence[Sequence[Box]], *, scene: bool = True
    ) -> list[np.ndarray | Exception]:
        """Per frame: its scene row (if asked) then one row per box, in order; or why it failed."""
        prepared = self.prepare(jpegs, boxes, scene=scene)
        rows = self.embed(prepared)
        out: list[np.ndarray | Exception] = []
        start = 0
        for i, n in enumerate(prepared.counts):
            out.append(prepared.failures[i] if i in prepared.failures else rows[start : start + n])
            start += n
        return out
