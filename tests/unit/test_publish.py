"""Reading publish files: plain URLs, JSON lines and CSV, with stable media ids."""

from __future__ import annotations

from pathlib import Path

from mediavec.publish import media_id_for, read_requests


def test_plain_urls_get_stable_ids(tmp_path: Path) -> None:
    f = tmp_path / "urls.txt"
    f.write_text("# comment\nhttp://127.0.0.1/a.jpg\n\nhttp://127.0.0.1/b.jpg\n")
    reqs = list(read_requests(f, collection="c", run_id="r"))
    assert [r.url for r in reqs] == ["http://127.0.0.1/a.jpg", "http://127.0.0.1/b.jpg"]
    assert reqs[0].media_id == media_id_for("http://127.0.0.1/a.jpg") != reqs[1].media_id
    assert all(r.collection == "c" and r.run_id == "r" and r.kind == "image" for r in reqs)


def test_jsonl_carries_ids_collection_and_metadata(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(
        '{"url": "http://127.0.0.1/a.jpg", "media_id": "sku-1", "metadata": {"shop": "x"}, "colour": "red"}\n'
        '{"url": "http://127.0.0.1/b.jpg", "collection": "other"}\n'
    )
    a, b = read_requests(f, collection="c", run_id="r")
    assert a.media_id == "sku-1" and a.metadata == {"shop": "x", "colour": "red"} and a.collection == "c"
    assert b.collection == "other" and b.media_id == media_id_for("http://127.0.0.1/b.jpg")


def test_csv_with_a_url_column(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text("media_id,url,title\nm1,http://127.0.0.1/a.jpg,Bus\nm2,http://127.0.0.1/b.jpg,\n")
    a, b = read_requests(f, collection="c", run_id="r")
    assert (a.media_id, a.url, a.metadata) == ("m1", "http://127.0.0.1/a.jpg", {"title": "Bus"})
    assert (b.media_id, b.metadata) == ("m2", {})


def test_supervised_workers_get_their_own_metrics_port() -> None:
    from mediavec.supervisor import worker_env

    base = {"MEDIAVEC_METRICS_PORT": "9100", "X": "y"}
    assert [worker_env(base, i)["MEDIAVEC_METRICS_PORT"] for i in range(3)] == ["9100", "9101", "9102"]
    assert worker_env({"MEDIAVEC_METRICS_PORT": "0"}, 2)["MEDIAVEC_METRICS_PORT"] == "0"
    assert base["MEDIAVEC_METRICS_PORT"] == "9100"
