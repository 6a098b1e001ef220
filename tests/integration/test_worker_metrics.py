"""Every worker serves Prometheus metrics: scraped from real fetch, embed and sink-qdrant processes
after a few images went through (events in/out, DLQ by cause, batch sizes and fill time, model
time per batch, queue depths, lag, transactions, bytes downloaded)."""

from __future__ import annotations

import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import publish
from mediavec.settings import Settings
from schemas import MediaRequest
from streams.admin import ensure_topics
from tests.kafkautil import wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_each_worker_serves_its_metrics(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    for photo in sample_images(tmp_path / "samples")[:4]:
        shutil.copy(photo, root / photo.name)
    ensure_topics(settings)
    ports = {stage: _free_port() for stage in ("fetch", "embed", "sink-qdrant")}
    workers = [
        LocalWorkers(settings, tmp_path / "logs" / stage, "m", {"MEDIAVEC_METRICS_PORT": str(port)}).start([stage])
        for stage, port in ports.items()
    ]
    try:
        with MediaServer(root) as server:
            names = sorted(p.name for p in root.iterdir())
            reqs = [MediaRequest(media_id=Path(n).stem, url=server.url(n), run_id="metrics") for n in names]
            reqs.append(MediaRequest(media_id="gone", url=server.url("/status/404/gone.jpg"), run_id="metrics"))
            tracker = RunTracker(settings, "metrics", len(reqs))
            publish(settings, reqs, show_progress=False)
            wait_for(lambda: tracker.poll(1.0).done >= len(reqs), 300, "the run to finish")
            tracker.close()
        time.sleep(6.0)  # the runners refresh their lag gauges every 5 s
        fetch, embed, sink = (_scrape(ports[s]) for s in ("fetch", "embed", "sink-qdrant"))
    finally:
        for w in workers:
            w.stop()
    assert _value(fetch, "mediavec_events_in_total", stage="fetch") == len(reqs)
    assert _value(fetch, "mediavec_events_out_total", stage="fetch") >= len(names)
    assert _value(fetch, "mediavec_dlq_total", stage="fetch", cause="http_404") == 1
    assert _value(fetch, "mediavec_bytes_downloaded_total") > 10_000
    assert _value(fetch, "mediavec_transactions_total", stage="fetch", outcome="commit") >= 1
    assert _value(fetch, "mediavec_batch_size_count", stage="fetch") >= 1
    assert _value(fetch, "mediavec_batch_fill_seconds_count", stage="fetch") >= 1
    assert _value(fetch, "mediavec_input_seconds_count", stage="fetch") == len(reqs)  # poll to commit, each
    assert _value(fetch, "mediavec_in_flight", stage="fetch") == 0
    assert _value(embed, "mediavec_events_in_total", stage="embed") == len(names)
    assert _value(embed, "mediavec_model_seconds_count", model="vision") >= 1
    assert _value(embed, "mediavec_model_batch_size_sum", model="vision") == len(names)
    assert ("mediavec_model_queue_depth", (("model", "vision"),)) in embed
    assert any(n == "mediavec_consumer_lag" for n, _ in embed)
    assert _value(sink, "mediavec_events_in_total", stage="sink-qdrant") == len(names)
