"""The promotion gate hook: a callable that may refuse ``promote`` (the quality gate lives in ``feedback/``).

A gate is any callable ``gate(session, settings, candidate, current)`` — sync or async — returning a
:class:`GateResult`, or a plain ``(ok, message)`` tuple. It is asked before a release becomes active through
``promote`` (chat, CLI, or :func:`playbooks.releases.promote`); ``--force`` promotes anyway and the audit log
and the release history record that the gate was overridden, with its message. ``rollback`` never asks the gate:
going back to a release that was already live must always work, in seconds.

How a gate is found (:func:`resolve_gate`), first match wins:

1. a gate registered in this process with :func:`register_gate` (tests, or an app's start-up code);
2. otherwise ``feedback.gate.promotion_gate``, the eval-based quality gate (``DESKMATE_GATE_ENABLED=false``
   turns it into a pass).

A gate should decide from stored results (``EvalRun`` rows, feedback), not run an evaluation: the web process
answers an admin's slash command within Slack's 3 s and has no retriever. A gate that raises refuses the
promotion (the message says why) — a broken gate must not wave releases through.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.settings import Settings
from feedback.gate import promotion_gate
from feedback.models import Release


@dataclass(frozen=True)
class GateResult:
    ok: bool
    message: str = ""


class PromotionGate(Protocol):
    def __call__(self, session: AsyncSession, settings: Settings, candidate: Release, current: Release) -> Any:
        """Return (or resolve to) a GateResult or an ``(ok, message)`` tuple."""


_registered: PromotionGate | None = None


def register_gate(gate: PromotionGate | None) -> None:
    """Use ``gate`` for promotions in this process (None: back to the default lookup)."""
    global _registered
    _registered = gate


def resolve_gate() -> PromotionGate:
    """The registered gate, else the quality gate of :mod:`feedback.gate`."""
    if _registered is not None:
        return _registered
    return promotion_gate


async def run_gate(gate: PromotionGate | None, session: AsyncSession, settings: Settings, candidate: Release,
                   current: Release) -> GateResult:
    if gate is None:
        return GateResult(True, "no promotion gate configured")
    try:
        result = gate(session, settings, candidate, current)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 - a broken gate refuses, it does not wave through
        return GateResult(False, f"the promotion gate failed: {type(exc).__name__}: {exc}")
    if isinstance(result, GateResult):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        return GateResult(bool(result[0]), str(result[1]))
    if isinstance(result, bool):
        return GateResult(result, "")
    return GateResult(False, f"the promotion gate returned {result!r}, not (ok, message)")
