"""Check a publish file before anything is published: each line becomes a request or a refusal.

Formats, decided by the first line that holds anything: one URL per line; JSON lines (objects
with ``url`` and optionally ``media_id``, ``collection``, ``kind``, ``start_s``, ``end_s``,
``sample_fps``, ``options``, ``reprocess`` and a ``metadata`` object; any other key is metadata
too); CSV whose header has a ``url`` column (the same names as columns, any other column is
metadata). Blank lines and lines starting with ``#`` are skipped. Lines are counted by ``\\n``,
as editors, ``grep -n`` and ``sed -n`` count them.

Every request is checked as the consumers check it (:func:`schemas.encode_request`: the JSON
Schema and the size limits), after a few checks the schema cannot make (a URL with a scheme the
fetch stage reads, no whitespace, no control characters, finite numbers). A refused line says its
number and why in at most :data:`MAX_REASON` characters, quoting at most ~:data:`MAX_QUOTE`
characters of input, printable only. A file that is no request list at all (missing, unreadable,
not a regular file, binary: a NUL byte in its first 8 KiB, as git and grep judge, or empty)
raises :class:`PublishFileError`, whose text is one line.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from media.download import FetchError
from media.video_source import file_url_path
from mediavec.publish import media_id_for
from schemas import MediaRequest, SchemaError, encode_request
from schemas.codec import request_validator

Format = Literal["urls", "jsonl", "csv"]
SNIFF_BYTES = 8192  # a NUL byte this early means binary (git's and grep's rule)
MAX_REASON = 200
MAX_QUOTE = 80
URL_SCHEMES = ("http", "https", "file")
REQUEST_FIELDS = ("media_id", "collection", "kind", "start_s", "end_s", "sample_fps", "options", "reprocess")
_NUMBER_FIELDS = ("start_s", "end_s", "sample_fps")
_LONG_QUOTE = re.compile(r"""(['"])([^'"]{""" + str(MAX_QUOTE - 3) + r"""})[^'"]+(?:\1|…|$)""")


class PublishFileError(ValueError):
    """The file as a whole cannot be read as requests (its text is one line, for the CLI)."""


@dataclass(frozen=True)
class Refused:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Accepted:
    line: int
    request: MediaRequest


@dataclass(frozen=True)
class FileCheck:
    """What a file holds: its format, the requests of its valid lines and the refused lines, by line."""

    format: Format
    accepted: list[Accepted]
    refused: list[Refused]

    @property
    def requests(self) -> list[MediaRequest]:
        return [a.request for a in self.accepted]


@dataclass(frozen=True)
class Line:
    number: int
    text: str  # stripped


def check_file(path: Path, *, collection: str, run_id: str) -> FileCheck:
    """Every non-blank, non-comment line of ``path`` as a valid request or a refusal. Raises
    :class:`PublishFileError` only for a file that is no request list at all."""
    lines, refused = read_lines(path)
    fmt = detect_format(lines[0].text) if lines else "urls"
    accepted: list[Accepted] = []
    for number, row in _rows(fmt, lines):
        result = row if isinstance(row, str) else _request(row, collection=collection, run_id=run_id)
        if isinstance(result, str):
            refused.append(Refused(number, reason_text(result)))
        else:
            accepted.append(Accepted(number, result))
    return FileCheck(fmt, accepted, sorted(refused, key=lambda r: r.line))


# -- text ---------------------------------------------------------------------------------------


def read_lines(path: Path, what: str = "file") -> tuple[list[Line], list[Refused]]:
    """The content lines of a text file, and its lines that are not UTF-8 (refused)."""
    data = _read_bytes(path, what)
    if b"\0" in data[:SNIFF_BYTES]:
        at = data.index(b"\0")
        raise PublishFileError(f"{display_name(path)}: a binary file (NUL byte at offset {at}), not a text {what}")
    lines: list[Line] = []
    refused: list[Refused] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            if not raw.lstrip().startswith(b"#"):
                refused.append(Refused(number, f"not UTF-8 text (byte {exc.start + 1} of the line)"))
            continue
        if text and not text.startswith("#"):
            lines.append(Line(number, text))
    if not lines and not refused:
        raise PublishFileError(f"{display_name(path)}: no requests in it (empty, or only comments)")
    return lines, refused


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        if path.is_dir():
            raise PublishFileError(f"{display_name(path)}: a directory, not a {what}")
        if not path.exists():
            raise PublishFileError(f"{display_name(path)}: no such {what}")
        if not path.is_file():
            raise PublishFileError(f"{display_name(path)}: not a regular file")
        return path.read_bytes()
    except OSError as exc:
        raise PublishFileError(f"{display_name(path)}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def display_name(path: Path | str) -> str:
    """A file name or URL for a message: printable, at most MAX_REASON / 2 characters."""
    return printable(clip(str(path), MAX_REASON // 2))


def clip(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(value: str) -> str:
    """A value for a message: in quotes, cut to MAX_QUOTE with them, escapes for anything unprintable."""
    return repr(clip(value, MAX_QUOTE - 2))


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def reason_text(text: str) -> str:
    """One printable line of at most MAX_REASON characters, quoted values cut to ~MAX_QUOTE."""
    return clip(printable(_LONG_QUOTE.sub(r"\1\2…\1", text)), MAX_REASON)


# -- rows ---------------------------------------------------------------------------------------


def detect_format(first: str) -> Format:
    if first.startswith("{"):
        return "jsonl"
    fields = _csv_fields(first)
    return "csv" if isinstance(fields, list) and "url" in fields else "urls"


def _rows(fmt: Format, lines: list[Line]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    if fmt == "urls":
        yield from ((ln.number, {"url": ln.text}) for ln in lines)
    elif fmt == "jsonl":
        yield from ((ln.number, _json_row(ln.text)) for ln in lines)
    else:
        header, rest = lines[0], lines[1:]
        names = _csv_fields(header.text)
        assert isinstance(names, list)  # detect_format parsed it
        if len(set(names)) < len(names):
            raise PublishFileError(f"the CSV header (line {header.number}) names a column twice")
        yield from ((ln.number, _csv_row(ln.text, names, header.number)) for ln in rest)


def _json_row(text: str) -> dict[str, Any] | str:
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        return "JSON nested too deeply"
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:
        return f"not JSON: {exc}"
    return value if isinstance(value, dict) else f"a JSON {json_type(value)}, not an object"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{clip(text, 20)} is out of range")
    return value


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _csv_fields(text: str) -> list[str] | str:
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        return f"not a CSV row ({exc})"
    return [f.strip() for f in rows[0]] if rows else []


def _csv_row(text: str, names: list[str], header_line: int) -> dict[str, Any] | str:
    fields = _csv_fields(text)
    if isinstance(fields, str):
        return fields
    if len(fields) != len(names):
        return f"{len(fields)} fields, the header (line {header_line}) has {len(names)}"
    row: dict[str, Any] = {"metadata": {}}
    for name, value in zip(names, fields, strict=True):
        if name == "url" or name in REQUEST_FIELDS:
            row[name] = _csv_value(name, value)
        elif value:
            row["metadata"][name] = value
    return row


def _csv_value(name: str, value: str) -> Any:
    """A column's text as the schema's type where it reads as one; else the text, for the schema to refuse."""
    if name in _NUMBER_FIELDS:
        try:
            return _finite(value)
        except ValueError:
            return value
    if name == "reprocess":
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(value.lower(), value)
    return value


# -- requests -----------------------------------------------------------------------------------


def _request(row: dict[str, Any], *, collection: str, run_id: str) -> MediaRequest | str:
    bad = _bad_text(row)
    if bad:
        return bad
    url = row.pop("url", None)
    if not isinstance(url, str):
        return "no url" if url is None else f"url is a JSON {json_type(url)}, not a string"
    url = url.strip()
    problem = url_problem(url)
    if problem:
        return problem
    fields = {k: row.pop(k) for k in REQUEST_FIELDS if k in row}
    fields = {k: v for k, v in fields.items() if v is not None and v != ""}
    metadata = _metadata(row)
    if isinstance(metadata, str):
        return metadata
    media_id = fields.pop("media_id", None)
    if isinstance(media_id, bool) or not isinstance(media_id, str | int | None):
        return f"media_id is a JSON {json_type(media_id)}, not a string"
    req = MediaRequest(
        media_id=media_id_for(url) if media_id is None else str(media_id),
        url=url,
        kind=fields.pop("kind", "image"),
        collection=fields.pop("collection", collection),
        metadata=metadata,
        run_id=run_id,
        published_at=time.time(),
        **fields,
    )
    return request_problem(req) or req


def _metadata(row: dict[str, Any]) -> dict[str, str] | str:
    """The ``metadata`` object and every other key, as strings (numbers and booleans as JSON)."""
    nested = row.pop("metadata", None)
    if nested is not None and not isinstance(nested, dict):
        return f"metadata is a JSON {json_type(nested)}, not an object"
    out: dict[str, str] = {}
    for key, value in [*(nested or {}).items(), *row.items()]:
        if value is None or value == "":
            continue
        if isinstance(value, dict | list):
            return f"metadata {quote(key)} is a JSON {json_type(value)}, not a string"
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def _bad_text(row: dict[str, Any]) -> str | None:
    """Strings no store takes (PostgreSQL refuses NUL and unpaired surrogates), anywhere in the row."""
    stack: list[Any] = [row]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and any(c == "\0" or "\ud800" <= c <= "\udfff" for c in item):
            return f"{quote(item)} holds a NUL character or an unpaired surrogate"
    return None


def url_problem(url: str) -> str | None:
    """Why the fetch stage could never read ``url`` (None when it may), judged without the network."""
    limit = int(request_validator().schema["properties"]["url"]["maxLength"])
    if not url:
        return "empty url"
    if len(url) > limit:
        return f"url is {len(url):,} characters, over the limit of {limit:,}: {quote(url)}"
    odd = next((i for i, c in enumerate(url) if c.isspace() or not c.isprintable()), None)
    if odd is not None:
        c = url[odd]
        what = "a space (write %20)" if c == " " else "whitespace" if c.isspace() else "a control character"
        return f"url has {what} at column {odd + 1}: {quote(url)}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"not a URL ({exc}): {quote(url)}"
    if parts.scheme.lower() not in URL_SCHEMES:
        return f"not an http(s) or file:// URL: {quote(url)}"
    if parts.scheme.lower() != "file":
        return None if parts.hostname else f"no host in url {quote(url)}"
    try:
        file_url_path(url)
    except FetchError as exc:
        return f"{exc.reason}: {quote(url)}"
    return None


def defaults_problem(collection: str, run_id: str) -> str | None:
    """Why every request would be refused for the command's own options (--collection, --run-id)."""
    return request_problem(
        MediaRequest(media_id="probe", url="http://example.invalid/", collection=collection, run_id=run_id)
    )


def request_problem(req: MediaRequest) -> str | None:
    """Why the consumers would refuse ``req`` (the request schema and its limits), or None."""
    try:
        encode_request(req)
    except SchemaError as exc:
        return reason_text(str(exc))
    except (TypeError, ValueError, RecursionError) as exc:  # a value JSON cannot hold
        return reason_text(f"cannot be encoded as JSON: {type(exc).__name__}: {exc}")
    return None
