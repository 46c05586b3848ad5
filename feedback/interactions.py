"""The one owner of the ``Interaction`` table's SQL: a question's life from pending to final, and lookups.

Every chat surface and the worker go through :class:`InteractionStore`:

- intake: :meth:`~InteractionStore.record_pending` (the platform's idempotency key is unique, so a redelivered
  event finds the first row instead of creating a second), :meth:`~InteractionStore.asked_in_thread`;
- the worker: :meth:`~InteractionStore.start_answer` (the row, :meth:`~InteractionStore.thread_history` and the
  answer's other first reads in one session, then the attempt counted in one write),
  :meth:`~InteractionStore.finalize` (one statement), :meth:`~InteractionStore.set_trace`, :meth:`~InteractionStore.fail`,
  :meth:`~InteractionStore.record_stream` (what a streamed answer has posted so far);
- delivery (its own, retried step after the row turns final): :meth:`~InteractionStore.mark_delivered`,
  :meth:`~InteractionStore.record_delivery_failure`;
- the sweeper: :meth:`~InteractionStore.stale_pending`, :meth:`~InteractionStore.undelivered`;
- feedback surfaces: :meth:`~InteractionStore.get`, :meth:`~InteractionStore.recent_in_channel`.

Users are stored as :func:`bot.core.identity.hash_user` pseudonyms under the store's salt.

Example::

    store = InteractionStore(db, user_salt=settings.user_hash_salt)
    interaction_id, duplicate = await store.record_pending(question)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import JSON, bindparam, insert, inspect as sa_inspect, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.clock import utcnow
from bot.core.identity import hash_user
from bot.core.types import FINAL_STATUSES, Answer, Question, Status
from feedback.db import Database
from feedback.models import Interaction
from knowledge.passage import Passage

#: Passage text kept per recorded passage (enough for evaluation exports and the gaps view).
PASSAGE_TEXT_CHARS = 2000
ERROR_CHARS = 4000


# The per-question statements (the intake's INSERT, the worker's UPDATEs) are built on the table, not on the ORM
# entity: a statement on ``Interaction`` goes through SQLAlchemy's ORM bulk path, a few hundred µs of the event loop
# per statement under load (profiles of the web process's intake and of the worker). The fixed ones are built once,
# with bound parameters.
_TABLE: Any = sa_inspect(Interaction).local_table


def _update_pending(interaction_id: Any) -> Any:
    """``UPDATE interaction … WHERE id = :id AND status = 'pending'`` (values to add)."""
    return update(_TABLE).where(_TABLE.c.id == interaction_id, _TABLE.c.status == Status.PENDING.value)


_COUNT_ATTEMPT = (_update_pending(bindparam("iid")).values(attempts=_TABLE.c.attempts + 1)
                  .returning(_TABLE.c.attempts))
_RECORD_STREAM = _update_pending(bindparam("iid")).values(delivery=bindparam("delivery", type_=JSON))


class DeliveryState(StrEnum):
    """Where the delivery of a final interaction's reply (the answer, or the failure notice) stands.

    ``Interaction.delivery_state`` is None while the question is pending, and on rows recorded before delivery
    was tracked (not counted, never re-delivered).
    """

    PENDING = "pending"  # answered, not yet delivered (the first try, or retries until the deadline)
    DELIVERED = "delivered"  # the user sees it (or there was nothing to send: the local chat reads the row)
    FAILED = "failed"  # given up: a permanent error, or still failing at the deadline


@dataclass(frozen=True)
class Exchange:
    """One earlier question of a thread and what Deskmate answered."""

    question: str
    answer: str | None


T = TypeVar("T")


@dataclass(frozen=True)
class Started(Generic[T]):
    """What :meth:`InteractionStore.start_answer` read: the row (its attempt counted), the thread's earlier
    turns, and the caller's own reads."""

    row: Interaction
    history: list[Exchange]
    extra: T


def relevance(passages: list[Passage]) -> float:
    """An absolute relevance estimate of the best passage: its cosine similarity to the question.

    Fused scores are relative to the query's other candidates, so they cannot tell "nothing relevant" from
    "the best of a good lot"; the dense cosine can.
    """
    return max((p.dense_score or 0.0 for p in passages), default=0.0)


