"""The open-vocabulary detector: YOLO-World v2 built from ultralytics' YAML on random weights (seeded),
its classes the run's prompts embedded by the product's own ViT-B-32 text tower (random weights too).

With random weights the detector's boxes mean nothing, so the minimum score is lowered until it
finds some; what is proven is the plumbing: which prompts become which frame's classes, labels and
text vectors, with two runs of different prompts in one embed batch, and no ultralytics text model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import schemas
from consumers.embed.settings import EmbedSettings
from consumers.embed.stage import EmbedStage
from mediavec.settings import Settings
from models.bundle import EmbedModels, stored
from models.detector import Detector, TextWidthMismatch
from models.detector_weights import (
    KNOWN_HUB_REPOS,
    DetectorPullError,
    DetectorWeightsNotFound,
    pull_detector,
    resolve_detector_weights,
)
from models.settings import DetectorSettings, ModelSettings, TextSettings
from models.summary import parse_summary_label
from schemas.models import Frame, VectorBatch
from tests.hfhub import StandInHub
from tests.openvocab import CHECKPOINT, world_checkpoint
from tests.unit.test_embed_stage import ULTRALYTICS_ASSETS, frame_record, jpeg_of, make_frame

RUN_A = ("red bus", "street lamp")
RUN_B = ("football player", "necktie")
SPACES = ("scene", "object", "text")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world_checkpoint(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def settings(checkpoint: Path) -> Settings:
    return Settings(
        model=ModelSettings(allow_random_weights=True, model_dir=checkpoint.parent),
        detector=DetectorSettings(weights=Path(CHECKPOINT), min_score=1e-6, min_side_px=1),  # in the model dir
        text=TextSettings(ocr=False),  # text rows: labels, phrases and prompts only
        embed=EmbedSettings(spaces=SPACES, frames_per_batch=8),
    )


@pytest.fixture(scope="module")
def no_text_model_download() -> Iterator[None]:
    """ultralytics' CLIP / MobileCLIP text models must never be built: importing its text_model module
    alone tries to pip-install CLIP from GitHub, and building one downloads weights. Any import of it
    now fails the test."""
    import types

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"ultralytics built its own text model {args}")

    guard = types.ModuleType("ultralytics.nn.text_model")
    guard.build_text_model = refuse  # type: ignore[attr-defined]
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "ultralytics.nn.text_model", guard)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def models(settings: Settings, no_text_model_download: None) -> EmbedModels:
    return EmbedModels.load(settings, SPACES)


@pytest.fixture(scope="module")
def stage(settings: Settings, models: EmbedModels) -> Iterator[EmbedStage]:
    stage = EmbedStage(settings, models)
    stage.start()
    yield stage
    stage.close()


def photo_frame(name: str, index: int, prompts: Sequence[str]) -> Frame:
    frame = make_frame(f"{name}-{index}", index, jpeg_of(ULTRALYTICS_ASSETS / f"{name}.jpg"))
    return Frame(**{**frame.__dict__, "options_json": json.dumps({"prompts": list(prompts)})})


def outputs(stage: EmbedStage, frames: list[Frame]) -> list[list[VectorBatch]]:
    results = stage.process([frame_record(f, i) for i, f in enumerate(frames)])
    out = []
    for result in results:
        assert isinstance(result, list), result
        out.append([schemas.decode_vector_batch(o.value) for o in result])
    return out


def rows(batches: list[VectorBatch], space: str) -> list[tuple[str, np.ndarray]]:
    return [(r.label or "", b.vectors[i]) for b in batches for i, r in enumerate(b.rows) if r.space == space]


def test_the_classes_are_the_prompts_embedded_by_the_products_text_tower(models: EmbedModels) -> None:
    detector, vision = models.detector, models.vision
    assert detector is not None and vision is not None and detector.open_vocabulary
    detector.use_classes(RUN_A)
    inner = detector.model.model
    expected = vision.embed_texts(list(RUN_A)).astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert tuple(inner.txt_feats.shape) == (1, len(RUN_A), 512)
    np.testing.assert_allclose(inner.txt_feats[0].numpy(), expected, atol=1e-6)
    assert list(inner.names) == list(RUN_A) and inner.model[-1].nc == len(RUN_A)


def test_two_runs_in_one_batch_keep_their_own_labels_and_text_vectors(
    stage: EmbedStage, models: EmbedModels, settings: Settings
) -> None:
    frames = [photo_frame(name, i, (RUN_A, RUN_B)[i % 2]) for i, name in enumerate(["bus", "zidane", "zidane", "bus"])]
    assert models.vision is not None
    found = {RUN_A: 0, RUN_B: 0}
    for frame, batches in zip(frames, outputs(stage, frames), strict=True):
        own, other = (RUN_A, RUN_B) if frame.options["prompts"] == list(RUN_A) else (RUN_B, RUN_A)
        objects = rows(batches, "object")
        assert len(objects) <= settings.detector.max_objects == 30
        found[own] += len(objects)
        assert {label for label, _ in objects} <= set(own)
        texts = rows(batches, "text")
        assert {label for label, _ in objects} <= {label for label, _ in texts}
        for label, vector in texts:  # a label, a phrase between two of them, a prompt class, the summary
            assert any(p in label for p in own) and not any(p in label for p in other), label
            summary = parse_summary_label(label)  # a summary row's vector is its sentence's
            string = summary[1] if summary is not None else label
            tower = stored(models.vision.embed_texts([string]), settings.model.store_dim)[0]
            assert float(vector.astype(np.float32) @ tower.astype(np.float32)) >= 0.999, label
    assert min(found.values()) >= 1, found  # both runs' prompts found objects


def test_new_prompts_in_a_later_batch_set_new_classes(stage: EmbedStage, models: EmbedModels) -> None:
    prompts = ("yellow taxi",)
    (batches,) = outputs(stage, [photo_frame("bus", 9, prompts)])
    assert {label for label, _ in rows(batches, "object")} == {"yellow taxi"}
    assert models.detector is not None and list(models.detector.model.model.names) == ["yellow taxi"]
    models.detector.use_classes(())  # no prompts: the checkpoint's own classes come back
    assert models.detector.model.model.names == [f"class{i}" for i in range(80)]


def test_a_text_tower_of_another_width_is_one_clear_error(checkpoint: Path) -> None:
    with pytest.raises(TextWidthMismatch, match="takes 512-d class embeddings but the text encoder gives 256-d"):
        Detector.load(checkpoint, device="cpu", text_encoder=lambda texts: np.ones((len(texts), 256), np.float16))
    with pytest.raises(ValueError, match="needs a text encoder"):
        Detector.load(checkpoint, device="cpu")


def test_a_checkpoint_named_by_file_is_found_in_the_hub_cache_or_explained(checkpoint: Path, tmp_path: Path) -> None:
    name = "yolov8s-worldv2.pt"
    settings = Settings(detector=DetectorSettings(weights=Path(name)))
    with pytest.raises(DetectorWeightsNotFound) as missing:
        resolve_detector_weights(settings, cache_dir=tmp_path)
    message = str(missing.value)
    assert message.splitlines()[0] == f"No detector checkpoint {name}: run `mediavec models pull detector`."
    assert f"hf download {KNOWN_HUB_REPOS[name]} {name}" in message
    repo = tmp_path / f"models--{KNOWN_HUB_REPOS[name].replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / name).write_bytes(checkpoint.read_bytes())
    assert resolve_detector_weights(settings, cache_dir=tmp_path) == repo / "snapshots" / commit / name
    assert resolve_detector_weights(Settings(detector=DetectorSettings(weights=checkpoint))) == checkpoint
    assert resolve_detector_weights(Settings()) is None  # the shipped person detector


def test_pull_puts_the_checkpoint_where_it_is_found_and_refuses_a_corrupted_one(
    checkpoint: Path, tmp_path: Path
) -> None:
    name = "yolov8s-worldv2.pt"
    settings = Settings(detector=DetectorSettings(weights=Path(name)))
    with StandInHub() as hub:
        hub.add(KNOWN_HUB_REPOS[name], name, checkpoint)
        pulled = pull_detector(settings, cache_dir=tmp_path / "good", endpoint=hub.url)
        assert pulled.read_bytes() == checkpoint.read_bytes()
        assert resolve_detector_weights(settings, cache_dir=tmp_path / "good") == pulled
        bad = checkpoint.read_bytes()[:-64] + bytes(64)
        hub.add(KNOWN_HUB_REPOS[name], name, bad, claimed=checkpoint)
        with pytest.raises(DetectorPullError, match="does not match the hub's sha256"):
            pull_detector(settings, cache_dir=tmp_path / "bad", endpoint=hub.url)
    assert not [p for p in (tmp_path / "bad").rglob(name) if p.exists()]


def test_models_pull_detector_from_the_command_line(checkpoint: Path, tmp_path: Path) -> None:
    """`mediavec models pull detector`, as a user runs it, with an open-vocabulary checkpoint configured."""
    import os
    import subprocess

    name = "yolov8s-worldv2.pt"
    with StandInHub() as hub:
        hub.add(KNOWN_HUB_REPOS[name], name, checkpoint)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MEDIAVEC_"))}
        env.update(
            HF_ENDPOINT=hub.url,
            HF_HUB_CACHE=str(tmp_path / "hub"),
            HF_HOME=str(tmp_path / "hf-home"),
            MEDIAVEC_DETECTOR__WEIGHTS=name,
        )
        done = subprocess.run(
            [sys.executable, "-m", "mediavec.cli", "models", "pull", "detector"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert f"detector: {name} from {KNOWN_HUB_REPOS[name]}" in done.stdout
    assert "detector: loads; the product finds it at" in done.stdout and "Traceback" not in done.stderr
    assert list((tmp_path / "hub").rglob(name))
