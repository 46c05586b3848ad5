"""Intake: how a message from any chat surface becomes a question the worker will answer exactly once.

Slack, Teams and the local chat all hand their :class:`~bot.core.types.Question` to :meth:`Intake.submit`:

1. **check** the text (:func:`clean_question`: empty or huge messages get a clear reply, never a job);
2. **claim** the platform's idempotency key in Redis (``SET NX``): a redelivered event stops here. Redis being
   down is not fatal: the unique key in the database is the second guard;
3. **prepare** (optional, the adapter's own step, e.g. Slack posts its placeholder so the worker can replace it);
4. **record** the pending interaction, retried while the database is busy — a question that is recorded is
   never lost, even if Redis is down (the sweeper enqueues it later);
5. **enqueue** the answer job (the idempotency key is the job id).

The adapter decides what the user sees from :class:`Submitted`. The channel policy an adapter needs before
deciding to answer at all (enabled? every message or mentions only?) is :meth:`Intake.policy`, cached briefly
per process; the worker reads it again whenever the policies change (:mod:`playbooks.state`), so which sources may
be cited is never stale.

Example::

    intake = Intake(settings, interactions, redis)
    submitted = await intake.submit(question, prepare=post_placeholder)
    if submitted.outcome is Outcome.UNRECORDED:
        ...  # tell the user to ask again
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from arq.connections import ArqRedis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from bot.core.log import get_logger, redact
from bot.core.settings import Settings
from bot.core.types import Question
from bot.queue import enqueue
from bot.status_text import RECORD_FAILED, record_failed_reply
from feedback.interactions import InteractionStore
from playbooks.channel_policy import EffectivePolicy, default_public_only, resolve_policy
from knowledge.language import detect_language
from knowledge.retrieval import SearchFilter

log = get_logger(__name__)

EMPTY_REPLY = "Ask me a question about the handbook — for example “How do I book travel?”"
#: The apology when a question could not be recorded, in English (:func:`record_failed_reply`: the asker's language).
RECORD_FAILED_REPLY = RECORD_FAILED

CLAIM_PREFIX = "deskmate:intake:claim:"
CLAIM_TTL_S = 24 * 3600  # platforms stop redelivering an event within hours
#: Database sessions intake holds at once in one process: below the pool size (5 + 10 overflow), so a burst
#: of events queues here instead of exhausting the pool and piling onto SQLite's write lock.
DB_SLOTS = 8
RECORD_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
POLICY_CACHE_S = 10.0
POLICY_CACHE_SIZE = 2000


class QuestionRejected(ValueError):
    """A message that will not be answered, with the reply the user should see."""

    def __init__(self, reply: str, reason: str) -> None:
        super().__init__(reply)
        self.reply = reply
        self.reason = reason


#: Invisible characters removed from the stored text: bidirectional controls (marks, embeddings, overrides,
#: isolates), zero-width space, word joiner and invisible operators, byte-order mark, soft hyphen, Mongolian
#: vowel separator. Other format characters (category Cf) stay: the zero-width (non-)joiner shapes Persian and
#: Indic words and emoji sequences, tag characters make flag emoji.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
#: Characters that render as nothing or as a blank although they are not format characters or whitespace: the
#: Hangul fillers, the blank Braille pattern, the combining grapheme joiner, variation selectors.
_BLANK_LOOKALIKES = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f") | frozenset(
    chr(c) for c in (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)))


def _blank(text: str) -> bool:
    """Nothing visible: only whitespace, format characters (category Cf: zero-width and direction marks, …)
    and blank look-alikes."""
    return all(c.isspace() or c in _BLANK_LOOKALIKES or unicodedata.category(c) == "Cf" for c in text)


def clean_question(text: str | None, settings: Settings) -> str:
    """The question text, whitespace-normalised and without invisible characters; raises
    :class:`QuestionRejected` for an empty one (nothing visible: a message of zero-width or direction marks
    counts as empty) or a huge one."""
    cleaned = _INVISIBLE.sub("", (text or "").replace("\x00", ""))
    cleaned = re.sub(r"[ \t\u00a0]+", " ", cleaned).strip()
    if _blank(cleaned):
        raise QuestionRejected(EMPTY_REPLY, "empty")
    if len(cleaned) > settings.max_question_chars:
        raise QuestionRejected(
            f"That message is {len(cleaned):,} characters long; I can take questions up to "
            f"{settings.max_question_chars:,}. Please ask a shorter question (you can paste the key part).",
            "too_long",
        )
    return cleaned


class Outcome(StrEnum):
    NEW = "new"  # recorded now (and enqueued unless Redis is down: then the sweeper enqueues it)
    DUPLICATE = "duplicate"  # this idempotency key was seen before: nothing new recorded or enqueued
    UNRECORDED = "unrecorded"  # the database could not take it: the user must be told to ask again


@dataclass(frozen=True)
class Submitted:
    outcome: Outcome
    interaction_id: int | None = None
    enqueued: bool = False

    @property
    def duplicate(self) -> bool:
        return self.outcome is Outcome.DUPLICATE


Prepare = Callable[[Question], Awaitable[None]]


async def record_failed_reply_for(question: Question) -> str:
    """:data:`RECORD_FAILED_REPLY` in the asker's language: the one a surface already detected
    (``reply_target["language"]``, Teams), else the question's (offline, off the event loop: its first use loads the
    model; English when unsure)."""
    language = question.reply_target.get("language")
    if not language:
        try:
            language = await asyncio.to_thread(detect_language, question.text)
        except Exception as exc:  # noqa: BLE001 - the apology still goes out, in English
            log.warning("intake.language_unknown", error=str(exc)[:200])
            language = None
    return record_failed_reply(language)


class Intake:
    def __init__(self, settings: Settings, interactions: InteractionStore, redis: ArqRedis) -> None:
        self.settings = settings
        self.interactions = interactions
        self.redis = redis
        self._db_slots = asyncio.Semaphore(DB_SLOTS)
        self._policies: dict[tuple[str, str, str], tuple[float, EffectivePolicy]] = {}

    async def submit(self, question: Question, *, prepare: Prepare | None = None) -> Submitted:
        """Claim, prepare, record, enqueue (see the module docstring)."""
        key = question.idempotency_key
        if await self._claim(key) is False:
            log.info("intake.duplicate", platform=question.platform.value, stage="claim")
            return Submitted(Outcome.DUPLICATE)
        try:
            if prepare is not None:
                await prepare(question)
            interaction_id, duplicate = await self._record(question)
        except (DBAPIError, SQLAlchemyTimeout, LookupError) as exc:
            log.error("intake.record_failed", platform=question.platform.value, error=str(exc)[:300])
            await self.release_claim(key)
            return Submitted(Outcome.UNRECORDED)
        except BaseException:
            await self.release_claim(key)  # a failing prepare step: the platform's retry must not look like a duplicate
            raise
        if duplicate:  # the Redis claim was unavailable or expired; the database caught the redelivery
            log.info("intake.duplicate", platform=question.platform.value, stage="database",
                     interaction_id=interaction_id)
            return Submitted(Outcome.DUPLICATE, interaction_id)
        enqueued = await enqueue(self.redis, interaction_id, key)
        log.info("intake.question", platform=question.platform.value, interaction_id=interaction_id,
                 channel_type=question.channel_type, enqueued=enqueued, question=redact(question.text))
        return Submitted(Outcome.NEW, interaction_id, enqueued)

    async def policy(self, platform: str, channel: str, channel_type: str) -> EffectivePolicy:
        """The channel's policy for intake (answer at all? every message?), cached for ``POLICY_CACHE_S``:
        a burst of events in a channel costs one query. If the database is unreachable the defaults apply
        (recording the question will then tell the user; the worker applies the real policy)."""
        key = (platform, channel, channel_type)
        now = time.monotonic()
        cached = self._policies.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with self._db_slots, self.interactions.db.asession() as session:
                policy = await resolve_policy(session, platform, channel, channel_type)
        except (DBAPIError, SQLAlchemyTimeout) as exc:
            log.warning("intake.policy_unavailable", platform=platform, error=str(exc)[:200])
            return EffectivePolicy(enabled=True, respond_to="mentions",
                                   search_filter=SearchFilter(public_only=default_public_only(channel_type)))
        if len(self._policies) >= POLICY_CACHE_SIZE:
            self._policies.clear()
        self._policies[key] = (now + POLICY_CACHE_S, policy)
        return policy

    async def asked_in_thread(self, platform: str, channel: str, thread: str, user: str) -> bool:
        """Did ``user`` ask in this thread before? False when the database cannot tell."""
        try:
            async with self._db_slots:
                return await self.interactions.asked_in_thread(platform, channel, thread, user)
        except (DBAPIError, SQLAlchemyTimeout) as exc:
            log.warning("intake.thread_lookup_failed", platform=platform, error=str(exc)[:200])
            return False

    async def _claim(self, key: str) -> bool | None:
        """True = first delivery, False = seen before, None = Redis unavailable."""
        try:
            return bool(await self.redis.set(f"{CLAIM_PREFIX}{key}", b"1", nx=True, ex=CLAIM_TTL_S))
        except Exception as exc:  # noqa: BLE001 - the database's unique key is the second guard
            log.warning("intake.claim_unavailable", error=str(exc)[:200])
            return None

    async def release_claim(self, key: str) -> None:
        """Forget the claim on ``key``: its question could not be recorded, or the process that claimed it may
        have stopped before recording it (:mod:`bot.slack.inbox`). The platform's next delivery is then taken,
        and the database's unique key still stops a second answer."""
        try:
            await self.redis.delete(f"{CLAIM_PREFIX}{key}")
        except Exception:  # noqa: BLE001
            log.warning("intake.release_failed")

    async def _record(self, question: Question) -> tuple[int, bool]:
        """The pending interaction, written once; retried while the database is busy (SQLite's write lock)."""
        for attempt, delay in enumerate((*RECORD_BACKOFF_S, None)):
            try:
                async with self._db_slots:
                    return await self.interactions.record_pending(question)
            except (OperationalError, SQLAlchemyTimeout) as exc:
                if delay is None:
                    raise
                log.warning("intake.record_retry", attempt=attempt + 1, error=str(exc)[:200])
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
