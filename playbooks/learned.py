"""The learned-answers workflow: an escalation's support thread → a draft → a knowledge owner's review → a
document of the ``learned`` source (docs/learned-answers.md).

The chat adapters translate platform events into these calls and render what they return; nothing here knows
Slack or Teams:

- :meth:`LearnedAnswers.escalated` — "Ask a human" reached the support channel: remember the thread.
- :meth:`LearnedAnswers.support_reply` — a person replied in that thread (``marked``: they chose the message with
  ✅ / "Use as answer"): the draft is created, or its text replaced (a marked message wins over later replies).
- :meth:`LearnedAnswers.correction` — a knowledge owner's 👎 comment on an answer: a draft too.
- :meth:`LearnedAnswers.approve` (optionally with edited text) / :meth:`LearnedAnswers.reject` — by a knowledge
  owner of the draft's knowledge set (``DESKMATE_KNOWLEDGE_OWNERS``) or an admin. Approval writes the answer as
  Markdown with front matter into ``<data_dir>/learned/<kb>/``; a withdrawal deletes the file. Either way the
  worker is asked to refresh the index (:data:`REFRESH_JOB`, :func:`knowledge.learned_index.refresh_learned`).
- :meth:`LearnedAnswers.expire_due` — approved answers past their review date leave the index and wait for a
  new review (the worker's cron).

Nothing unreviewed reaches the index: only :meth:`approve` writes a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import select

from bot.core.clock import utcnow
from bot.core.log import get_logger
from bot.core.settings import Settings
from feedback.db import Database
from feedback.learned import (
    APPROVED,
    DRAFT,
    EXPIRED,
    ORIGIN_CORRECTION,
    ORIGIN_MARKED,
    ORIGIN_REPLY,
    REJECTED,
    Escalation,
    LearnedAnswer,
    LearnedStore,
)
from feedback.models import Interaction, Release
from knowledge.learned import LEARNED_PREFIX
from playbooks.channel_policy import resolve_policy

log = get_logger(__name__)

#: The worker's job that rebuilds a knowledge base's learned documents (argument: the kb name).
REFRESH_JOB = "learned_refresh"
DEFAULT_TEAM = "the support team"
DEFAULT_SET = "learned"
ANSWER_LIMIT = 8000


class ReviewRefused(PermissionError):
    """The person is not a knowledge owner of the draft's set (nor an admin), or the draft cannot be reviewed."""


@dataclass
class DraftOutcome:
    """What a support-thread message did: a new draft, or a changed one (the adapters post or refresh the review
    prompt)."""

    draft: LearnedAnswer
    created: bool


@dataclass(frozen=True)
class Reply:
    """A support-thread message as a draft's text."""

    text: str
    origin: str
    author_id: str
    author_name: str
    message_id: str
    url: str | None
    at: datetime


def slug(text: str, limit: int = 60) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (words[:limit].rstrip("-") or "answer")


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def citation_title(team: str, moment: datetime) -> str:
    """How a learned answer is cited: "Answered by IT Support on 2 Dec 2026"."""
    moment = as_utc(moment)
    return f"Answered by {team} on {moment.day} {moment:%b %Y}"


def markdown_for(row: LearnedAnswer, *, team: str) -> str:
    """The document of an approved answer: front matter (read by :func:`knowledge.sources.load_document`) and
    the question as its heading."""
    meta: dict[str, Any] = {
        "title": citation_title(team, row.answered_at),
        "visibility": "public" if row.public else "restricted",
        "knowledge_set": row.knowledge_set,
        "answered_by": row.answered_by or team,
        "answered_at": as_utc(row.answered_at).isoformat(timespec="seconds"),
        "review_by": as_utc(row.review_by).isoformat(timespec="seconds") if row.review_by else "",
        "learned_id": row.id,
    }
    if row.thread_url:
        meta["url"] = row.thread_url
    question = " ".join(row.question.split())
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n# {question}\n\n{row.answer.strip()}\n"


