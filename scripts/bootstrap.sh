# Sourced by scripts/run and scripts/test: creates or reuses the virtualenv and installs tfkd
# with its pinned dependencies whenever setup.py changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TFKD_VENV:-$ROOT/.venv}"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ]; then
  PYTHON="${PYTHON:-}"
  if [ -z "$PYTHON" ]; then
    PYTHON="$(command -v python3.11 || command -v python3)"
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "tfkd needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1)." \
         "Set PYTHON=/path/to/python3.11." >&2
    exit 1
  fi
  echo "Creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.tfkd-installed-$(sha256sum setup.py | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "Installing tfkd and its pinned dependencies into $VENV (first run takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  rm -f "$VENV"/.tfkd-installed-*
  touch "$STAMP"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
