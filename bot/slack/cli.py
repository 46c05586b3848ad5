"""``deskmate slack …``: Socket Mode on its own, and the app manifest to paste into api.slack.com."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

app = typer.Typer(help="Slack: Socket Mode and the app manifest.", no_args_is_help=True)

MANIFEST = Path(__file__).with_name("manifest.yaml")


@app.command("socket")
def socket_command() -> None:
    """Connect to Slack over Socket Mode (needs DESKMATE_SLACK_BOT_TOKEN and DESKMATE_SLACK_APP_TOKEN).

    Run a worker too (`deskmate worker`). `deskmate web` also connects by itself when the app token is set."""
    from bot.settings import get_settings
    from bot.slack.socket_mode import run_socket_mode

    settings = get_settings()
    from feedback.db import get_database

    get_database(settings.database_url_resolved()).migrate()
    try:
        asyncio.run(run_socket_mode(settings))
    except KeyboardInterrupt:
        pass


@app.command("manifest")
def manifest_command() -> None:
    """Print the Slack app manifest (create the app at api.slack.com/apps → From a manifest)."""
    from bot.settings import get_settings

    text = MANIFEST.read_text()
    command = get_settings().slack_command
    if command != "/deskmate":
        text = text.replace("command: /deskmate", f"command: {command}")
    typer.echo(text, nl=False)
