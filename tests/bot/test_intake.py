"""Intake against its seams: a real SQLite database and the test session's real redis-server (no web, no worker).

What is checked is what a user or operator notices: a question is recorded and queued once, a redelivered event
is not answered twice, a question is never silently lost when the database or Redis fails.

Faults are injected by stopping the real Redis (``redis_server.stop()``) or by :class:`FlakyRedis`, which
forwards to the real pool and fails only the commands a test names.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

import bot.intake
from bot.core.settings import Settings
from bot.core.types import Platform, Question
from bot.intake import CLAIM_PREFIX, EMPTY_REPLY, Intake, Outcome, QuestionRejected, clean_question
from bot.queue import ANSWER_JOB, job_id, sweep_pending
from feedback.db import Database
from feedback.interactions import InteractionStore
from feedback.models import Interaction
from tests.conftest import settings_for
from tests.fakes.redis_server import RedisServer


class FlakyRedis:
    """The real arq pool, except that the named commands raise as if Redis were unreachable; counts calls."""

    def __init__(self, real: ArqRedis, *failing: str) -> None:
        self._real = real
        self.failing = set(failing)
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in self.failing:
                raise RedisConnectionError("Error 111 connecting to 127.0.0.1. Connection refused.")
            return await attr(*args, **kwargs)

        return call


class FailingStore(InteractionStore):
    """The real store, except that the next ``failures`` inserts fail as a locked or unreachable database does."""

    def __init__(self, db: Database, failures: int) -> None:
        super().__init__(db, user_salt="test-salt")
        self.failures = failures
        self.attempts = 0

    async def record_pending(self, question: Question) -> tuple[int, bool]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OperationalError("INSERT INTO interaction ...", {}, Exception("database is locked"))
        return await super().record_pending(question)


def question(text: str = "How do I book travel?", *, key: str | None = None) -> Question:
    return Question(idempotency_key=key or f"slack:Ev{uuid.uuid4().hex[:10]}", platform=Platform.SLACK,
                    workspace="T1", channel="C1", thread="1.0", user="U1", text=text, channel_type="channel",
                    reply_target={"channel": "C1", "thread_ts": "1.0"})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, max_question_chars=4000)


@pytest.fixture
def store(database: Database) -> InteractionStore:
    return InteractionStore(database, user_salt="test-salt")


@pytest.fixture
def intake(settings: Settings, store: InteractionStore, arq_redis: ArqRedis) -> Intake:
    return Intake(settings, store, arq_redis)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of a busy database without the real waits (0.2 … 4 s)."""
    monkeypatch.setattr(bot.intake, "RECORD_BACKOFF_S", (0.0, 0.0, 0.0))


async def rows(db: Database) -> list[Interaction]:
    from sqlmodel import col, select

    async with db.asession() as session:
        return list((await session.exec(select(Interaction).order_by(col(Interaction.id)))).all())


async def queued_jobs(redis: ArqRedis) -> list[str]:
    return [j.decode() for j in await redis.zrange("arq:queue", 0, -1)]


# --- the text ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [None, "", "   ", "\t \u00a0\n ", "\x00"])
def test_empty_messages_are_rejected_with_an_example_question(text: str | None, settings: Settings) -> None:
    with pytest.raises(QuestionRejected) as rejected:
        clean_question(text, settings)
    assert rejected.value.reason == "empty" and rejected.value.reply == EMPTY_REPLY


def test_huge_messages_are_rejected_with_the_limit_in_the_reply(settings: Settings) -> None:
    assert clean_question("x" * 4000, settings) == "x" * 4000, "exactly the limit is taken"
    with pytest.raises(QuestionRejected) as rejected:
        clean_question("x" * 4001, settings)
    assert rejected.value.reason == "too_long"
    assert "4,001" in rejected.value.reply and "4,000" in rejected.value.reply


def test_whitespace_is_normalised_but_lines_are_kept(settings: Settings) -> None:
    assert clean_question("  How\t do   I\u00a0 book\x00 travel?  ", settings) == "How do I book travel?"
    assert clean_question("first line\nsecond line", settings) == "first line\nsecond line"


def test_length_is_checked_after_trimming(settings: Settings) -> None:
    padded = " " * 500 + "y" * 4000 + " " * 500
    assert clean_question(padded, settings) == "y" * 4000


