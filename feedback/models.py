"""Database tables (SQLModel). The schema is managed by Alembic migrations in ``feedback/migrations``.

Everything that must survive a restart lives here: questions and their answers (``Interaction``), votes
(``Feedback``), releases and the active-release history, kill-switches, per-channel policy and the audit log.
Redis only holds the queue and short-lived caches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from bot.core.clock import utcnow
from bot.core.types import Status


def new_list() -> list[Any]:
    """A table column's empty-list default. Not ``list`` itself: SQLModel asks pydantic, on every instance, whether
    the factory takes arguments, and for the builtin ``list`` that lookup scans every loaded module (~0.3 ms per
    field and instance, measured on the web process's intake path)."""
    return []


class Interaction(SQLModel, table=True):
    """One question and what Deskmate did with it. Written (pending) before the job is enqueued."""

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(index=True, unique=True, max_length=255)
    platform: str = Field(index=True, max_length=32)
    workspace: str = Field(default="", max_length=255)
    channel: str = Field(default="", index=True, max_length=255)
    thread: str = Field(default="", index=True, max_length=255)
    user_hash: str = Field(default="", max_length=64)
    question: str = Field(sa_column=Column(Text, nullable=False))
    question_payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=Status.PENDING.value, index=True, max_length=32)
    answer: str | None = Field(default=None, sa_column=Column(Text))
    sources: list[dict[str, Any]] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))
    passages: list[dict[str, Any]] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))
    top_score: float | None = None
    model: str | None = Field(default=None, max_length=128)
    release: str | None = Field(default=None, index=True, max_length=128)
    index_version: int | None = None
    fallback: bool = False
    fallback_reason: str | None = Field(default=None, max_length=255)
    latency_ms: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    delivery: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # delivering the answer (or the failure notice) to the user: its own, retried step after the row turns final.
    # ``delivery_state``: None while pending (and on rows from before delivery was tracked), then "pending"
    # (answered, not yet delivered), "delivered" or "failed" (gave up: a permanent error, or the deadline passed)
    delivery_state: str | None = Field(default=None, index=True, max_length=16)
    delivery_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    delivery_error: str | None = Field(default=None, sa_column=Column(Text))
    delivery_next_at: datetime | None = None  # when the next attempt is due (while "pending" after a failure)
    delivered_at: datetime | None = None
    trace_id: str | None = Field(default=None, max_length=64)
    # what was searched: the message, or the standalone query made of it and the thread's history
    search_query: str | None = Field(default=None, sa_column=Column(Text))
    # the canary this question was routed under and its arm ("baseline" | "candidate"; "shadow" = also answered
    # by the candidate in the background): NULL when no canary applied (playbooks.canary.route_release)
    canary_id: int | None = Field(default=None, index=True)
    arm: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    answered_at: datetime | None = Field(default=None, index=True)


