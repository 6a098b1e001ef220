"""Hostile publish files, as properties of :func:`mediavec.publish_file.check_file` (what
``mediavec publish images`` runs before it publishes anything).

Whatever a file holds, the check raises nothing but :class:`PublishFileError` (a file that is no
request list: binary, empty), every valid line yields exactly one request, every invalid line is
refused exactly once under its own line number, and no reason grows past a bounded, printable line.

Hostile classes: random bytes, invalid UTF-8, NUL bytes (in and past the binary sniff), very long
lines (URLs over the schema's limit, CSV fields over the csv module's limit), whitespace and control
characters in URLs, wrong schemes, missing hosts, bad ports; JSON lines that are not objects or not
JSON, of wrong types, non-finite or huge numbers, nested past the limit or past the parser's
recursion, NUL or unpaired surrogates in strings, metadata over its size limit; CSV rows with the
wrong number of fields, unterminated quotes, empty or bad URLs; comments and blank lines between.
"""

from __future__ import annotations

import csv
import io
import json
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediavec.publish_file import MAX_REASON, SNIFF_BYTES, FileCheck, PublishFileError, check_file
from schemas import decode_request, encode_request

Expected = str | None  # the URL a valid line yields; None for an invalid line
Entry = tuple[bytes, Expected]  # a line's bytes, what it should yield
SKIP = "skip"

HOST = "http://127.0.0.1:8080/"
PATH = st.text(alphabet=string.ascii_letters + string.digits + "-_/~.", min_size=1, max_size=30)
UNICODE = st.characters(categories=["L", "N"])  # printable, never whitespace
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0\n\r"), max_size=30)
MEDIA_ID = st.from_regex(r"[A-Za-z0-9._:/-]{1,40}", fullmatch=True)
TOO_LONG = st.integers(4097, 120_000)  # the schema's url maxLength is 4096

good_url = st.one_of(
    PATH.map(lambda p: HOST + p),
    st.text(alphabet=UNICODE, min_size=1, max_size=20).map(lambda p: f"https://media.example/{p}.jpg"),
    PATH.map(lambda p: f"file:///data/{p}"),
)

bad_url = st.one_of(
    TOO_LONG.map(lambda n: HOST + "a" * n),
    st.sampled_from([" ", "\t", "\x01", "\x1b[31m", "\x7f", "\u2028", "\x0b"]).map(lambda c: f"{HOST}a{c}b.jpg"),
    st.sampled_from(["ftp://h/x.jpg", "javascript:alert(1)", "data:image/png;base64,AA", "gopher://h/", "//h/x"]),
    st.sampled_from(["http:///x.jpg", "https://:80/x", "http://127.0.0.1:99999/x", "http://[::1/x", "file:rel/x"]),
    st.text(alphabet=string.ascii_letters + string.digits + "./-_", min_size=1, max_size=40),  # no scheme at all
)

comment_or_blank = st.sampled_from([b"", b"   ", b"\t", b"# a comment", b"  # indented", b"# \xff\xfe Latin-1"])
not_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc"])


def _line(text: str, expected: Expected) -> Entry:
    return text.encode(), expected


def _with_noise(entry: Entry) -> st.SearchStrategy[Entry]:
    """The same line with blanks around it or a CRLF ending: still the same request."""
    line, expected = entry
    return st.sampled_from([line, b"  " + line + b" ", line + b"\r", b"\t" + line]).map(lambda b: (b, expected))


# -- one URL per line -------------------------------------------------------------------------------

url_good = good_url.map(lambda u: _line(u, u)).flatmap(_with_noise)
url_bad = st.one_of(
    bad_url.map(lambda u: _line(u, None)),
    st.tuples(good_url, not_utf8).map(lambda t: (t[0].encode() + t[1], None)),
    good_url.map(lambda u: (u.encode() + b"\0.jpg", None)),
    good_url.map(lambda u: _line(json.dumps({"url": u}), None)),  # a JSON line in a URL file
)

# -- JSON lines -------------------------------------------------------------------------------------


