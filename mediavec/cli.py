"""The ``mediavec`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from streams.settings import load_settings


def _dev(args: argparse.Namespace) -> int:
    from mediavec.devstack import stack

    settings = load_settings()
    if args.action == "up":
        print(stack.up(settings).describe())
    elif args.action == "down":
        stack.down(settings)
        print("stack stopped")
    else:
        print(stack.status(settings).describe())
    return 0


def _topics(_args: argparse.Namespace) -> int:
    from streams.admin import ensure_topics

    created = ensure_topics(load_settings())
    print("created: " + (", ".join(created) if created else "nothing, all topics exist"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from mediavec import supervisor, workers

    if args.workers > 1:
        return supervisor.supervise(args.stage, args.workers, instance=args.instance)
    workers.run_worker(args.stage, load_settings(), instance=args.instance)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from mediavec.publish import new_run_id, publish, read_requests

    settings = load_settings()
    run_id = args.run_id or new_run_id()
    requests = list(read_requests(Path(args.file), collection=args.collection, run_id=run_id))
    n = publish(settings, requests, total=len(requests), show_progress=not args.quiet)
    print(f"published {n} requests, run id {run_id}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from mediavec.search import format_hits, search

    hits = search(
        load_settings(),
        text=args.text,
        image=Path(args.image) if args.image else None,
        collection=args.collection,
        limit=args.limit,
    )
    print(json.dumps([h.__dict__ for h in hits], default=str, indent=1) if args.json else format_hits(hits))
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from streams.dlq import read_entries, redrive

    settings = load_settings()
    entries = [
        e
        for e in read_entries(settings)
        if (args.error_class is None or e.letter.error_class == args.error_class)
        and (args.stage is None or e.letter.stage == args.stage)
    ]
    if args.action == "list":
        for e in entries:
            dl = e.letter
            print(f"{e.partition}@{e.offset}\t{dl.stage}\t{dl.error_class}\t{dl.media_id}\t{dl.reason}")
        print(f"{len(entries)} entries")
    else:
        print(f"redriven {redrive(settings, entries)} events")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mediavec.demo import run_demo

    return run_demo(load_settings(), query=args.query, keep_workers=args.keep_workers)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mediavec", description="Images and video to searchable vectors over Kafka.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dev", help="local stack: Kafka (KRaft) and PostgreSQL, no Docker")
    d.add_argument("action", choices=["up", "down", "status"])
    d.set_defaults(func=_dev)

    t = sub.add_parser("topics", help="create the declared topics (idempotent)")
    t.set_defaults(func=_topics)

    r = sub.add_parser("run", help="run one stage's consumer group worker")
    r.add_argument("stage", choices=["fetch", "embed", "sink-qdrant"])
    r.add_argument("--instance", help="stable worker id (transactional id suffix); default: host name")
    r.add_argument("--workers", type=int, default=1, help="start and supervise N worker processes")
    r.set_defaults(func=_run)

    pub = sub.add_parser("publish", help="publish media requests")
    pub.add_argument("kind", choices=["images"])
    pub.add_argument("file", help="one URL per line, JSON lines, or CSV with a url column")
    pub.add_argument("--collection", default="default")
    pub.add_argument("--run-id")
    pub.add_argument("--quiet", action="store_true")
    pub.set_defaults(func=_publish)

    s = sub.add_parser("search", help="search stored vectors by text or image")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--image")
    s.add_argument("--collection", default="default")
    s.add_argument("--limit", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_search)

    q = sub.add_parser("dlq", help="list or redrive dead letters")
    q.add_argument("action", choices=["list", "redrive"])
    q.add_argument("--error-class")
    q.add_argument("--stage")
    q.set_defaults(func=_dlq)

    demo = sub.add_parser("demo", help="the whole pipeline on bundled sample images")
    demo.add_argument("--query", default="a red double-decker bus")
    demo.add_argument("--keep-workers", action="store_true")
    demo.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
