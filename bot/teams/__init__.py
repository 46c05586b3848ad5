"""Microsoft Teams: a thin Bot Framework adapter in front of the platform-neutral pipeline.

- :mod:`bot.teams.adapter` — the ``CloudAdapter`` and request authentication (JWT with an app id; none without)
- :mod:`bot.teams.auth` — the signing keys the JWT is checked with: fetched asynchronously, cached, single-flight
- :mod:`bot.teams.activities` — Teams activity → :class:`~bot.core.types.Question` (mentions, threads, ids)
- :mod:`bot.teams.bot` — the activity handler: questions, greeting, feedback, admin commands
- :mod:`bot.teams.cards` — :class:`~bot.core.types.Answer` → Adaptive Card
- :mod:`bot.teams.markdown` — the answer's Markdown → card elements Teams renders (headings, tables, quotes, code)
- :mod:`bot.teams.feedback` — 👍/👎, reasons, reactions and "Ask a human" on an answer
- :mod:`bot.teams.delivery` — the worker's deliverer: updates the placeholder in place, with retries
- :mod:`bot.teams.streaming` — streamed answers in personal chats (Teams' streaming activities, paced)
- :mod:`bot.teams.http` — ``POST /api/messages`` on the web process
- :mod:`bot.teams.package` — ``deskmate teams package``: the Teams app zip

Only these modules know Bot Framework types, so moving to the Microsoft 365 Agents SDK touches nothing else.
"""
