"""Reading publish files: plain URLs, JSON lines and CSV, with stable media ids; bad lines refused by number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediavec.publish import media_id_for
from mediavec.publish_file import MAX_REASON, PublishFileError, check_file, defaults_problem
from mediavec.publish_video import VIDEO_EXTENSIONS, Probed, gather_sources, video_requests
from schemas import decode_request, encode_request


def _check(path: Path) -> tuple[list[tuple[int, str]], dict[int, str]]:
    checked = check_file(path, collection="c", run_id="r")
    return [(a.line, a.request.url) for a in checked.accepted], {r.line: r.reason for r in checked.refused}


def test_plain_urls_get_stable_ids(tmp_path: Path) -> None:
    f = tmp_path / "urls.txt"
    f.write_text("# comment\nhttp://127.0.0.1/a.jpg\n\nhttp://127.0.0.1/b.jpg\n")
    checked = check_file(f, collection="c", run_id="r")
    reqs = checked.requests
    assert (checked.format, [a.line for a in checked.accepted], checked.refused) == ("urls", [2, 4], [])
    assert [r.url for r in reqs] == ["http://127.0.0.1/a.jpg", "http://127.0.0.1/b.jpg"]
    assert reqs[0].media_id == media_id_for("http://127.0.0.1/a.jpg") != reqs[1].media_id
    assert all(r.collection == "c" and r.run_id == "r" and r.kind == "image" for r in reqs)


def test_jsonl_carries_ids_collection_and_metadata(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(
        '{"url": "http://127.0.0.1/a.jpg", "media_id": "sku-1", "metadata": {"shop": "x"}, "colour": "red"}\n'
        '{"url": "http://127.0.0.1/b.jpg", "collection": "other", "size": 3, "new": true}\n'
    )
    a, b = check_file(f, collection="c", run_id="r").requests
    assert a.media_id == "sku-1" and a.metadata == {"shop": "x", "colour": "red"} and a.collection == "c"
    assert b.collection == "other" and b.media_id == media_id_for("http://127.0.0.1/b.jpg")
    assert b.metadata == {"size": "3", "new": "true"}


def test_csv_with_a_url_column(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text("media_id,url,title,start_s\nm1,http://127.0.0.1/a.jpg,Bus,\nm2,http://127.0.0.1/b.jpg,,\n")
    a, b = check_file(f, collection="c", run_id="r").requests
    assert (a.media_id, a.url, a.metadata) == ("m1", "http://127.0.0.1/a.jpg", {"title": "Bus"})
    assert (b.media_id, b.metadata) == ("m2", {})


def test_a_100kb_url_on_line_58_is_refused_with_a_short_reason_and_the_rest_accepted(tmp_path: Path) -> None:
    """The regression of issue 14: this line once raised a traceback quoting the whole URL."""
    lines = [f"http://127.0.0.1/{n}.jpg" for n in range(1, 58)]
    lines += ["http://127.0.0.1/" + "a" * 100_000, "http://127.0.0.1/59.jpg"]
    f = tmp_path / "urls.txt"
    f.write_text("\n".join(lines) + "\n")
    accepted, refused = _check(f)
    assert [n for n, _ in accepted] == [*range(1, 58), 59]
    assert list(refused) == [58]
    assert "100,017 characters, over the limit of 4,096" in refused[58]
    assert refused[58].endswith("aaa…'") and len(refused[58]) < 200


def test_each_bad_line_is_refused_once_with_its_number_and_why(tmp_path: Path) -> None:
    f = tmp_path / "mixed.txt"
    f.write_bytes(
        b"http://127.0.0.1/1.jpg\n"
        b"not a url\n"
        b"ftp://127.0.0.1/x.jpg\n"
        b"http:///no-host.jpg\n"
        b"http://127.0.0.1/\xff.jpg\n"
        b"# \xff a comment in Latin-1 is still a comment\n"
        b"http://127.0.0.1:99999/port.jpg\n"
        b"file:relative/x.jpg\n"
        b"  http://127.0.0.1/8.jpg  \r\n"
    )
    accepted, refused = _check(f)
    assert accepted == [(1, "http://127.0.0.1/1.jpg"), (9, "http://127.0.0.1/8.jpg")]
    assert refused == {
        2: "url has a space (write %20) at column 4: 'not a url'",
        3: "not an http(s) or file:// URL: 'ftp://127.0.0.1/x.jpg'",
        4: "no host in url 'http:///no-host.jpg'",
        5: "not UTF-8 text (byte 18 of the line)",
        7: "not a URL (Port out of range 0-65535): 'http://127.0.0.1:99999/port.jpg'",
        8: "a file:// URL needs an absolute path: 'file:relative/x.jpg'",
    }


def test_json_lines_of_the_wrong_shape_are_refused_by_line(tmp_path: Path) -> None:
    good = {"url": "http://127.0.0.1/a.jpg"}
    rows = [
        json.dumps(good),
        "[1, 2]",
        '{"url": 5}',
        '{"url": "http://127.0.0.1/b.jpg", "start_s": "soon"}',
        '{"url": "http://127.0.0.1/b.jpg", "metadata": ["x"]}',
        '{"url": "http://127.0.0.1/b.jpg", "media_id": "no spaces allowed"}',
        '{"url": "http://127.0.0.1/b.jpg", "start_s": 1e999}',
        '{"url": "http://127.0.0.1/b.jpg", "start_s": NaN}',
        "[" * 50_000,
        '{"url": "http://127.0.0.1/b.jpg", "tags": {"a": 1}}',
        '{"url": "http://127.0.0.1/b.jpg", "metadata": {"k": "nul \\u0000 here"}}',
        '{"url": "http://127.0.0.1/b.jpg"',
        '{"url": "http://127.0.0.1/v.mp4", "kind": "video", "start_s": 5, "end_s": 5}',
    ]
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(rows))
    accepted, refused = _check(f)
    assert accepted == [(1, "http://127.0.0.1/a.jpg")]
    assert refused == {
        2: "a JSON array, not an object",
        3: "url is a JSON number, not a string",
        4: "media request invalid at start_s: 'soon' is not of type 'number'",
        5: "metadata is a JSON array, not an object",
        6: "media request invalid at media_id: 'no spaces allowed' does not match '^[A-Za-z0-9._:/-]+$'",
        7: "not JSON: 1e999 is out of range",
        8: "not JSON: NaN is not a number JSON allows",
        9: "JSON nested too deeply",
        10: "metadata 'tags' is a JSON object, not a string",
        11: "'nul \\x00 here' holds a NUL character or an unpaired surrogate",
        12: "not JSON (Expecting ',' delimiter at column 33)",
        13: "media request invalid: end_s must be after start_s",
    }


def test_csv_rows_with_the_wrong_number_of_fields_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text(
        "url,media_id,title\n"
        "http://127.0.0.1/a.jpg,m1,Bus\n"
        "http://127.0.0.1/b.jpg,m2\n"
        "http://127.0.0.1/c.jpg,m3,x,extra\n"
        '"http://127.0.0.1/d.jpg,m4,x\n'
        ",m5,no url\n"
    )
    accepted, refused = _check(f)
    assert accepted == [(2, "http://127.0.0.1/a.jpg")]
    assert refused == {
        3: "2 fields, the header (line 1) has 3",
        4: "4 fields, the header (line 1) has 3",
        5: "not a CSV row (unexpected end of data)",
        6: "empty url",
    }


def test_a_metadata_value_too_long_for_the_schema_limits_is_cut_in_the_reason(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"url": "http://127.0.0.1/a.jpg", "media_id": "x" * 300}) + "\n")
    _, refused = _check(f)
    assert refused[1].startswith("media request invalid at media_id: 'xxx") and "xxx…'" in refused[1]
    assert len(refused[1]) <= MAX_REASON


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (b"", "no requests in it (empty, or only comments)"),
        (b"# only\n\n   \n", "no requests in it (empty, or only comments)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "a binary file (NUL byte at offset 4), not a text file"),
    ],
)
def test_a_file_that_is_no_request_list_is_one_clear_error(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    f = tmp_path / "in.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(PublishFileError) as info:
        check_file(f, collection="c", run_id="r")
    assert str(info.value) == f"{f}: {expected}"
    with pytest.raises(PublishFileError, match="a directory, not a file"):
        check_file(tmp_path, collection="c", run_id="r")


def test_every_accepted_request_is_what_the_consumers_decode(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text('{"url": "http://127.0.0.1/a.jpg", "reprocess": true, "options": {"prompts": ["a bus"]}}\n')
    (req,) = check_file(f, collection="c", run_id="r").requests
    assert decode_request(encode_request(req)) == req


def test_the_commands_own_options_are_checked_against_the_schema() -> None:
    assert defaults_problem("products", "run-1") is None
    assert "collection" in (defaults_problem("bad name", "") or "")
    assert "run_id" in (defaults_problem("c", "r" * 500) or "")


def test_video_sources_report_each_bad_source_once(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "binary.list").write_bytes(b"\x00\x01")
    listing = tmp_path / "list.txt"
    listing.write_bytes(
        b"videos\nmissing-dir\n\xff\xfe\nhttp://127.0.0.1:1/ok.mp4\nhttp://127.0.0.1:1/a b.mp4\nlist.txt\n"
    )
    sources = [str(listing), "nowhere", str(tmp_path / "empty"), str(tmp_path / "binary.list"), "http://[::1/x.mp4"]
    found = gather_sources(sources, base=tmp_path)
    assert found.urls == [(videos / "a.mp4").as_uri(), "http://127.0.0.1:1/ok.mp4"]
    assert [str(p) for p in found.problems] == [
        f"{listing}:2: no such video, directory or list file",
        f"{listing}:3: not UTF-8 text (byte 1 of the line)",
        f"{listing}:5: url has a space (write %20) at column 21: 'http://127.0.0.1:1/a b.mp4'",
        f"{listing}:6: this list file was read already (a list naming itself?)",
        "nowhere: no such video, directory or list file",
        f"{tmp_path / 'empty'}: no video files in this directory ({', '.join(sorted(VIDEO_EXTENSIONS))})",
        f"{tmp_path / 'binary.list'}: a binary file (NUL byte at offset 0), not a text list file",
        "http://[::1/x.mp4: not a URL or path (Invalid IPv6 URL)",
    ]


def test_unreadable_videos_and_videos_without_segments_are_refused_once_each() -> None:
    probed = [
        Probed("http://127.0.0.1:1/good.mp4", 25.0),
        Probed("http://127.0.0.1:1/bad.mp4", None, "not_a_video: bytes are not a readable video"),
        Probed("http://127.0.0.1:1/short.mp4", 3.0),
    ]
    requests, problems = video_requests(probed, segment_s=10, collection="c", run_id="r", start_s=5.0)
    assert [(r.url, r.start_s, r.end_s) for r in requests] == [
        ("http://127.0.0.1:1/good.mp4", 5.0, 15.0),
        ("http://127.0.0.1:1/good.mp4", 15.0, 25.0),
    ]
    assert [str(p) for p in problems] == [
        "http://127.0.0.1:1/bad.mp4: not_a_video: bytes are not a readable video",
        "http://127.0.0.1:1/short.mp4: no segment to publish (the video lasts 3.0 s)",
    ]


def test_supervised_workers_get_their_own_metrics_port() -> None:
    from mediavec.supervisor import worker_env

    base = {"MEDIAVEC_METRICS_PORT": "9100", "X": "y"}
    assert [worker_env(base, i)["MEDIAVEC_METRICS_PORT"] for i in range(3)] == ["9100", "9101", "9102"]
    assert worker_env({"MEDIAVEC_METRICS_PORT": "0"}, 2)["MEDIAVEC_METRICS_PORT"] == "0"
    assert base["MEDIAVEC_METRICS_PORT"] == "9100"
