#!/usr/bin/env bash
# Validates the deployment files offline, with pinned validators in their own venv:
#   Dockerfile          hadolint
#   docker-compose.yml  the Compose specification schema bundled by check-jsonschema
#   k8s/                Kubernetes schemas bundled by kubernetes-validate (strict), KEDA and Strimzi
#                       resources against the CRDs vendored in deploy/validate/crds (deploy/validate/k8s_manifests.py)
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

# shellcheck source=scripts/lib-venv.sh
source "$ROOT/scripts/lib-venv.sh"

setup() {
  venv_locked_ready
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
