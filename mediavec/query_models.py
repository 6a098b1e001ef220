"""The models that embed search queries, loaded on first use and kept for the caller's lifetime.

A model id names the architecture and the weights (``open_clip/<arch>/<tag>``), so a collection
made by other weights than the configured ones (an alias to an older version) gets its own model.
The configured open_clip ids come from the weights resolution without building a model, so a
search builds only the open_clip models of spaces it finds collections for; the face and MiniLM
models are loaded to learn their ids (well under a second for dlib, a few seconds for MiniLM).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from PIL import Image

from mediavec.settings import Settings
from models.remote.settings import remote_model_id
from models.settings import ModelSettings
from stores.vectorstore import QdrantStore, VectorStore

if TYPE_CHECKING:
    from models.bundle import ImageEmbedder
    from models.clip import ClipEmbedder
    from models.faces import Face
    from models.textmodel import TextModel

logger = logging.getLogger(__name__)

Role = Literal["vision", "concept", "minilm", "face"]


class SearchError(ValueError):
    """A query that cannot be answered as asked; the message says why."""


class FaceModel(Protocol):
    """What queries need of a face backend (dlib's FaceEmbedder, ArcFaceEmbedder)."""

    model_id: str

    def faces(self, image: Image.Image, max_faces: int = 20, min_score: float = 0.0) -> list[Face]: ...


@dataclass(frozen=True)
class Query:
    """One search query: a string or an RGB image, never both."""

    text: str | None = None
    image: Image.Image | None = None

    @classmethod
    def of(cls, text: str | None = None, image: Path | Image.Image | None = None) -> Query:
        """A text query, or an image query from a file or a decoded image."""
        if (text is None) == (image is None):
            raise SearchError("give a text or an image (one of them)")
        if image is None:
            return cls(text=text)
        if isinstance(image, Image.Image):
            return cls(image=image.convert("RGB"))
        with Image.open(image) as im:
            return cls(image=im.convert("RGB"))


@dataclass(frozen=True)
class Target:
    """One space to search: the model role that embeds the query and the physical collection."""

    space: str
    role: Role
    model: str
    collection: str

    def name_in(self, store: VectorStore) -> str:
        """The collection's name in that store: the encrypted index keeps a collection per space."""
        return self.collection if isinstance(store, QdrantStore) else f"{self.collection}__{self.space}"


def model_settings(base: ModelSettings, model_id: str | None) -> ModelSettings:
    """``base`` with the architecture and weights a model id names (``open_clip/<arch>/<tag>``)."""
    if model_id is None:
        return base
    parts = model_id.split("/")
    if len(parts) != 3 or parts[0] != "open_clip":
        raise SearchError(f"cannot load {model_id!r} for queries: not an open_clip model id")
    _, arch, pretrained = parts
    random = pretrained.startswith("random-seed")
    update: dict[str, object] = {"arch": arch, "allow_random_weights": random or base.allow_random_weights}
    if not random:
        update["pretrained"] = pretrained
    return base.model_copy(update=update)


class QueryModels:
    """The models that embed queries, each loaded on first use and then kept.

    One instance serves one search call (the default) or a long-lived search service; a model id
    names the weights, so a collection made by other weights than the configured ones (an alias
    to an older version) gets its own model.
    """

    def __init__(self, settings: Settings, *, vision: ClipEmbedder | None = None) -> None:
        self.settings = settings
        self._clip: dict[str, ImageEmbedder] = {vision.model_id: vision} if vision is not None else {}
        self._vision_id = vision.model_id if vision is not None else None
        self._concept_id: str | None = None
        self._text: TextModel | None = None
        self._faces: FaceModel | None = None

    def model_id(self, role: Role) -> str:
        """The id of the configured model of a role (open_clip ones without building the model)."""
        if role in ("vision", "concept") and self.settings.provider_of(role) == "remote":
            return remote_model_id(self.settings.remote)
        if role == "vision":
            self._vision_id = self._vision_id or _weights_id(self.settings.model)
            return self._vision_id
        if role == "concept":
            self._concept_id = self._concept_id or _weights_id(self.settings.concept)
            return self._concept_id
        return self.text_model().model_id if role == "minilm" else self.face_model().model_id

    def clip(self, role: Literal["vision", "concept"], model_id: str) -> ImageEmbedder:
        """The image model that made ``model_id``'s vectors: open_clip weights, or the remote provider."""
        from models.clip import ClipEmbedder

        if model_id not in self._clip:
            if model_id.startswith("remote/"):
                self._clip[model_id] = self._remote(model_id)
            else:
                base = self.settings.model if role == "vision" else self.settings.concept
                self._clip[model_id] = ClipEmbedder.load(model_settings(base, model_id))
        return self._clip[model_id]

    def _remote(self, model_id: str) -> ImageEmbedder:
        from models.remote.client import RemoteEmbedder

        configured = remote_model_id(self.settings.remote)
        if model_id != configured:
            raise SearchError(
                f"the collection was made by {model_id}, and the configured provider is {configured}: "
                "set MEDIAVEC_REMOTE__FLAVOUR and MEDIAVEC_REMOTE__MODEL to query it"
            )
        return RemoteEmbedder(self.settings.remote, purpose="query")

    def close(self) -> None:
        """Release the remote provider's session, where one was opened."""
        from models.remote.client import RemoteEmbedder

        for model in self._clip.values():
            if isinstance(model, RemoteEmbedder):
                model.close()

    def text_model(self) -> TextModel:
        from models.textmodel import TextModel

        if self._text is None:
            self._text = TextModel.load(self.settings.text.model_dir, device=self.settings.model.device)
        return self._text

    def face_model(self) -> FaceModel:
        """The configured face backend, loaded as the embed stage loads it."""
        if self._faces is None:
            from models.bundle import load_faces

            self._faces = load_faces(self.settings)
        return self._faces

    def embed(self, target: Target, query: Query) -> np.ndarray | None:
        """The query in the target's space (full width), or None when an image holds no face."""
        if target.role in ("vision", "concept"):
            embedder = self.clip("vision" if target.role == "vision" else "concept", target.model)
            if query.text is not None:
                return embedder.embed_texts([query.text])[0]
            assert query.image is not None
            return embedder.embed_images([query.image])[0]
        if target.role == "minilm":
            assert query.text is not None
            return self.text_model().embed([query.text])[0]
        assert query.image is not None
        faces = self.face_model().faces(_scaled(query.image, self.settings.faces.max_side), max_faces=1)
        return faces[0].descriptor if faces else None


def _weights_id(settings: ModelSettings) -> str:
    from models.weights import resolve_weights

    return resolve_weights(settings).model_id


def _scaled(image: Image.Image, max_side: int) -> Image.Image:
    """The image no larger than the embed stage lets frames be before face detection."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
