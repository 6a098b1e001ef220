"""Settings of the local dev stack, and the settings class the dev tooling reads."""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel, Field

from mediavec.settings import Settings
from streams.settings import SECTION

MAX_BROKERS = 9  # node i listens on node 0's ports + 10 * i: nine nodes keep within 90 ports
TOP_PORT = 65535 - 10 * MAX_BROKERS  # a node 0 port from which every node's ports exist


class DevStackSettings(BaseModel):
    model_config = SECTION
    kafka_port: int = Field(19092, ge=1, le=TOP_PORT)
    kafka_host: str = Field(
        "127.0.0.1",
        description="Address the nodes' client listeners bind and advertise; another of this machine's "
        "addresses serves clients on other hosts or network namespaces (the controllers stay on 127.0.0.1).",
    )
    controller_port: int = Field(19093, ge=1, le=TOP_PORT)
    postgres_port: int = Field(15432, ge=1, le=65535)
    kafka_heap: str = "768m"
    brokers: int = Field(
        1,
        ge=1,
        le=MAX_BROKERS,
        description="KRaft nodes (each broker and controller); node i listens on the ports of node 0 plus 10 * i.",
    )
    registry_port: int = Field(
        28081,
        ge=1,
        le=65534,
        description="The schema registry's API (`mediavec dev up --registry`); its health and metrics "
        "listen on the next port.",
    )


class DevSettings(Settings):
    """Every mediavec setting plus the dev stack's ports (``MEDIAVEC_DEVSTACK__*``)."""

    devstack: DevStackSettings = DevStackSettings()


@cache
def load_dev_settings() -> DevSettings:
    """The process's settings, dev stack included, read from the environment once."""
    return DevSettings()
