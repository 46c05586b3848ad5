"""The kernel every layer may import: settings, logging, the platform-neutral types, the clock and user ids.

It imports nothing else of the project (an import-linter contract in ``pyproject.toml`` checks it), so that
``knowledge``, ``feedback`` and ``playbooks`` can share these without reaching up into ``bot``.
"""
