"""Prometheus metrics shared by every worker; served when settings.metrics_port is set."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

EVENTS_IN = Counter("mediavec_events_in_total", "Events consumed", ["stage"])
EVENTS_OUT = Counter("mediavec_events_out_total", "Events produced or stored", ["stage"])
DLQ = Counter("mediavec_dlq_total", "Events routed to the DLQ", ["stage", "cause"])
BATCH_SIZE = Histogram(
    "mediavec_batch_size", "Events per processed batch", ["stage"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
BATCH_FILL_S = Histogram("mediavec_batch_fill_seconds", "Time to fill a batch", ["stage"])
PROCESS_S = Histogram("mediavec_process_seconds", "Transform time per batch", ["stage"])
IN_FLIGHT = Gauge("mediavec_in_flight", "Inputs polled and not yet committed (pipelined stages)", ["stage"])
INPUT_S = Histogram(
    "mediavec_input_seconds",
    "Time from poll to commit per input (pipelined stages)",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80),
)
TXN = Counter("mediavec_transactions_total", "Transactions by outcome", ["stage", "outcome"])
LAG = Gauge("mediavec_consumer_lag", "Messages behind the high watermark", ["stage", "topic", "partition"])
PAUSED = Gauge("mediavec_stage_paused", "1 while the stage waits for a service it depends on", ["stage"])
PAUSES = Counter("mediavec_stage_pauses_total", "Times the stage stopped consuming for a down service", ["stage"])
BYTES_DOWNLOADED = Counter("mediavec_bytes_downloaded_total", "Bytes downloaded by the fetch stage")
DECODER_DEATHS = Counter(
    "mediavec_decoder_process_deaths_total", "Image decoder child processes that died (fetch.decode_processes)"
)

_served: set[int] = set()


def serve(port: int) -> None:
    """Start the /metrics endpoint once per process (port 0: do nothing)."""
    if port and port not in _served:
        start_http_server(port, addr="0.0.0.0")
        _served.add(port)
        logger.info("metrics on :%d/metrics", port)
