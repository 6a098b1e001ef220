"""The deployment files' paths, loaders and the readers the deployment tests share."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from consumers.embed.stage import EmbedStage
from consumers.fetch.stage import FetchStage
from consumers.sink_encrypted.sink import EncryptedSink
from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_qdrant.sink import QdrantSink
from mediavec.settings import Settings

REPO = Path(__file__).resolve().parents[3]


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


def stage_workloads(docs: list[Doc]) -> list[Doc]:
    """The Deployments and StatefulSets that run a stage (`mediavec run ...`), not the search service."""
    return [w for w in of_kind(docs, *WORKLOADS) if pod(w)["containers"][0]["args"][0] == "run"]


def workload(docs: list[Doc], stage: str) -> Doc:
    """The Deployment or StatefulSet whose first container runs ``stage``."""
    return next(w for w in stage_workloads(docs) if stage_of(pod(w)["containers"][0])[0] == stage)


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