class Feedback(SQLModel, table=True):
    """A 👍/👎 on an answer: one row per (interaction, user); a changed vote updates the row."""

    __table_args__ = (UniqueConstraint("interaction_id", "user_hash", name="uq_feedback_interaction_user"),)

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True)
    user_hash: str = Field(max_length=64)
    platform: str = Field(max_length=32)
    label: str = Field(max_length=8)  # "up" | "down"
    reason: str | None = Field(default=None, max_length=64)
    comment: str | None = Field(default=None, sa_column=Column(Text))
    escalated: bool = False  # "Ask a human" clicked
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Release(SQLModel, table=True):
    """An immutable, named bundle of prompt, model, generation and retrieval settings and an index version."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=128)
    prompt_template: str = Field(sa_column=Column(Text, nullable=False))
    prompt_version: str = Field(default="v1", max_length=64)
    model: str = Field(max_length=128)
    max_tokens: int = 1024
    temperature: float = 0.0
    kb: str = Field(default="default", max_length=128)
    index_version: int | None = None  # None = the latest built version
    retrieval_k: int = 6
    retrieval_candidates: int = 40
    min_score: float = 0.3  # raw cosine; the "not found" cut-off where there is no calibration
    # calibrated "not found" (knowledge.calibration); NULL on releases made before it: they keep min_score alone
    not_found_level: float | None = None
    fusion: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    knowledge_sets: list[str] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))
    # the search query: auto | llm | offline | off (bot.pipeline.search_query), and the rewrite model.
    # Releases made before these existed read "off": an immutable release keeps searching as it did.
    query_rewrite: str = Field(default="auto", max_length=16, sa_column_kwargs={"server_default": "off"})
    rewrite_model: str = Field(default="claude-haiku-4-5", max_length=128,
                               sa_column_kwargs={"server_default": "claude-haiku-4-5"})
    notes: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_by: str = Field(default="", max_length=255)
    created_at: datetime = Field(default_factory=utcnow)


class ReleaseEvent(SQLModel, table=True):
    """History of the active-release pointer: the latest row names the active release."""

    id: int | None = Field(default=None, primary_key=True)
    release_name: str = Field(index=True, max_length=128)
    previous: str | None = Field(default=None, max_length=128)
    action: str = Field(max_length=32)  # promote | rollback | bootstrap
    actor: str = Field(default="", max_length=255)
    forced: bool = False
    at: datetime = Field(default_factory=utcnow, index=True)


class Switch(SQLModel, table=True):
    """A kill-switch setting: scope "global" or "<platform>:<channel>"; mode on | retrieval-only | off."""

    scope: str = Field(primary_key=True, max_length=255)
    mode: str = Field(max_length=32)
    reason: str = Field(default="", max_length=255)
    set_by: str = Field(default="", max_length=255)
    automatic: bool = False  # set by the budget guard; cleared by it the next day
    set_at: datetime = Field(default_factory=utcnow)


class ChannelPolicy(SQLModel, table=True):
    """What Deskmate does in one channel: on or off, which knowledge sets it may cite, mentions only or all."""

    __table_args__ = (UniqueConstraint("platform", "channel", name="uq_channel_policy"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    channel: str = Field(max_length=255)
    enabled: bool = True
    respond_to: str = Field(default="mentions", max_length=16)  # mentions | all
    knowledge_sets: list[str] | None = Field(default=None, sa_column=Column(JSON))  # None = default for channel type
    public_only: bool | None = None  # None = decided by channel type (public channels see public sources only)
    updated_at: datetime = Field(default_factory=utcnow)


class AuditEntry(SQLModel, table=True):
    """Every admin action, allowed or refused: who, where, what, before, after, when."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=255)
    platform: str = Field(max_length=32)
    where: str = Field(default="", max_length=255)
    command: str = Field(sa_column=Column(Text, nullable=False))
    allowed: bool
    before: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    after: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Alert(SQLModel, table=True):
    """An alert raised to the admin channel; kept so the same alert is not re-sent every minute."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True, max_length=64)
    message: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(default_factory=utcnow, index=True)
    delivered: bool = False


class EvalRun(SQLModel, table=True):
    """A stored evaluation result of a release on a dataset (the quality gate compares these)."""

    id: int | None = Field(default=None, primary_key=True)
    release_name: str = Field(index=True, max_length=128)
    dataset: str = Field(max_length=512)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(default_factory=utcnow)


class Admin(SQLModel, table=True):
    """A user allowed to run admin commands, in addition to the ids in ``DESKMATE_ADMIN_USER_IDS``."""

    __table_args__ = (UniqueConstraint("platform", "user_id", name="uq_admin_platform_user"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)  # slack | teams | local
    user_id: str = Field(max_length=255)
    added_by: str = Field(default="", max_length=255)
    note: str = Field(default="", max_length=255)
    added_at: datetime = Field(default_factory=utcnow)


class SyncRun(SQLModel, table=True):
    """One sync of one knowledge source (``deskmate source sync``, the worker's schedule): what it changed in the
    index, what it skipped and why, what failed, how long it took."""

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=32)
    kb: str = Field(default="default", max_length=128)
    status: str = Field(index=True, max_length=16)  # ok | unchanged | partial | failed
    started_at: datetime = Field(default_factory=utcnow, index=True)
    seconds: float = 0.0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    index_version: int | None = None
    # the documents concerned (ids) and [{path, reason}] / [message]: capped lists, the counts above are exact
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    skipped: list[dict[str, str]] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))
    errors: list[str] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))
    trigger: str = Field(default="cli", max_length=16)  # cli | schedule


class Canary(SQLModel, table=True):
    """A gradual rollout of a candidate release (``playbooks.canary``): who gets it, its limits, how it ended.

    ``state``: running | promoted | rolled_back | inconclusive | stopped | completed (a shadow canary's end). At
    most one is running — a partial unique index holds that even when two admins start one at the same instant;
    every process routes from the running row, so all agree without coordination.
    """

    __table_args__ = (Index("uq_canary_one_running", "state", unique=True,
                            sqlite_where=text("state = 'running'"), postgresql_where=text("state = 'running'")),)

    id: int | None = Field(default=None, primary_key=True)
    candidate: str = Field(index=True, max_length=128)
    baseline: str = Field(max_length=128)
    mode: str = Field(default="live", max_length=16)  # live | shadow
    share: float = 10.0  # percent of conversations routed to the candidate (live), or sampled (shadow)
    excluded: list[str] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))  # "slack:C0123" scopes
    min_answers: int = 300
    max_hours: float = 72.0
    alpha: float = 0.05
    margins: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    shadow_budget_usd: float = 0.0
    state: str = Field(default="running", index=True, max_length=16)
    started_by: str = Field(default="", max_length=255)
    started_at: datetime = Field(default_factory=utcnow, index=True)
    ended_at: datetime | None = None
    ended_by: str = Field(default="", max_length=255)
    decision: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))  # the explanation
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # figures, test


class ShadowAnswer(SQLModel, table=True):
    """The candidate's background answer to a live question (never shown), compared with the live answer."""

    id: int | None = Field(default=None, primary_key=True)
    canary_id: int = Field(index=True)
    interaction_id: int = Field(index=True)
    release: str = Field(max_length=128)
    status: str = Field(default="", max_length=32)
    answer: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    cited_doc_ids: list[str] = Field(default_factory=new_list, sa_column=Column(JSON, nullable=False))
    fallback: bool = False
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    citation_precision: float | None = None  # share of its cited documents the live answer cited or retrieved
    overlap: float | None = None  # token F1 with the live answer (the eval runner's answer overlap)
    judge: float | None = None  # 0, 0.5, 1: the LLM judge, grading it against the live answer
    judge_reason: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(default_factory=utcnow, index=True)
