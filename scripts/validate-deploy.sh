#!/usr/bin/env bash
# Validates the deployment files offline, with pinned validators in their own venv:
#   Dockerfile          hadolint
#   docker-compose.yml  the Compose specification schema bundled by check-jsonschema
#   k8s/                Kubernetes schemas bundled by kubernetes-validate (strict), KEDA resources
#                       against the CRDs vendored in deploy/validate/crds (deploy/validate/k8s_manifests.py)
#
# Usage: scripts/validate-deploy.sh                  validate the repository's files
#        scripts/validate-deploy.sh --compose F --k8s DIR --dockerfile F   only these
#        scripts/validate-deploy.sh --setup           only create or refresh .venv-validate
# The venv is built from deploy/validate/requirements.txt on first use (PyPI), then reused until
# that file changes. Exit status: 0 when everything validated, 1 otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VALIDATE_VENV:-$ROOT/.venv-validate}
REQS=$ROOT/deploy/validate/requirements.txt

log() { echo "validate-deploy: $*" >&2; }

venv_ready() {
  local want
  want="$(sha256sum "$REQS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
  if [[ -f $VENV/.requirements.stamp && $(cat "$VENV/.requirements.stamp") == "$want" ]]; then
    return
  fi
  log "building $VENV from ${REQS#"$ROOT"/}"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQS"
  echo "$want" > "$VENV/.requirements.stamp"
}

setup() {
  # One builder at a time (two test runs may start together); the others wait, then reuse it.
  local lock
  lock="${TMPDIR:-/tmp}/mediavec-validate-$(echo "$VENV" | sha256sum | cut -c1-16).lock"
  exec 9> "$lock"
  flock 9
  venv_ready
  flock -u 9
}

run() {
  local name=$1
  shift
  if "$@"; then
    log "$name: ok"
  else
    log "$name: FAILED"
    failed=1
  fi
}

dockerfile="" compose="" k8s="" only_setup=0
if [[ $# -eq 0 ]]; then
  dockerfile=$ROOT/Dockerfile compose=$ROOT/docker-compose.yml k8s=$ROOT/k8s
fi
while [[ $# -gt 0 ]]; do
  case $1 in
    --dockerfile) dockerfile=$2; shift 2 ;;
    --compose) compose=$2; shift 2 ;;
    --k8s) k8s=$2; shift 2 ;;
    --setup) only_setup=1; shift ;;
    *) log "unknown argument $1 (see the header of $0)"; exit 2 ;;
  esac
done

setup
if [[ $only_setup -eq 1 ]]; then
  echo "$VENV"
  exit 0
fi
failed=0
[[ -z $dockerfile ]] || run "hadolint $dockerfile" "$VENV/bin/hadolint" --no-color "$dockerfile"
[[ -z $compose ]] || run "compose spec $compose" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$compose"
[[ -z $k8s ]] || run "kubernetes $k8s" \
  "$VENV/bin/python" "$ROOT/deploy/validate/k8s_manifests.py" --quiet "$k8s"
exit $failed
