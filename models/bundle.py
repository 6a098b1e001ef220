"""Every model the embed stage needs for the configured spaces, loaded once per worker process.

Which models load follows ``embed.spaces``:

=============  =========================================================================
scene          the vision model (open_clip), whole frame
object         the detector (ultralytics) and the vision model on each crop; an open-vocabulary
               detector (YOLO-World) takes the run's prompts as classes, embedded by the vision
               model's text tower
grid           the concept model (open_clip, MobileCLIP2 by default) on frame + patches
text           the vision model's text tower (or MiniLM), OCR (rapidocr) and the detector
face           the face backend (dlib 128-d descriptor, or ArcFace ONNX when configured)
=============  =========================================================================

With ``model.provider = remote`` (``MEDIAVEC_MODEL__PROVIDER=remote``) the vision model is a
:class:`~models.remote.client.RemoteEmbedder`: the hosted API of the ``remote`` section embeds
frames, crops and strings; the concept model follows it unless ``concept.provider`` says
otherwise, sharing the same embedder (one limiter, one quota). The detector, OCR and faces stay local.

Stored dimensions: the vision and concept spaces are truncated to their ``store_dim`` and
renormalised (Matryoshka); faces keep their full width.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np

from models.arcface import ArcFaceEmbedder
from models.clip import ClipEmbedder
from models.detector import Detector
from models.detector_weights import resolve_detector_weights
from models.faces import FaceEmbedder
from models.ocr import OcrReader
from models.prompt_bank import DEFAULT_PROMPT_BANK
from models.remote.client import RemoteEmbedder
from models.remote.settings import ProviderSettingsError
from models.settings import ModelsSettings
from models.textmodel import TextModel, truncate
from schemas.spaces import SpaceName

logger = logging.getLogger(__name__)

ImageEmbedder: TypeAlias = ClipEmbedder | RemoteEmbedder


def stored(vectors: np.ndarray, store_dim: int | None) -> np.ndarray:
    """Vectors as stored: truncated to ``store_dim`` and renormalised when narrower, fp16."""
    vectors = np.asarray(vectors, dtype=np.float16)
    if store_dim is None or store_dim >= vectors.shape[-1]:
        return vectors
    return truncate(vectors, store_dim)


@dataclass
class EmbedModels:
    """The loaded models; a member is None when no configured space needs it."""

    vision: ImageEmbedder | None = None
    concept: ImageEmbedder | None = None
    detector: Detector | None = None
    faces: FaceEmbedder | ArcFaceEmbedder | None = None
    ocr: OcrReader | None = None
    text: TextModel | None = None
    prompt_bank: tuple[str, ...] = ()
    bank_vectors: np.ndarray | None = None  # concept-space unit rows of the prompt bank, full width

    @classmethod
    def load(
        cls,
        settings: ModelsSettings,
        spaces: Iterable[SpaceName],
        *,
        prompt_bank: tuple[str, ...] = (),
        vision: ImageEmbedder | None = None,
    ) -> EmbedModels:
        """Load what ``spaces`` need (empty ``prompt_bank``: the built-in one); ``vision`` reuses a loaded model."""
        spaces = set(spaces)
        text = settings.text
        _check_remote_images(settings, spaces)
        models = cls()
        if spaces & {"scene", "object"} or ("text" in spaces and text.backend == "vision"):
            models.vision = vision or models._image_model(settings, "vision")
        if spaces & {"object", "text"}:
            models.detector = models._detector(settings)
        if "grid" in spaces:
            models.concept = models._image_model(settings, "concept")
            models.prompt_bank = prompt_bank or DEFAULT_PROMPT_BANK
            models.bank_vectors = models.concept.embed_texts(list(models.prompt_bank))
        if "text" in spaces:
            if text.ocr:
                models.ocr = OcrReader.load()
            if text.backend == "minilm":
                models.text = TextModel.load(text.model_dir, device=settings.model.device)
        if "face" in spaces:
            models.faces = load_faces(settings)
        return models

    def _image_model(self, settings: ModelsSettings, role: Literal["vision", "concept"]) -> ImageEmbedder:
        """A role's model: open_clip here, or the remote provider (one embedder for both roles)."""
        if settings.provider_of(role) == "local":
            return ClipEmbedder.load(settings.model if role == "vision" else settings.concept)
        for loaded in (self.vision, self.concept):
            if isinstance(loaded, RemoteEmbedder):
                return loaded
        embedder = RemoteEmbedder(settings.remote, purpose="ingest")
        logger.info("%s embeds through %s (%s API)", role, settings.remote.url, settings.remote.flavour)
        return embedder

    def _detector(self, settings: ModelsSettings) -> Detector:
        """The detector; an open-vocabulary one embeds its classes with the vision model's text tower."""
        weights = resolve_detector_weights(settings)

        def vision_texts(texts: Sequence[str]) -> np.ndarray:
            if self.vision is None:  # text-only spaces with MiniLM: the tower is loaded for the detector
                self.vision = self._image_model(settings, "vision")
            return self.vision.embed_texts(list(texts))

        return Detector.load(weights, device=settings.detector.device, text_encoder=vision_texts)

    @property
    def remote(self) -> RemoteEmbedder | None:
        """The remote provider's embedder, when a role uses one."""
        return next((m for m in (self.vision, self.concept) if isinstance(m, RemoteEmbedder)), None)

    def close(self) -> None:
        """Release what outlives a call: the remote provider's HTTP session and loop thread."""
        if self.remote is not None:
            self.remote.close()

    def text_model_id(self) -> str:
        if self.text is not None:
            return self.text.model_id
        if self.vision is None:
            raise RuntimeError("no text model loaded")
        return self.vision.model_id

    def embed_text_items(self, texts: list[str]) -> list[np.ndarray | Exception]:
        """Like :meth:`embed_texts`, with a remote provider's refusal of one string in its place."""
        if self.text is None and isinstance(self.vision, RemoteEmbedder):
            return self.vision.embed_text_items(texts)
        return list(self.embed_texts(texts))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Strings into the text space: the MiniLM space when configured, else the vision model's."""
        if self.text is not None:
            return self.text.embed(texts, batch_size=max(1, len(texts)))
        if self.vision is None:
            raise RuntimeError("no text model loaded")
        return self.vision.embed_texts(texts)


def _check_remote_images(settings: ModelsSettings, spaces: set[SpaceName]) -> None:
    """A provider that embeds text only cannot make the image spaces: say so before any frame fails."""
    imaged: list[tuple[Literal["vision", "concept"], set[SpaceName]]] = [
        ("vision", spaces & {"scene", "object"}),
        ("concept", spaces & {"grid"}),
    ]
    for role, needs in imaged:
        if needs and settings.provider_of(role) == "remote" and not settings.remote.api().supports_images:
            raise ProviderSettingsError(
                f"the {settings.remote.flavour} API embeds text only, and the {role} model makes "
                f"{', '.join(sorted(needs))} from images: use the nim or openai flavour, or leave those spaces out"
            )


def load_faces(settings: ModelsSettings) -> FaceEmbedder | ArcFaceEmbedder:
    """The configured face backend: ArcFace ONNX when set, else dlib's shipped 128-d descriptor."""
    f = settings.faces
    if f.backend == "arcface":
        return ArcFaceEmbedder.load(f.arcface_onnx, detector=f.detector, upsample=f.upsample)
    return FaceEmbedder.load(detector=f.detector, upsample=f.upsample)
