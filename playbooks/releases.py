"""Releases: immutable, named bundles of prompt, model, generation and retrieval settings and an index version.

Exactly one release is active: the newest :class:`ReleaseEvent` names it. Promoting and rolling back only add an
event (a pointer change), so every process sees the change at its next message, and rolling back the index is
just pointing at a release whose ``index_version`` is still kept.

The first start creates the release ``initial`` from the settings; it follows the latest index version
(``index_version`` None). Releases made with ``release create`` pin the index version they were made with
unless told otherwise. Reading releases (one by name, the active one, that first ``initial``) is
:mod:`feedback.releases`; this module changes which release is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.settings import Settings
from feedback.db import get_database
from feedback.models import Release, ReleaseEvent
from feedback.releases import active_release, get_release, latest_events
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexNotFound, IndexStore
from playbooks.gate import GateResult, PromotionGate, resolve_gate, run_gate

#: ``promote(gate=DEFAULT_GATE)`` asks the gate found by :func:`playbooks.gate.resolve_gate`.
DEFAULT_GATE = object()
#: Fields a new release may override; everything else is copied from its base release.
MUTABLE_FIELDS = ("prompt_template", "prompt_version", "model", "max_tokens", "temperature", "kb", "index_version",
                  "retrieval_k", "retrieval_candidates", "min_score", "not_found_level", "fusion", "knowledge_sets",
                  "query_rewrite", "rewrite_model", "notes")
#: How a release makes its search query (``bot.pipeline.search_query``).
QUERY_REWRITE_MODES = ("auto", "llm", "offline", "off")


class ReleaseError(ValueError):
    """A release operation that cannot be done, with a message for the operator."""


async def create_release(session: AsyncSession, settings: Settings, name: str, *, actor: str,
                         base: str | None = None, **changes: Any) -> Release:
    """A new release copying ``base`` (default: the active one) with ``changes`` applied. Not activated."""
    name = name.strip()
    if not name or len(name) > 128 or any(ch.isspace() for ch in name):
        raise ReleaseError("a release name is 1-128 characters without spaces")
    if await get_release(session, name) is not None:
        raise ReleaseError(f"release '{name}' already exists (releases are immutable: pick a new name)")
    unknown = set(changes) - set(MUTABLE_FIELDS)
    if unknown:
        raise ReleaseError(f"unknown release fields: {', '.join(sorted(unknown))}")
    source = await get_release(session, base) if base else await active_release(session, settings)
    if source is None:
        raise ReleaseError(f"base release '{base}' does not exist")
    data = {f: getattr(source, f) for f in MUTABLE_FIELDS}
    data.update({k: v for k, v in changes.items() if v is not None or k == "index_version"})
    if "index_version" not in changes and data["index_version"] is None:
        data["index_version"] = IndexStore(KnowledgeConfig.from_settings(settings)).latest_version(data["kb"])
    if data["retrieval_k"] is not None and data["retrieval_k"] < 0:
        raise ReleaseError("retrieval_k must be ≥ 0")
    if data["not_found_level"] is not None and not 0.0 <= data["not_found_level"] <= 1.0:
        raise ReleaseError("not_found_level is a share of unrelated questions: between 0 and 1")
    if data["query_rewrite"] not in QUERY_REWRITE_MODES:
        raise ReleaseError(f"query_rewrite must be one of {', '.join(QUERY_REWRITE_MODES)}")
    if not str(data["rewrite_model"] or "").strip():
        raise ReleaseError("rewrite_model must name a model")
    release = Release(name=name, created_by=actor, **data)
    session.add(release)
    await session.commit()
    await session.refresh(release)
    return release


class GateRefused(ReleaseError):
    """The promotion gate said no (promote with ``--force`` to override it)."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(f"the promotion gate refused: {result.message or 'no reason given'} "
                         "(use --force to promote anyway; it is audited)")
        self.result = result


async def _switchable(session: AsyncSession, settings: Settings, name: str) -> tuple[Release, Release]:
    """The release ``name`` and the active one, refusing a missing or already active target."""
    release = await get_release(session, name)
    if release is None:
        raise ReleaseError(f"release '{name}' does not exist (see `deskmate release list`)")
    current = await active_release(session, settings)
    if current.name == name:
        raise ReleaseError(f"release '{name}' is already active")
    return release, current


async def activate(session: AsyncSession, settings: Settings, name: str, *, actor: str, action: str,
                   forced: bool = False) -> tuple[str, str]:
    """Point the active release at ``name``; returns (before, after). No gate: see :func:`promote`."""
    release, current = await _switchable(session, settings, name)
    if release.index_version is not None:
        try:
            IndexStore(KnowledgeConfig.from_settings(settings)).resolve_version(release.kb, release.index_version)
        except IndexNotFound as exc:
            raise ReleaseError(f"cannot activate '{name}': {exc}") from exc
    session.add(ReleaseEvent(release_name=name, previous=current.name, action=action, actor=actor, forced=forced))
    await session.commit()
    return current.name, name


@dataclass
class Promotion:
    before: str
    after: str
    gate: GateResult
    forced: bool  # True only when the gate refused and --force overrode it


async def promote(session: AsyncSession, settings: Settings, name: str, *, actor: str, force: bool = False,
                  gate: PromotionGate | None | object = DEFAULT_GATE) -> Promotion:
    """Make ``name`` the active release after asking the promotion gate (default: :func:`resolve_gate`)."""
    chosen = resolve_gate() if gate is DEFAULT_GATE else gate
    release, current = await _switchable(session, settings, name)
    result = await run_gate(chosen, session, settings, release, current)  # type: ignore[arg-type]
    if not result.ok and not force:
        raise GateRefused(result)
    overridden = not result.ok
    before, after = await activate(session, settings, name, actor=actor, action="promote", forced=overridden)
    return Promotion(before=before, after=after, gate=result, forced=overridden)


async def previous_release_name(session: AsyncSession, settings: Settings) -> str:
    """The release that was active before the current one."""
    current = (await active_release(session, settings)).name
    for event in await latest_events(session, 200):
        if event.release_name != current:
            return event.release_name
        if event.previous and event.previous != current:
            return event.previous
    raise ReleaseError("there is no earlier release to roll back to")


async def rollback(session: AsyncSession, settings: Settings, name: str | None, *, actor: str) -> tuple[str, str]:
    target = name or await previous_release_name(session, settings)
    return await activate(session, settings, target, actor=actor, action="rollback")


async def list_releases(session: AsyncSession) -> list[Release]:
    return list((await session.exec(select(Release).order_by(col(Release.id)))).all())


async def release_history(session: AsyncSession, limit: int = 20) -> list[ReleaseEvent]:
    return await latest_events(session, limit)


def pinned_index_versions(settings: Settings, kb: str) -> set[int]:
    """Index versions that some release points at (synchronous: used by ingestion before pruning)."""
    db = get_database(settings.database_url_resolved())
    db.migrate()
    with Session(db.engine) as session:
        rows = session.exec(select(Release.index_version).where(Release.kb == kb)).all()
    return {int(v) for v in rows if v is not None}