#: Messages with nothing visible in them: zero-width and direction marks (format characters, category Cf) and
#: blank look-alikes, alone or mixed with whitespace. Each used to be queued and answered "not found".
INVISIBLE_ONLY = [
    "\u200b", "\u200c", "\u200d", "\u200e\u200f", "\u2060", "\ufeff", "\u202a\u202b\u202c\u202d\u202e",
    "\u2066\u2067\u2068\u2069", "\u2061\u2062\u2063\u2064", "\u00ad", "\u061c", "\u180e", "\U000e0001\U000e0020",
    "\u3164", "\u115f\u1160", "\u2800", "\ufe0f", "\u034f", " \u200b \u00a0 \u2063\n\u2064\t\u2028\u3000",
]


@pytest.mark.parametrize("text", INVISIBLE_ONLY, ids=lambda s: "+".join(f"U{ord(c):04X}" for c in s))
def test_messages_of_only_invisible_characters_are_empty(text: str, settings: Settings) -> None:
    with pytest.raises(QuestionRejected) as rejected:
        clean_question(text, settings)
    assert rejected.value.reason == "empty"


def test_invisible_marks_are_kept_out_of_the_stored_text(settings: Settings) -> None:
    assert clean_question("\u200bHow do I\u200e book\u2060 travel?\ufeff", settings) == "How do I book travel?"
    assert clean_question("\u202eHow do I \u2066book\u2069 travel?\u202c", settings) == "How do I book travel?"
    assert clean_question("re\u00adbook \u200b\u200b travel", settings) == "rebook travel"


def test_meaningful_format_characters_and_emoji_stay(settings: Settings) -> None:
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", with a zero-width non-joiner
    assert clean_question(persian, settings) == persian
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 leave?"  # a ZWJ emoji sequence
    assert clean_question(family, settings) == family
    assert clean_question("\u2764\ufe0f the handbook", settings) == "\u2764\ufe0f the handbook"


# --- submit -----------------------------------------------------------------------------------------------
async def test_a_new_question_is_recorded_pending_and_enqueued_under_its_key(
        intake: Intake, database: Database, arq_redis: ArqRedis) -> None:
    q = question("How do I book travel?")
    submitted = await intake.submit(q)

    assert submitted.outcome is Outcome.NEW and submitted.enqueued and not submitted.duplicate
    [row] = await rows(database)
    assert row.id == submitted.interaction_id and row.status == "pending"
    assert row.question == "How do I book travel?" and row.idempotency_key == q.idempotency_key
    assert row.user_hash and row.user_hash != "U1", "users are stored pseudonymised"
    assert row.question_payload["reply_target"] == {"channel": "C1", "thread_ts": "1.0"}
    info = await Job(job_id(q.idempotency_key), arq_redis).info()
    assert info is not None and info.function == ANSWER_JOB and info.args == (row.id,)
    assert await queued_jobs(arq_redis) == [job_id(q.idempotency_key)]


async def test_the_same_event_twice_is_one_question_and_one_job(
        intake: Intake, database: Database, arq_redis: ArqRedis) -> None:
    q = question()
    prepared: list[str] = []

    async def placeholder(q: Question) -> None:
        prepared.append(q.idempotency_key)

    first = await intake.submit(q, prepare=placeholder)
    again = await intake.submit(q.model_copy(deep=True), prepare=placeholder)

    assert first.outcome is Outcome.NEW
    assert again.outcome is Outcome.DUPLICATE and again.duplicate and not again.enqueued
    assert prepared == [q.idempotency_key], "no second placeholder for a redelivered event"
    assert len(await rows(database)) == 1
    assert await queued_jobs(arq_redis) == [job_id(q.idempotency_key)]


async def test_without_the_redis_claim_the_database_catches_the_duplicate(
        settings: Settings, store: InteractionStore, database: Database, arq_redis: ArqRedis) -> None:
    q = question()
    first = await Intake(settings, store, arq_redis).submit(q)
    flaky = FlakyRedis(arq_redis, "set")  # the claim cannot be taken (Redis blip) but the queue works
    again = await Intake(settings, store, flaky).submit(q.model_copy(deep=True))  # type: ignore[arg-type]

    assert again.outcome is Outcome.DUPLICATE and again.interaction_id == first.interaction_id
    assert "enqueue_job" not in flaky.calls, "a duplicate is not enqueued again"
    assert len(await rows(database)) == 1


