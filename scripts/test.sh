#!/usr/bin/env bash
# Install everything the tests need (Python packages, redis-server, chromium, postgresql), check the
# architecture and types, and run the test suite. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
scripts/check.sh
exec .venv/bin/pytest -q "$@"
