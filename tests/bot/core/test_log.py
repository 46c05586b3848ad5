"""Production logs: one JSON object per line, and an exception's stack trace inside it (not a repr)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import logging
    from bot.core.log import configure_logging, get_logger
    from bot.core.settings import Settings

    configure_logging(Settings(_env_file=None, environment="production"))

    def answer_the_question():
        raise ZeroDivisionError("budget / 0")

    try:
        answer_the_question()
    except ZeroDivisionError:
        get_logger("deskmate.test").exception("pipeline.failed", interaction_id=7)
        logging.getLogger("some.library").exception("library failed")
""")


def test_production_json_logs_carry_the_stack_trace() -> None:
    # a fresh interpreter: logging configuration is process-wide
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines] == ["pipeline.failed", "library failed"]
    for line in lines:
        assert "<traceback object" not in json.dumps(line)
        assert "Traceback (most recent call last)" in line["exception"]
        assert "in answer_the_question" in line["exception"] and "ZeroDivisionError: budget / 0" in line["exception"]
    assert lines[0]["interaction_id"] == 7 and lines[0]["level"] == "error"
