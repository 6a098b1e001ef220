"""The Avro topics through a Confluent-compatible schema registry (Confluent's, Apicurio's ccompat API).

With ``MEDIAVEC_SCHEMA_REGISTRY__FRAMING=confluent``, :func:`use_registry` registers each event's
current schema under the subject ``<topic>-value`` of every topic that carries it (the
TopicNameStrategy that Kafka Connect, ksqlDB and the registry-aware serializers of other languages
look up) and has :mod:`schemas.codec` write the Confluent wire format with the id the registry
gave. With only a URL set, events written that way by others are read, their schemas asked of the
registry by id. Every Kafka client factory calls :func:`use_registry`, so no reader or writer of
the process can miss it; the registry is asked once per process.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from schemas.codec import schema_text
from schemas.codec import use_registry as use_codec_registry
from streams.settings import SchemaRegistrySettings, StreamSettings
from streams.topics import topics

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_registered: dict[str, dict[str, int]] = {}  # registry, framing and topics -> the ids registered there
_current = ""  # the key of the framing in use; "": the single-object encoding, no registry
_lock = threading.Lock()


class SchemaRegistryError(RuntimeError):
    """The registry refused a schema or could not be reached: the worker cannot write its topics."""


class RegistryClient:
    """The few calls of the Confluent schema registry API mediavec makes."""

    def __init__(self, settings: SchemaRegistrySettings) -> None:
        assert settings.url is not None
        self.url = settings.url.rstrip("/")
        self.timeout_s = settings.timeout_s
        self._auth: str | None = None
        if settings.username is not None:
            secret = settings.password.get_secret_value() if settings.password is not None else ""
            self._auth = "Basic " + base64.b64encode(f"{settings.username}:{secret}".encode()).decode()

    def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` under ``subject``, registering it as a new version if needed."""
        body = {"schema": schema, "schemaType": "AVRO"}
        return int(self._call("POST", f"/subjects/{_quote(subject)}/versions", body)["id"])

    def schema(self, schema_id: int) -> str:
        """The schema text registered under ``schema_id``; LookupError if the registry has none."""
        return str(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])

    def subjects(self) -> list[str]:
        return [str(s) for s in self._call("GET", "/subjects")]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": CONTENT_TYPE}
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
        if self._auth is not None:
            headers["Authorization"] = self._auth
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET":
                raise LookupError(path) from None
            answer = f"{exc.code} to {method} {path}: {_message(exc)}"
            raise SchemaRegistryError(f"schema registry answered {answer}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SchemaRegistryError(f"schema registry at {self.url} unreachable: {reason}") from None


def use_registry(settings: StreamSettings) -> None:
    """Frame events as ``settings`` say: for their registry (its schemas registered once per process)
    or, with no registry set, in the single-object encoding."""
    global _current
    conf = settings.schema_registry
    t = settings.topics
    key = "" if conf.url is None else f"{conf.url}|{conf.framing}|{t.prefix}|{t.sink_prefix}"
    with _lock:
        if key == _current:
            return
        if conf.url is None:
            use_codec_registry({}, None)
        else:
            client = RegistryClient(conf)
            if key not in _registered:
                _registered[key] = register_schemas(client, settings) if conf.framing == "confluent" else {}
                if _registered[key]:
                    logger.info("events framed for the schema registry at %s: ids %s", client.url, _registered[key])
            use_codec_registry(_registered[key], client.schema)
        _current = key


def register_schemas(client: RegistryClient, settings: StreamSettings) -> dict[str, int]:
    """Each Avro event's current schema under ``<topic>-value`` of the topics that carry it; event -> id."""
    ids: dict[str, int] = {}
    for spec in topics(settings).all():
        event = spec.avro_event
        if event is None:
            continue
        schema_id = client.register(f"{spec.name}-value", registrable(schema_text(event)))
        ids.setdefault(event, schema_id)  # ids are global: the first topic's serves every topic
    return ids


def registrable(schema: str) -> str:
    """``schema`` as compact JSON that every registry takes.

    Apicurio 3.3's content detection refuses an Avro schema whose text holds the string ``"{}"``
    (the frame's ``options_json`` default): "Failed to discover artifact type from content". The
    brace is written as its JSON escape, the same string to every JSON parser.
    """
    return json.dumps(json.loads(schema), separators=(",", ":")).replace('"{}"', '"\\u007b}"')


def _quote(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read())
        return str(doc.get("message", doc))[:200]
    except (ValueError, OSError):
        return exc.reason if isinstance(exc.reason, str) else "no message"