class InteractionStore:
    def __init__(self, db: Database, *, user_salt: str) -> None:
        self.db = db
        self.user_salt = user_salt

    def user_hash(self, user: str) -> str:
        return hash_user(user, self.user_salt)

    # --- intake ---------------------------------------------------------------------------------------
    async def record_pending(self, question: Question) -> tuple[int, bool]:
        """Insert the pending interaction; returns ``(id, duplicate)``. A duplicate idempotency key returns the
        first row's id and ``duplicate=True``."""
        # One INSERT … RETURNING, not an ORM object: building an ``Interaction`` (40 instrumented fields) and
        # flushing it cost the web process ~1 ms of its event loop per message (bench/bench_slack_ack.py profile).
        # The other columns take their defaults; the JSON ones have none in the table, so they are given here.
        stmt = (insert(_TABLE)
                .values(idempotency_key=question.idempotency_key, platform=question.platform.value,
                        workspace=question.workspace, channel=question.channel, thread=question.thread,
                        user_hash=self.user_hash(question.user), question=question.text,
                        question_payload=question.model_dump(mode="json"),
                        sources=[], passages=[], latency_ms={}, delivery={})
                .returning(_TABLE.c.id))
        async with self.db.asession() as session:
            try:
                new_id = (await session.exec(stmt)).scalar_one()  # type: ignore[call-overload]
                await session.commit()
                return int(new_id), False
            except IntegrityError:
                await session.rollback()
        existing = await self.id_for_key(question.idempotency_key)
        if existing is None:  # the conflicting row vanished (deleted by an operator): a real error
            raise LookupError(f"idempotency key conflict without a row: {question.idempotency_key!r}")
        return existing, True

    async def id_for_key(self, idempotency_key: str) -> int | None:
        async with self.db.asession() as session:
            stmt = select(Interaction.id).where(Interaction.idempotency_key == idempotency_key)
            return (await session.exec(stmt)).first()

    async def asked_in_thread(self, platform: str, channel: str, thread: str, user: str) -> bool:
        """Did ``user`` ask Deskmate in this thread before?"""
        async with self.db.asession() as session:
            stmt = (select(Interaction.id)
                    .where(Interaction.platform == platform, Interaction.channel == channel,
                           Interaction.thread == thread, Interaction.user_hash == self.user_hash(user))
                    .limit(1))
            return (await session.exec(stmt)).first() is not None

    # --- reading ----------------------------------------------------------------------------------------
    async def get(self, interaction_id: int) -> Interaction | None:
        async with self.db.asession() as session:
            return await session.get(Interaction, interaction_id)

    async def recent_in_channel(self, platform: str, channel: str, limit: int) -> list[Interaction]:
        """The channel's latest interactions, newest first."""
        async with self.db.asession() as session:
            stmt = (select(Interaction)
                    .where(Interaction.platform == platform, Interaction.channel == channel)
                    .order_by(col(Interaction.id).desc()).limit(limit))
            return list((await session.exec(stmt)).all())

    # --- the worker -------------------------------------------------------------------------------------
    async def start_answer(self, interaction_id: int, *, pairs: int,
                           also: Callable[[AsyncSession, Interaction], Awaitable[T]]) -> Started[T] | None:
        """The worker's start of an answer: the row, the thread's history (:meth:`thread_history`, at most
        ``pairs``) and whatever else the answer reads first (``also``: the switches, release and policy,
        :mod:`playbooks.state`) in one read session, then the attempt counted — one atomic increment, so concurrent
        attempts each count, and only while the row is pending (a redelivered job is never answered twice) — in one
        write (:meth:`Database.write`: SQLite's write lock is held for that UPDATE and its commit only). None when
        the question is missing or already final."""
        async with self.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is None or row.status != Status.PENDING.value:
                await session.rollback()
                return None
            history = await self._history(session, row, pairs)
            extra = await also(session, row)
            await session.commit()
            if sa_inspect(row).expired_attributes:
                # ``also`` committed or rolled back (the first answer of a new deployment bootstraps the initial
                # release, and two workers may race to): the row must be whole before it leaves the session
                await session.refresh(row)

        def count_attempt(session: Session) -> int | None:  # one atomic increment: concurrent attempts each count
            attempts = session.connection().execute(_COUNT_ATTEMPT, {"iid": interaction_id}).scalar_one_or_none()
            session.commit()
            return attempts

        attempts = await self.db.write(count_attempt)
        if attempts is None:  # finalized meanwhile by another attempt
            return None
        set_committed_value(row, "attempts", attempts)  # the row as it now is (not a change to write)
        return Started(row, history, extra)

    async def thread_history(self, row: Interaction, *, pairs: int) -> list[Exchange]:
        """Earlier answered turns of the same thread, oldest first, at most ``pairs``."""
        if not row.thread or pairs <= 0:
            return []
        async with self.db.asession() as session:
            return await self._history(session, row, pairs)

    @staticmethod
    async def _history(session: AsyncSession, row: Interaction, pairs: int) -> list[Exchange]:
        if not row.thread or pairs <= 0:
            return []
        stmt = (
            select(Interaction.question, Interaction.answer)
            .where(Interaction.platform == row.platform, Interaction.channel == row.channel,
                   Interaction.thread == row.thread, col(Interaction.id) < row.id,
                   col(Interaction.status).in_([Status.ANSWERED.value, Status.NOT_FOUND.value]))
            .order_by(col(Interaction.id).desc())
            .limit(pairs)
        )
        rows = list((await session.exec(stmt)).all())
        return [Exchange(question=q, answer=a) for q, a in reversed(rows)]

    async def finalize(self, interaction_id: int, answer: Answer, passages: list[Passage], *,
                       index_version: int | None, switch_reason: str | None = None, deliver: bool = True,
                       trace_id: str | None = None) -> bool:
        """Record the answer: the row becomes final (a retried job will not answer it again), and its delivery
        pending (``deliver``) or done (nothing to send: the local chat reads the row) — in the same commit, so
        no final row is ever without a delivery state.

        Exactly once: the row turns final only if it is still pending (a conditional update, so of two workers
        that both answered — e.g. one whose lease lapsed during a Redis outage — only the first records and
        delivers). Returns False when another attempt finalized it first.
        """
        now = utcnow()
        values: dict[str, Any] = dict(
            status=answer.status.value, answer=answer.text, sources=[s.model_dump() for s in answer.sources],
            passages=[p.model_dump(exclude={"text"}) | {"text": p.text[:PASSAGE_TEXT_CHARS]} for p in passages],
            top_score=relevance(passages) if passages else None, model=answer.model, release=answer.release,
            index_version=passages[0].index_version if passages else index_version, fallback=answer.fallback,
            fallback_reason=answer.fallback_reason or (switch_reason if answer.status == Status.MAINTENANCE else None),
            latency_ms=dict(answer.latency_ms), input_tokens=answer.usage.input_tokens,
            output_tokens=answer.usage.output_tokens, cache_read_tokens=answer.usage.cache_read_tokens,
            cache_write_tokens=answer.usage.cache_write_tokens, cost_usd=answer.cost_usd,
            search_query=answer.search_query, answered_at=now, **_delivery_values(deliver, now),
        )
        if trace_id is not None:
            values["trace_id"] = trace_id
        def claim(session: Session) -> bool | None:  # the row turns final only if it is still pending
            claimed = session.connection().execute(_update_pending(interaction_id).values(**values))
            if claimed.rowcount == 1:
                session.commit()
                return True
            session.rollback()
            return None if session.get(Interaction, interaction_id) is None else False

        recorded = await self.db.write(claim)
        if recorded is None:
            raise LookupError(f"no interaction {interaction_id}")
        return recorded

    async def set_arm(self, interaction_id: int, canary_id: int, arm: str, release: str) -> None:
        """Record the canary, arm and release a pending question was routed to (``playbooks.canary``), before it
        is answered: a question that ends in an error still counts against its arm."""
        await self._update(interaction_id, canary_id=canary_id, arm=arm, release=release)

    async def record_stream(self, interaction_id: int, refs: dict[str, Any]) -> None:
        """An answer is being streamed into the conversation: keep what was posted (``delivery["stream"]``) while
        the question is pending, so that an attempt retried after a crash replaces that message instead of
        posting a second answer (:mod:`bot.delivery`). A final row is left alone."""
        params = {"iid": interaction_id, "delivery": {"stream": dict(refs)}}

        def record(session: Session) -> None:
            session.connection().execute(_RECORD_STREAM, params)
            session.commit()

        await self.db.write(record)

    async def set_trace(self, interaction_id: int, trace_id: str) -> None:
        await self._update(interaction_id, trace_id=trace_id)

    async def fail(self, interaction_id: int, error: str, *, deliver: bool = True) -> Question | None:
        """Mark a pending question failed for good; returns its question (None if it was already final). The
        failure notice is then delivered like an answer (``deliver``: its delivery is pending)."""
        async with self.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is None or row.status in FINAL_STATUSES:
                return None
            row.status = Status.ERROR.value
            row.error = error[:ERROR_CHARS]
            row.answered_at = utcnow()
            _begin_delivery(row, deliver)
            session.add(row)
            await session.commit()
            return Question.model_validate(row.question_payload)

    # --- delivery -----------------------------------------------------------------------------------------
    async def mark_delivered(self, interaction_id: int, delivery: dict[str, Any],
                             latency_ms: dict[str, float] | None = None) -> bool:
        """The reply reached the user: record what was posted (``delivery``: message ids) and the attempt.
        Returns False when there was no pending delivery (already delivered or given up: nothing changed)."""
        async with self.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is None or row.delivery_state != DeliveryState.PENDING:
                return False
            now = utcnow()
            row.delivery_state = DeliveryState.DELIVERED.value
            row.delivery_attempts += 1
            row.delivered_at = now
            row.delivery_next_at = None
            row.delivery = dict(delivery)
            if latency_ms is not None:
                row.latency_ms = dict(row.latency_ms or {}) | dict(latency_ms)
            session.add(row)
            await session.commit()
            return True

    async def record_delivery_failure(self, interaction_id: int, error: str, *, final: bool,
                                      next_at: datetime | None = None,
                                      latency_ms: dict[str, float] | None = None) -> int:
        """A delivery attempt failed: count it and keep the error; ``final`` gives up (state "failed"), otherwise
        the next attempt is due at ``next_at``. Returns the attempts made so far (0: no pending delivery)."""
        async with self.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is None or row.delivery_state != DeliveryState.PENDING:
                return 0
            row.delivery_attempts += 1
            row.delivery_error = error[:ERROR_CHARS]
            if final:
                row.delivery_state = DeliveryState.FAILED.value
                row.delivery_next_at = None
                row.delivery = {"ok": False, "error": error[:500]}
            else:
                row.delivery_next_at = next_at
            if latency_ms is not None:
                row.latency_ms = dict(row.latency_ms or {}) | dict(latency_ms)
            session.add(row)
            await session.commit()
            return row.delivery_attempts

    # --- the sweeper ------------------------------------------------------------------------------------
    async def stale_pending(self, *, min_age_s: float, limit: int) -> list[tuple[int, str]]:
        """``(id, idempotency_key)`` of questions pending for longer than ``min_age_s``, oldest first."""
        cutoff = utcnow() - timedelta(seconds=min_age_s)
        async with self.db.asession() as session:
            stmt = (select(Interaction.id, Interaction.idempotency_key)
                    .where(Interaction.status == Status.PENDING.value, col(Interaction.created_at) < cutoff)
                    .order_by(col(Interaction.id)).limit(limit))
            return [(int(i), k) for i, k in (await session.exec(stmt)).all() if i is not None]

    async def undelivered(self, *, older_than_s: float, limit: int) -> list[tuple[int, str]]:
        """``(id, idempotency_key)`` of final interactions whose delivery is still pending, answered more than
        ``older_than_s`` ago, oldest first (the sweeper re-enqueues those whose delivery job is gone)."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        async with self.db.asession() as session:
            stmt = (select(Interaction.id, Interaction.idempotency_key)
                    .where(Interaction.delivery_state == DeliveryState.PENDING.value,
                           col(Interaction.answered_at) < cutoff)
                    .order_by(col(Interaction.id)).limit(limit))
            return [(int(i), k) for i, k in (await session.exec(stmt)).all() if i is not None]

    async def _update(self, interaction_id: int, **values: Any) -> None:
        async with self.db.asession() as session:
            row = await session.get(Interaction, interaction_id)
            if row is None:
                return
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
            await session.commit()


def _delivery_values(deliver: bool, answered_at: datetime) -> dict[str, Any]:
    """:func:`_begin_delivery` as column values."""
    return dict(delivery_attempts=0, delivery_error=None, delivery_next_at=None,
                delivery_state=(DeliveryState.PENDING if deliver else DeliveryState.DELIVERED).value,
                delivered_at=None if deliver else answered_at)


def _begin_delivery(row: Interaction, deliver: bool) -> None:
    """A row turning final: its reply is to be delivered (pending), or there is nothing to send (delivered)."""
    row.delivery_attempts = 0
    row.delivery_error = None
    row.delivery_next_at = None
    if deliver:
        row.delivery_state = DeliveryState.PENDING.value
        row.delivered_at = None
    else:
        row.delivery_state = DeliveryState.DELIVERED.value
        row.delivered_at = row.answered_at
