"""``mediavec models list|pull``: which models are configured, where their weights are, and fetching them.

``list`` reads only the disk. ``pull [NAME]`` downloads the open_clip weights of the configured
vision and concept models (or the one named) from the Hugging Face hub into its cache, checks them
and prints their licences (:mod:`models.pull`); every failure is one line on stderr and
a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mediavec.settings import Settings
from models.pull import HubModel, LocalModel, PullError

PROG = "mediavec models"
MB = 1_000_000


def _quiet(args: argparse.Namespace) -> None:
    """Library chatter (each HTTP request, open_clip building the model) only with -v: the lines printed say it."""
    if not args.verbose:
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))


def _where(model: HubModel) -> str:
    from models.pull import found_now
    from models.weights import pull_command

    source = found_now(model)
    if source is None:
        random = (
            " (random weights allowed: its embeddings are meaningless)" if model.settings.allow_random_weights else ""
        )
        return f"MISSING: run `{pull_command(model.settings)}`{random}"
    return source if source.startswith("hub cache") else f"model dir: {source}"


def _list(args: argparse.Namespace) -> int:
    from mediavec.settings import load_settings
    from models.pull import card_licence, hub_models, local_models, remote_roles
    from models.remote.settings import remote_model_id

    _quiet(args)
    settings = load_settings()
    for model in hub_models(settings):
        hub = f" (hub: {model.repo_id})" if model.repo_id else " (no hub repository: model directory only)"
        print(f"{model.name}: {model.title}{hub}")
        print(f"  weights: {_where(model)}")
        print(f"  licence: {model.licence(card_licence(model))}")
    for local in local_models(settings):
        _print_local(local)
    for role in remote_roles(settings):
        r = settings.remote
        print(f"{role}: {remote_model_id(r)} through {r.url} ({r.flavour} API; nothing to pull)")
    return 0


def _print_local(local: LocalModel) -> None:
    print(f"{local.name}: {local.title}")
    print(f"  weights: {local.where} (nothing to pull)")
    print(f"  licence: {local.licence}")


def _pull(args: argparse.Namespace) -> int:
    from mediavec.settings import load_settings
    from models.pull import local_models, select

    _quiet(args)
    settings = load_settings()
    if _pulls_detector(settings, args.name):
        if not _pull_detector(settings):
            return 1
        if args.name is not None:
            return 0
    locals_ = {m.name: m for m in local_models(settings)}
    if args.name and args.name.lower() in locals_:
        local = locals_[args.name.lower()]
        print(f"{local.name}: {local.title}: its weights are not on the hub, nothing to pull ({local.where})")
        return 0
    try:
        models = select(settings, args.name)
    except PullError as exc:
        print(f"{PROG} pull: {exc}", file=sys.stderr)
        return 2
    failed = sum(not _pull_one(model) for model in models)
    if args.name is None:
        print(f"{', '.join(locals_)}: weights ship inside packages, nothing to pull (see `{PROG} list`)")
    return 1 if failed else 0


def _pulls_detector(settings: Settings, name: str | None) -> bool:
    """Whether this pull takes the detector: an open-vocabulary checkpoint named by file is configured."""
    from models.detector_weights import hub_file

    return hub_file(settings.detector) is not None and (name is None or name.lower() == "detector")


def _pull_detector(settings: Settings) -> bool:
    """Pull the configured detector checkpoint into the hub cache; False when it failed (one line on stderr)."""
    from models.detector_weights import DetectorPullError, hub_file, pull_detector

    found = hub_file(settings.detector)
    assert found is not None
    repo_id, filename = found
    print(f"detector: {filename} from {repo_id}", flush=True)
    try:
        path = pull_detector(settings)
    except (DetectorPullError, OSError) as exc:
        print(f"{PROG} pull: {exc}", file=sys.stderr)  # it names the detector
        return False
    print(f"detector: loads; the product finds it at {path}")
    print("detector: licence: AGPL-3.0 (an ultralytics model)")
    return True


def _pull_one(model: HubModel) -> bool:
    """Pull one model and say how it went; False when it failed (its one line is on stderr)."""
    from models.pull import in_model_dir, pull

    ckpt = in_model_dir(model)
    if ckpt is not None:
        print(f"{model.name}: {model.title}: the model directory provides {ckpt}, which takes precedence; not pulled")
        return True
    print(f"{model.name}: {model.title}" + (f" from {model.repo_id}" if model.repo_id else ""), flush=True)
    try:
        pulled = pull(model)
    except PullError as exc:
        print(f"{PROG} pull: {exc}", file=sys.stderr)
        return False
    except OSError as exc:
        print(f"{PROG} pull: {model.name}: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return False
    what = "downloaded" if pulled.downloaded else "already in the hub cache, nothing downloaded:"
    print(f"{model.name}: {what} {pulled.repo_id}/{pulled.filename} ({pulled.size / MB:.1f} MB); {pulled.checked}")
    print(f"{model.name}: loads; the product finds it at {pulled.source}")
    print(f"{model.name}: licence: {pulled.licence}")
    return True


def add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``models`` command and its ``list`` and ``pull`` actions."""
    m = sub.add_parser("models", help="configured models: where their weights are, and pulling them from the hub")
    actions = m.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="each configured model, where its weights are found now, its licence")
    ls.set_defaults(func=_list)
    pl = actions.add_parser(
        "pull",
        help="download the open_clip weights into the Hugging Face hub cache (HF_ENDPOINT, HF_TOKEN), check them",
    )
    pl.add_argument(
        "name",
        nargs="?",
        help="vision, concept, detector (an open-vocabulary checkpoint) or an arch (e.g. MobileCLIP2-S0); default: all",
    )
    pl.set_defaults(func=_pull)