class LearnedAnswers:
    """The workflow over :class:`feedback.learned.LearnedStore`, for one process."""

    def __init__(self, settings: Settings, db: Database, redis: Any = None) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis  # arq's ArqRedis: the refresh job is enqueued on it (None: the caller refreshes)
        self.store = LearnedStore(db)

    @property
    def enabled(self) -> bool:
        return self.settings.learned_answers

    # --- who reviews ----------------------------------------------------------------------------------
    def owners(self, knowledge_set: str) -> list[str]:
        owners = self.settings.knowledge_owners
        return list(dict.fromkeys([*owners.get(knowledge_set, []), *owners.get("*", [])]))

    def may_review(self, user_id: str, knowledge_set: str) -> bool:
        return bool(user_id) and (user_id in self.owners(knowledge_set) or user_id in self.settings.admin_user_ids)

    def team(self, knowledge_set: str) -> str:
        teams = self.settings.learned_teams
        return teams.get(knowledge_set) or teams.get("*") or DEFAULT_TEAM

    # --- escalations and drafts ----------------------------------------------------------------------
    async def escalated(self, *, interaction_id: int, platform: str, support_channel: str, support_thread: str,
                        thread_url: str | None = None) -> Escalation | None:
        if not self.enabled or not support_thread:
            return None
        row = await self.store.record_escalation(interaction_id=interaction_id, platform=platform,
                                                 support_channel=support_channel, support_thread=support_thread,
                                                 thread_url=thread_url)
        log.info("learned.escalation", interaction_id=interaction_id, escalation_id=row.id, platform=platform)
        return row

    async def escalation_for_thread(self, platform: str, support_channel: str, thread: str) -> Escalation | None:
        if not self.enabled or not thread:
            return None
        return await self.store.escalation_for_thread(platform, support_channel, thread)

    async def _placement(self, interaction: Interaction) -> tuple[str, str, bool]:
        """(kb, knowledge set, public) of an answer to ``interaction``'s question: restricted unless it was asked
        where only public sources may be cited; the set the channel is limited to, else the set of the best
        passage Deskmate found, else "learned"; the knowledge base of the release that answered."""
        payload = interaction.question_payload or {}
        async with self.db.asession() as session:
            policy = await resolve_policy(session, interaction.platform, interaction.channel,
                                          str(payload.get("channel_type") or ""))
            kb = self.settings.kb_name
            if interaction.release:
                release = (await session.exec(select(Release).where(Release.name == interaction.release))).first()
                if release is not None:
                    kb = release.kb
        sets = policy.search_filter.knowledge_sets
        passages = interaction.passages or []
        if sets:
            knowledge_set = sets[0]
        elif passages and passages[0].get("knowledge_set"):
            knowledge_set = str(passages[0]["knowledge_set"])
        else:
            knowledge_set = DEFAULT_SET
        return kb, knowledge_set, bool(policy.search_filter.public_only)

    async def support_reply(self, *, platform: str, support_channel: str, thread: str, text: str, author_id: str,
                            author_name: str = "", message_id: str = "", thread_url: str | None = None,
                            marked: bool = False, at: datetime | None = None) -> DraftOutcome | None:
        """A message in a support thread: None unless it is an escalation's thread and the message makes or
        changes its draft (a reply by the person who asked does not; once reviewed, the draft stays as it is)."""
        escalation = await self.escalation_for_thread(platform, support_channel, thread)
        text = text.strip()
        if escalation is None or escalation.id is None or not text:
            return None
        interaction = await self._interaction(escalation.interaction_id)
        if interaction is None:
            return None
        if not marked and author_id and author_id == str((interaction.question_payload or {}).get("user") or ""):
            return None  # the asker adding detail, not an answer
        reply = Reply(text=text[:ANSWER_LIMIT], origin=ORIGIN_MARKED if marked else ORIGIN_REPLY,
                      author_id=author_id, author_name=author_name or author_id, message_id=message_id,
                      url=thread_url or escalation.thread_url, at=at or utcnow())
        found, outcome = await self._update_draft(escalation.id, reply)
        if found:
            return outcome
        kb, knowledge_set, public = await self._placement(interaction)
        draft = await self.store.add(LearnedAnswer(
            escalation_id=escalation.id, interaction_id=interaction.id, platform=platform, kb=kb,
            knowledge_set=knowledge_set, public=public, question=interaction.question, answer=reply.text,
            answered_by=reply.author_name, answered_by_id=author_id, answered_at=reply.at,
            thread_url=reply.url, origin=reply.origin, source_message=message_id))
        if draft is None:  # another process made it a moment ago: this reply updates it
            return (await self._update_draft(escalation.id, reply))[1]
        log.info("learned.draft", learned_id=draft.id, origin=reply.origin, knowledge_set=knowledge_set,
                 public=public)
        return DraftOutcome(draft, created=True)

    async def _update_draft(self, escalation_id: int, reply: Reply) -> tuple[bool, DraftOutcome | None]:
        """Apply ``reply`` to the escalation's learned answer: (is there one, the outcome — None when it changes
        nothing: reviewed already, a marked message kept over a later reply, the same text)."""
        existing = await self.store.for_escalation(escalation_id)
        if existing is None or existing.id is None:
            return False, None
        if existing.status != DRAFT or (existing.origin == ORIGIN_MARKED and reply.origin != ORIGIN_MARKED):
            return True, None
        if existing.answer == reply.text and existing.origin == reply.origin:
            return True, None
        updated = await self.store.update(existing.id, answer=reply.text, origin=reply.origin,
                                          answered_by=reply.author_name, answered_by_id=reply.author_id,
                                          answered_at=reply.at, source_message=reply.message_id,
                                          thread_url=reply.url)
        return True, (DraftOutcome(updated, created=False) if updated is not None else None)

    async def correction(self, *, interaction_id: int, user_id: str, user_name: str, comment: str,
                         thread_url: str | None = None) -> DraftOutcome | None:
        """A 👎 with a comment: a draft when the voter owns the knowledge set the answer belongs to."""
        comment = (comment or "").strip()
        interaction = await self._interaction(interaction_id)
        if not self.enabled or interaction is None or len(comment) < 20:
            return None
        kb, knowledge_set, public = await self._placement(interaction)
        if not self.may_review(user_id, knowledge_set):
            return None
        draft = await self.store.add(LearnedAnswer(
            interaction_id=interaction_id, platform=interaction.platform, kb=kb, knowledge_set=knowledge_set,
            public=public, question=interaction.question, answer=comment[:ANSWER_LIMIT],
            answered_by=user_name or user_id, answered_by_id=user_id, thread_url=thread_url,
            origin=ORIGIN_CORRECTION))
        if draft is None:
            return None
        log.info("learned.draft", learned_id=draft.id, origin=ORIGIN_CORRECTION, knowledge_set=knowledge_set)
        return DraftOutcome(draft, created=True)

    async def _interaction(self, interaction_id: int) -> Interaction | None:
        async with self.db.asession() as session:
            return await session.get(Interaction, interaction_id)

    async def set_review_message(self, learned_id: int, where: dict[str, Any]) -> None:
        await self.store.update(learned_id, review_message=where)

    async def get(self, learned_id: int) -> LearnedAnswer | None:
        return await self.store.get(learned_id)

    # --- review ---------------------------------------------------------------------------------------
    async def _reviewable(self, learned_id: int, reviewer: str, states: tuple[str, ...]) -> LearnedAnswer:
        row = await self.store.get(learned_id)
        if row is None or row.id is None:
            raise ReviewRefused(f"no learned answer #{learned_id}")
        if not self.may_review(reviewer, row.knowledge_set):
            raise ReviewRefused(f"only a knowledge owner of '{row.knowledge_set}' can review this answer")
        if row.status not in states:
            raise ReviewRefused(f"learned answer #{learned_id} is {row.status}")
        return row

    async def approve(self, learned_id: int, reviewer: str, *, text: str | None = None) -> LearnedAnswer:
        """Approve a draft (or an expired answer, for another period), with ``text`` replacing the reply when
        the owner edited it. Raises :class:`ReviewRefused`."""
        row = await self._reviewable(learned_id, reviewer, (DRAFT, EXPIRED, APPROVED))
        assert row.id is not None
        now = utcnow()
        fields: dict[str, Any] = dict(status=APPROVED, reviewed_by=reviewer, reviewed_at=now, approved_at=now,
                                      review_by=now + timedelta(days=self.settings.learned_review_days),
                                      doc_id=row.doc_id or f"{LEARNED_PREFIX}{slug(row.question)}-{row.id}")
        edited = text is not None and text.strip() and text.strip() != row.answer.strip()
        if edited:
            fields.update(answer=str(text).strip()[:ANSWER_LIMIT], edited=True)
        approved = await self.store.update(row.id, **fields)
        assert approved is not None
        self._write(approved)
        await self.request_refresh(approved.kb)
        log.info("learned.approved", learned_id=row.id, edited=bool(edited), knowledge_set=approved.knowledge_set)
        return approved

    async def reject(self, learned_id: int, reviewer: str) -> LearnedAnswer:
        """Reject a draft, or withdraw an approved (or expired) answer. Raises :class:`ReviewRefused`."""
        row = await self._reviewable(learned_id, reviewer, (DRAFT, APPROVED, EXPIRED))
        assert row.id is not None
        was_indexed = row.status == APPROVED
        rejected = await self.store.update(row.id, status=REJECTED, reviewed_by=reviewer, reviewed_at=utcnow())
        assert rejected is not None
        if self._remove(rejected) or was_indexed:
            await self.request_refresh(rejected.kb)
        log.info("learned.rejected", learned_id=row.id)
        return rejected

    async def expire_due(self, now: datetime | None = None) -> list[LearnedAnswer]:
        """Approved answers past their review date: out of the index, waiting for a new review."""
        now = now or utcnow()
        expired: list[LearnedAnswer] = []
        for row in await self.store.due_for_review(now):
            assert row.id is not None
            updated = await self.store.update(row.id, status=EXPIRED)
            if updated is not None:
                self._remove(updated)
                expired.append(updated)
        for kb in sorted({row.kb for row in expired}):
            await self.request_refresh(kb)
        if expired:
            log.info("learned.expired", count=len(expired))
        return expired

    # --- the documents -------------------------------------------------------------------------------
    def path_of(self, row: LearnedAnswer) -> Path:
        name = (row.doc_id or "").removeprefix(LEARNED_PREFIX)
        kb_dir = re.sub(r"[^a-zA-Z0-9_.-]", "-", row.kb)
        return self.settings.learned_dir() / kb_dir / f"{name}.md"

    def _write(self, row: LearnedAnswer) -> None:
        path = self.path_of(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(markdown_for(row, team=self.team(row.knowledge_set)), encoding="utf-8")
        tmp.replace(path)

    def _remove(self, row: LearnedAnswer) -> bool:
        if not row.doc_id:
            return False
        path = self.path_of(row)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    async def request_refresh(self, kb: str) -> None:
        """Ask a worker to rebuild ``kb``'s learned documents (a job with a fresh id: two decisions in a row
        make two refreshes, the second one a no-op if the first saw both)."""
        if self.redis is None:
            return
        try:
            await self.redis.enqueue_job(REFRESH_JOB, kb)
        except Exception as exc:  # noqa: BLE001 - the file is written: the next refresh or build picks it up
            log.warning("learned.refresh_enqueue_failed", kb=kb, error=repr(exc)[:200])

    async def indexed(self, outcome: dict[str, Any]) -> None:
        """Record which index version first holds the answers a refresh added or changed."""
        if outcome.get("created_version") and outcome.get("version") is not None:
            await self.store.mark_indexed([*outcome.get("added", []), *outcome.get("updated", [])],
                                          int(outcome["version"]))


__all__ = ["APPROVED", "DRAFT", "DraftOutcome", "EXPIRED", "LearnedAnswers", "REFRESH_JOB", "REJECTED",
           "ReviewRefused", "citation_title", "markdown_for"]
