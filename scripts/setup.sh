#!/usr/bin/env bash
# Install Deskmate into ./.venv (idempotent). Usage: scripts/setup.sh [--test]
#   --test  also the test extras and the system packages the tests need (redis-server, chromium, postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)'; then
  echo "Deskmate needs Python 3.11 or 3.12 (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing system packages: $*" >&2
  $sudo apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # tests/test_scale_out.py
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
fi

[ -d .venv ] || "$PYTHON" -m venv .venv
stamp=".venv/.deskmate-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".${extras}"
  touch "$stamp"
fi