async def test_an_unclaimed_new_question_is_still_recorded_and_enqueued(
        settings: Settings, store: InteractionStore, database: Database, arq_redis: ArqRedis) -> None:
    flaky = FlakyRedis(arq_redis, "set")
    submitted = await Intake(settings, store, flaky).submit(question())  # type: ignore[arg-type]
    assert submitted.outcome is Outcome.NEW and submitted.enqueued
    assert len(await rows(database)) == 1 and len(await queued_jobs(arq_redis)) == 1


async def test_a_database_failure_is_unrecorded_and_releases_the_claim(
        settings: Settings, database: Database, arq_redis: ArqRedis, no_backoff: None) -> None:
    q = question()
    broken = FailingStore(database, failures=99)
    submitted = await Intake(settings, broken, arq_redis).submit(q)

    assert submitted.outcome is Outcome.UNRECORDED and submitted.interaction_id is None and not submitted.enqueued
    assert broken.attempts == len(bot.intake.RECORD_BACKOFF_S) + 1, "retried before giving up"
    assert await rows(database) == [] and await queued_jobs(arq_redis) == []
    assert not await arq_redis.exists(f"{CLAIM_PREFIX}{q.idempotency_key}"), "the claim was released"

    # the platform retries the event (or the user asks again): now it is taken
    retry = await Intake(settings, InteractionStore(database, user_salt="test-salt"), arq_redis).submit(q)
    assert retry.outcome is Outcome.NEW and retry.enqueued
    assert len(await rows(database)) == 1


async def test_a_briefly_busy_database_is_retried_and_the_question_taken(
        settings: Settings, database: Database, arq_redis: ArqRedis, no_backoff: None) -> None:
    busy = FailingStore(database, failures=2)
    submitted = await Intake(settings, busy, arq_redis).submit(question())
    assert submitted.outcome is Outcome.NEW and submitted.enqueued
    assert busy.attempts == 3 and len(await rows(database)) == 1


async def test_prepare_runs_before_recording_and_its_reply_target_is_stored(
        intake: Intake, store: InteractionStore, database: Database) -> None:
    q = question()
    seen_rows: list[int] = []

    async def post_placeholder(q: Question) -> None:
        seen_rows.append(len(await rows(database)))
        q.reply_target["placeholder_ts"] = "1700000000.000200"

    submitted = await intake.submit(q, prepare=post_placeholder)

    assert seen_rows == [0], "prepare ran before the question was recorded"
    row = await store.get(submitted.interaction_id or -1)
    assert row is not None
    assert row.question_payload["reply_target"]["placeholder_ts"] == "1700000000.000200"


async def test_a_failing_prepare_step_releases_the_claim_so_the_platforms_retry_is_answered(
        intake: Intake, database: Database) -> None:
    q = question()

    async def broken_placeholder(_q: Question) -> None:
        raise RuntimeError("chat.postMessage exploded")

    with pytest.raises(RuntimeError):
        await intake.submit(q, prepare=broken_placeholder)
    assert await rows(database) == []

    retry = await intake.submit(q.model_copy(deep=True))
    assert retry.outcome is Outcome.NEW, "the redelivered event is taken, not dropped as a duplicate"
    assert len(await rows(database)) == 1


async def test_redis_down_keeps_the_question_and_the_sweeper_enqueues_it_when_back(
        intake: Intake, store: InteractionStore, database: Database, arq_redis: ArqRedis,
        redis_server: RedisServer) -> None:
    q = question("How do I connect to the VPN?")
    redis_server.stop()
    try:
        submitted = await intake.submit(q)
    finally:
        redis_server.start()

    assert submitted.outcome is Outcome.NEW and submitted.interaction_id is not None
    assert submitted.enqueued is False, "the adapter can tell the user it will be answered a little later"
    [row] = await rows(database)
    assert row.status == "pending"
    assert await queued_jobs(arq_redis) == [], "Redis came back empty: nothing was queued"

    assert await sweep_pending(store, arq_redis, min_age_s=0) == 1
    job = Job(job_id(q.idempotency_key), arq_redis)
    assert await job.status() is JobStatus.queued
    info = await job.info()
    assert info is not None and info.args == (submitted.interaction_id,)
    assert await sweep_pending(store, arq_redis, min_age_s=0) == 0, "already queued: not enqueued twice"
