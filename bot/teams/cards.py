"""Rendering an :class:`~bot.core.types.Answer` as an Adaptive Card (schema 1.5) for Teams.

The card holds the answer (its Markdown converted to elements Teams renders: :mod:`bot.teams.markdown`), its
numbered sources, the fallback / not-found label and the feedback actions:
👍 / 👎 / "Ask a human" are ``Action.Execute`` (Universal Actions → an ``adaptiveCard/action`` invoke, answered
with a refreshed card) and each carries an ``Action.Submit`` ``fallback`` for clients without Universal Actions
(those send a message activity whose ``value`` is the same data). Teams refuses messages over ~28 KB, so the
card is kept under :data:`MAX_CARD_BYTES` by shortening the answer and dropping trailing sources. Labels, the
placeholder and acknowledgements are worded by :mod:`bot.status_text`.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from bot.core.types import Answer, Source, Status
from bot.teams.markdown import escape, markdown_elements
from bot.status_text import (
    PLACEHOLDER,
    VOTE_DOWN_THANKS,
    VOTE_UP_THANKS,
    StatusLabel,
    answer_body,
    answer_label,
    escalated,
)
from feedback.votes import DOWN_REASONS
from knowledge.sources import display_location, is_url

CARD_VERSION = "1.5"
MAX_CARD_BYTES = 20_000  # well under Teams' ~28 KB message limit, leaving room for the activity envelope
MAX_SOURCES = 8
SOURCES_CAN_SAVE_BYTES = 2_000  # a card further over the limit is shortened first (trailing sources save less)
DATA_KEY = "deskmate"  # every action's data carries {"deskmate": <action>, "iid": <interaction id>, …}

PLACEHOLDER_TEXT = PLACEHOLDER.with_icon
SHORTENED = "shortened to fit Teams"
MAX_MESSAGE_TEXT_BYTES = 16_000  # a streamed answer's text in its final message (Teams: ~28 KB with the card)


class CardState(StrEnum):
    OPEN = "open"  # no feedback yet
    ASK_REASON = "ask_reason"  # after 👎: what was wrong?
    THANKS_UP = "thanks_up"
    THANKS_DOWN = "thanks_down"
    ESCALATED = "escalated"


class Verb(StrEnum):
    VOTE = "vote"
    REASON = "reason"
    ESCALATE = "escalate"


def action_data(verb: Verb, interaction_id: int, **extra: Any) -> dict[str, Any]:
    return {DATA_KEY: verb.value, "iid": interaction_id, **extra}


def _execute(title: str, verb: Verb, data: dict[str, Any], *, style: str | None = None) -> dict[str, Any]:
    """``Action.Execute`` with an ``Action.Submit`` fallback carrying the same data."""
    action: dict[str, Any] = {"type": "Action.Execute", "title": title, "verb": f"deskmate.{verb.value}", "data": data,
                              "fallback": {"type": "Action.Submit", "title": title, "data": data}}
    if style:
        action["style"] = style
        action["fallback"]["style"] = style
    return action


def _text(text: str, **props: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **props}


def source_line(source: Source) -> str:
    label = escape(source.label.replace("[", "(").replace("]", ")"))
    if is_url(source.location):
        return f"{source.number}. [{label}]({source.location.replace(' ', '%20').replace(')', '%29')})"
    location = display_location(source.location, source.doc_id)  # a path is shown, never linked
    return f"{source.number}. {label} — {escape(location)}" if location else f"{source.number}. {label}"


def label_markdown(label: StatusLabel) -> str:
    """A status label (worded by :mod:`bot.status_text`) as card Markdown: icon, bold title, detail."""
    return f"{label.icon} **{label.title}** — {label.detail}"


def _feedback_section(interaction_id: int, state: CardState) -> list[dict[str, Any]]:
    vote_up = _execute("👍 Helpful", Verb.VOTE, action_data(Verb.VOTE, interaction_id, label="up"))
    vote_down = _execute("👎 Not helpful", Verb.VOTE, action_data(Verb.VOTE, interaction_id, label="down"))
    ask_human = _execute("🙋 Ask a human", Verb.ESCALATE, action_data(Verb.ESCALATE, interaction_id))
    items: list[dict[str, Any]] = []
    if state == CardState.ASK_REASON:
        items += [
            _text("**What was wrong with this answer?**", separator=True, spacing="Medium"),
            {"type": "Input.ChoiceSet", "id": "reason", "style": "expanded", "value": "wrong",
             "choices": [{"title": title, "value": key} for key, title in DOWN_REASONS.items()]},
            {"type": "Input.Text", "id": "comment", "isMultiline": True, "maxLength": 500,
             "placeholder": "Anything to add? (optional)"},
            {"type": "ActionSet", "actions": [
                _execute("Send", Verb.REASON, action_data(Verb.REASON, interaction_id), style="positive"),
                ask_human,
            ]},
        ]
        return items
    if state == CardState.THANKS_UP:
        items.append(_text(f"👍 {VOTE_UP_THANKS}", isSubtle=True, size="Small", separator=True))
    elif state == CardState.THANKS_DOWN:
        items.append(_text(f"👎 {VOTE_DOWN_THANKS}", isSubtle=True, size="Small", separator=True))
    elif state == CardState.ESCALATED:
        items.append(_text(f"🙋 {escalated()}", isSubtle=True, size="Small", separator=True))
    items.append({"type": "ActionSet", "actions": [vote_up, vote_down, ask_human]})
    return items


def message_text(answer: Answer, max_bytes: int = MAX_MESSAGE_TEXT_BYTES) -> str:
    """The answer's own text (Markdown, without the fallback's label) as the text of a message — a streamed
    answer's final message — shortened to ``max_bytes`` of UTF-8 when longer."""
    text = answer_body(answer.text, fallback=answer.fallback, fallback_reason=answer.fallback_reason)
    if len(text.encode()) <= max_bytes:
        return text
    cut = text.encode()[:max_bytes - 100].decode(errors="ignore")
    return cut.rsplit(" ", 1)[0] + f" … _({SHORTENED})_"


