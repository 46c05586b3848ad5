"""Escalations and learned answers: the tables, and all SQL on them (:class:`LearnedStore`).

An :class:`Escalation` is one "Ask a human" that reached a support channel: which answer, and which support
thread followed it. A :class:`LearnedAnswer` is what a person answered there (or a knowledge owner's correction
after a 👎): a *draft* until a knowledge owner approves it (then it is a document of the ``learned`` source,
until its ``review_by`` date), edits it (approved with the edited text) or rejects it. The review workflow is
:mod:`playbooks.learned`; this module only stores.

Statuses: ``draft`` → ``approved`` | ``rejected``; ``approved`` → ``expired`` (its review date passed: waiting for
a new review, out of the index) | ``rejected`` (withdrawn). An expired answer approved again is back in the index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, cast
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, func, select

from bot.core.clock import utcnow
from feedback.db import Database
from feedback.models import Interaction

DRAFT, APPROVED, REJECTED, EXPIRED = "draft", "approved", "rejected", "expired"
STATUSES = (DRAFT, APPROVED, REJECTED, EXPIRED)
#: Where a draft's text came from: the first reply(ies) in the support thread, a message marked with ✅ or
#: "Use as answer", or a knowledge owner's 👎 correction.
ORIGIN_REPLY, ORIGIN_MARKED, ORIGIN_CORRECTION = "reply", "marked", "correction"


class Escalation(SQLModel, table=True):
    """An answer someone asked a human about, and the support-channel thread where that happened."""

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True)
    platform: str = Field(max_length=32)
    support_channel: str = Field(max_length=255)
    #: Slack: the ts of the escalation message (the thread's root); Teams: the id of the thread's conversation
    support_thread: str = Field(index=True, max_length=255)
    thread_url: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class LearnedAnswer(SQLModel, table=True):
    """A question and a person's answer to it: a draft, then (reviewed) a document of the ``learned`` source."""

    id: int | None = Field(default=None, primary_key=True)
    #: one learned answer per escalation (unique: two replies handled at once cannot make two drafts)
    escalation_id: int | None = Field(default=None, foreign_key="escalation.id", index=True, unique=True)
    interaction_id: int | None = Field(default=None, foreign_key="interaction.id", index=True)
    platform: str = Field(max_length=32)
    kb: str = Field(default="default", max_length=128)
    knowledge_set: str = Field(default="learned", max_length=128)
    public: bool = False  # asked in a public channel: may be cited there; otherwise restricted
    question: str = Field(sa_column=Column(Text, nullable=False))
    answer: str = Field(sa_column=Column(Text, nullable=False))
    answered_by: str = Field(default="", max_length=255)  # a display name
    answered_by_id: str = Field(default="", max_length=255)  # the platform's user id
    answered_at: datetime = Field(default_factory=utcnow)
    thread_url: str | None = Field(default=None, sa_column=Column(Text))
    origin: str = Field(default=ORIGIN_REPLY, max_length=16)
    source_message: str = Field(default="", max_length=255)  # the platform id of the message it came from
    status: str = Field(default=DRAFT, index=True, max_length=16)
    edited: bool = False
    reviewed_by: str = Field(default="", max_length=255)
    reviewed_at: datetime | None = None
    approved_at: datetime | None = None
    review_by: datetime | None = None  # approved answers: re-reviewed (or dropped) after this
    doc_id: str | None = Field(default=None, max_length=255)  # learned/<name> once approved
    indexed_version: int | None = None  # the first index version that held its current text
    #: where the review prompt was posted (Slack: channel, ts; Teams: conversation, activity_id)
    review_message: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class LearnedStore:
    """Every read and write of escalations and learned answers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- escalations ----------------------------------------------------------------------------------
    async def record_escalation(self, *, interaction_id: int, platform: str, support_channel: str,
                                support_thread: str, thread_url: str | None) -> Escalation:
        async with self.db.asession() as session:
            row = Escalation(interaction_id=interaction_id, platform=platform, support_channel=support_channel,
                             support_thread=support_thread, thread_url=thread_url)
            session.add(row)
            await session.commit()
            await session.refresh(row)
            return row

    async def escalation_for_thread(self, platform: str, support_channel: str, thread: str) -> Escalation | None:
        async with self.db.asession() as session:
            stmt = (select(Escalation).where(Escalation.platform == platform,
                                             Escalation.support_channel == support_channel,
                                             Escalation.support_thread == thread)
                    .order_by(col(Escalation.id).desc()).limit(1))
            return (await session.exec(stmt)).first()

    # --- drafts ---------------------------------------------------------------------------------------
    async def for_escalation(self, escalation_id: int) -> LearnedAnswer | None:
        async with self.db.asession() as session:
            stmt = select(LearnedAnswer).where(LearnedAnswer.escalation_id == escalation_id).limit(1)
            return (await session.exec(stmt)).first()

    async def add(self, row: LearnedAnswer) -> LearnedAnswer | None:
        """Insert ``row``; None when its escalation already has a learned answer (made at the same moment)."""
        async with self.db.asession() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return None
            await session.refresh(row)
            return row

    async def get(self, learned_id: int) -> LearnedAnswer | None:
        async with self.db.asession() as session:
            return await session.get(LearnedAnswer, learned_id)

    async def update(self, learned_id: int, **fields: Any) -> LearnedAnswer | None:
        async with self.db.asession() as session:
            row = await session.get(LearnedAnswer, learned_id)
            if row is None:
                return None
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            session.add(row)
            await session.commit()
            await session.refresh(row)
            return row

    async def with_status(self, *statuses: str, limit: int = 200) -> list[LearnedAnswer]:
        async with self.db.asession() as session:
            stmt = (select(LearnedAnswer).where(col(LearnedAnswer.status).in_(statuses))
                    .order_by(col(LearnedAnswer.id).desc()).limit(limit))
            return list((await session.exec(stmt)).all())

    async def due_for_review(self, now: datetime) -> list[LearnedAnswer]:
        """Approved answers whose review date has passed."""
        async with self.db.asession() as session:
            stmt = select(LearnedAnswer).where(LearnedAnswer.status == APPROVED,
                                               col(LearnedAnswer.review_by).is_not(None),
                                               col(LearnedAnswer.review_by) <= now)
            return list((await session.exec(stmt)).all())

    async def mark_indexed(self, doc_ids: list[str], version: int) -> None:
        if not doc_ids:
            return
        async with self.db.asession() as session:
            rows = (await session.exec(select(LearnedAnswer).where(col(LearnedAnswer.doc_id).in_(doc_ids)))).all()
            for row in rows:
                row.indexed_version = version
                session.add(row)
            await session.commit()

    async def for_interactions(self, interaction_ids: list[int]) -> dict[int, LearnedAnswer]:
        """The newest learned answer of each of these interactions (the knowledge-gaps view links them)."""
        if not interaction_ids:
            return {}
        async with self.db.asession() as session:
            stmt = (select(LearnedAnswer).where(col(LearnedAnswer.interaction_id).in_(interaction_ids))
                    .order_by(col(LearnedAnswer.id)))
            return {row.interaction_id: row for row in (await session.exec(stmt)).all()
                    if row.interaction_id is not None}

    async def citations(self, answers: list[LearnedAnswer]) -> dict[int, int]:
        """How many answers have cited each of these learned answers since it was (last) approved."""
        since = {a.id: a.approved_at for a in answers if a.id is not None and a.doc_id and a.approved_at}
        counts = {a.id: 0 for a in answers if a.id is not None}
        if not since:
            return counts
        by_doc = {a.doc_id: a.id for a in answers if a.id in since}
        async with self.db.asession() as session:
            stmt = select(Interaction.created_at, Interaction.sources).where(
                col(Interaction.created_at) >= min(since.values()),
                cast(col(Interaction.sources), Text).like('%learned/%'))
            for created_at, sources in (await session.exec(stmt)).all():
                cited = {str(s.get("doc_id")) for s in sources or [] if isinstance(s, dict)}
                for doc_id in cited & set(by_doc):
                    learned_id = by_doc[doc_id]
                    approved = since[learned_id]
                    if approved is not None and _naive(created_at) >= _naive(approved):
                        counts[learned_id] += 1
        return counts

    # --- figures --------------------------------------------------------------------------------------
    async def counts(self, since: datetime | None = None) -> dict[str, int]:
        """Escalations (since ``since``) and learned answers per status."""
        async with self.db.asession() as session:
            escalations = select(func.count()).select_from(Escalation)
            if since is not None:
                escalations = escalations.where(col(Escalation.created_at) >= since)
            out = {"escalations": int((await session.exec(escalations)).one())}
            stmt = select(LearnedAnswer.status, func.count()).group_by(col(LearnedAnswer.status))
            for status, n in (await session.exec(stmt)).all():
                out[str(status)] = int(n)
        for status in STATUSES:
            out.setdefault(status, 0)
        return out


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)
