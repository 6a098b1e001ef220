"""Search stored vectors with a text or an image query, space by space, through the models that made them.

Where the spaces live (see :mod:`consumers.sink_qdrant.transform`): ``<base>__<vision slug>``
holds the vision model's scene, object and text vectors (``space`` payload field); the concept
model's grid is in ``<base>__<concept slug>``, faces in ``<base>__<face slug>``, and text in
``<base>__<MiniLM slug>`` when ``text.backend`` is ``minilm``. ``<base>`` is the collection a
request named or, behind an alias, the part of the alias target before its model slug. The
encrypted index keeps one collection per space, ``<physical>__<space>``.

Which query fits which space:

=======  ==============================================================================
scene    the vision model: text tower for a text query, image tower for an image
object   the same (objects are crops embedded by the vision model)
text     the vision model (either query), or MiniLM (text queries only) on that backend
grid     the concept model, text or image
face     image queries only: the descriptor of the best face in the image
=======  ==============================================================================

``all`` searches every space that fits the query and exists, and merges the hits by score:
every store gives cosine similarity, but scores of different models are only roughly comparable,
and a text query scores text rows far above images (the modality gap), so ``per_space`` caps
each space's share of the merged list to show every space.
A query wider than a collection is cut to its dimension by the store (``fit_query``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from mediavec.query_models import Query, QueryModels, Role, SearchError, Target, model_settings
from mediavec.settings import Settings
from schemas.collections import collection_for, model_from_collection
from schemas.spaces import ALL_SPACES, SpaceName
from stores.encindex.hits import merge_hits
from stores.vectorstore import Hit, QdrantStore, SearchFilter, UnknownCollectionError, VectorStore, open_store

if TYPE_CHECKING:
    from models.clip import ClipEmbedder

__all__ = [
    "SPACE_CHOICES",
    "Query",
    "QueryModels",
    "SearchError",
    "SpaceCollection",
    "Target",
    "default_stores",
    "format_hits",
    "format_layout",
    "layout",
    "load_query_model",
    "open_stores",
    "plan",
    "random_weight_models",
    "resolve_base",
    "resolve_collection",
    "search",
    "search_store",
    "store_choice",
]

logger = logging.getLogger(__name__)

SpaceChoice = SpaceName | Literal["all"]
SPACE_CHOICES: tuple[SpaceChoice, ...] = (*ALL_SPACES, "all")


def role_of(settings: Settings, space: str) -> Role:
    """Which model embeds queries for a space."""
    if space == "grid":
        return "concept"
    if space == "face":
        return "face"
    if space == "text" and settings.text.backend == "minilm":
        return "minilm"
    return "vision"


def fits(role: Role, query: Query) -> str | None:
    """None when the role's model can embed the query, else why not."""
    if role == "face" and query.image is None:
        return "the face space takes an image query (a face photo), not text"
    if role == "minilm" and query.text is None:
        return "the text space is MiniLM's (text.backend=minilm), which embeds text queries only"
    return None


def resolve_collection(settings: Settings, name: str) -> tuple[str, str | None]:
    """(physical collection, model id) behind an alias, or (name, None) when it is no alias."""
    from mediavec.aliases import alias_book

    target = alias_book(settings).get(name)
    if target is None:
        return name, None
    return target, model_from_collection(target)


def resolve_base(settings: Settings, name: str) -> tuple[str, str | None, str | None]:
    """(base name, vision collection, vision model id) for a collection or an alias.

    Without an alias, the base is the name and both others are None (the configured vision model
    decides). Behind an alias, its target is the vision collection and the base is what precedes
    its model slug; the model id is None when the slug does not read back as one.
    """
    physical, model = resolve_collection(settings, name)
    if physical == name:
        return name, None, None
    return (physical.rsplit("__", 1)[0] if "__" in physical else physical), physical, model


def plan(settings: Settings, collection: str, space: str, query: Query, models: QueryModels) -> list[Target]:
    """The spaces a search covers, each with the collection and model that serve it."""
    if space not in SPACE_CHOICES:
        raise SearchError(f"unknown space {space!r}: one of {', '.join(SPACE_CHOICES)}")
    base, vision_collection, vision_model = resolve_base(settings, collection)
    targets = []
    for s in ALL_SPACES if space == "all" else (space,):
        role = role_of(settings, s)
        why_not = fits(role, query)
        if why_not is not None:
            if space != "all":
                raise SearchError(why_not)
            continue
        if role == "vision" and vision_collection is not None:
            model = vision_model or models.model_id("vision")
            targets.append(Target(s, role, model, vision_collection))
        else:
            model = models.model_id(role)
            targets.append(Target(s, role, model, collection_for(base, model)))
    return targets


