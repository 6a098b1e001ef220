"""Model backends. Importing this package is cheap: models are built by their ``load()``."""

from mediavec.models.clip import ClipEmbedder
from mediavec.models.weights import ResolvedWeights, WeightsNotFound, resolve_weights

__all__ = ["ClipEmbedder", "ResolvedWeights", "WeightsNotFound", "resolve_weights"]
