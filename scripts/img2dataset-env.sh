#!/usr/bin/env bash
# Creates (or reuses) .venv-img2dataset, the venv of img2dataset, the peer the load test compares
# the fetch stage with (python -m loadtest.loadgen compare). img2dataset's pinned dependencies
# conflict with mediavec's, so it never goes into .venv.
#
# Usage: scripts/img2dataset-env.sh     build the venv if needed, then print its path
# The venv is built from loadtest/load/img2dataset-requirements.txt on first use (PyPI), then
# reused until that file or the Python version changes. Override with IMG2DATASET_VENV / PYTHON.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${IMG2DATASET_VENV:-$ROOT/.venv-img2dataset}
REQS=$ROOT/loadtest/load/img2dataset-requirements.txt

log() { echo "img2dataset-env: $*" >&2; }

# shellcheck source=scripts/lib-venv.sh
source "$ROOT/scripts/lib-venv.sh"

check_import() {
  NO_ALBUMENTATIONS_UPDATE=1 "$VENV/bin/python" -c "import img2dataset"  # no update check: loopback only
}

venv_locked_ready check_import
echo "$VENV"
