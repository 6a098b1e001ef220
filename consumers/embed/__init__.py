"""The embed stage: frames to fp16 vectors (see :mod:`consumers.embed.stage`)."""

from consumers.embed.stage import EmbedStage, embed_frames_in_memory

__all__ = ["EmbedStage", "embed_frames_in_memory"]
