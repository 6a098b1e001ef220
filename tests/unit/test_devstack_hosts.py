"""What several hosts need of the dev stack, without a broker: client listeners on another address,
and the reading of a consumer group's spread over hosts."""

from __future__ import annotations

from pathlib import Path

from devstack import cluster, kafka
from devstack.hosts import GroupSpread
from devstack.settings import DevSettings, DevStackSettings


def _props(settings: DevSettings) -> dict[str, str]:
    text = kafka.server_properties(settings)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_kafka_host_moves_the_client_listeners_and_leaves_the_controller_on_loopback(tmp_path: Path) -> None:
    dev = DevStackSettings(kafka_port=39092, controller_port=39093, kafka_host="10.231.7.1")
    props = _props(DevSettings(data_dir=tmp_path, devstack=dev))
    clients = "PLAINTEXT://10.231.7.1:39092,SASL_PLAINTEXT://10.231.7.1:39094,SASL_SSL://10.231.7.1:39095"
    assert props["advertised.listeners"] == clients
    assert props["listeners"] == f"{clients},CONTROLLER://127.0.0.1:39093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:39093"
    assert cluster.bootstrap_servers(DevSettings(data_dir=tmp_path, devstack=dev)) == "10.231.7.1:39092"


def test_without_kafka_host_the_listeners_stay_on_loopback(tmp_path: Path) -> None:
    dev = DevStackSettings(kafka_port=39092, controller_port=39093)
    props = _props(DevSettings(data_dir=tmp_path, devstack=dev))
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:39092,")


def test_a_group_is_settled_only_when_stable_complete_and_on_exactly_the_given_hosts() -> None:
    a, b, c = "10.231.7.10", "10.231.7.11", "10.231.7.12"
    spread = GroupSpread("STABLE", {a: frozenset({0, 1}), b: frozenset({2, 3})}, partitions=4)
    assert spread.settled_on([a, b])
    assert not spread.settled_on([a, b, c])  # a host's members are missing
    assert not spread.settled_on([b])  # a lost host's members are still there
    assert not GroupSpread("PREPARING_REBALANCE", spread.owners, 4).settled_on([a, b])
    assert not GroupSpread("STABLE", {a: frozenset({0, 1}), b: frozenset({2})}, 4).settled_on([a, b])