@st.composite
def json_good(draw: st.DrawFn) -> Entry:
    url = draw(good_url)
    doc: dict[str, Any] = {"url": url}
    if draw(st.booleans()):
        doc["media_id"] = draw(MEDIA_ID)
    if draw(st.booleans()):
        doc["metadata"] = draw(st.dictionaries(TEXT, TEXT, max_size=4))
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["title", "colour", "size"]))] = draw(st.one_of(TEXT, st.integers(), st.booleans()))
    if draw(st.booleans()):
        doc["reprocess"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["options"] = {"prompts": draw(st.lists(TEXT, max_size=3))}
    return _line(json.dumps(doc, ensure_ascii=draw(st.booleans())), url)


def _field(value: str) -> Callable[[str], str]:
    return lambda url: json.dumps({"url": url})[:-1] + ", " + value + "}"


json_bad = st.one_of(
    st.sampled_from(['{"url": 5}', '{"url": null}', '{"url": ""}', '{"url": ["x"]}', '{"media_id": "m"}']),
    st.sampled_from(["[1]", '"x"', "1", "null", "true", "{", '{"url": }', "{'url': 'x'}", "{}"]),
    st.sampled_from(
        [
            '"start_s": "soon"',
            '"reprocess": "yes"',
            '"kind": "audio"',
            '"options": []',
            '"options": "x"',
            '"metadata": [1]',
            '"metadata": {"a": {"b": 1}}',
            '"tags": [1]',
            '"collection": "bad name!"',
            '"media_id": "bad id!"',
            '"media_id": {}',
            '"media_id": true',
            '"start_s": 1e999',
            '"start_s": NaN',
            '"end_s": -Infinity',
            '"start_s": 1' + "0" * 5000,
            '"metadata": {"k": "a\\u0000b"}',
            '"title": "\\ud800"',
            '"kind": "video", "start_s": 5, "end_s": 5',
            '"metadata": {"big": "' + "x" * 17_000 + '"}',
            '"options": {"a": ' + "[" * 20 + "]" * 20 + "}",
            '"options": {"a": ' + "[" * 50_000 + "]" * 50_000 + "}",
        ]
    ).flatmap(lambda field: good_url.map(_field(field))),
    bad_url.map(lambda u: json.dumps({"url": u})),
    st.integers(1, 100_000).map(lambda n: "[" * n),
).map(lambda text: _line(text, None))
json_bad_bytes = st.tuples(good_url, not_utf8).map(lambda t: (b'{"url": "' + t[0].encode() + t[1] + b'"}', None))

# -- CSV --------------------------------------------------------------------------------------------

HEADER = ["url", "media_id", "title"]


def _csv(fields: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode()


csv_good = st.tuples(good_url, st.one_of(st.just(""), MEDIA_ID), TEXT).map(lambda t: (_csv(list(t)), t[0]))
csv_bad = st.one_of(
    st.tuples(good_url, MEDIA_ID).map(lambda t: _csv(list(t))),  # too few fields
    st.tuples(good_url, MEDIA_ID, TEXT, TEXT).map(lambda t: _csv(list(t))),  # too many
    good_url.map(lambda u: f'"{u},m1,x'.encode()),  # unterminated quote
    st.tuples(bad_url.filter(lambda u: not u.startswith("#")), MEDIA_ID).map(lambda t: _csv([t[0], t[1], "x"])),
    MEDIA_ID.map(lambda m: _csv(["", m, "no url"])),
    good_url.map(lambda u: _csv([u, "bad id!", "x"])),
    st.tuples(good_url, not_utf8).map(lambda t: t[0].encode() + b",m," + t[1]),
    st.just(_csv([HOST + "b" * 131_073, "m", "x"])),  # over the csv module's field limit
).map(lambda line: (line, None))


# -- files ------------------------------------------------------------------------------------------


def _file(first: st.SearchStrategy[Entry], good: st.SearchStrategy[Entry], bad: st.SearchStrategy[Entry]) -> Any:
    body = st.lists(st.one_of(good, bad, comment_or_blank.map(lambda b: (b, SKIP))), max_size=25)
    return st.tuples(first, body, st.booleans()).map(lambda t: ([t[0], *t[1]], t[2]))


URL_FILES = _file(url_good, url_good, url_bad)
JSON_FILES = _file(json_good(), json_good(), st.one_of(json_bad, json_bad_bytes))
CSV_FILES = _file(st.just((_csv(HEADER), SKIP)), csv_good, csv_bad)


def _write(directory: str, data: bytes) -> Path:
    path = Path(directory) / "requests.txt"
    path.write_bytes(data)
    return path


def _check_bytes(data: bytes) -> FileCheck | PublishFileError:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return check_file(_write(tmp, data), collection="fuzz", run_id="r")
        except PublishFileError as exc:
            return exc


def _assert_sound(result: FileCheck) -> None:
    """What holds for any file: one outcome per line, short printable reasons, valid requests."""
    accepted = [a.line for a in result.accepted]
    refused = [r.line for r in result.refused]
    assert len(set(accepted)) == len(accepted) and len(set(refused)) == len(refused)
    assert not set(accepted) & set(refused)
    for r in result.refused:
        assert 0 < len(r.reason) <= MAX_REASON and r.reason.isprintable(), r
        assert len(str(r)) <= MAX_REASON + 20
    for a in result.accepted:
        assert decode_request(encode_request(a.request)) == a.request  # the consumers' own check


def _assert_file_error(exc: PublishFileError) -> None:
    text = str(exc)
    assert text.isprintable() and 0 < len(text) <= 2 * MAX_REASON


def _assert_expected(entries: list[Entry], trailing_newline: bool) -> None:
    data = b"\n".join(line for line, _ in entries) + (b"\n" if trailing_newline else b"")
    result = _check_bytes(data)
    if b"\0" in data[:SNIFF_BYTES]:
        assert isinstance(result, PublishFileError) and "binary" in str(result)
        return
    assert isinstance(result, FileCheck), result
    _assert_sound(result)
    want_good = {n: url for n, (_, url) in enumerate(entries, 1) if url not in (None, SKIP)}
    want_bad = {n for n, (_, url) in enumerate(entries, 1) if url is None}
    assert {a.line: a.request.url for a in result.accepted} == want_good
    assert {r.line for r in result.refused} == want_bad, [str(r) for r in result.refused]


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(URL_FILES)
def test_url_files_yield_one_request_per_valid_line_and_one_refusal_per_invalid_line(
    case: tuple[list[Entry], bool],
) -> None:
    _assert_expected(*case)


@FUZZ
@given(JSON_FILES)
def test_json_lines_yield_one_request_per_valid_line_and_one_refusal_per_invalid_line(
    case: tuple[list[Entry], bool],
) -> None:
    _assert_expected(*case)


@FUZZ
@given(CSV_FILES)
def test_csv_files_yield_one_request_per_valid_row_and_one_refusal_per_invalid_row(
    case: tuple[list[Entry], bool],
) -> None:
    _assert_expected(*case)


def _content_lines(data: bytes) -> set[int]:
    """The lines that are neither blank nor comments, as the module documents them."""
    numbers = set()
    for n, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf" if n == 1 else b"")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = "" if raw.lstrip().startswith(b"#") else "?"
        if text and not text.startswith("#"):
            numbers.add(n)
    return numbers


random_lines = st.lists(
    st.one_of(
        st.binary(max_size=60),
        st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
        url_good.map(lambda e: e[0]),
        json_good().map(lambda e: e[0]),
        st.sampled_from([b"url,media_id", b"url", b"{", b"#", b"\xef\xbb\xbfhttp://h/x"]),
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=3000), random_lines.map(b"\n".join)))
def test_any_bytes_give_a_clear_error_or_one_outcome_per_content_line(data: bytes) -> None:
    result = _check_bytes(data)
    if isinstance(result, PublishFileError):
        _assert_file_error(result)
        content = _content_lines(data)
        assert b"\0" in data[:SNIFF_BYTES] or not content or "column twice" in str(result)
        return
    _assert_sound(result)
    header = {min(_content_lines(data) - {r.line for r in result.refused})} if result.format == "csv" else set()
    outcomes = {a.line for a in result.accepted} | {r.line for r in result.refused}
    assert outcomes == _content_lines(data) - header
    if result.format == "urls":
        lines = data.split(b"\n")
        for a in result.accepted:
            assert a.request.url == lines[a.line - 1].decode().strip().removeprefix("\ufeff")
