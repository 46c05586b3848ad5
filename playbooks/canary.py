"""Canary releases: a share of conversations answered by a candidate release, judged on live traffic.

**Routing** (:func:`route_release`, the one place that decides which release answers a message): while a canary
runs, a conversation (platform + channel + thread) goes to the candidate when a deterministic hash of its key,
salted with the canary's id, falls below the share — so every web and worker process decides the same without
talking to each other, and after restarts. A conversation keeps the arm its first message got (the arm is
recorded on each :class:`~feedback.models.Interaction`), so raising the share never moves a conversation
midway, and conversations that began before the canary stay on the baseline and out of its figures. The
kill-switch and channel policies come first: a message that gets the maintenance reply or retrieval-only
answers is not routed and not counted. Excluded channels never see the candidate.

**State.** The canary (candidate, baseline, share, excluded channels, limits, started_at, state, the decision and
its figures) is a :class:`~feedback.models.Canary` row: every process reads it at each message, as it reads the
kill-switch. Each change is also published to Redis (``deskmate:canary:state`` holds the running canary as JSON,
``deskmate:canary:version`` counts changes, and the version is published on the ``deskmate:canary`` channel), so a
process that caches it can invalidate its copy. The decision loop takes a Redis key so that one worker decides per
tick; the state change itself is a conditional update, so two deciders can never both act.

**Decisions** (:func:`decide`; :class:`CanaryGuard` runs it after answers, after votes and from the worker's
cron): the sequential test of
:mod:`playbooks.canary_stats` on the guard metrics — roll back at once when one is significantly worse (alert
naming ``canary-rolled-back.md``), promote once the minimum number of answers is reached and none is worse than its
margin, end inconclusive after the maximum duration. Each decision is audited as ``canary-guard`` with the metric,
the figures and the test, and stored on the canary row (the dashboard shows it).

**Shadow mode** (``--shadow``): nobody sees the candidate. A sample of live questions is also answered by the
candidate in the background (the worker's ``shadow`` job), within a cost budget, and the two answers are compared
with the eval runner's metrics (:func:`record_shadow`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.clock import utcnow
from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Answer, Status
from feedback.db import Database
from feedback.evals.judge import make_judge
from feedback.evals.metrics import clean_answer, token_f1
from feedback.models import Canary, Feedback, Interaction, Release, ShadowAnswer
from feedback.releases import active_release, get_release
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexNotFound, IndexStore
from playbooks import audit
from playbooks.alerts import Alerter
from playbooks.canary_stats import DEFAULT_MARGINS, TEST_NAME, ArmData, Verdict, evaluate
from playbooks.gate import resolve_gate, run_gate
from playbooks.killswitch import Mode, channel_scope
from playbooks.notify import Notifier
from playbooks.releases import GateRefused, ReleaseError, activate
from playbooks.status import INTENTIONAL_FALLBACKS

log = get_logger(__name__)

BASELINE, CANDIDATE, SHADOW = "baseline", "candidate", "shadow"
LIVE_ARMS = (BASELINE, CANDIDATE)
RUNNING = "running"
ENDED_STATES = ("promoted", "rolled_back", "inconclusive", "stopped", "completed")
ACTOR = "canary-guard"
RUNBOOK = "playbooks/runbooks/canary-rolled-back.md"
STATE_KEY = "deskmate:canary:state"
VERSION_KEY = "deskmate:canary:version"
CHANNEL = "deskmate:canary"
DECIDE_KEY = "deskmate:canary:decide"


class CanaryError(ReleaseError):
    """A canary operation that cannot be done, with a message for the operator."""


# --- routing -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """Which release answers one message, and under which canary and arm (None: no canary applies)."""

    release: Release
    canary_id: int | None = None
    arm: str | None = None  # baseline | candidate | shadow


def conversation_key(platform: str, channel: str, thread: str) -> str:
    return f"{platform}:{channel}:{thread}"


def bucket(canary_id: int, key: str) -> float:
    """Where ``key`` falls in [0, 100) for this canary: the same in every process, different per canary."""
    digest = hashlib.sha256(f"deskmate-canary:{canary_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


async def running_canary(session: AsyncSession) -> Canary | None:
    stmt = select(Canary).where(Canary.state == RUNNING).order_by(col(Canary.id).desc()).limit(1)
    return (await session.exec(stmt)).first()


async def route_release(session: AsyncSession, settings: Settings, *, platform: str, channel: str, thread: str,
                        idempotency_key: str, interaction_id: int | None, mode: Mode) -> Route:
    """The release that answers this message: the active release, or — while a canary runs — its candidate for
    the conversations in its share. The one decision; the pipeline calls it once per message.

    Stickiness: a thread keeps the arm its first routed message got; a thread begun before the canary stays on
    the baseline, outside the canary's figures. ``thread`` empty (a one-off message): the message is its own
    conversation.
    """
    active = await active_release(session, settings)
    canary = await running_canary(session) if mode == Mode.ON else None
    return await route_among(session, active, canary, platform=platform, channel=channel, thread=thread,
                             idempotency_key=idempotency_key, interaction_id=interaction_id, mode=mode)


async def route_among(session: AsyncSession, active: Release, canary: Canary | None, *, platform: str, channel: str,
                      thread: str, idempotency_key: str, interaction_id: int | None, mode: Mode) -> Route:
    """:func:`route_release` once the active release and the running canary (None: none) are known — for a
    caller that keeps them (``playbooks.state.PlaybookState`` re-reads them only when they change)."""
    if mode != Mode.ON:
        return Route(active)  # the kill-switch decides: no candidate, not counted
    if canary is None or canary.baseline != active.name or channel_scope(platform, channel) in canary.excluded:
        return Route(active)
    assert canary.id is not None
    if canary.mode == SHADOW:
        sampled = bucket(canary.id, f"shadow:{idempotency_key}") < canary.share
        return Route(active, canary.id, SHADOW) if sampled else Route(active)
    arm: str | None = None
    if thread:
        stmt = (select(Interaction.created_at, Interaction.canary_id, Interaction.arm)
                .where(Interaction.platform == platform, Interaction.channel == channel, Interaction.thread == thread)
                .order_by(col(Interaction.id)).limit(50))
        if interaction_id is not None:
            stmt = stmt.where(col(Interaction.id) != interaction_id)
        earlier = (await session.exec(stmt)).all()
        if earlier and _aware(earlier[0][0]) < _aware(canary.started_at):
            return Route(active)  # began before the canary: it ends on the release it began with
        arm = next((a for _, cid, a in earlier if cid == canary.id and a in LIVE_ARMS), None)
    if arm is None:
        arm = CANDIDATE if bucket(canary.id, conversation_key(platform, channel, thread or idempotency_key)) \
            < canary.share else BASELINE
    if arm == CANDIDATE:
        candidate = await get_release(session, canary.candidate)
        if candidate is not None:
            return Route(candidate, canary.id, CANDIDATE)
        return Route(active)
    return Route(active, canary.id, BASELINE)


# --- Redis: the running canary published for every process -----------------------------------------------
def canary_snapshot(canary: Canary | None) -> dict[str, Any] | None:
    if canary is None or canary.state != RUNNING:
        return None
    return {"id": canary.id, "candidate": canary.candidate, "baseline": canary.baseline, "mode": canary.mode,
            "share": canary.share, "excluded": list(canary.excluded), "started_at": _aware(canary.started_at).isoformat()}


async def publish(settings: Settings, redis: Redis | None, canary: Canary | None) -> None:
    """Mirror the running canary (or its absence) into Redis and announce the change. Best effort: the
    database is the truth, and every process reads it per message."""
    own = redis is None
    client: Redis | None = redis
    try:
        if client is None:
            if not settings.redis_url:
                return
            client = Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        snapshot = canary_snapshot(canary)
        if snapshot is None:
            await client.delete(STATE_KEY)
        else:
            await client.set(STATE_KEY, json.dumps(snapshot))
        version = await client.incr(VERSION_KEY)
        await client.publish(CHANNEL, str(version))
    except Exception as exc:  # noqa: BLE001 - Redis down: routing reads the database anyway
        log.warning("canary.publish_failed", error=type(exc).__name__)
    finally:
        if own and client is not None:
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001
                pass


# --- starting and stopping ---------------------------------------------------------------------------------
@dataclass
class CanaryOptions:
    share: float = 10.0
    excluded: list[str] = field(default_factory=list)
    min_answers: int | None = None
    max_hours: float | None = None
    shadow: bool = False
    budget_usd: float | None = None
    force: bool = False


async def start_canary(session: AsyncSession, settings: Settings, name: str, *, actor: str,
                       options: CanaryOptions) -> tuple[Canary, str]:
    """Start a canary of release ``name`` against the active release; returns it and the gate's message.

    A live canary asks the promotion gate first (what the candidate will be promoted on if it does well);
    ``force`` overrides a refusal. A shadow canary shows nothing to anyone: no gate.
    """
    candidate = await get_release(session, name)
    if candidate is None:
        raise CanaryError(f"release '{name}' does not exist (see `releases`)")
    current = await active_release(session, settings)
    if current.name == name:
        raise CanaryError(f"release '{name}' is already active: a canary compares a candidate with the active release")
    running = await running_canary(session)
    if running is not None:
        started = f"{running.started_at:%Y-%m-%d %H:%M}"
        raise CanaryError(f"a canary of '{running.candidate}' is already running (started {started} UTC): "
                          "`canary stop` it first")
    if not 0 < options.share <= 100:
        raise CanaryError("the share is a percentage of conversations: more than 0, at most 100")
    if candidate.index_version is not None:
        try:
            IndexStore(KnowledgeConfig.from_settings(settings)).resolve_version(candidate.kb, candidate.index_version)
        except IndexNotFound as exc:
            raise CanaryError(f"cannot canary '{name}': {exc}") from exc
    gate_message = ""
    if not options.shadow:
        result = await run_gate(resolve_gate(), session, settings, candidate, current)
        gate_message = result.message
        if not result.ok and not options.force:
            raise GateRefused(result)
        if not result.ok:
            gate_message = f"FORCED past the gate: {result.message}"
    canary = Canary(
        candidate=name, baseline=current.name, mode=SHADOW if options.shadow else "live", share=options.share,
        excluded=sorted(set(options.excluded)),
        min_answers=options.min_answers if options.min_answers is not None else settings.canary_min_answers,
        max_hours=options.max_hours if options.max_hours is not None else settings.canary_max_hours,
        alpha=settings.canary_alpha, margins={**DEFAULT_MARGINS, **settings.canary_margins},
        shadow_budget_usd=(options.budget_usd if options.budget_usd is not None
                           else settings.canary_shadow_budget_usd) if options.shadow else 0.0,
        started_by=actor, started_at=utcnow(),
    )
    session.add(canary)
    try:
        await session.commit()
    except IntegrityError as exc:  # another admin's canary was stored meanwhile (at most one runs: the index)
        await session.rollback()
        raise CanaryError("another canary was started meanwhile: see `canary status`") from exc
    await session.refresh(canary)
    return canary, gate_message


async def end_canary(db: Database, canary_id: int, state: str, *, actor: str, decision: str,
                     detail: dict[str, Any] | None = None) -> Canary | None:
    """Move a running canary to ``state`` (one conditional update: of two deciders only one wins). Returns the
    ended canary, or None when it was no longer running."""
    async with db.asession() as session:
        result = await session.exec(  # type: ignore[call-overload]
            update(Canary).where(col(Canary.id) == canary_id, col(Canary.state) == RUNNING)
            .values(state=state, ended_at=utcnow(), ended_by=actor[:255], decision=decision, detail=detail or {}))
        if result.rowcount != 1:
            await session.rollback()
            return None
        await session.commit()
        return await session.get(Canary, canary_id)


def _deadline(canary: Canary) -> datetime:
    return _aware(canary.started_at) + timedelta(hours=canary.max_hours)


# --- figures ------------------------------------------------------------------------------------------------
async def arm_data(db: Database, canary_id: int) -> dict[str, ArmData]:
    """What each arm of the canary did, from the interactions routed under it and their votes."""
    arms = {arm: ArmData() for arm in LIVE_ARMS}
    async with db.asession() as session:
        rows = (await session.exec(
            select(Interaction.id, Interaction.arm, Interaction.status, Interaction.fallback,  # type: ignore[call-overload]
                   Interaction.fallback_reason, Interaction.latency_ms, Interaction.cost_usd)
            .where(Interaction.canary_id == canary_id, col(Interaction.arm).in_(LIVE_ARMS)))).all()
        votes = (await session.exec(
            select(Interaction.arm, Feedback.label, Feedback.escalated)
            .join(Interaction, col(Interaction.id) == col(Feedback.interaction_id))
            .where(Interaction.canary_id == canary_id, col(Interaction.arm).in_(LIVE_ARMS)))).all()
    for _id, arm, status, fallback, reason, latency, cost in rows:
        data = arms[str(arm)]
        if status == Status.PENDING:
            continue
        if status == Status.MAINTENANCE:
            continue  # a channel policy or a switch set while it was being answered: not the release's doing
        data.questions += 1
        if status == Status.ERROR:
            data.errors += 1
            continue
        data.answers += 1
        if status == Status.NOT_FOUND:
            data.not_found += 1
        elif status == Status.ANSWERED:
            if fallback and reason in INTENTIONAL_FALLBACKS:
                pass
            else:
                data.llm_answers += 1
                data.fallbacks += int(bool(fallback))
        total = (latency or {}).get("total_before_delivery")
        if total is not None:
            data.latencies_ms.append(float(total))
        data.costs.append(float(cost or 0.0))
    for arm, label, escalated in votes:
        data = arms[str(arm)]
        if label in ("up", "down"):
            data.rated += 1
            data.up += label == "up"
            data.down += label == "down"
        data.escalated += bool(escalated)
    return arms


def verdict_for(canary: Canary, arms: dict[str, ArmData]) -> Verdict:
    return evaluate(arms[BASELINE].samples(), arms[CANDIDATE].samples(), candidate_answers=arms[CANDIDATE].answers,
                    min_answers=canary.min_answers, alpha=canary.alpha,
                    margins={**DEFAULT_MARGINS, **(canary.margins or {})})


# --- the decision loop -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    canary_id: int
    state: str  # the state it moved to
    metric: str | None
    text: str


async def decide(db: Database, settings: Settings, alerter: Alerter | None, *,
                 now: datetime | None = None) -> Decision | None:
    """Look at the running canary once and act: rollback, promote, end (inconclusive, superseded, shadow done).
    Returns what was decided, or None (nothing running, or keep going)."""
    now = now or datetime.now(timezone.utc)
    async with db.asession() as session:
        canary = await running_canary(session)
        if canary is None:
            return None
        active = await active_release(session, settings)
    assert canary.id is not None
    if active.name != canary.baseline:
        text = (f"Canary of `{canary.candidate}` ended: the active release changed from `{canary.baseline}` to "
                f"`{active.name}` while it ran (the comparison no longer holds).")
        return await _conclude(db, settings, canary, "stopped", text, {"active": active.name}, metric=None)
    if canary.mode == SHADOW:
        summary = await shadow_summary(db, canary.id)
        if summary["cost_usd"] >= canary.shadow_budget_usd or now >= _deadline(canary):
            why = "its cost budget is spent" if summary["cost_usd"] >= canary.shadow_budget_usd else \
                "its maximum duration passed"
            text = (f"Shadow canary of `{canary.candidate}` completed ({why}): {shadow_text(summary)}")
            return await _conclude(db, settings, canary, "completed", text, {"shadow": summary}, metric=None)
        return None
    arms = await arm_data(db, canary.id)
    verdict = verdict_for(canary, arms)
    detail = {"verdict": verdict.as_dict(), "arms": {a: d.figures() for a, d in arms.items()}}
    if verdict.action == "rollback":
        text = (f"Canary of `{canary.candidate}` ROLLED BACK after {arms[CANDIDATE].answers} candidate answers: "
                f"{verdict.reason}. Test: {TEST_NAME}, α = {canary.alpha:g}. Every conversation is back on "
                f"`{canary.baseline}`.")
        decision = await _conclude(db, settings, canary, "rolled_back", text, detail, metric=verdict.metric)
        if decision is not None and alerter is not None:
            await alerter.raise_alert(f"canary-rollback-{canary.id}", (
                f":rewind: {text}\nRunbook: `{RUNBOOK}`. Figures: `/deskmate canary status` (Slack), "
                f"`@Deskmate admin canary status` (Teams), `deskmate admin canary status` or the dashboard."))
        return decision
    if verdict.action == "promote":
        text = (f"Canary of `{canary.candidate}` PROMOTED after {arms[CANDIDATE].answers} candidate answers: "
                f"{verdict.reason}. Test: {TEST_NAME}, α = {canary.alpha:g}.")
        decision = await _conclude(db, settings, canary, "promoted", text, detail, metric=None)
        if decision is None:
            return None
        try:
            async with db.asession() as session:
                await activate(session, settings, canary.candidate, actor=ACTOR, action="promote")
        except ReleaseError as exc:
            async with db.asession() as session:
                row = await session.get(Canary, canary.id)
                if row is not None:
                    row.state, row.decision = "stopped", f"{text}\nBut the promotion failed: {exc}"
                    session.add(row)
                    await session.commit()
                await audit.record(session, actor=ACTOR, platform="deskmate", where="worker",
                                   command=f"promote {canary.candidate} (canary)", allowed=True,
                                   detail=f"failed: {exc}")
            return Decision(canary.id, "stopped", None, str(exc))
        async with db.asession() as session:
            await audit.record(session, actor=ACTOR, platform="deskmate", where="worker",
                               command=f"promote {canary.candidate} (canary)", allowed=True,
                               before=canary.baseline, after=canary.candidate, detail=verdict.reason)
        return decision
    if now >= _deadline(canary):
        text = (f"Canary of `{canary.candidate}` ended INCONCLUSIVE after {canary.max_hours:g} h "
                f"({arms[CANDIDATE].answers} candidate answers): {verdict.reason}. Test: {TEST_NAME}. "
                f"`{canary.baseline}` stays active.")
        return await _conclude(db, settings, canary, "inconclusive", text, detail, metric=None)
    return None


async def _conclude(db: Database, settings: Settings, canary: Canary, state: str, text: str,
                    detail: dict[str, Any], *, metric: str | None) -> Decision | None:
    assert canary.id is not None
    ended = await end_canary(db, canary.id, state, actor=ACTOR, decision=text, detail=detail)
    if ended is None:
        return None  # another process decided first
    async with db.asession() as session:
        await audit.record(session, actor=ACTOR, platform="deskmate", where="worker",
                           command=f"canary {state.replace('_', ' ')} {canary.candidate}", allowed=True,
                           before=f"canary {canary.candidate} {canary.share:g}% running",
                           after=f"canary {canary.candidate} {state}", detail=text)
    log.warning("canary.decided", canary_id=canary.id, state=state, metric=metric)
    await publish(settings, None, None)
    return Decision(canary.id, state, metric, text)


class CanaryGuard:
    """The canary's side of the worker: after each routed answer (a shadow job to enqueue, the decision when due)
    and the cron's tick. One per process; the decision is taken by one caller per ``canary_check_interval_s``."""

    def __init__(self, settings: Settings, db: Database, redis: Redis | None, notifier: Notifier,
                 enqueue_shadow: Callable[[int], Awaitable[Any]] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis
        self.alerter = Alerter(settings=settings, db=db, redis=redis, notifier=notifier)
        self.enqueue_shadow = enqueue_shadow

    async def after_answer(self, route: Route, interaction_id: int, answer: Answer) -> None:
        if route.arm == SHADOW and self.enqueue_shadow is not None and answer.status != Status.MAINTENANCE:
            await self.enqueue_shadow(interaction_id)
        await self.tick()

    async def tick(self) -> Decision | None:
        if not await self._due():
            return None
        return await decide(self.db, self.settings, self.alerter)

    async def _due(self) -> bool:
        interval = self.settings.canary_check_interval_s
        if interval <= 0 or self.redis is None:
            return True
        try:
            return bool(await self.redis.set(DECIDE_KEY, "1", nx=True, px=max(1, int(interval * 1000))))
        except Exception:  # noqa: BLE001 - no Redis: decide (the state change is conditional anyway)
            return True


async def canary_cron(ctx: dict[str, Any]) -> str | None:
    """The decision as an arq cron job (``bot/worker.py``): canaries end on time, and errors are noticed, even
    when nothing is answered. Reads the process's :class:`CanaryGuard` from ``ctx["canary"]``."""
    guard: CanaryGuard | None = ctx.get("canary")
    if guard is None:
        return None
    decision = await guard.tick()
    return decision.state if decision else None


# --- shadow mode ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShadowResult:
    """The candidate's background answer to one live question (made by the worker's ``shadow`` job)."""

    text: str
    status: str
    cited_doc_ids: list[str]
    fallback: bool
    latency_ms: float
    cost_usd: float
    error: str | None = None


async def shadow_spent(db: Database, canary_id: int) -> float:
    async with db.asession() as session:
        total = (await session.exec(select(func.coalesce(func.sum(ShadowAnswer.cost_usd), 0.0))  # type: ignore[call-overload]
                                    .where(ShadowAnswer.canary_id == canary_id))).one()
    return float(total or 0.0)


async def shadow_target(db: Database, interaction_id: int) -> tuple[Canary, Interaction, Release] | None:
    """The running shadow canary, the live interaction and the candidate — when the budget allows one more
    background answer; None otherwise (ended, over budget, already answered)."""
    async with db.asession() as session:
        row = await session.get(Interaction, interaction_id)
        if row is None or row.canary_id is None or row.arm != SHADOW:
            return None
        canary = await session.get(Canary, row.canary_id)
        if canary is None or canary.state != RUNNING or canary.mode != SHADOW:
            return None
        done = (await session.exec(select(ShadowAnswer.id).where(ShadowAnswer.interaction_id == interaction_id))).first()
        release = await get_release(session, canary.candidate)
    if done is not None or release is None:
        return None
    assert canary.id is not None
    if await shadow_spent(db, canary.id) >= canary.shadow_budget_usd:
        log.info("canary.shadow_budget_spent", canary_id=canary.id)
        return None
    return canary, row, release


def _doc_ids(items: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(i.get("doc_id")) for i in items if i.get("doc_id")))


