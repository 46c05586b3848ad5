"""``python -m bot.cli`` runs the ``deskmate`` command."""

from bot.cli import app

app()
