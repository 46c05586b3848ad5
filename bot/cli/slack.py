"""``deskmate slack …``: Socket Mode on its own, the app manifest, per-channel policy, and the event inbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

import bot.slack
from bot.core.settings import get_settings
from bot.redis_conn import connect
from bot.slack import inbox
from bot.slack.channels import UNSET, configure_channel, describe, list_policies
from bot.slack.socket_mode import run_socket_mode
from feedback.db import get_database

app = typer.Typer(help="Slack: Socket Mode, the app manifest, per-channel policy, the event inbox.",
                  no_args_is_help=True)

#: The Slack app manifest ships with the Slack package.
MANIFEST = Path(bot.slack.__file__).with_name("manifest.yaml")


@app.command("socket")
def socket_command() -> None:
    """Connect to Slack over Socket Mode (needs DESKMATE_SLACK_BOT_TOKEN and DESKMATE_SLACK_APP_TOKEN).

    Run a worker too (`deskmate worker`). `deskmate web` also connects by itself when the app token is set."""
    settings = get_settings()
    get_database(settings.database_url_resolved()).migrate()
    try:
        asyncio.run(run_socket_mode(settings))
    except KeyboardInterrupt:
        pass


@app.command("inbox")
def inbox_command(
    retry_set_aside: Annotated[bool, typer.Option(
        "--retry-set-aside", help="Put the events set aside after repeated failures back in the inbox.")] = False,
) -> None:
    """Slack events acknowledged (over HTTP or Socket Mode) and not yet handed to intake: waiting, in a web
    process's hands, and set aside after repeated failures (see docs/operations.md)."""

    async def run() -> tuple[int, dict[str, int]]:
        redis = await connect(get_settings())
        try:
            moved = await inbox.retry_set_aside(redis) if retry_set_aside else 0
            return moved, await inbox.status(redis)
        finally:
            await redis.aclose()

    moved, counts = asyncio.run(run())
    if retry_set_aside:
        typer.echo(f"put back in the inbox: {moved}")
    typer.echo("  ".join(f"{name.replace('_', ' ')}: {count}" for name, count in counts.items()))


@app.command("manifest")
def manifest_command() -> None:
    """Print the Slack app manifest (create the app at api.slack.com/apps → From a manifest)."""
    text = MANIFEST.read_text()
    command = get_settings().slack_command
    if command != "/deskmate":
        text = text.replace("command: /deskmate", f"command: {command}")
    typer.echo(text, nl=False)


@app.command("channel")
def channel_command(
    channel: Annotated[str, typer.Argument(help="Channel id, e.g. C0123ABCD (channel details → bottom).")],
    enable: Annotated[Optional[bool], typer.Option("--enable/--disable", help="Answer in this channel at all.")] = None,
    respond_to: Annotated[Optional[str], typer.Option(help="'mentions' (default) or 'all' top-level messages.")] = None,
    sets: Annotated[Optional[str], typer.Option(help="Comma-separated knowledge sets it may cite; 'all' = every set.")] = None,
    sources: Annotated[Optional[str], typer.Option(help="'public' (only sources marked public), 'all', or 'default' "
                                                        "(by channel type: public channels → public).")] = None,
) -> None:
    """Show or change one channel's policy (changes are audited)."""
    source_values = {"public": True, "all": False, "default": None}
    if sources is not None and sources not in source_values:
        raise typer.BadParameter("--sources must be public, all or default")
    db = get_database(get_settings().database_url_resolved())
    db.migrate()
    changes: dict[str, Any] = dict(
        enabled=UNSET if enable is None else enable,
        respond_to=UNSET if respond_to is None else respond_to,
        knowledge_sets=UNSET if sets is None else (None if sets == "all" else [s.strip() for s in sets.split(",") if s.strip()]),
        public_only=UNSET if sources is None else source_values[sources],
    )
    try:
        before, after = asyncio.run(configure_channel(db, channel, **changes))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"{channel}: {after}" if before == after else f"{channel}: {before}  →  {after}")


@app.command("channels")
def channels_command() -> None:
    """Slack channels with their own policy (all others use the defaults)."""
    db = get_database(get_settings().database_url_resolved())
    db.migrate()
    rows = asyncio.run(list_policies(db))
    if not rows:
        typer.echo("No channel has its own policy: defaults everywhere (enabled, mentions, public channels see "
                   "public sources only).")
    for row in rows:
        typer.echo(f"{row.channel}: {describe(row)}")
