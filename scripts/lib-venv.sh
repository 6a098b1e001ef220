# Sourced by scripts that keep a tool in its own venv, built from a pinned requirements file.
# Expects PYTHON, VENV and REQS; `venv_locked_ready [check-command...]` builds the venv when the
# requirements or the Python version changed (one builder at a time, under a lock), then returns.

venv_ready() {
  local want
  want="$(sha256sum "$REQS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
  if [[ -f $VENV/.requirements.stamp && $(cat "$VENV/.requirements.stamp") == "$want" ]]; then
    return
  fi
  echo "building $VENV from $REQS" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQS"
  if [[ $# -gt 0 ]]; then "$@"; fi
  echo "$want" > "$VENV/.requirements.stamp"
}

venv_locked_ready() {
  local lock
  lock="${TMPDIR:-/tmp}/mediavec-venv-$(echo "$VENV" | sha256sum | cut -c1-16).lock"
  exec 9> "$lock"
  flock 9
  venv_ready "$@"
  flock -u 9
}
