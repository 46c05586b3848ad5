#!/usr/bin/env bash
# Static checks (fast; part of scripts/test.sh): the layers (import-linter), imports at the top of modules and
# real errors (ruff), and types (mypy: strict for knowledge/ and the kernel bot/core, plain for the rest).
# Their configuration is in pyproject.toml. Usage: scripts/check.sh (after scripts/setup.sh --test).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== lint-imports (layers)" >&2
.venv/bin/lint-imports
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy (every package)" >&2
.venv/bin/mypy
echo "== mypy --strict (knowledge and the kernel)" >&2
.venv/bin/mypy --strict knowledge bot/core
