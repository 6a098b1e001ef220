"""The deployment files (Dockerfile, docker-compose.yml, k8s/), checked offline.

No Docker engine or cluster runs here. ``scripts/validate-deploy.sh`` runs the schema validators
(hadolint, the Compose specification, Kubernetes strict schemas and the vendored KEDA CRDs) from
their own pinned venv, ``.venv-validate``, built from PyPI on first use and reused after. The
other tests read the files with PyYAML and hold them to the code: every MEDIAVEC_* name is a
setting and every value parses, KEDA's triggers name the real topics and groups and never scale
past the partitions, every workload has requests, probes and a disruption budget, and no secret
value is committed. The encrypted sink is the one stage that never scales: its store is embedded
and serves one process, so it runs as exactly one replica on a persistent volume, unscaled.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from consumers.embed.stage import EmbedStage
from consumers.fetch.stage import FetchStage
from consumers.sink_encrypted.sink import EncryptedSink
from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_qdrant.sink import QdrantSink
from mediavec.encindex import IndexKeyError, parse_key
from mediavec.workers import STAGES
from streams.kafka import group_id
from streams.settings import Settings
from streams.topics import topics

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "validate-deploy.sh"
K8S = REPO / "k8s"
# The stage classes name their input topic and consumer group; none is instantiated here.
STAGE_CLASSES: dict[str, Any] = {
    "fetch": FetchStage,
    "embed": EmbedStage,
    "sink-qdrant": QdrantSink,
    "sink-postgres": PostgresSink,
    "sink-encrypted": EncryptedSink,
}
# Its store is embedded in the worker and serves one process: one replica, a volume, no autoscaler.
SINGLE_REPLICA = frozenset({"sink-encrypted"})
WORKLOADS = ("Deployment", "StatefulSet")
Doc = dict[str, Any]


def setting_env_names() -> set[str]:
    """Every variable Settings reads: MEDIAVEC_<FIELD> and MEDIAVEC_<GROUP>__<FIELD>."""
    names = set()
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names |= {f"MEDIAVEC_{name.upper()}__{sub.upper()}" for sub in group.model_fields}
        else:
            names.add(f"MEDIAVEC_{name.upper()}")
    return names


def interpolate(value: Any) -> str:
    """Compose's interpolation as `docker compose up` would do it with no variable set."""

    def one(m: re.Match[str]) -> str:
        op, arg = m.group(2), m.group(3) or ""
        return arg if op in (":-", "-") else ("set-by-user" if op in (":?", "?") else "")

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", one, str(value))
    return text.replace("$$", "$")


