#!/usr/bin/env bash
# Install Deskmate into ./.venv (idempotent). Usage: scripts/setup.sh [--test]
#   --test  also the test extras and the system packages the tests need (redis-server, chromium, postgresql).
# Python 3.11, 3.12 or 3.13: $PYTHON if set, else the first of python3, python3.13, python3.12, python3.11 that is
# one. The embedded default runs the machine's valkey-server or redis-server: installed here when missing
# (apt-get, dnf or brew) unless DESKMATE_REDIS_URL points at a server. VENV=path chooses another virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

supported() { "$1" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)' 2>/dev/null; }
# shellcheck source=scripts/find_python.sh
. scripts/find_python.sh

if [ -n "${PYTHON:-}" ]; then
  if ! supported "$PYTHON"; then
    echo "Deskmate needs Python 3.11, 3.12 or 3.13 (PYTHON=$PYTHON is $("$PYTHON" --version 2>&1))." >&2
    exit 1
  fi
else
  for version in 3 3.13 3.12 3.11; do
    candidate="$(find_python "$version" || true)"
    if [ -n "$candidate" ] && supported "$candidate"; then PYTHON="$candidate"; break; fi
  done
  if [ -z "${PYTHON:-}" ]; then
    echo "Deskmate needs Python 3.11, 3.12 or 3.13 (found: $(python3 --version 2>&1)). Install one, or set" \
         "PYTHON=/path/to/python3.13." >&2
    exit 1
  fi
fi
VENV="${VENV:-.venv}"

system_install() {
  # Debian/Ubuntu names; other managers get their own below.
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing system packages: $*" >&2
  if command -v apt-get >/dev/null; then
    $sudo apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
  elif command -v dnf >/dev/null; then
    $sudo dnf install -y -q "${@/redis-server/valkey}" >/dev/null
  elif command -v brew >/dev/null; then
    brew install "${@/redis-server/valkey}" >/dev/null
  else
    echo "Please install: $* (no apt-get, dnf or brew here)." >&2
    return 1
  fi
}

need=()
if [ -z "${DESKMATE_REDIS_URL:-}" ] && ! command -v valkey-server >/dev/null && ! command -v redis-server >/dev/null; then
  need+=(redis-server)  # the embedded default's queue
fi
extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  if [ ${#need[@]} -eq 0 ] && ! command -v valkey-server >/dev/null && ! command -v redis-server >/dev/null; then
    need+=(redis-server)  # tests start their own servers, whatever DESKMATE_REDIS_URL says
  fi
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # tests/test_scale_out.py
fi
[ ${#need[@]} -eq 0 ] || system_install "${need[@]}"

[ -d "$VENV" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.deskmate-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".${extras}"
  touch "$stamp"
fi
# the project's own bytecode (pip compiles only the packages it installs): where PYTHONDONTWRITEBYTECODE is set,
# every process — and every search process a worker spawns — would compile the project's modules again at its start
# (~1.5 s of CPU each on a slow core). Up-to-date files are skipped; a stale one is only recompiled in memory.
"$VENV/bin/python" -m compileall -q bot knowledge feedback playbooks tests >/dev/null