async def record_shadow(db: Database, settings: Settings, canary: Canary, live: Interaction,
                        shadow: ShadowResult) -> ShadowAnswer:
    """Compare the background answer with the live one, as the eval runner compares answers, and store it:
    answer overlap (token F1), citation precision (share of its cited documents that the live answer cited or
    retrieved: the live answer stands in for the golden set's relevant documents) and, with an API key, the LLM
    judge grading it against the live answer as the reference."""
    assert canary.id is not None and live.id is not None
    live_cited = set(_doc_ids(live.sources or []))
    live_seen = live_cited | set(_doc_ids(live.passages or []))
    precision = (sum(d in live_seen for d in shadow.cited_doc_ids) / len(shadow.cited_doc_ids)
                 if shadow.cited_doc_ids else None)
    overlap = token_f1(clean_answer(shadow.text), clean_answer(live.answer or "")) if shadow.error is None else None
    judge_score: float | None = None
    judge_reason: str | None = None
    cost = shadow.cost_usd
    judge = make_judge(settings) if shadow.error is None and live.answer else None
    if judge is not None:
        try:
            verdict = await judge.grade(live.question, live.answer or "", shadow.text)
            judge_score, judge_reason, cost = verdict.score, verdict.reason, cost + verdict.cost_usd
        finally:
            await judge.close()
    row = ShadowAnswer(canary_id=canary.id, interaction_id=live.id, release=canary.candidate, status=shadow.status,
                       answer=shadow.text, cited_doc_ids=shadow.cited_doc_ids, fallback=shadow.fallback,
                       latency_ms=shadow.latency_ms, cost_usd=cost, citation_precision=precision, overlap=overlap,
                       judge=judge_score, judge_reason=judge_reason, error=shadow.error)
    async with db.asession() as session:
        session.add(row)
        await session.commit()
        await session.refresh(row)
    return row


