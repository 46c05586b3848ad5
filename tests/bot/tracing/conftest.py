from __future__ import annotations

import pytest

from bot.tracing import outage, tracer
from tests.bot.tracing.helpers import RecordingLog


@pytest.fixture
def tracing_log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    """Everything the tracing package logs (outage reports and the tracer's lifecycle lines)."""
    recorder = RecordingLog()
    for module in (outage, tracer):
        monkeypatch.setattr(module, "log", recorder)
    return recorder
