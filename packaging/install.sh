#!/usr/bin/env bash
# Installs popproxy into a virtual environment in the checkout (.venv), with the distribution's
# Python.  Debian 12's pip refuses to install into the system Python (PEP 668: "externally
# managed environment"), and a bare Debian 12 has neither pip nor the venv module, so as root
# this adds python3-venv with apt-get first.  Another Python first on PATH (pyenv, conda) is
# not used unless /usr/bin/python3 is missing or older than 3.11.
#
#   bash packaging/install.sh                   # README command 1: .venv with popproxy
#   bash packaging/install.sh --editable test   # .ci/run: editable install with the test extra
#   bash packaging/install.sh --print-python     # only print the Python it would use
#
# POPPROXY_VENV (default ./.venv) and POPPROXY_PYTHON (default: as above) override the choices.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--print-python" ]; then PRINT_ONLY=1; shift; else PRINT_ONLY=0; fi
EDITABLE=()
if [ "${1:-}" = "--editable" ]; then EDITABLE=(-e); shift; fi
EXTRAS="${1:-}"
VENV="${POPPROXY_VENV:-$PWD/.venv}"
MIN_PYTHON="(3, 11)"  # pyproject.toml requires-python

usable() { "$1" -c "import sys; sys.exit(sys.version_info[:2] < $MIN_PYTHON)" 2>/dev/null; }

pick_python() {
  if [ -n "${POPPROXY_PYTHON:-}" ]; then echo "$POPPROXY_PYTHON"; return; fi
  for candidate in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && usable "$candidate"; then
      echo "$candidate"; return
    fi
  done
  echo "popproxy: no Python 3.11 or newer found (apt-get install python3)" >&2
  exit 1
}

ensure_venv_module() {
  # Debian splits ensurepip (which venv needs) into python3-venv.
  "$1" -c "import ensurepip, venv" 2>/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "$1" = /usr/bin/python3 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
    return 0
  fi
  echo "popproxy: $1 has no venv module: apt-get install python3-venv (as root)" >&2
  exit 1
}

PYTHON="$(pick_python)"
if [ "$PRINT_ONLY" = 1 ]; then echo "$PYTHON"; exit 0; fi  # what the tests check
if [ ! -x "$VENV/bin/python" ]; then
  ensure_venv_module "$PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"
"$VENV/bin/python" -m pip install -q "${EDITABLE[@]}" "$SPEC"
echo "popproxy installed in $VENV (Python: $("$VENV/bin/python" -V 2>&1)); run $VENV/bin/popproxy"