def answer_card(answer: Answer, *, state: CardState = CardState.OPEN, notice: str | None = None,
                text_in_message: bool = False) -> dict[str, Any]:
    """The Adaptive Card for an answer (kept under :data:`MAX_CARD_BYTES`). ``text_in_message``: the answer's
    text is the message's own text (a streamed answer, :mod:`bot.teams.streaming`), so the card holds only the
    label, the sources and the feedback actions."""
    text = "" if text_in_message else answer_body(answer.text, fallback=answer.fallback,
                                                   fallback_reason=answer.fallback_reason)
    sources = list(answer.sources[:MAX_SOURCES])
    shortened = False
    while True:
        card = _build(answer, text, sources, state, notice, shortened=shortened)
        size = len(json.dumps(card, ensure_ascii=False).encode())
        if size <= MAX_CARD_BYTES:
            return card
        overflow = size - MAX_CARD_BYTES
        if len(sources) > 3 and overflow <= SOURCES_CAN_SAVE_BYTES:
            sources = sources[:-1]
            continue
        # markup (a table's cells, a code block's lines) costs more bytes than its text: cut in proportion
        keep = max(200, int(len(text) * MAX_CARD_BYTES / size * 0.95))
        if keep >= len(text):  # nothing left to shorten
            if len(sources) > 3:
                sources = sources[:-1]
                continue
            return card
        text = text[:keep].rsplit(" ", 1)[0] + " …"
        shortened = True


def _build(answer: Answer, text: str, sources: list[Source], state: CardState, notice: str | None, *,
           shortened: bool = False) -> dict[str, Any]:
    body: list[dict[str, Any]] = []
    label = answer_label(answer)
    if label:
        body.append(_text(label_markdown(label), size="Small", color="Warning" if label.warning else "Default",
                          isSubtle=True))
    body += markdown_elements(text)  # the answer's Markdown as what Teams renders (bot/teams/markdown.py)
    if shortened:
        body.append(_text(f"_({SHORTENED})_", isSubtle=True, size="Small", spacing="Small"))
    if sources:
        body.append(_text("**Sources**", separator=True, spacing="Medium", size="Small"))
        body.append(_text("\n\n".join(source_line(s) for s in sources), size="Small", spacing="Small"))
    if notice:
        body.append(_text(notice, size="Small", isSubtle=True))
    interactive = answer.interaction_id is not None and answer.status in (Status.ANSWERED, Status.NOT_FOUND)
    if interactive:
        assert answer.interaction_id is not None
        body += _feedback_section(answer.interaction_id, state)
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": CARD_VERSION, "msteams": {"width": "Full"}, "body": body}


def card_has_content(card: dict[str, Any]) -> bool:
    return bool(card.get("body"))


def card_bytes(card: dict[str, Any]) -> int:
    return len(json.dumps(card, ensure_ascii=False).encode())
