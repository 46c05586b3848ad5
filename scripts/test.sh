#!/usr/bin/env bash
# Install everything the tests need (Python packages, redis-server, chromium) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/pytest -q "$@"
