"""`mediavec models pull|list` against a stand-in Hugging Face hub on loopback (HF_ENDPOINT).

The hub serves the real architectures of the default models (open_clip ViT-B-32 / openai and
MobileCLIP2-S0 / dfndr2b) on random weights, saved as safetensors under the repositories and file
names open_clip's registry names; the command runs as a user runs it, in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mediavec.cli import main
from mediavec.settings import Settings
from models import ClipEmbedder, WeightsNotFound, resolve_weights
from models.pull import PullError, local_models, select
from models.settings import ConceptSettings, DetectorSettings, ModelSettings
from tests.hfhub import StandInHub, closed_port

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "open_clip_model.safetensors"
VISION_REPO = "timm/vit_base_patch32_clip_224.openai"
CONCEPT_REPO = "timm/MobileCLIP2-S0-OpenCLIP"
VISION_CARD = b"---\nlicense: apache-2.0\ntags:\n- clip\n---\n# CLIP (OpenAI model for timm)\n"
CONCEPT_CARD = b"---\nlicense: apple-amlr\nlibrary_name: open_clip\n---\n# MobileCLIP2-S0\n"
PREFIX = "mediavec models pull: "
TOKEN = "hf_standin_secret_0123456789abcdef"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    def failures(self) -> list[str]:
        """The one-line failure reports on stderr (log lines and progress bars aside)."""
        return [line for line in self.stderr.splitlines() if line.startswith(PREFIX)]


def random_weights_file(arch: str, path: Path) -> Path:
    """The architecture's state dict on seeded random weights, fp16, as a hub repository holds it."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = open_clip.create_model(arch, pretrained=None)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    return {
        VISION_REPO: random_weights_file("ViT-B-32", root / "vision.safetensors"),
        CONCEPT_REPO: random_weights_file("MobileCLIP2-S0", root / "concept.safetensors"),
    }


@pytest.fixture(scope="module")
def hub(served: dict[str, Path]) -> Iterator[StandInHub]:
    with StandInHub() as running:
        for repo_id, path in served.items():
            running.add(repo_id, WEIGHTS, path)
        running.add(VISION_REPO, "README.md", VISION_CARD)
        running.add(CONCEPT_REPO, "README.md", CONCEPT_CARD)
        yield running


def mediavec(endpoint: str, cache: Path, *args: str, token: str | None = None, home: Path | None = None) -> Run:
    """``mediavec <args>`` in its own process, the way a user runs it, against ``endpoint``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING_FACE_", "MEDIAVEC_MODEL__", "MEDIAVEC_CONCEPT__"))
    }
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HOME=str(home or cache.parent / "hf-home"))
    if token is not None:
        env["HF_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "mediavec.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pulled") / "hub"


@pytest.fixture(scope="module")
def listed_before(hub: StandInHub, cache: Path) -> Run:
    return mediavec(hub.url, cache, "models", "list")


@pytest.fixture(scope="module")
def pulled(hub: StandInHub, cache: Path, listed_before: Run) -> Run:
    """`mediavec models pull` (every configured model) into an empty cache: the README's command."""
    run = mediavec(hub.url, cache, "models", "pull")
    assert run.returncode == 0, run.stderr
    return run


def test_pull_puts_real_weights_where_the_product_finds_them(pulled: Run, cache: Path) -> None:
    for settings, model_id in (
        (ModelSettings(), "open_clip/ViT-B-32/openai"),
        (ConceptSettings(), "open_clip/MobileCLIP2-S0/dfndr2b"),
    ):
        resolved = resolve_weights(settings, cache)
        assert not resolved.is_random
        assert resolved.model_id == model_id
        assert resolved.checkpoint is not None and resolved.checkpoint.name == WEIGHTS
        assert resolved.source == f"hub cache: {resolved.checkpoint}"
        assert f"the product finds it at {resolved.source}" in pulled.stdout


def test_pulled_weights_are_the_ones_the_hub_served(pulled: Run, cache: Path, served: dict[str, Path]) -> None:
    loaded = ClipEmbedder.load(ConceptSettings(device="cpu", precision="fp32"), hub_cache_dir=cache)
    assert loaded.model_id == "open_clip/MobileCLIP2-S0/dfndr2b"
    assert not loaded.is_random
    expected = load_file(served[CONCEPT_REPO])
    state = loaded.model.state_dict()
    assert set(expected) == set(state)
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor.to(state[name].dtype), rtol=0, atol=0, msg=name)


