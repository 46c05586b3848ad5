"""The ``deskmate`` script: it runs the command, and a spawned child process that re-runs it loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.console import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "deskmate"

#: a spawn child of `deskmate worker` (the search process), as multiprocessing starts it: this process's main is the
#: installed script, so the child runs the script again (as ``__mp_main__``) before it imports what it was sent
CHILD_OF_THE_SCRIPT = f"""
import json, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
sys.modules["__main__"].__file__ = {str(SCRIPT)!r}
with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
    print(json.dumps(pool.submit(eval, "sorted(__import__('sys').modules)").result()))
"""


def test_the_script_is_installed_with_the_light_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["deskmate"] == "bot.console:main"
    assert "from bot.console import main" in SCRIPT.read_text(), "reinstall the project: pip install -e ."


def test_a_spawned_child_of_the_script_does_not_import_the_command_line_or_the_sdks() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD_OF_THE_SCRIPT], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout))
    assert "bot.console" in loaded, "the child ran the script, as spawn does"
    assert not {"bot.cli", "anthropic", "slack_bolt", "botbuilder.core", "sqlalchemy"} & loaded


def test_the_script_runs_the_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["deskmate", "--help"])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 0
    assert "worker" in capsys.readouterr().out  # the command line, imported when the script ran
