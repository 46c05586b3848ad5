"""Per-channel policy: whether Deskmate answers in a channel, to what, and which sources it may cite there.

Defaults when a channel has no :class:`~feedback.models.ChannelPolicy` row: enabled; answers mentions (and
every message in DMs); public channels see only sources marked ``visibility: public``; DMs, private channels and
group chats see every source. A row overrides any of these.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.clock import utcnow
from feedback.models import ChannelPolicy
from knowledge.retrieval import SearchFilter

#: Channel types whose members are "anyone in the organisation": only public sources may be cited there.
PUBLIC_CHANNEL_TYPES = {"channel", "public", "team", "teams_channel"}


@dataclass(frozen=True)
class EffectivePolicy:
    enabled: bool
    respond_to: str  # "mentions" | "all"
    search_filter: SearchFilter


async def get_policy_row(session: AsyncSession, platform: str, channel: str) -> ChannelPolicy | None:
    stmt = select(ChannelPolicy).where(ChannelPolicy.platform == platform, ChannelPolicy.channel == channel)
    return (await session.exec(stmt)).first()


async def list_policies(session: AsyncSession, platform: str) -> list[ChannelPolicy]:
    """The platform's channels that have their own policy row, by channel id."""
    stmt = select(ChannelPolicy).where(ChannelPolicy.platform == platform).order_by(col(ChannelPolicy.channel))
    return list((await session.exec(stmt)).all())


def default_public_only(channel_type: str) -> bool:
    return channel_type.lower() in PUBLIC_CHANNEL_TYPES


async def resolve_policy(session: AsyncSession, platform: str, channel: str, channel_type: str,
                         release_sets: list[str] | None = None) -> EffectivePolicy:
    """The policy for one message. ``release_sets`` (from the active release) narrows the sets further."""
    row = await get_policy_row(session, platform, channel) if channel else None
    return effective_policy(row, channel_type, release_sets)


def effective_policy(row: ChannelPolicy | None, channel_type: str,
                     release_sets: list[str] | None = None) -> EffectivePolicy:
    """:func:`resolve_policy` from the channel's row (None: it has none), already read."""
    public_only = default_public_only(channel_type)
    sets: list[str] | None = None
    enabled, respond_to = True, "mentions"
    if row is not None:
        enabled, respond_to = row.enabled, row.respond_to
        if row.public_only is not None:
            public_only = row.public_only
        sets = list(row.knowledge_sets) if row.knowledge_sets is not None else None
    if release_sets:
        sets = [s for s in release_sets if sets is None or s in sets]
    return EffectivePolicy(enabled=enabled, respond_to=respond_to,
                           search_filter=SearchFilter(knowledge_sets=sets, public_only=public_only))


async def set_policy(session: AsyncSession, platform: str, channel: str, **fields: object) -> ChannelPolicy:
    row = await get_policy_row(session, platform, channel) or ChannelPolicy(platform=platform, channel=channel)
    for key, value in fields.items():
        if not hasattr(row, key):
            raise ValueError(f"unknown channel policy field '{key}'")
        setattr(row, key, value)
    row.updated_at = utcnow()  # every process's cached policies are read again (playbooks.state)
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return row
