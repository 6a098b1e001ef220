"""Event schemas: versioned, language-neutral files plus one typed model per version.

The files beside this module are the contract (JSON Schema for the public request topic, Avro
for the internal binary topics); the dataclasses in :mod:`schemas.models` mirror them and
:mod:`schemas.codec` converts between the two. See README.md for every field.
"""

from schemas.codec import (
    SchemaError,
    decode_dead_letter,
    decode_frame,
    decode_request,
    decode_vector_batch,
    encode_dead_letter,
    encode_frame,
    encode_request,
    encode_vector_batch,
)
from schemas.ids import point_id
from schemas.models import DeadLetter, Frame, Header, MediaRequest, VectorBatch, VectorRow

__all__ = [
    "DeadLetter",
    "Frame",
    "Header",
    "MediaRequest",
    "SchemaError",
    "VectorBatch",
    "VectorRow",
    "decode_dead_letter",
    "decode_frame",
    "decode_request",
    "decode_vector_batch",
    "encode_dead_letter",
    "encode_frame",
    "encode_request",
    "encode_vector_batch",
    "point_id",
]