async def shadow_summary(db: Database, canary_id: int) -> dict[str, Any]:
    async with db.asession() as session:
        rows = list((await session.exec(select(ShadowAnswer).where(ShadowAnswer.canary_id == canary_id))).all())

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    return {"answers": len(rows), "errors": sum(r.error is not None for r in rows),
            "cost_usd": round(sum(r.cost_usd for r in rows), 6),
            "overlap": mean([r.overlap for r in rows]), "citation_precision": mean([r.citation_precision for r in rows]),
            "judge": mean([r.judge for r in rows]), "judged": sum(r.judge is not None for r in rows),
            "fallbacks": sum(r.fallback for r in rows)}


def shadow_text(summary: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0%}"

    judge = f", LLM judge {summary['judge']:.2f} on {summary['judged']}" if summary["judge"] is not None else \
        ", no LLM judge (no API key)"
    return (f"{summary['answers']} background answers (${summary['cost_usd']:.4f}, {summary['errors']} errors): "
            f"answer overlap with the live answers {pct(summary['overlap'])}, citation precision "
            f"{pct(summary['citation_precision'])}{judge}")


# --- what people read -------------------------------------------------------------------------------------------
async def latest_canary(session: AsyncSession) -> Canary | None:
    return (await session.exec(select(Canary).order_by(col(Canary.id).desc()).limit(1))).first()


