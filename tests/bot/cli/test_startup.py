"""A production process refuses settings that would make it unsafe, and says which and how to fix them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from bot.core.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def start(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    clean.update({"DESKMATE_DATA_DIR": str(tmp_path / "data"), "DESKMATE_ENVIRONMENT": "production",
                  "DESKMATE_REDIS_URL": "redis://127.0.0.1:9/0", **env})
    return subprocess.run([sys.executable, "-m", "bot.cli", command], cwd=tmp_path, env=clean, capture_output=True,
                          text=True, timeout=120)


def test_production_refuses_the_public_development_salt(tmp_path: Path) -> None:
    for command in ("web", "worker"):
        done = start(command, tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Refusing to start" in done.stderr and "DESKMATE_USER_HASH_SALT" in done.stderr
    assert not (tmp_path / "data").exists(), "nothing was created before refusing"


def test_a_real_salt_or_development_has_no_problem(tmp_path: Path) -> None:
    assert Settings(_env_file=None, environment="production",  # type: ignore[call-arg]
                    user_hash_salt=secrets.token_hex(32)).production_problems() == []
    assert Settings(_env_file=None, environment="development").production_problems() == []  # type: ignore[call-arg]
