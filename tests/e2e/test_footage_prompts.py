"""Video published with per-run prompts through fetch -> embed -> the three sinks, as separate worker
processes, with an open-vocabulary detector (YOLO-World v2 from its YAML, seeded random weights).

Two runs publish segments of real footage (vtest.avi, a street) with different prompts at once, so
their frames meet in the embed stage's batches. In every store, each frame's objects are labelled
with its own run's prompts only (at most 30), its text rows name no prompt of the other run, and
every frame where something was found has its spatial phrases and one scene summary.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from consumers.embed.settings import EmbedSettings
from devstack.testmedia import transcode, vtest_avi
from mediavec.localworkers import LocalWorkers
from mediavec.publish import publish
from mediavec.settings import Settings
from models.settings import DetectorSettings, TextSettings
from models.summary import parse_summary_label
from schemas import MediaRequest, decode_frame, decode_vector_batch
from stores.encindex.keys import generate_key, write_key_file
from streams.admin import ensure_topics
from streams.topics import topics
from tests.e2e import footage_stores
from tests.kafkautil import read_topic
from tests.openvocab import world_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
RUNS = {"run-a": ("red bus", "street lamp"), "run-b": ("pedestrian", "backpack")}
SEGMENTS = {"run-a": (0.0, 3.0), "run-b": (3.0, 6.0)}
SINKS = ["sink-qdrant", "sink-postgres", "sink-encrypted"]


def _settings(settings: Settings, tmp_path: Path, media: Path) -> Settings:
    key_file = tmp_path / "index.key"
    write_key_file(key_file, generate_key())
    detector = DetectorSettings(weights=world_checkpoint(tmp_path / "models"), min_score=1e-6, min_side_px=1)
    return settings.model_copy(
        update={
            "encindex": settings.encindex.model_copy(update={"key_file": key_file}),
            "detector": detector,
            "text": TextSettings(ocr=False),  # labels, phrases, prompts and the summary
            "embed": EmbedSettings(spaces=("scene", "object", "text"), frames_per_batch=8),
            "fetch": settings.fetch.model_copy(update={"allow_paths": (str(media),), "max_side": 640}),
        }
    )


def test_video_with_per_run_prompts_in_every_store(settings: Settings, tmp_path: Path) -> None:
    media = tmp_path / "media"
    clip = transcode(vtest_avi(REPO / ".mediavec" / "testmedia"), media / "street.mp4", "h264", gop=10, duration_s=6)
    settings = _settings(settings, tmp_path, media)
    requests = [
        MediaRequest(
            media_id=f"street-{run}",
            url=clip.resolve().as_uri(),
            kind="video",
            collection="prompts",
            start_s=SEGMENTS[run][0],
            end_s=SEGMENTS[run][1],
            sample_fps=1.0,
            run_id=run,
            options={"prompts": list(prompts)},
        )
        for run, prompts in RUNS.items()
    ]
    ensure_topics(settings)
    workers = LocalWorkers(settings, tmp_path / "logs", "prompts").start(["fetch", "embed", *SINKS])
    try:
        publish(settings, requests, show_progress=False)
        footage_stores.wait_all_stages(settings)
    finally:
        workers.stop()

    assert not read_topic(settings, topics(settings).dlq.name), "no dead letters expected"
    frames = {(f.media_id, f.frame_index): f for f in map(decode_frame, _values(settings, "frames"))}
    assert len(frames) == 6
    batches = [decode_vector_batch(v) for v in _values(settings, "vectors")]
    points = footage_stores.published(batches)
    footage_stores.assert_qdrant(settings, points)
    footage_stores.assert_encrypted(settings, points)
    footage_stores.assert_postgres(settings, points, frames)

    labels: dict[tuple[str, int], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for b in batches:
        for row in b.rows:
            labels[row.media_id, row.frame_index][row.space].append(row.label or "")
    found, phrased = dict.fromkeys(RUNS, 0), dict.fromkeys(RUNS, 0)
    for (media_id, index), spaces in labels.items():
        run = media_id.removeprefix("street-")
        own, other = set(RUNS[run]), {p for r, ps in RUNS.items() if r != run for p in ps}
        objects, texts = spaces["object"], spaces["text"]
        assert set(objects) <= own and len(objects) <= 30, (media_id, index, objects)
        assert not [t for t in texts if any(p in t for p in other)], (media_id, index, texts)
        found[run] += len(objects)
        summaries = [s for s in map(parse_summary_label, texts) if s is not None]
        assert len(summaries) == (1 if objects else 0), (media_id, index, texts)
        phrases = [t for t in texts if parse_summary_label(t) is None and _relation(t)]
        assert all(_relation(t) <= own for t in phrases), phrases  # both sides are the run's own prompts
        phrased[run] += len(phrases)
    assert all(found.values()), f"each run's prompts label objects: {found}"
    assert all(phrased.values()), f"each run's frames have spatial phrases: {phrased}"


def _relation(text: str) -> set[str]:
    """The two sides of a spatial phrase ("A left of B", "A above B", "A in B"); empty for other text."""
    for rel in (" left of ", " above ", " in "):
        if rel in text:
            return set(text.split(rel, 1))
    return set()


def _values(settings: Settings, name: str) -> list[bytes]:
    return [m.value for m in read_topic(settings, getattr(topics(settings), name).name)]
