"""The ``mediavec`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from consumers.registry import STAGE_NAMES, describe_stages
from consumers.registry import stage as stage_spec
from mediavec.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from mediavec.cli_errors import EXIT_USAGE, CliError, report, require_broker
from mediavec.cli_models import add_models
from mediavec.cli_plugins import needs_broker, plugins
from mediavec.cli_publish import add_publish
from mediavec.service.cli import add_serve
from mediavec.settings import Settings, load_settings
from schemas.spaces import ALL_SPACES

logger = logging.getLogger(__name__)


def _topics(args: argparse.Namespace) -> int:
    from streams.admin import check_topics, ensure_topics

    settings = load_settings()
    if args.check:
        drifts = check_topics(settings)
        for found in drifts:
            print(found.line())
        if not drifts:
            print("no drift: every declared topic is as declared")
        return 1 if drifts else 0
    created = ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing, all topics exist"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from mediavec import supervisor, workers

    if args.workers_per_gpu:
        specs = supervisor.plan_workers(supervisor.visible_gpus(), args.workers_per_gpu)
        where = sorted({s.device for s in specs})
        print(f"{args.stage}: {len(specs)} workers on {', '.join(where)}", file=sys.stderr)
        _check_partitions(args.stage, len(specs))
        return supervisor.supervise(args.stage, specs, instance=args.instance, stagger_s=args.stagger)
    if args.workers > 1:
        _check_partitions(args.stage, args.workers)
        return supervisor.supervise(args.stage, args.workers, instance=args.instance, stagger_s=args.stagger)
    workers.run_worker(args.stage, load_settings(), instance=args.instance)
    return 0


def _check_partitions(stage: str, workers: int) -> None:
    """Say so when the stage's input topic has fewer partitions than the workers about to read it."""
    from mediavec.supervisor import partition_shortfall
    from streams.admin import partition_count
    from streams.topics import topics

    settings = load_settings()
    topic = topics(settings).by_name(stage_spec(stage).input).name
    try:
        partitions = partition_count(settings, topic)
    except Exception as exc:  # the broker may not be up yet: the workers will wait for it
        logger.warning("could not read the partition count of %s: %s", topic, exc)
        return
    warning = partition_shortfall(partitions, workers) if partitions else None
    if warning:
        print(f"warning: {topic}: {warning}", file=sys.stderr)


def _search(args: argparse.Namespace) -> int:
    from mediavec.search import format_hits, search, store_choice
    from stores.vectorstore import UnknownCollectionError

    settings = load_settings()
    stores = store_choice(settings, args.store)
    try:
        hits = search(
            settings,
            text=args.text,
            image=Path(args.image) if args.image else None,
            collection=args.collection,
            limit=args.limit,
            space=args.space,
            stores=stores,
            per_space=args.per_space,
        )
    except UnknownCollectionError as exc:
        raise CliError("unknown collection", str(exc), status=EXIT_USAGE) from None
    print(json.dumps([h.__dict__ for h in hits], default=str, indent=1) if args.json else format_hits(hits))
    return 0


