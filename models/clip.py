"""The CLIP-family embedder: open_clip image and text towers, fp16 unit vectors out.

Importing this module is cheap: torch and open_clip are imported inside :meth:`ClipEmbedder.load`,
so the CLI and the stages can import it without paying for a model. Weights are resolved by
:mod:`models.weights` (model directory, hub cache, or random weights when allowed).

Output contract: ``(N, dim)`` float16, each row L2-normalised in fp32 before the cast.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from models.settings import ModelSettings
from models.weights import RANDOM_SEED, ResolvedWeights, resolve_weights, tag_config

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def use_fp16(device: torch.device, precision: str) -> bool:
    """fp16 on CUDA unless fp32 is asked for; always fp32 elsewhere (CPU fp16 is slow and lossy)."""
    if device.type != "cuda":
        if precision == "fp16":
            logger.warning("precision fp16 requested on %s; running fp32 (fp16 is only used on CUDA)", device)
        return False
    return precision in ("auto", "fp16")


def _tag_overrides(weights: ResolvedWeights) -> dict[str, Any]:
    """A known tag's own preprocessing and activation, which a plain file path would lose."""
    cfg = tag_config(weights.arch, weights.pretrained)
    overrides: dict[str, Any] = {"force_quick_gelu": bool(cfg.get("quick_gelu", False))}
    for key, arg in (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation")):
        if key in cfg:
            overrides[arg] = cfg[key]
    if "resize_mode" in cfg:
        overrides["image_resize_mode"] = cfg["resize_mode"]
    return overrides


def _build(weights: ResolvedWeights, device: torch.device, fp16: bool) -> tuple[Any, Callable[[Any], Any]]:
    """The open_clip model (eval mode, on device) and its inference transform."""
    import open_clip
    import torch

    common: dict[str, Any] = {
        "precision": "fp16" if fp16 else "fp32",
        "device": device,
        "pretrained_image": False,  # never fetch tower weights from the network
        "pretrained_text": False,
    }
    if weights.checkpoint is None:
        # Initialise on the CPU generator from a fixed seed, without disturbing the caller's RNG,
        # so every worker process builds the identical model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model, _, transform = open_clip.create_model_and_transforms(weights.arch, pretrained=None, **common)
    else:
        model, _, transform = open_clip.create_model_and_transforms(
            weights.arch, pretrained=str(weights.checkpoint), **common, **_tag_overrides(weights)
        )
    model.eval()
    return model, transform


class ClipEmbedder:
    """One loaded open_clip model. Build it with :meth:`load`, once per worker process."""

    def __init__(
        self,
        model: Any,
        transform: Callable[[Any], Any],
        tokenizer: Callable[[list[str]], Any],
        *,
        weights: ResolvedWeights,
        dim: int,
        device: torch.device,
        fp16: bool,
    ) -> None:
        self.model = model
        self.model_id: str = weights.model_id
        self.arch: str = weights.arch
        self.dim = dim
        self.device = device
        self.weights_source: str = weights.source
        self.is_random: bool = weights.is_random
        self.fp16 = fp16
        self._transform = transform
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, settings: ModelSettings, *, hub_cache_dir: Path | None = None) -> ClipEmbedder:
        """Resolve weights, build the model and tokenizer; raises WeightsNotFound.

        ``hub_cache_dir`` overrides the Hugging Face hub cache directory (default HF_HUB_CACHE).
        """
        import open_clip
        import torch

        started = time.perf_counter()
        weights = resolve_weights(settings, hub_cache_dir)
        device = resolve_device(settings.device)
        fp16 = use_fp16(device, settings.precision)
        model, transform = _build(weights, device, fp16)
        dim = int(open_clip.get_model_config(settings.arch)["embed_dim"])
        embedder = cls(
            model,
            transform,
            open_clip.get_tokenizer(settings.arch),
            weights=weights,
            dim=dim,
            device=device,
            fp16=fp16,
        )
        logger.info(
            "loaded %s (dim %d) on %s (%d CPU threads), %s, weights from %s in %.1fs",
            embedder.model_id,
            dim,
            device,
            torch.get_num_threads(),  # ultralytics' import sets OMP_NUM_THREADS=1 if it runs first
            "fp16" if fp16 else "fp32",
            weights.source,
            time.perf_counter() - started,
        )
        return embedder

    @functools.cached_property
    def input_side(self) -> int:
        """The side of the square the image tower reads (open_clip resizes the short side to it)."""
        import open_clip

        size = open_clip.get_model_config(self.arch)["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else min(size))

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise on the CPU: (N, 3, H, W) float32, safe off the model thread."""
        import torch

        if not images:
            raise ValueError("preprocess needs at least one image")
        return torch.stack([self._transform(image) for image in images])

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed (N, 3, H, W) tensor: (N, dim) float16 unit rows."""
        import torch

        if pixels.shape[0] == 0:
            return self._empty()
        dtype = torch.float16 if self.fp16 else torch.float32
        with torch.inference_mode():
            features = self.model.encode_image(pixels.to(self.device, dtype=dtype, non_blocking=True))
            return _unit_fp16(features)

    def embed_prepared(self, pixels: list[torch.Tensor]) -> list[np.ndarray]:
        """Rows of per-image (3, H, W) tensors from :meth:`preprocess`: the embed stage's queue call."""
        import torch

        return list(self.embed_pixels(torch.stack(pixels)))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return self._empty()
        return self.embed_pixels(self.preprocess(images))

    def embed_pixel_chunks(self, pixels: Sequence[torch.Tensor], batch_size: int) -> np.ndarray:
        """Embed per-image (1, 3, H, W) or (3, H, W) tensors, ``batch_size`` at a time, in order."""
        import torch

        if not pixels:
            return self._empty()
        step = max(1, batch_size)
        parts = []
        for start in range(0, len(pixels), step):
            chunk = [p if p.dim() == 4 else p.unsqueeze(0) for p in pixels[start : start + step]]
            parts.append(self.embed_pixels(torch.cat(chunk)))
        return np.concatenate(parts)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed strings with the text tower: (N, dim) float16 unit rows, in the image space."""
        import torch

        if not texts:
            return self._empty()
        tokens = self._tokenizer(list(texts))
        with torch.inference_mode():
            return _unit_fp16(self.model.encode_text(tokens.to(self.device)))

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dim), dtype=np.float16)


def _unit_fp16(features: torch.Tensor) -> np.ndarray:
    """L2-normalise in fp32, then cast: the norm is exact before fp16 rounding."""
    rows = features.float()
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return rows.cpu().numpy().astype(np.float16)
