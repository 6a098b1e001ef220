"""The dev stack's Kafka layout for N nodes: ports, ids, voters, replication, and the storage's record."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from devstack import cluster, credentials, tls
from devstack.procs import DevStackError
from devstack.settings import DevSettings, DevStackSettings
from mediavec.cli import main


def _settings(tmp_path: Path, brokers: int) -> DevSettings:
    return DevSettings(
        data_dir=tmp_path, devstack=DevStackSettings(kafka_port=39092, controller_port=39093, brokers=brokers)
    )


def test_node_i_listens_ten_ports_above_node_0(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 3)
    assert cluster.ports(settings, 0) == cluster.NodePorts(39092, 39093, 39094, 39095)
    assert cluster.ports(settings, 2) == cluster.NodePorts(39112, 39113, 39114, 39115)
    assert cluster.quorum_voters(settings, 3) == "1@127.0.0.1:39093,2@127.0.0.1:39103,3@127.0.0.1:39113"
    assert cluster.bootstrap_servers(settings) == "127.0.0.1:39092,127.0.0.1:39102,127.0.0.1:39112"
    assert cluster.bootstrap_servers(settings, "tls") == "127.0.0.1:39095,127.0.0.1:39105,127.0.0.1:39115"


def test_authenticated_clients_bootstrap_on_every_node(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 3)
    assert tls.bootstrap_servers(settings) == cluster.bootstrap_servers(settings, "tls")
    assert credentials.sasl_bootstrap_servers(settings) == "127.0.0.1:39094,127.0.0.1:39104,127.0.0.1:39114"
    assert (tls.port(settings), credentials.sasl_port(settings)) == (39095, 39094)  # node 0's, as before


def _names(files: tls.TlsFiles) -> set[x509.GeneralName]:
    cert = x509.load_pem_x509_certificates(files.broker_pem.read_bytes())[0]
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_the_broker_certificate_names_the_kafka_host_and_is_remade_when_it_changes(tmp_path: Path) -> None:
    plain = _settings(tmp_path, 1)
    files = tls.ensure(plain)
    loopback = _names(files)
    assert x509.DNSName("localhost") in loopback and len(loopback) == 3
    ca = files.ca_cert.read_bytes()
    assert tls.ensure(plain) == files and files.ca_cert.read_bytes() == ca  # current: kept
    hub = plain.model_copy(update={"devstack": plain.devstack.model_copy(update={"kafka_host": "10.231.0.1"})})
    tls.ensure(hub)
    assert _names(files) == loopback | {x509.IPAddress(ipaddress.ip_address("10.231.0.1"))}
    named = plain.model_copy(update={"devstack": plain.devstack.model_copy(update={"kafka_host": "kafka.lan"})})
    tls.ensure(named)
    assert x509.DNSName("kafka.lan") in _names(files)


@pytest.mark.parametrize(("brokers", "replicas", "in_sync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_internal_topics_replicate_to_three_with_two_in_sync(brokers: int, replicas: int, in_sync: int) -> None:
    props = cluster.replication_props(brokers)
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == replicas
    assert props["default.replication.factor"] == replicas
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == in_sync


def test_storage_formatted_for_three_nodes_refuses_one_and_status_finds_three(tmp_path: Path) -> None:
    three = cluster.claim(_settings(tmp_path, 3))
    assert cluster.claim(_settings(tmp_path, 3)) == three  # one cluster id for every node
    with pytest.raises(DevStackError, match=r"formatted for 3 broker\(s\), not 1.*--brokers 3"):
        cluster.claim(_settings(tmp_path, 1))
    assert list(cluster.nodes(_settings(tmp_path, 1))) == [0, 1, 2]


def test_a_single_node_formatted_before_the_record_keeps_its_cluster_id(tmp_path: Path) -> None:
    meta = tmp_path / "kafka" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("#\ncluster.id=AbCdEfGhIjKlMnOpQrStUw\nnode.id=1\nversion=1\n")
    assert cluster.claim(_settings(tmp_path, 1)) == cluster.Layout(1, "AbCdEfGhIjKlMnOpQrStUw")
    with pytest.raises(DevStackError, match="formatted for 1 broker"):
        cluster.claim(_settings(tmp_path, 3))


def test_dev_up_refuses_a_number_of_brokers_out_of_range_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dev", "up", "--brokers", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("--brokers: a number of brokers from 1 to 9, not '0'")
