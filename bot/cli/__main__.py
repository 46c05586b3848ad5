"""``python -m bot.cli`` runs the ``deskmate`` command."""

from bot.cli import app

if __name__ == "__main__":  # not when a spawned child process (the search process) imports it
    app()
