#!/usr/bin/env bash
# The main job: install, ingest the bundled sample handbook, and run Deskmate locally
# (embedded Redis, web server with the chat page at http://127.0.0.1:8000/chat, and a worker).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/deskmate run "$@"
