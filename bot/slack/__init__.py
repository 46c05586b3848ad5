"""The Slack adapter: events, clicks and ``/deskmate`` in (HTTP or Socket Mode); answers out.

- :mod:`bot.slack.app` — the bolt ``AsyncApp`` and what its listeners share (:mod:`bot.slack.adapter`)
- :mod:`bot.slack.listeners` — events → questions; :mod:`bot.slack.actions` — buttons and the 👎 modal;
  :mod:`bot.slack.commands` — ``/deskmate``
- :mod:`bot.slack.rendering` / :mod:`bot.slack.mrkdwn` — an answer → Block Kit; ``mrkdwn`` is also the only way
  outside text (escaped) and links get into a message
- :mod:`bot.slack.delivery` — the worker's deliverer; :mod:`bot.slack.client` / :mod:`bot.slack.pacing` — 429s
  and per-channel pacing
- :mod:`bot.slack.http` — ``/slack/events`` on the web process; :mod:`bot.slack.socket_mode` — Socket Mode
"""
