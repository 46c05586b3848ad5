"""Reading releases: one by name, and the active one (the newest :class:`ReleaseEvent` names it).

The first read of the active release creates ``initial`` from the settings (the default prompt of
:mod:`feedback.prompts`, following the latest index version) and points at it. Everything that changes which
release is active — create, promote with its gate, rollback — is a playbook: :mod:`playbooks.releases`.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.settings import Settings
from feedback.models import Release, ReleaseEvent
from feedback.prompts import DEFAULT_PROMPT_TEMPLATE, DEFAULT_PROMPT_VERSION

INITIAL_RELEASE = "initial"


def initial_release(settings: Settings) -> Release:
    return Release(
        name=INITIAL_RELEASE, prompt_template=DEFAULT_PROMPT_TEMPLATE, prompt_version=DEFAULT_PROMPT_VERSION,
        model=settings.anthropic_model, max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
        kb=settings.kb_name, index_version=None, retrieval_k=settings.retrieval_k,
        retrieval_candidates=settings.retrieval_candidates, min_score=settings.retrieval_min_score,
        not_found_level=settings.retrieval_not_found_level,
        fusion={"method": "weighted", "dense_weight": 0.7, "heading_weight": 0.2, "crosslingual": True,
                "crosslingual_weight": 0.1, "alternative_merge": "confidence"},
        knowledge_sets=[],
        query_rewrite=settings.query_rewrite, rewrite_model=settings.query_rewrite_model, notes="created from settings",
        created_by="deskmate",
    )


async def get_release(session: AsyncSession, name: str) -> Release | None:
    return (await session.exec(select(Release).where(Release.name == name))).first()


async def latest_events(session: AsyncSession, limit: int = 50) -> list[ReleaseEvent]:
    """The newest release events first (promote, rollback, bootstrap)."""
    stmt = select(ReleaseEvent).order_by(col(ReleaseEvent.id).desc()).limit(limit)
    return list((await session.exec(stmt)).all())


async def active_release(session: AsyncSession, settings: Settings) -> Release:
    """The active release, creating ``initial`` on first use."""
    events = await latest_events(session, 1)
    if events:
        release = await get_release(session, events[0].release_name)
        if release is not None:
            return release
    return await _bootstrap(session, settings)


async def _bootstrap(session: AsyncSession, settings: Settings) -> Release:
    release = await get_release(session, INITIAL_RELEASE)
    if release is None:
        release = initial_release(settings)
        session.add(release)
        try:
            await session.commit()
        except IntegrityError:  # another process bootstrapped at the same moment
            await session.rollback()
            release = await get_release(session, INITIAL_RELEASE)
            assert release is not None
    if not await latest_events(session, 1):
        session.add(ReleaseEvent(release_name=release.name, previous=None, action="bootstrap", actor="deskmate"))
        await session.commit()
    return release
