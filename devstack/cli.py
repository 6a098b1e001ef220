"""The dev tooling's subcommands of ``mediavec``: ``dev up|down|status`` and ``demo``.

Registered through the ``mediavec.cli`` entry point group (:mod:`mediavec.cli_plugins`), so the
application does not import the dev stack and the runtime image does not carry it.
"""

from __future__ import annotations

import argparse
from typing import Any

from mediavec.cli_errors import Explainer, first_of

NEEDS_BROKER: frozenset[str] = frozenset()


def _dev(args: argparse.Namespace) -> int:
    from devstack import stack
    from devstack.procs import DevStackError
    from devstack.settings import load_dev_settings

    settings = load_dev_settings()
    if args.brokers is not None:
        if args.action != "up":
            raise DevStackError("--brokers goes with `dev up`; status and down find every node themselves")
        cluster = settings.devstack.model_copy(update={"brokers": args.brokers})  # in range: checked by _brokers
        settings = settings.model_copy(update={"devstack": cluster})
    if args.registry and args.action != "up":
        raise DevStackError("--registry goes with `dev up`; status and down find the registry themselves")
    if args.action == "up":
        print(stack.up(settings, with_registry=args.registry).describe())
    elif args.action == "down" and args.purge:
        gone = stack.purge(settings)
        print("stack stopped; deleted " + (", ".join(str(g) for g in gone) if gone else "nothing (no data)"))
    elif args.action == "down":
        stack.down(settings)
        print("stack stopped")
    else:
        print(stack.status(settings).describe())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo
    from devstack.settings import load_dev_settings

    return run_demo(load_dev_settings(), query=args.query, keep_workers=args.keep_workers)


def _brokers(text: str) -> int:
    """``--brokers``: a whole number of KRaft nodes the port scheme has room for."""
    from devstack.settings import MAX_BROKERS

    if not text.isdigit() or not 1 <= int(text) <= MAX_BROKERS:
        raise argparse.ArgumentTypeError(f"a number of brokers from 1 to {MAX_BROKERS}, not {text!r}")
    return int(text)


def add_commands(sub: Any) -> None:
    d = sub.add_parser("dev", help="local stack: Kafka (KRaft) and PostgreSQL, no Docker")
    d.add_argument("action", choices=["up", "down", "status"])
    d.add_argument("--purge", action="store_true", help="with down: also delete the broker's and PostgreSQL's data")
    d.add_argument(
        "--brokers",
        type=_brokers,
        metavar="N",
        help="with up: run Kafka as a cluster of N KRaft nodes on loopback (default 1, or MEDIAVEC_DEVSTACK__BROKERS); "
        "node i listens on the single node's ports + 10*i",
    )
    d.add_argument(
        "--registry",
        action="store_true",
        help="with up: also run a schema registry (Apicurio, Confluent-compatible API at "
        "http://127.0.0.1:28081/apis/ccompat/v7, or MEDIAVEC_DEVSTACK__REGISTRY_PORT), its schemas kept in Kafka",
    )
    d.set_defaults(func=_dev)

    demo = sub.add_parser("demo", help="the whole pipeline on bundled sample images")
    demo.add_argument("--query", default="a red double-decker bus")
    demo.add_argument("--keep-workers", action="store_true")
    demo.set_defaults(func=_demo)


def explainers() -> dict[type, Explainer]:
    from devstack.procs import DevStackError
    from devstack.samples import SampleImagesMissing

    return {DevStackError: first_of("dev stack"), SampleImagesMissing: first_of("demo")}