def run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def validate_venv() -> Path:
    """The validators' venv: built on the first run (PyPI, well under a minute), reused after."""
    done = run_script("--setup")
    if done.returncode != 0:
        pytest.fail(f"could not build the validators' venv:\n{done.stdout}{done.stderr}", pytrace=False)
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def compose() -> Doc:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s_docs() -> list[Doc]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [d for d in docs if d["kind"] in kinds]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def configmap(docs: list[Doc]) -> dict[str, str]:
    return dict(named(docs, "ConfigMap", "mediavec-settings")["data"])


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these MEDIAVEC_* variables would read them."""
    for key in [k for k in os.environ if k.upper().startswith("MEDIAVEC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def workload(docs: list[Doc], stage: str) -> Doc:
    """The Deployment or StatefulSet whose first container runs ``stage``."""
    return next(w for w in of_kind(docs, *WORKLOADS) if stage_of(pod(w)["containers"][0])[0] == stage)


def pod(w: Doc) -> Doc:
    return dict(w["spec"]["template"]["spec"])


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def stage_of(container: Doc) -> tuple[str, int]:
    """(stage, worker processes) of a `mediavec run <stage> [--workers N | --workers-per-gpu N]` container
    (one GPU per embed pod, so N per GPU is N per pod)."""
    args = container["args"]
    assert args[0] == "run", args
    flag = next((f for f in ("--workers", "--workers-per-gpu") if f in args), None)
    workers = int(args[args.index(flag) + 1]) if flag else 1
    return args[1], workers


# -- the validators ------------------------------------------------------------------------------


def test_validators_accept_the_repository_files(validate_venv: Path) -> None:
    done = run_script()
    assert done.returncode == 0, done.stdout + done.stderr
    for what in ("hadolint", "compose spec", "kubernetes"):
        assert re.search(rf"{what} \S+: ok", done.stderr), done.stderr


def _break_compose(tmp: Path, compose: Doc, edit: str) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(compose))
    if edit == "unknown_key":
        doc["services"]["embed"]["shm_sise"] = doc["services"]["embed"].pop("shm_size")
    else:
        doc["services"]["embed"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    path = tmp / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"), [("unknown_key", "'shm_sise' was unexpected"), ("wrong_type", "is not of type 'array'")]
)
def test_compose_validator_rejects_a_broken_copy(
    validate_venv: Path, compose: Doc, tmp_path: Path, edit: str, expected: str
) -> None:
    done = run_script("--compose", _break_compose(tmp_path, compose, edit))
    assert done.returncode == 1
    assert expected in done.stdout + done.stderr


K8S_BREAKS = {
    # file, (kind, name), edit, expected message
    "builtin_typo": ("fetch.yaml", ("StatefulSet", "fetch"), ("spec", "serviceNam"), "'serviceNam' was unexpected"),
    "unknown_kind": ("fetch.yaml", ("PodDisruptionBudget", "fetch"), ("kind", "PodDisruptionBudgit"), "no schema"),
    "keda_typo": ("keda.yaml", ("ScaledObject", "embed"), ("spec", "maxReplicas"), "'maxReplicas' was unexpected"),
    "keda_metadata": ("keda.yaml", ("ScaledObject", "embed"), ("metadata", "lables"), "'lables' was unexpected"),
    "claim_typo": (
        "sink-encrypted.yaml",
        ("StatefulSet", "sink-encrypted"),
        ("spec", "volumeClaimTemplate"),
        "'volumeClaimTemplate' was unexpected",
    ),
}


@pytest.mark.parametrize("case", sorted(K8S_BREAKS))
def test_k8s_validator_rejects_a_broken_copy(validate_venv: Path, tmp_path: Path, case: str) -> None:
    file, (kind, name), (where, what), expected = K8S_BREAKS[case]
    docs = [d for d in yaml.safe_load_all((K8S / file).read_text()) if d]
    target = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    if where == "kind":
        target["kind"] = what
    else:
        target[where][what] = 1
    (tmp_path / file).write_text(yaml.safe_dump_all(docs))
    done = run_script("--k8s", tmp_path)
    assert done.returncode == 1
    assert expected in done.stdout, done.stdout
    assert f"{len(docs)} documents, 2 failures" in done.stdout  # one per Kubernetes version, one document


def test_dockerfile_linter_rejects_a_broken_copy(validate_venv: Path, tmp_path: Path) -> None:
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["mediavec"]' in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace('ENTRYPOINT ["mediavec"]', "ENTRYPOINT mediavec"))
    done = run_script("--dockerfile", broken)
    assert done.returncode == 1
    assert "DL3025" in done.stdout  # exec form for ENTRYPOINT


# -- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_runs_every_stage_as_its_own_service(compose: Doc) -> None:
    services = compose["services"]
    for stage in STAGES:
        assert services[stage]["command"][:2] == ["run", stage]
        assert services[stage]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["topics"]
    assert services["topics"]["restart"] == "no"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["sink-qdrant"]["depends_on"]["qdrant"]["condition"] == "service_healthy"
    for dependency in ("kafka", "postgres"):
        assert services["sink-postgres"]["depends_on"][dependency]["condition"] == "service_healthy"
    assert services["sink-encrypted"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["demo-media"]["profiles"] == ["demo"]


def test_compose_encrypted_sink_is_one_container_with_its_store_on_a_volume_and_a_key_file(
    compose: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["sink-encrypted"]
    assert service["deploy"]["replicas"] == 1
    # A fixed instance id: a recreated container takes its static group membership straight back.
    assert service["command"] == ["run", "sink-encrypted", "--instance", "sink-encrypted-0"]
    s = settings_from({k: interpolate(v) for k, v in service["environment"].items()}, monkeypatch)
    (volume,) = service["volumes"]
    name, target = volume.split(":")
    assert name in compose["volumes"]  # a named volume: the store outlives the container
    assert s.encindex.path is not None and s.encindex.path.is_relative_to(target)
    assert s.data_dir == Path(target)  # the worker and store locks live beside the store
    (secret,) = service["secrets"]
    assert s.encindex.key_file == Path("/run/secrets") / secret
    assert s.encindex.key_env is None
    # The key file is named by a required variable: no default path, so no key in the repository.
    source = compose["secrets"][secret]["file"]
    assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", source), source
    for name, other in compose["services"].items():
        if name != "sink-encrypted":
            assert "secrets" not in other, name
            assert not any(k.startswith("MEDIAVEC_ENCINDEX__") for k in other.get("environment", {})), name


def test_compose_embed_reserves_a_gpu_and_sets_workers_per_gpu(compose: Doc) -> None:
    embed = compose["services"]["embed"]
    devices = embed["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert embed["command"] == ["run", "embed", "--workers-per-gpu", "${EMBED_WORKERS_PER_GPU:-4}"]


def test_compose_services_are_health_checked_with_named_volumes(compose: Doc) -> None:
    services = compose["services"]
    for name in ("kafka", "qdrant", "postgres", *STAGES):
        assert services[name]["healthcheck"]["test"], name
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG"):
        assert env[f"KAFKA_{key}_REPLICATION_FACTOR"] == 1
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {"kafka-data", "qdrant-data", "postgres-data", "encindex-data"} <= mounted
    assert {m for m in mounted if not m.startswith(("$", ".", "/"))} <= set(compose["volumes"])


def test_compose_env_parses_as_settings(compose: Doc, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*STAGES, "topics", "demo-media"):
        env = {k: interpolate(v) for k, v in compose["services"][name]["environment"].items()}
        s = settings_from(env, monkeypatch)
        assert s.kafka.bootstrap_servers == "kafka:9092", name
        assert s.qdrant.url == "http://qdrant:6333"
        assert s.model.model_dir == Path("/models")
        assert s.postgres.dsn is not None and "@postgres:5432/" in s.postgres.dsn.get_secret_value()
        assert s.metrics_port == 9100
    fetch_env = {k: interpolate(v) for k, v in compose["services"]["fetch"]["environment"].items()}
    assert settings_from(fetch_env, monkeypatch).fetch.allow_hosts == ("demo-media",)


def test_compose_demo_script_compiles_and_its_imports_exist(compose: Doc) -> None:
    script = compose["services"]["demo-media"]["command"][0]
    tree = ast.parse(script)  # a syntax error fails here
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert len(imports) >= 5
    for node in imports:
        module = importlib.import_module(node.module or "")
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    assert "http://demo-media:8080/" in script


# -- k8s/ --------------------------------------------------------------------------------------------


def test_every_mediavec_name_is_a_setting() -> None:
    valid = setting_env_names()
    files = [REPO / "docker-compose.yml", REPO / "Dockerfile", *sorted(K8S.glob("*"))]
    used = {(f.name, n) for f in files for n in re.findall(r"MEDIAVEC_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    unknown = sorted((f, n) for f, n in used if n not in valid)
    assert not unknown, f"not settings (see streams/settings.py): {unknown}"
    assert len({n for _, n in used}) >= 15  # the scan found the files' names


def test_k8s_settings_parse(k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from(configmap(k8s_docs), monkeypatch)
    assert s.kafka.security_protocol == "SASL_SSL"
    assert s.model.model_dir == Path("/models")
    assert s.topics.replication_factor == 3


def test_keda_scales_each_stage_on_its_own_topic_within_its_partitions(
    k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(configmap(k8s_docs), monkeypatch)
    cm = configmap(k8s_docs)
    sasl = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}
    scaled = of_kind(k8s_docs, "ScaledObject")
    assert len(scaled) == len(set(STAGES) - SINGLE_REPLICA)
    auths = {d["metadata"]["name"] for d in of_kind(k8s_docs, "TriggerAuthentication")}
    scaled_stages = set()
    for so in scaled:
        ref = so["spec"]["scaleTargetRef"]
        container = named(k8s_docs, ref["kind"], ref["name"])["spec"]["template"]["spec"]["containers"][0]
        stage, workers = stage_of(container)
        spec = topics(settings).by_name(STAGE_CLASSES[stage].input_topic)
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["topic"] == spec.name
        assert meta["consumerGroup"] == group_id(settings, STAGE_CLASSES[stage].name)
        assert so["spec"]["minReplicaCount"] >= 1
        assert so["spec"]["maxReplicaCount"] * workers <= spec.partitions, stage
        assert meta["bootstrapServersFromEnv"] in cm
        assert meta["sasl"] == sasl[cm["MEDIAVEC_KAFKA__SASL_MECHANISM"]]
        assert meta["tls"] == ("enable" if cm["MEDIAVEC_KAFKA__SECURITY_PROTOCOL"].endswith("SSL") else "disable")
        assert trigger["authenticationRef"]["name"] in auths
        scaled_stages.add(stage)
    assert scaled_stages == set(STAGES) - SINGLE_REPLICA
    assert not of_kind(k8s_docs, "HorizontalPodAutoscaler")  # nothing else scales a single replica


def test_every_workload_has_requests_probes_and_a_disruption_budget(k8s_docs: list[Doc]) -> None:
    port = int(configmap(k8s_docs)["MEDIAVEC_METRICS_PORT"])
    pdb_selectors = [d["spec"]["selector"]["matchLabels"] for d in of_kind(k8s_docs, "PodDisruptionBudget")]
    workloads = of_kind(k8s_docs, *WORKLOADS)
    assert len(workloads) == len(STAGES)
    for w in workloads:
        template = w["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert any(sel.items() <= labels.items() for sel in pdb_selectors), w["metadata"]["name"]
        if stage_of(template["spec"]["containers"][0])[0] in SINGLE_REPLICA:
            assert w["spec"]["replicas"] == 1  # never scaled, see the encrypted sink's test
        else:
            assert "replicas" not in w["spec"]  # KEDA owns the count
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        for c in template["spec"].get("initContainers", []):
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]
        for c in template["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]
            assert {"name": "metrics", "containerPort": port} in c["ports"]
            for probe in ("livenessProbe", "readinessProbe"):
                assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    for job in of_kind(k8s_docs, "Job"):
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics"]


def test_transactional_stages_have_stable_instance_ids_and_embed_runs_on_gpus(k8s_docs: list[Doc]) -> None:
    for stage in ("fetch", "embed"):  # transactional id <group>.<pod name>: stable only in a StatefulSet
        container = named(k8s_docs, "StatefulSet", stage)["spec"]["template"]["spec"]["containers"][0]
        assert "--instance" not in container["args"]
    pod = named(k8s_docs, "StatefulSet", "embed")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert stage_of(container) == ("embed", 4)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    assert any(m["mountPath"] == "/models" and m["readOnly"] for m in container["volumeMounts"])


def test_postgres_sink_scales_and_reads_its_dsn_from_a_secret(k8s_docs: list[Doc]) -> None:
    w = workload(k8s_docs, "sink-postgres")
    assert w["kind"] == "Deployment"  # offsets are in the database: any pod resumes any partition
    env = env_of(pod(w)["containers"][0])
    assert env["MEDIAVEC_POSTGRES__DSN"]["valueFrom"]["secretKeyRef"] == {"name": "mediavec-postgres", "key": "dsn"}
    assert "MEDIAVEC_POSTGRES__DSN" not in configmap(k8s_docs)
    assert named(k8s_docs, "ScaledObject", "sink-postgres")["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]


def test_encrypted_sink_is_one_statefulset_replica_on_a_persistent_volume(
    k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = workload(k8s_docs, "sink-encrypted")
    spec = w["spec"]
    assert w["kind"] == "StatefulSet" and spec["replicas"] == 1
    # One pod at a time, also across an update: the old one stops before the new one starts.
    assert spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
    assert spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    targets = [so["spec"]["scaleTargetRef"]["name"] for so in of_kind(k8s_docs, "ScaledObject")]
    assert w["metadata"]["name"] not in targets
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec.get("persistentVolumeClaimRetentionPolicy", {}).get("whenDeleted", "Retain") == "Retain"
    container = pod(w)["containers"][0]
    values = {k: e["value"] for k, e in env_of(container).items() if "value" in e}
    s = settings_from({**configmap(k8s_docs), **values}, monkeypatch)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert s.encindex.path is not None and s.encindex.path.is_relative_to(mount["mountPath"])
    assert claim["metadata"]["name"] not in {v["name"] for v in pod(w)["volumes"]}  # not shadowed by an emptyDir
    assert 1 <= s.encindex.cpu_threads <= float(container["resources"]["limits"]["cpu"])
    pdb = named(k8s_docs, "PodDisruptionBudget", w["metadata"]["name"])
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}  # never blocks a drain


def test_encrypted_sink_reads_its_key_from_a_mounted_secret_file(k8s_docs: list[Doc]) -> None:
    spec = pod(workload(k8s_docs, "sink-encrypted"))
    container = spec["containers"][0]
    env = env_of(container)
    assert "MEDIAVEC_ENCINDEX__KEY_ENV" not in env and "MEDIAVEC_ENCINDEX__KEY_ENV" not in configmap(k8s_docs)
    key_file = Path(env["MEDIAVEC_ENCINDEX__KEY_FILE"]["value"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if key_file.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] and volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"
    # The init container copies the Secret's file there, owned by the worker, mode 0400.
    (init,) = spec["initContainers"]
    assert init["command"][:3] == ["install", "-m", "0400"]
    source, target = map(Path, init["command"][3:])
    assert target == key_file
    (from_mount,) = [m for m in init["volumeMounts"] if source.is_relative_to(m["mountPath"])]
    secret = volumes[from_mount["name"]]["secret"]
    assert secret["secretName"] == "mediavec-encindex-key"
    assert [Path(from_mount["mountPath"]) / i["path"] for i in secret["items"]] == [source]


def test_no_secret_value_is_committed(compose: Doc, k8s_docs: list[Doc]) -> None:
    secrets = of_kind(k8s_docs, "Secret")
    assert {s["metadata"]["name"] for s in secrets} == {
        "mediavec-kafka-sasl",
        "mediavec-qdrant",
        "mediavec-postgres",
        "mediavec-encindex-key",
    }
    for s in secrets:
        assert "data" not in s, "base64 data hides what is committed: use stringData placeholders"
        assert all("REPLACE_ME" in v for v in s["stringData"].values()), s["metadata"]["name"]
    keys = {(s["metadata"]["name"], k) for s in secrets for k in s["stringData"]}
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for w in of_kind(k8s_docs, *WORKLOADS, "Job")
        for e in w["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    refs += [r for a in of_kind(k8s_docs, "TriggerAuthentication") for r in a["spec"]["secretTargetRef"]]
    mounted = [v["secret"] for w in of_kind(k8s_docs, *WORKLOADS) for v in pod(w).get("volumes", []) if "secret" in v]
    assert all(m.get("items") for m in mounted), mounted  # name the keys a volume mounts, so they are checked
    refs += [{"name": m["secretName"], "key": item["key"]} for m in mounted for item in m["items"]]
    assert refs and all((r["name"], r["key"]) in keys for r in refs)
    assert ("mediavec-encindex-key", "index.key") in {(r["name"], r["key"]) for r in refs}
    for s in secrets:  # no placeholder is usable as an index key: a forgotten one stops the sink
        for value in s["stringData"].values():
            with pytest.raises(IndexKeyError):
                parse_key(value.encode(), "the template")
    files = (REPO / "Dockerfile", REPO / "docker-compose.yml", *sorted(K8S.glob("*")))
    hex_keys = [
        (f.name, m)
        for f in files
        for m in re.findall(r"(?<!sha256:)(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])", f.read_text())
    ]
    assert not hex_keys, hex_keys  # an index key is 64 hex characters
    credentials = [
        (key, str(value))
        for service in compose["services"].values()
        for key, value in (service.get("environment") or {}).items()
        if re.search(r"PASSWORD|DSN|API_KEY|SECRET|SASL", key)
    ]
    assert credentials and all("${" in value for _, value in credentials), credentials  # from .env, never inline


def test_kustomization_applies_every_manifest_but_the_secret_template(k8s_docs: list[Doc]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert listed == manifests
    assert all(
        d["metadata"].get("namespace") == kustomization["namespace"] for d in k8s_docs if d["kind"] != "Namespace"
    )
    assert kustomization["images"][0]["name"] == "mediavec"
    assert (K8S / "README.md").is_file()


# -- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_installs_the_project_as_a_non_root_user(k8s_docs: list[Doc]) -> None:
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    # The project itself, with the extra that holds sink-encrypted's engine (and only real extras).
    installs = [
        m for op, arg in instructions if op == "RUN" for m in re.findall(r"pip install \"\.\[([\w,-]+)\]\"", arg)
    ]
    assert len(installs) == 1, installs
    extras = set(installs[0].split(","))
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "encrypted" in extras and extras <= set(optional)
    assert ".[encrypted]" in (K8S / "README.md").read_text()
    user = [arg for op, arg in instructions if op == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid != 0
    for w in of_kind(k8s_docs, *WORKLOADS, "Job"):
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert [arg for op, arg in instructions if op == "ENTRYPOINT"] == ['["mediavec"]']
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".venv-validate", "models", ".mediavec"} <= set(ignored)
