"""Model backends. Importing this package is cheap: models are built by their ``load()``."""

from models.clip import ClipEmbedder
from models.weights import ResolvedWeights, WeightsNotFound, resolve_weights

__all__ = ["ClipEmbedder", "ResolvedWeights", "WeightsNotFound", "resolve_weights"]
