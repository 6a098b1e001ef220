"""An embed worker whose model computes nothing: the benchmark's way to see the pipeline's own limits.

``python -m loadtest.noop_embed --instance NAME`` runs what ``mediavec run embed`` runs (the real
:class:`~consumers.embed.stage.EmbedStage` under the real transactional runner: batch assembly,
Avro decode, JPEG decode, thumbnails, fp16 packing, Avro encode, transactions), configured by the
same ``MEDIAVEC_*`` environment, except that the vision model is :class:`NoopEmbedder`: every frame
and string gets the same unit vector of the configured architecture's width, with no
preprocessing and no forward pass. The stage takes its models as a constructor argument, which
is the whole seam: no product setting turns this on, and only the scene space (the vision model)
is supported. Used by :mod:`loadtest.scaling`; never by the pipeline itself.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from consumers.embed.stage import EmbedStage
from consumers.registry import EMBED
from mediavec.localworkers import LocalWorkers
from mediavec.settings import Settings, load_settings
from models.bundle import EmbedModels
from models.clip import ClipEmbedder
from models.weights import ResolvedWeights
from streams.admin import ensure_topics
from streams.runner import TransactionalRunner

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)
SUPPORTED_SPACES = ("scene",)


class NoopEmbedder(ClipEmbedder):
    """A vision model of ``arch``'s width that returns one constant unit row per input, at no cost."""

    def __init__(self, arch: str) -> None:
        import open_clip  # the architecture's config only: no weights, no model
        import torch

        dim = int(open_clip.get_model_config(arch)["embed_dim"])
        weights = ResolvedWeights(arch, "noop", None, "none: no-op model (loadtest.noop_embed)")
        super().__init__(
            None, lambda x: x, lambda x: x, weights=weights, dim=dim, device=torch.device("cpu"), fp16=False
        )
        self.model_id = f"noop-{arch}"
        self._row = np.zeros(dim, dtype=np.float16)
        self._row[0] = 1.0  # a unit row, as the output contract wants

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        if not images:
            raise ValueError("preprocess needs at least one image")
        return torch.empty((len(images), 0))  # a placeholder per image: nothing is resized or normalised

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        return np.tile(self._row, (pixels.shape[0], 1))

    def embed_prepared(self, pixels: list[torch.Tensor]) -> list[np.ndarray]:
        return [self._row] * len(pixels)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(self._row, (len(texts), 1))


def noop_models(settings: Settings) -> EmbedModels:
    """The models of the configured spaces, no-op; only the scene space has one."""
    unsupported = set(settings.embed.spaces) - set(SUPPORTED_SPACES)
    if unsupported:
        raise ValueError(f"the no-op embed worker makes only {SUPPORTED_SPACES}, not {sorted(unsupported)}")
    return EmbedModels(vision=NoopEmbedder(settings.model.arch))


def build(settings: Settings, instance: str | None = None) -> TransactionalRunner:
    """The embed worker as consumers.registry builds it, with the no-op models handed to the stage."""
    e = settings.embed
    stage = EmbedStage(settings, noop_models(settings))
    return TransactionalRunner(
        settings, stage, batch_size=e.frames_per_batch, batch_deadline_s=e.batch_deadline_s, instance=instance
    )


class NoopEmbedWorkers(LocalWorkers):
    """``LocalWorkers`` that start this module instead of ``mediavec run embed``; one process, stage "embed"."""

    def start(self, stages: Iterable[str] = (EMBED.name,)) -> NoopEmbedWorkers:
        if list(stages) != [EMBED.name]:
            raise ValueError("the no-op workers run the embed stage only")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{EMBED.name}.log").open("ab")
        cmd = [sys.executable, "-m", "loadtest.noop_embed", "--instance", self.instance]
        self.procs[EMBED.name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instance", help="worker instance id (static group member, transactional id)")
    args = ap.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        runner = build(settings, args.instance)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ensure_topics(settings)
    runner.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
