"""py-spy's collapsed stacks grouped into the worker phases BENCHMARKS.md reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.profile_workers import EMBED_PHASES, FETCH_PHASES, START_UP, grouped

ROOT = 'process 1:"python";MainThread;main (mediavec/cli.py:10);TransactionalLoop.run (streams/runner.py:140)'
DECODE = "fetch-decode_0;_WorkItem.run (concurrent/futures/thread.py:58);decode_image (media/decode.py:63)"


def write(tmp_path: Path, lines: list[str]) -> Path:
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(lines) + "\n")
    return raw


def test_the_innermost_phase_wins_and_start_up_and_waiting_are_left_out(tmp_path: Path) -> None:
    raw = write(
        tmp_path,
        [
            f"{DECODE};_verify (media/decode.py:120);ImageFile.load (PIL/ImageFile.py:425) 30",
            f"{DECODE};_bound (media/decode.py:256);Image.tobytes (PIL/Image.py:905) 20",
            f"{DECODE};ImageFile.load (PIL/ImageFile.py:425) 10",
            f"{ROOT};TransactionalLoop._produce (streams/runner.py:252) 25",
            f"{ROOT};somewhere (elsewhere.py:1) 15",
            "MainThread;main (mediavec/cli.py:10);_find_and_load (<frozen importlib._bootstrap>:1176) 500",
            "fetch-loop;run_forever (asyncio/base_events.py:600);EpollSelector.select (selectors.py:468) 400",
        ],
    )
    samples, phases, top = grouped(raw, FETCH_PHASES)
    assert samples == 100  # start-up and a selector's wait are not the worker's work on its items
    shares = dict(phases)
    assert shares["decode: source JPEG read as is (1/8 scale)"] == pytest.approx(0.30)
    assert shares["decode: resize to the bound"] == pytest.approx(0.20)
    assert shares["decode: full decode, orientation, colour"] == pytest.approx(0.10)
    assert shares["produce, commit (librdkafka, transactions)"] == pytest.approx(0.25)
    assert phases[-1] == ("other", pytest.approx(0.15))
    assert START_UP not in shares
    assert top[0] == ("ImageFile.load (PIL/ImageFile.py:425)", pytest.approx(0.40))


def test_embed_phases_name_the_stage_functions(tmp_path: Path) -> None:
    stage = f"{ROOT};EmbedStage.process (consumers/embed/stage.py:240)"
    raw = write(
        tmp_path,
        [
            "embed-decode_0;_decode_record (consumers/embed/stage.py:170);decode_scaled (consumers/embed/stage.py:7) 6",
            f"{stage};VectorWriter.outputs (consumers/embed/stage.py:120);encode_vector_batch (schemas/codec.py:90) 3",
            "embed-decode_1;frame_view (consumers/embed/thumbnail.py:48);thumbnail_jpeg (models/images.py:28) 1",
        ],
    )
    _, phases, _ = grouped(raw, EMBED_PHASES)
    assert dict(phases) == {
        "JPEG decode": pytest.approx(0.6),
        "Avro encode, fp16 packing (vectors)": pytest.approx(0.3),
        "thumbnail JPEG": pytest.approx(0.1),
        "other": 0.0,
    }


def test_a_profile_with_nothing_after_start_up_is_an_error(tmp_path: Path) -> None:
    raw = write(tmp_path, ["MainThread;_find_and_load (<frozen importlib._bootstrap>:1176) 5"])
    with pytest.raises(RuntimeError, match="no samples after start-up"):
        grouped(raw, FETCH_PHASES)
