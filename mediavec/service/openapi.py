"""The OpenAPI 3.1 document of the service, generated from the endpoint table and the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mediavec.service.api import ENDPOINTS, Endpoint, ErrorOut

REF = "#/components/schemas/{model}"
_REASONS = {
    400: "A malformed body, a field that does not validate, or a query that does not fit the space.",
    401: "The API key is missing or wrong.",
    404: "No such collection (or alias), point or thumbnail.",
    413: "The request body is over the size limit.",
    422: "The URL could not be fetched (refused by the address guard, unreachable, or over the limits).",
    503: "A store or the model weights are unavailable.",
}
IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "application/octet-stream",
)


def openapi_document(version: str, with_key: bool) -> dict[str, Any]:
    """The document; ``with_key``: the API key is configured, so the endpoints that need it say so."""
    models: set[type[BaseModel]] = {ErrorOut}
    for e in ENDPOINTS:
        models.update(m for m in (e.body_model, e.response) if m is not None)
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=REF
    )
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "mediavec search",
            "version": version,
            "description": "Search stored image and video vectors.",
        },
        "paths": {},
        "components": {"schemas": defs.get("$defs", {})},
    }
    if with_key:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    for e in ENDPOINTS:
        doc["paths"].setdefault(e.path, {})[e.method.lower()] = _operation(e, with_key)
    return doc


def _operation(e: Endpoint, with_key: bool) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": e.name, "summary": e.summary, "responses": _responses(e)}
    params = [
        {"name": name, "in": "path", "required": True, "schema": schema} for name, schema in e.path_params.items()
    ]
    if e.query is not None:
        params += _query_parameters(e.query)
    if params:
        op["parameters"] = params
    if e.body == "json" and e.body_model is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(e.body_model)}}}
    elif e.body == "image":
        op["requestBody"] = {"required": True, "content": _image_content()}
    if with_key and not e.public:
        op["security"] = [{"bearer": []}, {"apiKey": []}]
    return op


def _responses(e: Endpoint) -> dict[str, Any]:
    if e.response is not None:
        ok: dict[str, Any] = {"description": "OK", "content": {e.response_type: {"schema": _ref(e.response)}}}
    elif e.response_type == "application/json":
        ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    else:
        ok = {"description": "OK", "content": {e.response_type: {"schema": {"type": "string"}}}}
    error = {"content": {"application/json": {"schema": _ref(ErrorOut)}}}
    out = {"200": ok} | {str(s): {"description": _REASONS.get(s, "Unavailable"), **error} for s in e.errors}
    out["default"] = {"description": "Any other error (an unknown route, a wrong method, a bug).", **error}
    return out


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _image_content() -> dict[str, Any]:
    raw = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
    form = {
        "schema": {
            "type": "object",
            "properties": {"image": {"type": "string", "contentMediaType": "application/octet-stream"}},
            "required": ["image"],
        }
    }
    return {t: raw for t in IMAGE_TYPES} | {"multipart/form-data": form}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}