def test_pull_checks_and_prints_each_licence(pulled: Run) -> None:
    out = pulled.stdout
    assert f"vision: downloaded {VISION_REPO}/{WEIGHTS}" in out
    assert f"concept: downloaded {CONCEPT_REPO}/{WEIGHTS}" in out
    assert out.count("sha256 matches the hub's") == 2
    assert f"vision: licence: MIT (OpenAI CLIP weights); model card of {VISION_REPO}: apache-2.0" in out
    assert "concept: licence: Apple's apple-amlr licence" in out
    assert f"model card of {CONCEPT_REPO}: apple-amlr" in out
    assert "detector, faces, ocr, text: weights ship inside packages, nothing to pull" in out


def test_second_pull_downloads_nothing(pulled: Run, hub: StandInHub, cache: Path) -> None:
    downloads = hub.downloads(WEIGHTS)
    assert downloads == 2  # the first pull fetched each file once
    again = mediavec(hub.url, cache, "models", "pull", "concept")
    assert again.returncode == 0, again.stderr
    assert f"concept: already in the hub cache, nothing downloaded: {CONCEPT_REPO}/{WEIGHTS}" in again.stdout
    assert "vision" not in again.stdout
    assert hub.downloads(WEIGHTS) == downloads


def test_list_says_where_the_weights_are(pulled: Run, listed_before: Run, hub: StandInHub, cache: Path) -> None:
    assert listed_before.returncode == 0
    assert "  weights: MISSING: run `mediavec models pull vision`" in listed_before.stdout
    assert "  weights: MISSING: run `mediavec models pull concept`" in listed_before.stdout
    after = mediavec(hub.url, cache, "models", "list")
    assert after.returncode == 0, after.stderr
    assert f"  weights: hub cache: {cache}/models--timm--vit_base_patch32_clip_224.openai/snapshots/" in after.stdout
    assert f"  weights: hub cache: {cache}/models--timm--MobileCLIP2-S0-OpenCLIP/snapshots/" in after.stdout
    assert f"model card of {CONCEPT_REPO}: apple-amlr" in after.stdout  # the card came with the pull
    assert "detector: YOLOv8 person detector" in after.stdout
    assert "(nothing to pull)" in after.stdout


def test_missing_repository_and_missing_file_fail_one_line_each(tmp_path: Path) -> None:
    with StandInHub() as hub:
        hub.add(CONCEPT_REPO, "README.md", CONCEPT_CARD)  # the repository exists, its weights do not
        run = mediavec(hub.url, tmp_path / "hub", "models", "pull")
    assert run.returncode == 1
    assert run.failures() == [
        f"{PREFIX}vision: {VISION_REPO}/{WEIGHTS}: no such repository on {hub.url} (404), or it is private:"
        " set HF_TOKEN",
        f"{PREFIX}concept: {CONCEPT_REPO} on {hub.url} has none of {WEIGHTS}, open_clip_pytorch_model.bin (404)",
    ]


def test_hub_that_is_down_fails_one_line(tmp_path: Path) -> None:
    endpoint = closed_port()
    run = mediavec(endpoint, tmp_path / "hub", "models", "pull", "concept")
    assert run.returncode == 1
    [line] = run.failures()
    assert line.startswith(f"{PREFIX}concept: {CONCEPT_REPO}/{WEIGHTS}: the hub {endpoint} is unreachable (")


def test_cache_that_cannot_be_written_fails_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with StandInHub() as hub:
        hub.add(CONCEPT_REPO, WEIGHTS, b"x" * 1024)
        run = mediavec(hub.url, blocker / "hub", "models", "pull", "concept", home=tmp_path / "hf-home")
    assert run.returncode == 1
    [line] = run.failures()
    assert line.startswith(f"{PREFIX}concept: {CONCEPT_REPO}/{WEIGHTS}: cannot write the hub cache {blocker / 'hub'}: ")
    assert "Not a directory" in line


def _refused(tmp_path: Path, served_bytes: bytes, claimed: bytes) -> Run:
    """Pull the concept model from a hub serving these bytes under the ETag of ``claimed``: refused."""
    cache = tmp_path / "hub"
    with StandInHub() as hub:
        hub.add(CONCEPT_REPO, WEIGHTS, served_bytes, claimed=claimed)
        run = mediavec(hub.url, cache, "models", "pull", "concept")
    assert run.returncode == 1
    with pytest.raises(WeightsNotFound):  # nothing a worker could load was left behind
        resolve_weights(ConceptSettings(), cache)
    assert list((cache / "models--timm--MobileCLIP2-S0-OpenCLIP" / "blobs").iterdir()) == []
    return run


