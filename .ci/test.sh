#!/usr/bin/env bash
# The project's one test command (README "Quick start"): installs everything it needs --
# the memcached server and the Python dependencies -- then runs linters and the test suite.
# Extra arguments go to pytest. Environment: PYTHON (interpreter for the venvs, default
# python3), CI (when set, a missing memcached is a failure, never a skip), EXPCACHE_SKIP_NP2=1
# (skip the second leg that runs the core's tests on numpy 2.x).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

step() { printf '\n== %s\n' "$*"; }

step "memcached server"
if ! command -v memcached >/dev/null 2>&1 && [ ! -x /usr/bin/memcached ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install memcached
  elif [ -n "${CI:-}" ]; then
    echo "memcached is not installed and cannot be installed here (need root + apt-get)" >&2
    exit 1
  else
    echo "warning: memcached not found; tests that need it will be skipped" >&2
  fi
fi
command -v memcached >/dev/null 2>&1 && memcached -V || true

step "python environment (.venv: all extras, numpy 1.26 for pyDVL 0.10)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'
.venv/bin/python -c 'import numpy, sys; print("python", sys.version.split()[0], "numpy", numpy.__version__)'

step "ruff + mypy"
.venv/bin/ruff check src tests benchmarks experiments
.venv/bin/mypy

step "pytest"
.venv/bin/python -m pytest "$@"

if [ -z "${EXPCACHE_SKIP_NP2:-}" ] && [ $# -eq 0 ]; then
  step "core on numpy 2.x (.venv-np2: no pyDVL, which pins numpy<2)"
  [ -x .venv-np2/bin/python ] || "$PY" -m venv .venv-np2
  .venv-np2/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 'numpy>=2'
  .venv-np2/bin/python -c 'import numpy; print("numpy", numpy.__version__)'
  .venv-np2/bin/python -m pytest -m "not pydvl and not slow" -p no:cacheprovider
fi
