"""Where the weights of an open_clip model come from, decided before anything is built.

Resolution order for ``MEDIAVEC_MODEL__ARCH`` / ``MEDIAVEC_MODEL__PRETRAINED`` (for example
``ViT-B-32`` / ``openai``), never touching the network:

1. **Model directory** (``MEDIAVEC_MODEL__MODEL_DIR``), the first file that exists of::

       <model_dir>/<arch>/<pretrained>/open_clip_model.safetensors
       <model_dir>/<arch>/<pretrained>/open_clip_pytorch_model.safetensors
       <model_dir>/<arch>/<pretrained>/open_clip_pytorch_model.bin
       <model_dir>/<arch>-<pretrained>.safetensors   (or .pt, .bin, .pth)

   for example ``models/ViT-B-32/openai/open_clip_model.safetensors``. The first form is the
   file list of the model's Hugging Face repository, so a downloaded repository folder can be
   copied in as it is. The file holds an open_clip state dict (``torch.save(model.state_dict())``
   or safetensors). ``pretrained`` may be your own name for a fine-tuned checkpoint; a known
   open_clip tag also brings that tag's preprocessing and QuickGELU setting.
2. **Hugging Face hub cache** (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``): the
   file open_clip itself would download for that tag, looked up in the cache only.
3. **Random weights**, only with ``MEDIAVEC_MODEL__ALLOW_RANDOM_WEIGHTS=true``: the same
   architecture initialised from seed 0, identical in every process, for demos and tests.
   Its embeddings mean nothing and its model id says so (``open_clip/<arch>/random-seed0``).
4. Otherwise :class:`WeightsNotFound`, whose message says how to supply the weights; its first
   line names ``mediavec models pull`` (:mod:`models.pull`), which downloads them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.settings import ModelSettings

logger = logging.getLogger(__name__)

RANDOM_SEED = 0
DIR_FILE_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")
FLAT_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
HUB_WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip.constants.HF_WEIGHTS_NAME
HUB_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"  # open_clip.constants.HF_SAFE_WEIGHTS_NAME


class WeightsNotFound(RuntimeError):
    """No checkpoint for the configured model and random weights are not allowed."""


@dataclass(frozen=True)
class ResolvedWeights:
    """The outcome of resolution: a checkpoint file, or random weights."""

    arch: str
    pretrained: str
    checkpoint: Path | None  # None means random weights
    source: str  # readable: the file path, "hub cache: <path>" or "RANDOM WEIGHTS"

    @property
    def is_random(self) -> bool:
        return self.checkpoint is None

    @property
    def model_id(self) -> str:
        """Names architecture and weights; goes into every point id and payload."""
        tag = f"random-seed{RANDOM_SEED}" if self.is_random else self.pretrained
        return f"open_clip/{self.arch}/{tag}"


def model_dir_candidates(model_dir: Path, arch: str, pretrained: str) -> list[Path]:
    """Every path the model directory layout allows for one model, in preference order."""
    nested = [model_dir / arch / pretrained / name for name in DIR_FILE_NAMES]
    flat = [model_dir / f"{arch}-{pretrained}{suffix}" for suffix in FLAT_SUFFIXES]
    return nested + flat


def find_in_model_dir(model_dir: Path, arch: str, pretrained: str) -> Path | None:
    for path in model_dir_candidates(model_dir, arch, pretrained):
        if path.is_file():
            return path
    return None


def tag_config(arch: str, pretrained: str) -> dict[str, Any]:
    """open_clip's registry entry for a pretrained tag ({} for an unknown tag or arch)."""
    import open_clip

    return dict(open_clip.get_pretrained_cfg(arch, pretrained) or {})


def hub_files(arch: str, pretrained: str) -> list[tuple[str, str]]:
    """(repo id, file name) pairs open_clip would fetch for this tag, safetensors first."""
    hf_hub = tag_config(arch, pretrained).get("hf_hub", "")
    if not hf_hub:
        return []
    repo_id, filename = os.path.split(hf_hub)  # "org/repo/" means the default file name
    if not filename or filename == HUB_WEIGHTS_NAME:
        return [(repo_id, HUB_SAFE_WEIGHTS_NAME), (repo_id, HUB_WEIGHTS_NAME)]
    stem, suffix = os.path.splitext(filename)
    safe = [(repo_id, stem + ".safetensors")] if suffix in (".bin", ".pth") else []
    return [*safe, (repo_id, filename)]


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_in_hub_cache(arch: str, pretrained: str, cache_dir: Path | None = None) -> Path | None:
    """Look the tag's file up in the hub cache only (a file-system lookup, no request)."""
    from huggingface_hub import try_to_load_from_cache

    for repo_id, filename in hub_files(arch, pretrained):
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def slot(settings: ModelSettings) -> str:
    """Which configured model these settings are: ``vision`` or ``concept`` (the grid's model)."""
    from models.settings import ConceptSettings

    return "concept" if isinstance(settings, ConceptSettings) else "vision"


