"""Command groups other distributions add to the ``mediavec`` command line.

The application knows nothing of the tools built on it. A distribution that wants subcommands
declares an entry point in the ``mediavec.cli`` group naming a module with:

- ``add_commands(sub)``: add its subparsers (each sets ``func``, as the built-in commands do);
- ``explainers()``: its expected error types and how to tell them (see :mod:`mediavec.cli_errors`);
- ``NEEDS_BROKER``: the names of its subcommands that cannot work without Kafka.

The dev tooling (``mediavec-devstack``, in ``devstack/`` of a source checkout) adds ``dev`` and
``demo`` this way; the runtime image does not install it, so those commands do not exist there.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType

logger = logging.getLogger("mediavec.cli")

GROUP = "mediavec.cli"


@cache
def plugins() -> tuple[ModuleType, ...]:
    """The installed command groups; one that fails to import is left out, with a warning."""
    found = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception as exc:
            logger.warning("command group %s (%s) not loaded: %s", ep.name, ep.value, exc)
    return tuple(found)


def needs_broker() -> frozenset[str]:
    return frozenset(name for p in plugins() for name in getattr(p, "NEEDS_BROKER", ()))
