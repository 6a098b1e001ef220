"""``mediavec serve``: the HTTP search API, in the foreground until interrupted."""

from __future__ import annotations

import argparse
import logging

from mediavec.argtypes import port
from mediavec.settings import load_settings

logger = logging.getLogger(__name__)


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("serve", help="the HTTP search API: search while ingesting (OpenAPI at /openapi.json)")
    s.add_argument("--host", help="address to listen on (default MEDIAVEC_SERVE__HOST, 127.0.0.1)")
    s.add_argument("--port", type=port, help="TCP port (default MEDIAVEC_SERVE__PORT, 8080)")
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from mediavec.service.app import RUNNER_ARGS, make_app

    settings = load_settings()
    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if update:
        serve = settings.serve.model_validate(settings.serve.model_dump() | update)
        settings = settings.model_copy(update={"serve": serve})
    host, port = settings.serve.host, settings.serve.port
    listening = f"mediavec serve: http://{host}:{port} (the API: /openapi.json)"
    # Said once the port is bound (aiohttp calls ``print`` then): a taken port fails before it, in one line.
    web.run_app(
        make_app(settings),
        host=host,
        port=port,
        print=lambda _started: print(listening, flush=True),
        access_log=logger,
        shutdown_timeout=5,
        handler_args=RUNNER_ARGS,
    )
    return 0
