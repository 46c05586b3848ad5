#!/usr/bin/env bash
# Install everything the tests need (Python packages, redis-server, chromium, postgresql), check the
# architecture and types, and run the test suite — on the main interpreter (.venv) and again on each other
# supported Python found on the machine among DESKMATE_TEST_PYTHONS (default "3.11 3.13"), each in its own
# virtualenv (.venv-py3.X). `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/find_python.sh
scripts/setup.sh --test
scripts/check.sh
# a test file per process, on every core up to 4 (many tests wait on servers and child processes): 10:14 → 6:41–7:02 on 2 cores
xdist=(-n auto --maxprocesses 4 --dist loadfile)
.venv/bin/pytest -q "${xdist[@]}" "$@"

main="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
for version in ${DESKMATE_TEST_PYTHONS-3.11 3.13}; do
  [ "$version" = "$main" ] && continue
  if ! python="$(find_python "$version")"; then
    echo "== Python $version not found: the suite ran on $main only" >&2
    continue
  fi
  echo "== the suite on Python $version ($python)" >&2
  PYTHON="$python" VENV=".venv-py$version" scripts/setup.sh --test
  ".venv-py$version/bin/pytest" -q "${xdist[@]}" "$@"
done
