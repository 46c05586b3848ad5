"""What every answer reads before it starts — the kill-switches, the release that answers, the channel's policy —
kept per process and re-read only when the database says it changed.

Reading it costs an answer one small query inside the answer's first transaction
(:meth:`feedback.interactions.InteractionStore.start_answer`): a fingerprint — the number of switches and their
newest ``set_at``, the newest release event and release ids, the number of channel policies and their newest
``updated_at``, the newest canary and how many run. Only when it moves are the switches, the release, the running
canary and the policies read again (the switches, the release and the canary: at once; a policy: at its channel's
next question). So a switch set from any process — Slack, the
dashboard, the CLI, the budget guard — is obeyed by the next answer everywhere: :func:`playbooks.killswitch.set_mode`
stamps ``set_at`` and removing a switch deletes its row. Releases are immutable rows, so a promotion or rollback
always adds a row that moves the fingerprint; a policy change goes through
:func:`playbooks.channel_policy.set_policy`, which stamps ``updated_at``.

:meth:`PlaybookState.release_for` is the one place where the release answering a question is chosen: the active
release, or a running canary's candidate for the conversations in its share (:func:`playbooks.canary.route_among`).
A canary starts as a new row and ends by leaving the ``running`` state, so both move the fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.settings import Settings
from bot.core.types import Question
from feedback.models import Canary, ChannelPolicy, Release, ReleaseEvent, Switch
from feedback.releases import active_release
from playbooks.canary import Route, route_among, running_canary
from playbooks.channel_policy import EffectivePolicy, effective_policy, get_policy_row
from playbooks.killswitch import Mode, mode_of

#: every switch, as plain rows (read again whenever the fingerprint moves)
_SWITCHES = select(col(Switch.scope), col(Switch.mode), col(Switch.reason), col(Switch.automatic), col(Switch.set_at))
#: moves whenever a switch is set or removed (set_mode stamps ``set_at``), a release is created or made active, or
#: a channel policy is added or changed (set_policy stamps ``updated_at``): one statement per answer
_FINGERPRINT = select(
    select(func.count()).select_from(Switch).scalar_subquery(),
    select(func.max(Switch.set_at)).scalar_subquery(),
    select(func.max(ReleaseEvent.id)).scalar_subquery(),
    select(func.max(Release.id)).scalar_subquery(),
    select(func.count()).select_from(ChannelPolicy).scalar_subquery(),
    select(func.max(ChannelPolicy.updated_at)).scalar_subquery(),
    select(func.max(Canary.id)).scalar_subquery(),
    select(func.count()).select_from(Canary).where(col(Canary.state) == "running").scalar_subquery(),
)
#: channels whose policy (or its absence) is remembered at most; beyond it the memory starts over
POLICY_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class AnswerState:
    """What one answer runs under."""

    mode: Mode
    switch_reason: str | None
    release: Release
    policy: EffectivePolicy
    #: the canary arm this answer belongs to (none outside a canary)
    route: Route


class PlaybookState:
    """One per process (the worker's pipeline). See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fingerprint: tuple[Any, ...] | None = None
        self._switches: list[Any] = []
        self._release: Release | None = None
        self._canary: Canary | None = None
        self._canary_known = False
        self._policies: dict[tuple[str, str], ChannelPolicy | None] = {}

    async def read(self, session: AsyncSession, question: Question, *, interaction_id: int | None = None
                   ) -> AnswerState:
        """The switches, release (canary routing included) and policy for ``question``, in ``session`` (the
        answer's first transaction); ``interaction_id``: the question's own row (not an earlier message of its
        thread)."""
        fingerprint = tuple((await session.exec(_FINGERPRINT)).one())  # type: ignore[call-overload]
        switches = self._switches
        if fingerprint != self._fingerprint:
            switches = list((await session.exec(_SWITCHES)).all())  # type: ignore[call-overload]
            self._fingerprint, self._switches, self._release = fingerprint, switches, None
            self._canary, self._canary_known = None, False
            self._policies.clear()
        platform, channel = question.platform.value, question.channel
        # expiry (an automatic switch lapses at midnight UTC) is decided now, not when the rows were read
        mode, reason = mode_of(switches, platform, channel, datetime.now(timezone.utc))
        route = await self.release_for(session, question, mode=mode, interaction_id=interaction_id)
        release = route.release
        row = await self._policy_row(session, platform, channel)
        policy = effective_policy(row, question.channel_type, release.knowledge_sets or None)
        return AnswerState(mode=mode, switch_reason=reason, release=release, policy=policy, route=route)

    async def release_for(self, session: AsyncSession, question: Question, *, mode: Mode,
                          interaction_id: int | None = None) -> Route:
        """The release that answers ``question``: the active one, or — while a canary runs and the kill-switch
        leaves answers on — its candidate for the conversations in its share."""
        fingerprint = self._fingerprint
        active = self._release
        if active is None:
            active = await active_release(session, self.settings)
            if self._fingerprint == fingerprint:
                self._release = active
        canary = self._canary
        if not self._canary_known:
            canary = await running_canary(session)
            if self._fingerprint == fingerprint:
                self._canary, self._canary_known = canary, True
        return await route_among(session, active, canary, platform=question.platform.value,
                                 channel=question.channel, thread=question.thread,
                                 idempotency_key=question.idempotency_key, interaction_id=interaction_id, mode=mode)

    async def _policy_row(self, session: AsyncSession, platform: str, channel: str) -> ChannelPolicy | None:
        if not channel:
            return None
        key = (platform, channel)
        if key in self._policies:
            return self._policies[key]
        fingerprint = self._fingerprint
        row = await get_policy_row(session, platform, channel)
        if self._fingerprint == fingerprint:
            if len(self._policies) >= POLICY_CACHE_SIZE:
                self._policies.clear()
            self._policies[key] = row
        return row
