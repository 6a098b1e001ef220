"""k8s/ held to the code: KEDA on the real topics and groups within the partitions, requests,
probes and disruption budgets, stable instance ids, the encrypted sink as one replica."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from consumers.registry import STAGE_NAMES as STAGES
from streams.kafka import group_id
from streams.topics import topics
from tests.unit.deploy.files import (
    K8S,
    SINGLE_REPLICA,
    STAGE_CLASSES,
    WORKLOADS,
    Doc,
    configmap,
    env_of,
    named,
    of_kind,
    pod,
    settings_from,
    stage_of,
    stage_workloads,
    workload,
)


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
    workloads = stage_workloads(k8s_docs)  # the search service's are held to its own probes (test_search_deploy)
    assert len(workloads) == len(STAGES) and len(of_kind(k8s_docs, *WORKLOADS)) == len(STAGES) + 1
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


def test_kustomization_applies_every_manifest_but_the_secret_template(k8s_docs: list[Doc]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    # Applied by hand: the secret template, and the Kafka cluster (Strimzi's namespace, after its operator).
    apart = {"secrets.example.yaml", "kafka-cluster.yaml"}
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", *apart}
    assert listed == manifests
    ours = [d for d in k8s_docs if d["kind"] != "Namespace" and not d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert all(d["metadata"].get("namespace") == kustomization["namespace"] for d in ours)
    assert kustomization["images"][0]["name"] == "mediavec"
    assert (K8S / "README.md").is_file()
