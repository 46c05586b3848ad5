"""Per-channel policy for Slack channels, as operators set it (``deskmate slack channel …``).

A channel without a row gets the defaults of :mod:`playbooks.channel_policy` (enabled; mentions only; public channels
see only sources marked public). A row overrides any of them; every change is written to the audit log. The
queries are :mod:`playbooks.channel_policy`'s; this module binds them to Slack and describes a row for the CLI.
"""

from __future__ import annotations

import getpass
from typing import Any

from bot.core.types import Platform
from feedback.db import Database
from playbooks import audit
from playbooks import channel_policy
from playbooks.channel_policy import ChannelPolicy, get_policy_row, set_policy

UNSET = object()


def describe(row: ChannelPolicy | None) -> str:
    if row is None:
        return "defaults (enabled, mentions, sources by channel type)"
    sets = "all sets" if row.knowledge_sets is None else ("no sets" if not row.knowledge_sets
                                                          else "sets " + ",".join(row.knowledge_sets))
    sources = {None: "sources by channel type", True: "public sources only", False: "all sources"}[row.public_only]
    return f"{'enabled' if row.enabled else 'disabled'}, {row.respond_to}, {sets}, {sources}"


async def list_policies(db: Database) -> list[ChannelPolicy]:
    """Slack channels with their own policy row, by channel id."""
    async with db.asession() as session:
        return await channel_policy.list_policies(session, Platform.SLACK.value)


async def configure_channel(db: Database, channel: str, *, actor: str = "", **changes: Any) -> tuple[str, str]:
    """Apply ``changes`` (enabled, respond_to, knowledge_sets, public_only; ``UNSET`` values are skipped) to the
    channel's row; returns (before, after) descriptions. Audited as a CLI action."""
    fields = {k: v for k, v in changes.items() if v is not UNSET}
    if "respond_to" in fields and fields["respond_to"] not in ("mentions", "all"):
        raise ValueError("respond_to must be 'mentions' or 'all'")
    async with db.asession() as session:
        before = describe(await get_policy_row(session, Platform.SLACK.value, channel))
        after = before
        if fields:
            after = describe(await set_policy(session, Platform.SLACK.value, channel, **fields))
            await audit.record(session, actor=actor or f"cli:{getpass.getuser()}", platform="cli",
                               where=f"slack:{channel}", command=f"slack channel {channel} {fields}",
                               allowed=True, before=before, after=after)
    return before, after