def test_corrupted_download_is_refused_and_removed(tmp_path: Path, served: dict[str, Path]) -> None:
    good = served[CONCEPT_REPO].read_bytes()[: 1 << 20]
    bad = good[:1000] + bytes([good[1000] ^ 0xFF]) + good[1001:]  # same size, one byte wrong
    run = _refused(tmp_path, bad, claimed=good)
    [line] = run.failures()
    assert line.startswith(f"{PREFIX}concept: checksum mismatch for {WEIGHTS}: sha256 ")
    assert "the file was removed from the hub cache" in line


def test_file_that_is_not_the_model_is_refused_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(4, 4)}, path)
    data = path.read_bytes()
    run = _refused(tmp_path, data, claimed=data)
    [line] = run.failures()
    assert line.startswith(f"{PREFIX}concept: {WEIGHTS} does not load as open_clip MobileCLIP2-S0 / dfndr2b (")
    assert line.endswith("it was removed from the hub cache")


def test_gated_repository_uses_hf_token_and_never_prints_it(tmp_path: Path, served: dict[str, Path]) -> None:
    with StandInHub() as gated:
        gated.add(CONCEPT_REPO, WEIGHTS, served[CONCEPT_REPO])
        gated.gate(CONCEPT_REPO, TOKEN)
        refused = mediavec(gated.url, tmp_path / "hub", "models", "pull", "concept")
        allowed = mediavec(gated.url, tmp_path / "hub", "-v", "models", "pull", "concept", token=TOKEN)
        sent = list(gated.authorizations)
    assert refused.returncode == 1
    [line] = refused.failures()
    gated_line = "the repository is gated (401): accept its terms on the hub and set HF_TOKEN"
    assert line == f"{PREFIX}concept: {CONCEPT_REPO}/{WEIGHTS}: {gated_line}"
    assert allowed.returncode == 0, allowed.stderr
    assert "concept: loads; the product finds it at hub cache:" in allowed.stdout
    assert f"Bearer {TOKEN}" in sent
    for run in (refused, allowed):
        assert TOKEN not in run.stdout + run.stderr
        assert TOKEN[-12:] not in run.stdout + run.stderr


def test_unknown_or_packaged_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"{PREFIX}no configured model named 'no-such-model' (choose from MobileCLIP2-S0, ViT-B-32, concept, vision)"
    )
    assert main(["models", "pull", "detector"]) == 0
    assert "its weights are not on the hub, nothing to pull" in capsys.readouterr().out


def test_a_model_is_named_by_its_slot_or_its_arch() -> None:
    settings = Settings()
    assert [m.name for m in select(settings, "MobileCLIP2-S0")] == ["concept"]
    assert [m.name for m in select(settings, "VISION")] == ["vision"]
    assert [m.name for m in select(settings, None)] == ["vision", "concept"]
    with pytest.raises(PullError):
        select(settings, "ViT-L-14")


@pytest.mark.parametrize(("settings", "command"), [(ModelSettings(), "vision"), (ConceptSettings(), "concept")])
def test_weights_not_found_names_the_pull_command(tmp_path: Path, settings: ModelSettings, command: str) -> None:
    with pytest.raises(WeightsNotFound) as raised:
        resolve_weights(settings, tmp_path)
    first = str(raised.value).splitlines()[0]
    assert first.endswith(f"run `mediavec models pull {command}` (or see below).")


def test_list_names_a_configured_detector_by_its_file(tmp_path: Path) -> None:
    """An open-vocabulary checkpoint set in detector.weights is not listed as the person detector."""
    world = tmp_path / "yolov8s-worldv2.pt"
    world.write_bytes(b"a checkpoint")
    rows = {row.name: row for row in local_models(Settings())}
    assert rows["detector"].title.startswith("YOLOv8 person detector")
    configured = Settings().model_copy(update={"detector": DetectorSettings(weights=world)})
    rows = {row.name: row for row in local_models(configured)}
    assert rows["detector"].title == "ultralytics detector yolov8s-worldv2.pt (detector.weights)"
    assert rows["detector"].where == f"{world} (configured)"
