"""The search service (`mediavec serve`) in docker-compose.yml and k8s/search.yaml, held to the code:
its command parses with the real CLI, its probes and health check ask endpoints the service has
(mediavec.service.api.ENDPOINTS), its port is the one its settings listen on, and it reads Qdrant by
URL without the encrypted index's key. The compose health check runs against a real service."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mediavec.cli import parser
from mediavec.service.api import ENDPOINTS
from mediavec.service.app import ServiceServer
from mediavec.service.cli import add_serve
from mediavec.settings import Settings
from tests.unit.deploy.files import (
    WORKLOADS,
    Doc,
    configmap,
    env_of,
    interpolate,
    named,
    of_kind,
    pod,
    settings_from,
)

PATHS = {e.name: e.path for e in ENDPOINTS}
READY, ALIVE, METRICS = PATHS["readyz"], PATHS["healthz"], PATHS["metrics"]
SERVE = add_serve.__module__  # the module whose handler `mediavec serve` runs


def parse(argv: list[str], where: str) -> str:
    """The command ``argv`` runs, as `mediavec` parses it; a failure names where the command is."""
    try:
        args = parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `mediavec {' '.join(argv)}` is not a command of mediavec.cli", pytrace=False)
    return f"{args.func.__module__}.{args.func.__name__}"


def test_every_mediavec_command_parses_with_the_real_cli(compose: Doc, k8s_docs: list[Doc]) -> None:
    commands = {
        f"compose {name}": [interpolate(a) for a in service["command"]]
        for name, service in compose["services"].items()
        if "command" in service and "entrypoint" not in service  # demo-media runs python, not mediavec
    }
    for w in of_kind(k8s_docs, *WORKLOADS, "Job"):
        for c in pod(w)["containers"]:
            commands[f"k8s {w['kind']} {w['metadata']['name']}/{c['name']}"] = c["args"]
    handlers = {where: parse(argv, where) for where, argv in commands.items()}
    assert len(handlers) >= 12  # compose's topics, five stages and search; k8s's job and six workloads
    assert handlers["compose search"] == handlers["k8s Deployment search/search"] == f"{SERVE}._serve"


def _healthcheck_url(service: Doc) -> tuple[int, str]:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    m = re.fullmatch(r".*urlopen\('http://127\.0\.0\.1:(\d+)(/[^']*)', timeout=\d+\)", test[3])
    assert m, test[3]
    return int(m.group(1)), m.group(2)


def test_compose_search_listens_where_it_is_published_and_checks_readiness(
    compose: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["search"]
    assert service["image"] == compose["services"]["fetch"]["image"] and service["command"] == ["serve"]
    s = settings_from({k: interpolate(v) for k, v in service["environment"].items()}, monkeypatch)
    assert s.serve.host == "0.0.0.0"  # inside the container: loopback alone would not be published
    assert s.serve.api_key is None  # the default topology publishes on the host's loopback only
    (published,) = service["ports"]
    host_ip, host_port, container_port = interpolate(published).split(":")
    assert (host_ip, int(container_port)) == ("127.0.0.1", s.serve.port) and host_port.isdigit()
    assert str(s.serve.port) in service["expose"]
    assert _healthcheck_url(service) == (s.serve.port, READY)
    # It reads the Qdrant server by URL (what the sinks write), not an embedded store of its own,
    # and the thumbnails from the PostgreSQL sink-postgres writes them to; it needs no Kafka.
    assert s.qdrant.url == "http://qdrant:6333" and s.serve.thumbnails
    assert s.postgres.dsn is not None and "@postgres:5432/" in s.postgres.dsn.get_secret_value()
    healthy = {"condition": "service_healthy"}
    assert service["depends_on"] == {"qdrant": healthy, "postgres": healthy}
    # The encrypted index is embedded in sink-encrypted and served on that container's loopback
    # only: this service has neither its key nor its volume (the comment says how to search it).
    assert s.encindex.key_file is None and s.encindex.key_env is None and "secrets" not in service
    assert not any(v.split(":")[0] == "encindex-data" for v in service.get("volumes", []))
    assert any(v.endswith(":/models:ro") for v in service["volumes"]) and s.model.model_dir == Path("/models")


def _healthcheck(code: str, port: int) -> int:
    """Run the compose health check's command here, against ``port`` instead of the container's."""
    code = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode


def test_compose_search_healthcheck_passes_when_ready_and_fails_when_not(compose: Doc, tmp_path: Path) -> None:
    code = compose["services"]["search"]["healthcheck"]["test"][3]
    ready = Settings(data_dir=tmp_path / "ready")  # an empty embedded store: readable, so ready
    with ServiceServer(ready) as server:
        assert _healthcheck(code, server.port) == 0
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "qdrant").write_text("a file where the store directory should be")
    with ServiceServer(Settings(data_dir=tmp_path / "broken")) as server:
        assert _healthcheck(code, server.port) == 1  # /readyz is a 503: urlopen raises


def _search_container(k8s_docs: list[Doc]) -> tuple[Doc, Doc]:
    w = named(k8s_docs, "Deployment", "search")
    (container,) = pod(w)["containers"]
    return w, container


def test_k8s_search_deployment_probes_the_service_endpoints_on_its_port(
    k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    w, c = _search_container(k8s_docs)
    assert c["args"] == ["serve"]
    values = {k: e["value"] for k, e in env_of(c).items() if "value" in e and k.startswith("MEDIAVEC_")}
    s = settings_from({**configmap(k8s_docs), **values}, monkeypatch)
    assert s.serve.host == "0.0.0.0" and s.qdrant.url  # a Qdrant server by URL: no embedded store to share
    assert c["ports"] == [{"name": "http", "containerPort": s.serve.port}]
    assert c["readinessProbe"]["httpGet"] == {"path": READY, "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": ALIVE, "port": "http"}
    public = {e.path for e in ENDPOINTS if e.public}
    assert {READY, ALIVE} <= public  # the kubelet sends no API key
    annotations = w["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(s.serve.port), METRICS)
    key = env_of(c)["MEDIAVEC_SERVE__API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "mediavec-search", "key": "api-key", "optional": True}
    assert "MEDIAVEC_SERVE__API_KEY" not in configmap(k8s_docs)
    dsn = env_of(c)["MEDIAVEC_POSTGRES__DSN"]["valueFrom"]["secretKeyRef"]  # the thumbnails
    assert dsn == {"name": "mediavec-postgres", "key": "dsn"} and s.serve.thumbnails
    assert not any(k.startswith("MEDIAVEC_ENCINDEX__") for k in env_of(c))  # not the encrypted index
    assert s.encindex.key_file is None and s.encindex.key_env is None


def test_k8s_search_is_a_stateless_deployment_behind_a_service(k8s_docs: list[Doc]) -> None:
    w, c = _search_container(k8s_docs)
    labels = w["spec"]["template"]["metadata"]["labels"]
    assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert w["spec"]["replicas"] >= 2 and w["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "volumeClaimTemplates" not in w["spec"]
    service = named(k8s_docs, "Service", "search")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"].get("clusterIP") != "None"  # a load-balanced address, not a headless one
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http" and port["port"] == c["ports"][0]["containerPort"]
    pdb = named(k8s_docs, "PodDisruptionBudget", "search")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "search" not in {so["spec"]["scaleTargetRef"]["name"] for so in of_kind(k8s_docs, "ScaledObject")}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    # Like every other workload: non-root, read-only root, no privilege, the models read-only.
    sink = pod(named(k8s_docs, "Deployment", "sink-qdrant"))
    assert pod(w)["securityContext"] == sink["securityContext"]
    assert c["securityContext"] == sink["containers"][0]["securityContext"]
    assert pod(w)["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod(w)["volumes"]}
    (models,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
    assert models["readOnly"] and volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == "mediavec-models"
    writable = {m["mountPath"] for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
    assert {"/tmp", "/var/lib/mediavec", "/home/mediavec"} <= writable