def search(
    settings: Settings,
    *,
    text: str | None = None,
    image: Path | Image.Image | None = None,
    collection: str = "default",
    limit: int = 10,
    space: str = "scene",
    embedder: ClipEmbedder | None = None,
    models: QueryModels | None = None,
    stores: tuple[str, ...] = ("qdrant",),
    per_space: int | None = None,
    where: SearchFilter | None = None,
) -> list[Hit]:
    """Top hits in one space (or ``all``) of ``collection`` (a request collection or an alias),
    at most ``per_space`` of them from any one space, only those that meet ``where``.

    Raises SearchError when the query does not fit the space, UnknownCollectionError when no
    store holds any collection the search would read.
    """
    query = Query.of(text, image)
    own = models is None
    models = models or QueryModels(settings, vision=embedder)
    targets = plan(settings, collection, space, query, models)
    lists: list[list[Hit]] = []
    with ExitStack() as stack:
        if own:
            stack.callback(models.close)
        opened = [stack.enter_context(store) for store in open_stores(settings, stores)]
        found = False
        vectors: dict[tuple[Role, str], np.ndarray | None] = {}  # scene, object, text share one
        for target in targets:
            holding = [s for s in opened if s.dim(target.name_in(s)) is not None]
            if not holding:
                logger.info("no collection %s for space %s: skipped", target.collection, target.space)
                continue
            found = True
            key = (target.role, target.model)
            vector = vectors[key] if key in vectors else vectors.setdefault(key, models.embed(target, query))
            if vector is None:
                if space != "all":
                    raise SearchError("no face found in the query image")
                continue
            n = limit if per_space is None else min(limit, per_space)
            lists.append(
                merge_hits((search_store(s, target.name_in(s), target.space, vector, n, where) for s in holding), n)
            )
    if not found:
        raise UnknownCollectionError(_nothing_there(collection, space, targets, stores))
    return merge_hits(lists, limit)


def open_stores(settings: Settings, stores: tuple[str, ...]) -> Iterator[VectorStore]:
    """The stores a search reads, each opened read-only (the caller closes them)."""
    unknown = set(stores) - {"qdrant", "encrypted"}
    if unknown:
        raise SearchError(f"unknown store {sorted(unknown)}: qdrant or encrypted")
    if "qdrant" in stores:
        yield open_store(settings, readonly=True)
    if "encrypted" in stores:
        from stores.encindex import open_encrypted_reader

        yield open_encrypted_reader(settings)


def search_store(
    store: VectorStore, name: str, space: str, vector: np.ndarray, limit: int, where: SearchFilter | None = None
) -> list[Hit]:
    """One store's hits in one space of a collection (``name`` as that store calls it)."""
    if isinstance(store, QdrantStore):
        return store.search(name, vector, limit, space=space, where=where)
    return store.search(name, vector, limit, where=where)  # the encrypted index: the collection is the space


def _nothing_there(collection: str, space: str, targets: list[Target], stores: tuple[str, ...]) -> str:
    wanted = ", ".join(sorted({t.collection for t in targets})) or "none that fits the query"
    return f"nothing to search for {collection!r} (space {space}) in {'/'.join(stores)}: looked for {wanted}"


def default_stores(settings: Settings) -> tuple[str, ...]:
    """Qdrant, plus the encrypted index when a key for it is configured."""
    enc = settings.encindex
    return ("qdrant", "encrypted") if (enc.key_file or enc.key_env) else ("qdrant",)


def store_choice(settings: Settings, choice: str) -> tuple[str, ...]:
    """The stores a search reads for a ``--store`` (or the service's ``store``) choice."""
    if choice == "auto":
        return default_stores(settings)
    return ("qdrant", "encrypted") if choice == "all" else (choice,)


def random_weight_models(settings: Settings) -> list[str]:
    """Ids of the configured open_clip models (vision, concept) that run on random weights, whose
    rankings mean nothing; raises WeightsNotFound, as a search would, where they are not allowed."""
    from models.weights import resolve_weights

    local = [settings.model] if settings.provider_of("vision") == "local" else []
    local += [settings.concept] if settings.provider_of("concept") == "local" else []
    resolved = [resolve_weights(model) for model in local]
    return [w.model_id for w in resolved if w.is_random]


def load_query_model(settings: Settings, model_id: str | None) -> ClipEmbedder:
    """The vision embedder for queries into a collection made by ``model_id`` (default: the configured one)."""
    from models.clip import ClipEmbedder

    return ClipEmbedder.load(model_settings(settings.model, model_id))


@dataclass(frozen=True)
class SpaceCollection:
    """One space of one physical collection, as :func:`layout` lists it."""

    collection: str
    model: str | None
    space: str
    count: int
    dim: int


def layout(settings: Settings, collection: str) -> list[SpaceCollection]:
    """Every Qdrant collection of a request collection (or alias) with its spaces and counts."""
    base, _, _ = resolve_base(settings, collection)
    prefix = f"{base}__"
    rows = []
    with open_store(settings, readonly=True) as store:
        for name in store.collections():
            if not name.startswith(prefix) or "__" in name[len(prefix) :]:
                continue
            dim = store.dim(name) or 0
            for space, n in store.spaces(name).items():
                rows.append(SpaceCollection(name, model_from_collection(name), space, n, dim))
    return rows


def format_layout(rows: list[SpaceCollection]) -> str:
    if not rows:
        return "no collections"
    lines = [f"{'space':<7} {'points':>9} {'dim':>5}  {'model':<44} collection"]
    lines += [f"{r.space:<7} {r.count:>9} {r.dim:>5}  {r.model or '?':<44} {r.collection}" for r in rows]
    return "\n".join(lines)


def format_hits(hits: list[Hit]) -> str:
    if not hits:
        return "no hits"
    lines = [f"{'score':>7}  {'space':<6} {'media id':<32} {'frame':>5} {'time':>8}  {'label':<32} url"]
    for h in hits:
        p = h.payload
        frame = p.get("frame_index")
        time_s = p.get("timestamp_s")
        when = f"{time_s:.2f}s" if isinstance(time_s, (int, float)) else ""
        label = _short(str(p.get("label") or ""), 32)
        lines.append(
            f"{h.score:7.4f}  {p.get('space', '')!s:<6} {p.get('media_id', '')!s:<32} "
            f"{'' if frame is None else frame!s:>5} {when:>8}  {label:<32} {p.get('source_url', '')}"
        )
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
