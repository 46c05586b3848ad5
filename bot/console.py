"""The ``deskmate`` console script's entry point, kept free of imports on purpose.

The script pip writes starts with ``from bot.console import main``. A ``spawn`` child process — the worker's
search process (:mod:`knowledge.search_process`) — begins by running its parent's main script again (as
``__mp_main__``), so whatever that first line imports, every child imports too. Were it :mod:`bot.cli` (every
layer, the Anthropic, Slack and Bot Framework SDKs), each search process would spend seconds of CPU and over a
hundred MB on modules it never uses; :func:`main` imports the command line by name, when the command runs.
"""

from __future__ import annotations

import importlib

#: the typer application's module (its ``app``)
COMMAND_LINE = "bot.cli"


def main() -> None:
    """Run the ``deskmate`` command."""
    importlib.import_module(COMMAND_LINE).app()