def _run_status(settings: Settings, run_id: str, watch: bool, interval: float) -> int:
    from mediavec.progress import describe, run_tracker

    try:
        tracker = run_tracker(settings, run_id)
    except LookupError as exc:  # no such run; caught here only, a KeyError elsewhere is a bug
        raise CliError("status", str(exc), status=EXIT_USAGE) from None
    try:
        progress = tracker.poll(3.0)
        print(describe(run_id, progress), flush=True)
        while watch and progress.done < progress.total:
            progress = tracker.poll(interval)
            print(describe(run_id, progress), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        tracker.close()
    return 0


def _spaces(args: argparse.Namespace) -> int:
    from mediavec.search import format_layout, layout

    rows = layout(load_settings(), args.collection)
    print(json.dumps([r.__dict__ for r in rows], indent=1) if args.json else format_layout(rows))
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from streams.dlq import read_entries, redrive

    settings = load_settings()
    if args.skipped and args.action != "list":
        hint = "publish the media again with reprocess=true to process a duplicate"
        raise CliError(
            "dlq", "--skipped lists media skipped as duplicates; they are not redriven", hint=hint, status=EXIT_USAGE
        )
    unreadable: list[str] = []
    entries = [
        e
        for e in read_entries(settings, topic="skipped" if args.skipped else "dlq", unreadable=unreadable)
        if (args.error_class is None or e.letter.error_class == args.error_class)
        and (args.stage is None or e.letter.stage == args.stage)
    ]
    if args.action == "list":
        for e in entries:
            print(json.dumps(e.summary()) if args.json else e.line())
        if not args.json:
            print(f"{len(entries)} entries")
    else:
        print(f"redriven {redrive(settings, entries)} events")
    for where in unreadable:  # on stderr: a --json listing stays one JSON object per line
        print(f"mediavec: not a dead letter, passed over: {where}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from mediavec.replay import resolve_window, run_replay

    settings = load_settings()
    window = resolve_window(
        settings,
        from_offset=args.from_offset,
        from_time_ms=args.from_time,
        to_offset=args.to_offset,
        to_time_ms=args.to_time,
    )
    print(f"window: {window.size} events in {len(window.starts)} partitions of {window.topic}")
    update = {k: v for k, v in (("arch", args.model_arch), ("pretrained", args.model_pretrained)) if v}
    run_replay(
        settings,
        window,
        target=args.target,
        source=args.source,
        model_update=update,
        log_dir=settings.data_dir / "logs",
    )
    print(f"next: mediavec alias set <name> --to {args.target}   (switches searches to the new version)")
    return 0


def _alias(args: argparse.Namespace) -> int:
    from mediavec.aliases import alias_book
    from schemas.collections import collection_for

    if args.action != "list" and not args.name:
        raise CliError(f"alias {args.action}", "needs a name (alias, or collection version to drop)", status=EXIT_USAGE)
    if args.action == "set" and not args.to:
        raise CliError("alias set", "needs --to <collection version>", status=EXIT_USAGE)
    settings = load_settings()
    book = alias_book(settings)
    if args.action == "list":
        for alias, target in sorted(book.all().items()):
            print(f"{alias} -> {target}")
        return 0
    if args.action == "delete":
        book.delete(args.name)
        print(f"alias {args.name} deleted")
        return 0
    if args.action == "drop":
        return _drop_version(settings, args.name)
    model = args.model or _configured_model_id(settings)
    target = collection_for(args.to, model)
    before = book.switch(args.name, target)
    print(f"alias {args.name} -> {target}" + (f" (was {before})" if before else ""))
    return 0


def _configured_model_id(settings: Settings) -> str:
    from models.weights import resolve_weights

    return resolve_weights(settings.model).model_id


def _drop_version(settings: Settings, version: str) -> int:
    from mediavec.aliases import VersionInUse, drop_version

    try:
        dropped = drop_version(settings, version)
    except VersionInUse as exc:
        print(f"mediavec: alias drop: refused: {exc}", file=sys.stderr)
        return 1
    for store, what in dropped.items():
        print(f"{store}: dropped {', '.join(what) if what else 'nothing'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from consumers.embed.provider_report import read_reports
    from mediavec.status import look, render

    settings = load_settings()
    if args.run:
        return _run_status(settings, args.run, args.watch, args.interval)
    before = look(settings) if args.watch else None
    while True:
        if args.watch:
            time.sleep(args.interval)
        now = look(settings)
        providers = read_reports(settings.data_dir)
        print(("\033[2J\033[H" if args.watch else "") + render(now, before, providers), flush=True)
        if not args.watch:
            return 0
        before = now


def _metadb(args: argparse.Namespace) -> int:
    from stores.metadb import drop_old_partitions, migrate_database

    settings = load_settings()
    if args.action == "migrate":
        applied = migrate_database(settings)
        print(f"applied migrations {applied}" if applied else "schema is up to date")
    else:
        dropped = drop_old_partitions(settings, args.older_than_days)
        print(f"dropped {', '.join(dropped) if dropped else 'no partitions'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mediavec", description="Images and video to searchable vectors over Kafka.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("topics", help="create the declared topics (idempotent)")
    t.add_argument(
        "--check",
        action="store_true",
        help="create nothing; print each way the broker's topics differ from their declarations "
        "(missing, fewer partitions, replication, min.insync.replicas, retention, cleanup policy); exit 1 on any",
    )
    t.set_defaults(func=_topics)

    r = sub.add_parser(
        "run",
        help="run one stage's consumer group worker",
        epilog="stages:\n" + describe_stages(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("stage", choices=STAGE_NAMES)
    r.add_argument("--instance", help="stable worker id (transactional id suffix); default: host name")
    r.add_argument("--workers", type=positive_int, default=1, help="start and supervise N worker processes")
    r.add_argument(
        "--workers-per-gpu",
        type=positive_int,
        default=None,
        help="N processes per visible GPU, each pinned with CUDA_VISIBLE_DEVICES (no GPU: N CPU workers)",
    )
    r.add_argument(
        "--stagger", type=non_negative_float, default=3.0, help="seconds between worker starts (model loads)"
    )
    r.set_defaults(func=_run)

    add_publish(sub)
    add_models(sub)
    add_serve(sub)

    s = sub.add_parser("search", help="search stored vectors by text or image")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--image")
    s.add_argument("--collection", default="default")
    s.add_argument("--limit", type=positive_int, default=10)
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--store",
        choices=["auto", "qdrant", "encrypted", "all"],
        default="auto",
        help="where to search; auto: Qdrant, plus the encrypted index when its key is configured",
    )
    s.add_argument(
        "--space",
        choices=[*ALL_SPACES, "all"],
        default="scene",
        help="vector space to search; all: every space that fits the query, merged by score",
    )
    s.add_argument(
        "--per-space", type=positive_int, metavar="N", help="at most N hits of any one space (with --space all)"
    )
    s.set_defaults(func=_search)

    lay = sub.add_parser("spaces", help="list the models and vector spaces stored for a collection (or alias)")
    lay.add_argument("--collection", default="default")
    lay.add_argument("--json", action="store_true")
    lay.set_defaults(func=_spaces)

    q = sub.add_parser("dlq", help="list or redrive dead letters")
    q.add_argument("action", choices=["list", "redrive"])
    q.add_argument("--error-class")
    q.add_argument("--stage")
    q.add_argument("--json", action="store_true", help="list: one JSON object per line, no original bytes")
    q.add_argument("--skipped", action="store_true", help="list: media skipped as duplicates (not failures)")
    q.set_defaults(func=_dlq)

    rp = sub.add_parser("replay", help="re-consume a window of the requests topic into a new collection version")
    start = rp.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=non_negative_int, help="first offset (every partition)")
    start.add_argument("--from-time", type=_time_arg, help="ISO-8601 time or epoch seconds")
    end = rp.add_mutually_exclusive_group()
    end.add_argument("--to-offset", type=non_negative_int, help="end offset, exclusive (default: now)")
    end.add_argument("--to-time", type=_time_arg, help="ISO-8601 time or epoch seconds (default: now)")
    rp.add_argument("--target", required=True, help="collection (version) to write, e.g. products-v2")
    rp.add_argument("--source", help="replay only requests of this collection")
    rp.add_argument("--model-arch", help="another open_clip architecture for this replay")
    rp.add_argument("--model-pretrained", help="its pretrained tag / checkpoint name")
    rp.set_defaults(func=_replay)

    al = sub.add_parser("alias", help="switch the name searches use between collection versions")
    al.add_argument("action", choices=["set", "list", "delete", "drop"], help="drop: delete a version's collections")
    al.add_argument("name", nargs="?", default="", help="alias (set/delete) or collection version (drop)")
    al.add_argument("--to", help="collection version the alias points at (set)")
    al.add_argument("--model", help="model id of that version (default: the configured model)")
    al.set_defaults(func=_alias)

    st = sub.add_parser("status", help="per stage: consumer lag, throughput and an ETA to drain")
    st.add_argument("--watch", action="store_true", help="refresh until interrupted")
    st.add_argument("--interval", type=positive_float, default=2.0)
    st.add_argument("--run", help="progress of one publish or replay run by its id: stored of total, rate, ETA")
    st.set_defaults(func=_status)

    md = sub.add_parser("metadb", help="PostgreSQL frame metadata: migrations and retention")
    md.add_argument("action", choices=["migrate", "drop-partitions"])
    md.add_argument("--older-than-days", type=non_negative_int, default=30, help="drop-partitions: keep this many days")
    md.set_defaults(func=_metadb)

    for plugin in plugins():
        plugin.add_commands(sub)
    return p


def _time_arg(text: str) -> int:
    """Unix milliseconds of an ISO-8601 time or epoch seconds; argparse's usage error otherwise."""
    from mediavec.replay import parse_time

    try:
        return parse_time(text)
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or epoch seconds: {text!r}") from None


# Subcommands that cannot do anything without a broker: they fail fast, naming it, when none answers.
# (publish checks its input first, then the broker: cli_publish.)
_NEEDS_BROKER = frozenset({"topics", "run", "dlq", "replay", "status"})


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected failure ends in one line on stderr (cli_errors), a bug in one too."""
    args = parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = load_settings()
        _configure_logging(settings, args.verbose)
        if args.command in _NEEDS_BROKER | needs_broker():
            require_broker(settings)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return report(exc, settings, args.verbose)


def _configure_logging(settings: Settings, verbose: bool) -> None:
    from streams import logctx

    level = logging.DEBUG if verbose else getattr(logging, settings.log_level.upper(), logging.INFO)
    logctx.configure(level, settings.log_format)


if __name__ == "__main__":
    sys.exit(main())