def _fmt_rate(fig: dict[str, Any]) -> str:
    if fig["value"] is None:
        return "—"
    ci = fig["ci"]
    return f"{fig['value']:.0%} [{ci[0]:.0%}–{ci[1]:.0%}]" if ci else f"{fig['value']:.0%}"


def _fmt_ms(fig: dict[str, Any]) -> str:
    if fig["value"] is None:
        return "—"
    ci = fig["ci"]
    return f"{fig['value']:.0f} ms [{ci[0]:.0f}–{ci[1]:.0f}]" if ci else f"{fig['value']:.0f} ms"


def _fmt_cost(fig: dict[str, Any]) -> str:
    if fig["value"] is None:
        return "—"
    ci = fig["ci"]
    return f"${fig['value']:.4f} [{ci[0]:.4f}–{ci[1]:.4f}]" if ci else f"${fig['value']:.4f}"


FIGURE_ROWS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("👍 per rated answer", "up_rate_rated", _fmt_rate), ("👎 per rated answer", "down_rate_rated", _fmt_rate),
    ("👍 per answer", "up_per_answer", _fmt_rate), ("👎 per answer", "down_per_answer", _fmt_rate),
    ("not found", "not_found_rate", _fmt_rate), ("fallback", "fallback_rate", _fmt_rate),
    ("error", "error_rate", _fmt_rate), ("Ask a human", "ask_human_rate", _fmt_rate),
    ("latency p50", "latency_p50_ms", _fmt_ms), ("latency p95", "latency_p95_ms", _fmt_ms),
    ("cost per answer", "cost_per_answer", _fmt_cost),
]


