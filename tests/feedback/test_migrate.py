"""Processes that start together on a fresh database (two workers, a web process) each migrate it at start:
they must migrate one after the other, not fail on "table already exists"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from feedback.db import migrate

MIGRATE = "import sys; from feedback.db import migrate; migrate(sys.argv[1])"


def test_processes_starting_together_each_find_the_schema_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], stderr=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parents[2]) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"interaction", "alert", "syncrun", "alembic_version"} <= tables
    migrate(url)  # and once more: nothing to do