def env_prefix(settings: ModelSettings) -> str:
    """The environment prefix of these model settings: the concept (grid) model has its own group."""
    return "MEDIAVEC_CONCEPT__" if slot(settings) == "concept" else "MEDIAVEC_MODEL__"


def pull_command(settings: ModelSettings) -> str:
    """The command that downloads these weights into the hub cache (models.pull)."""
    return f"mediavec models pull {slot(settings)}"


def how_to_supply(settings: ModelSettings, cache_dir: Path | None = None) -> str:
    """Readable instructions for putting real weights where resolution finds them."""
    arch, tag = settings.arch, settings.pretrained
    model_dir = settings.model_dir or Path("/path/to/models")
    files = hub_files(arch, tag)
    lines = [f"How to supply weights for open_clip {arch} / {tag}:"]
    if files:
        repo_id, filename = files[0]
        lines += [
            f"  * with internet here: `{pull_command(settings)}` (downloads {repo_id} into the hub cache,"
            " checks it and prints its licence);",
            f"  * without: on a machine with internet `hf download {repo_id} {filename}`"
            f" (or `{pull_command(settings)}`), then copy the hub cache"
            f" to {cache_dir or hub_cache_dir()} here (or point HF_HUB_CACHE at it);",
        ]
    else:
        lines.append(f"  * {tag!r} is not an open_clip tag for {arch}, so only the model directory can provide it;")
    lines += [
        f"  * or place the checkpoint at {model_dir / arch / tag / DIR_FILE_NAMES[0]}"
        f" (or {model_dir / f'{arch}-{tag}.pt'}) and set {env_prefix(settings)}MODEL_DIR={model_dir};",
        f"  * demos and tests only: {env_prefix(settings)}ALLOW_RANDOM_WEIGHTS=true (embeddings are then meaningless).",
    ]
    return "\n".join(lines)


def _searched(settings: ModelSettings, cache_dir: Path | None) -> str:
    if settings.model_dir is None:
        where = [f"model_dir: not set ({env_prefix(settings)}MODEL_DIR)"]
    else:
        where = [
            f"model_dir: {p}" for p in model_dir_candidates(settings.model_dir, settings.arch, settings.pretrained)
        ]
    cache = cache_dir or hub_cache_dir()
    where += [f"hub cache {cache}: {repo}/{name}" for repo, name in hub_files(settings.arch, settings.pretrained)]
    return "Searched:\n" + "\n".join(f"  - {w}" for w in where)


def resolve_weights(settings: ModelSettings, cache_dir: Path | None = None) -> ResolvedWeights:
    """Decide where the weights come from (see the module docstring); raises WeightsNotFound."""
    arch, tag = settings.arch, settings.pretrained
    if settings.model_dir is not None:
        found = find_in_model_dir(settings.model_dir, arch, tag)
        if found is not None:
            return ResolvedWeights(arch, tag, found, str(found))
    found = find_in_hub_cache(arch, tag, cache_dir)
    if found is not None:
        return ResolvedWeights(arch, tag, found, f"hub cache: {found}")
    if settings.allow_random_weights:
        logger.warning(
            "RANDOM WEIGHTS: no checkpoint for open_clip %s / %s, so the model is initialised from seed %d. "
            "Every embedding it produces is MEANINGLESS (search results will be noise).\n%s\n%s",
            arch,
            tag,
            RANDOM_SEED,
            _searched(settings, cache_dir),
            how_to_supply(settings, cache_dir),
        )
        return ResolvedWeights(arch, tag, None, "RANDOM WEIGHTS")
    searched, how = _searched(settings, cache_dir), how_to_supply(settings, cache_dir)
    raise WeightsNotFound(f"{_first_line(settings)}\n{searched}\n{how}")


def _first_line(settings: ModelSettings) -> str:
    """The line a CLI shows alone: what is missing and the one command that fixes it."""
    missing = f"No weights for open_clip {settings.arch} / {settings.pretrained} ({slot(settings)} model)"
    if not hub_files(settings.arch, settings.pretrained):
        return f"{missing}: put a checkpoint in {env_prefix(settings)}MODEL_DIR (see below)."
    return f"{missing}: run `{pull_command(settings)}` (or see below)."