async def canary_view(db: Database, settings: Settings) -> dict[str, Any]:
    """The latest canary with each arm's figures (95 % intervals) and the sequential test's current verdict —
    for the dashboard (JSON) and the ``canary status`` command."""
    async with db.asession() as session:
        canary = await latest_canary(session)
    if canary is None:
        return {"canary": None}
    assert canary.id is not None
    info: dict[str, Any] = {
        "id": canary.id, "candidate": canary.candidate, "baseline": canary.baseline, "mode": canary.mode,
        "share": canary.share, "excluded": canary.excluded, "state": canary.state, "min_answers": canary.min_answers,
        "max_hours": canary.max_hours, "alpha": canary.alpha, "margins": canary.margins,
        "started_by": canary.started_by, "started_at": _aware(canary.started_at).isoformat(),
        "ends_by": _deadline(canary).isoformat(),
        "ended_at": _aware(canary.ended_at).isoformat() if canary.ended_at else None, "ended_by": canary.ended_by,
        "decision": canary.decision, "test": TEST_NAME,
    }
    if canary.mode == SHADOW:
        summary = await shadow_summary(db, canary.id)
        return {"canary": info, "shadow": summary, "shadow_text": shadow_text(summary),
                "budget_usd": canary.shadow_budget_usd}
    arms = await arm_data(db, canary.id)
    verdict = verdict_for(canary, arms)
    return {"canary": info, "arms": {a: d.figures() for a, d in arms.items()}, "verdict": verdict.as_dict()}


