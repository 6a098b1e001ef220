"""Validate Kubernetes manifests offline, strictly, and fail on any kind nobody can check.

Built-in kinds are checked by kubernetes-validate's bundled schemas in strict mode (unknown
fields are errors). Its own command line only *warns* about kinds it has no schema for, so a
misspelled ``kind`` would pass there; here such a document is an error. Custom resources are
checked against the ``openAPIV3Schema`` of the CRD files in ``deploy/validate/crds/`` (see
``crds/SOURCE.md``), made strict the way the API server prunes them: an object that lists its
properties accepts no others unless it says ``x-kubernetes-preserve-unknown-fields``. Their
``metadata`` is checked against the Kubernetes ObjectMeta schema. CEL rules
(``x-kubernetes-validations``) are not evaluated.

Runs inside ``.venv-validate`` (see ``scripts/validate-deploy.sh``), not the project's venv:
``python deploy/validate/k8s_manifests.py [-k 1.31.0 -k 1.37.0] k8s/ [more files or dirs]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from jsonschema.protocols import Validator
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

CRD_DIR = Path(__file__).resolve().parent / "crds"
DEFAULT_VERSIONS = ("1.31.0", "1.37.0")
Doc = dict[str, Any]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it


def strict(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which listed properties are the only ones allowed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crd_schemas(directory: Path = CRD_DIR) -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD file."""
    schemas: dict[tuple[str, str], Doc] = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_LOADER)  # the Kafka CRD is 300 KB: the C loader
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = strict(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _object_meta_validator(k8s_version: str) -> Validator:
    """Strict ObjectMeta from kubernetes-validate's bundled schemas (for custom resources)."""
    base = f"kubernetes-json-schema/v{k8s_version}-local-strict"
    schema = schema_contents(f"{base}/objectmeta-meta-v1.json", k8s_version)
    defs = schema_contents(f"{base}/_definitions.json", k8s_version)
    registry: Registry = Resource.from_contents(defs) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def documents(paths: list[Path]) -> Iterator[tuple[Path, Doc]]:
    """Every non-empty YAML document under ``paths`` (directories: their *.yaml files)."""
    for path in paths:
        files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            if file.name == "kustomization.yaml":
                continue  # kustomize's own file, not a Kubernetes object
            for doc in yaml.safe_load_all(file.read_text()):
                if doc:
                    yield file, doc


def _where(prefix: str, path: Any) -> str:
    return ".".join([prefix, *map(str, path)] if prefix else [*map(str, path)]) or "<root>"


def _errors(validator: Validator, instance: Any, prefix: str = "") -> list[str]:
    found = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_where(prefix, e.absolute_path)}: {e.message}" for e in found]


def check_custom(doc: Doc, schema: Doc, meta: Validator) -> list[str]:
    errors = _errors(jsonschema.Draft202012Validator(schema), doc)
    return errors + _errors(meta, doc.get("metadata", {}), prefix="metadata")


def check_builtin(doc: Doc, k8s_version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{_where('', e.path)}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')} (unknown kind, or a CRD not vendored)"]
    return []


def validate(paths: list[Path], versions: tuple[str, ...], *, quiet: bool = False) -> int:
    """Print errors (and, unless quiet, one line per valid document); return the failures."""
    crds = load_crd_schemas()
    failed = 0
    for version in versions:
        meta = _object_meta_validator(version)
        for file, doc in documents(paths):
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            key = (doc.get("apiVersion", ""), doc.get("kind", ""))
            errors = check_custom(doc, crds[key], meta) if key in crds else check_builtin(doc, version)
            if errors:
                failed += 1
                for err in errors:
                    print(f"ERROR {file} {name} (kubernetes {version}): {err}")
            elif not quiet:
                print(f"ok    {file} {name} (kubernetes {version})")
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors and a summary only")
    args = p.parse_args(argv)
    versions = tuple(args.versions or DEFAULT_VERSIONS)
    count = len(list(documents(args.paths)))
    if not count:
        print(f"ERROR no Kubernetes documents found in {', '.join(map(str, args.paths))}")
        return 1
    failed = validate(args.paths, versions, quiet=args.quiet)
    print(f"{count} documents, {failed} failures, against Kubernetes {', '.join(versions)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
