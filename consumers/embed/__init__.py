"""The embed stage: frames to fp16 vectors (see :mod:`consumers.embed.stage`)."""