def canary_markdown(view: dict[str, Any]) -> str:
    info = view.get("canary")
    if info is None:
        return "No canary yet. Start one with `canary RELEASE --share 10` (see `help`)."
    head = (f"**Canary #{info['id']}: `{info['candidate']}` vs `{info['baseline']}`** — {info['state']}"
            f" ({info['mode']}, {info['share']:g}% of {'questions sampled' if info['mode'] == SHADOW else 'conversations'}"
            f"{', excluding ' + ', '.join(info['excluded']) if info['excluded'] else ''}), started "
            f"{info['started_at'][:16]} by {info['started_by']}; ends by {info['ends_by'][:16]} UTC")
    lines = [head]
    if info["mode"] == SHADOW:
        lines.append(f"Shadow: {view['shadow_text']} (budget ${view['budget_usd']:.2f}).")
    else:
        arms = view["arms"]
        lines.append(f"\n| | baseline | candidate |\n|---|---|---|\n| answers | {arms[BASELINE]['answers']} | "
                     f"{arms[CANDIDATE]['answers']} (min {info['min_answers']}) |")
        for label, key, fmt in FIGURE_ROWS:
            lines.append(f"| {label} | {fmt(arms[BASELINE][key])} | {fmt(arms[CANDIDATE][key])} |")
        lines.append("\n95% intervals per arm. Sequential test (candidate − baseline, always-valid):")
        for comp in view["verdict"]["comparisons"]:
            mark = "🔴 worse" if comp["worse"] else ("🟢 within margin" if comp["not_worse"] else
                                                    ("⚪ too few" if not comp["ready"] else "⚪ undecided"))
            lines.append(f"- {mark} — {comp['text']}")
        if info["state"] == RUNNING:
            lines.append(f"\nNow: **{view['verdict']['action']}** — {view['verdict']['reason']}")
    if info["decision"]:
        lines.append(f"\nDecision: {info['decision']}")
    return "\n".join(lines)

