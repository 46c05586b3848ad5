"""An :class:`~bot.core.types.Answer` → a Block Kit message; also the placeholder, notices and the 👎 modal.

Slack's limits shape this module: a section's text is at most 3,000 characters (longer answers become several
sections), a message has at most 50 blocks, a button's value at most 2,000 characters (it carries only the
interaction id). Fallback, "not found" and maintenance answers carry a visible label so nobody mistakes an
automatic excerpt for a written answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bot.core.types import Answer, Source, Status
from bot.fallback import fallback_label
from bot.slack.mrkdwn import escape, escape_link_text, markdown_to_mrkdwn, split_text
from feedback.votes import DOWN_REASONS

SECTION_LIMIT = 3000
MAX_BLOCKS = 50
NOTIFICATION_TEXT_LIMIT = 3000

PLACEHOLDER_TEXT = "Looking through the handbook…"

VOTE_UP = "deskmate_vote_up"
VOTE_DOWN = "deskmate_vote_down"
ESCALATE = "deskmate_escalate"
FEEDBACK_VIEW = "deskmate_feedback"
REASON_BLOCK = "reason"
COMMENT_BLOCK = "comment"

Blocks = list[dict[str, Any]]


def mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def label_for(answer: Answer) -> str | None:
    """The visible label above an answer that is not a normal, model-written one."""
    if answer.status == Status.MAINTENANCE:
        return ":double_vertical_bar: *Deskmate is paused* — this is an automatic reply."
    if answer.status == Status.NOT_FOUND:
        return ":mag: *Not found in the handbook* — I won't guess; the closest sources are listed below."
    if answer.status == Status.ERROR:
        return ":warning: *Something went wrong* while answering."
    if answer.fallback:
        reason = f" ({escape(answer.fallback_reason)})" if answer.fallback_reason else ""
        return f":warning: *Automatic excerpt* — quoted from the sources, not written by the AI model{reason}."
    return None


def _without_fallback_label(answer: Answer) -> str:
    """The fallback text starts with its own Markdown label; the Block Kit label replaces it."""
    text = answer.text
    if answer.fallback:
        own = fallback_label(answer.fallback_reason or "")
        text = text.removeprefix(own) if text.startswith(own) else re.sub(
            r"\A_Automatic excerpt — not written by the AI model[^\n]*_\s*", "", text)
    return text.strip()


def source_line(source: Source) -> str:
    text = f"[{source.number}] {source.label}"
    if re.match(r"^https?://", source.location or ""):
        return f"<{source.location}|{escape_link_text(text)}>"
    where = f" — {escape(source.location)}" if source.location else ""
    return f"{escape(text)}{where}"


def sources_blocks(sources: list[Source]) -> Blocks:
    if not sources:
        return []
    lines = [source_line(s) for s in sorted(sources, key=lambda s: s.number)]
    elements: list[dict[str, Any]] = []
    current = "*Sources*"
    for line in lines:
        if len(current) + 1 + len(line) > SECTION_LIMIT:
            elements.append({"type": "mrkdwn", "text": current})
            current = line
        else:
            current = f"{current}\n{line}"
    elements.append({"type": "mrkdwn", "text": current})
    return [{"type": "context", "elements": elements[:10]}]


def feedback_actions(interaction_id: int, *, ask_a_human: bool) -> dict[str, Any]:
    value = str(interaction_id)
    elements = [
        {"type": "button", "action_id": VOTE_UP, "text": plain(":+1: Helpful"), "value": value},
        {"type": "button", "action_id": VOTE_DOWN, "text": plain(":-1: Not helpful"), "value": value},
    ]
    if ask_a_human:
        elements.append({"type": "button", "action_id": ESCALATE, "text": plain(":raising_hand: Ask a human"),
                         "value": value})
    return {"type": "actions", "block_id": f"deskmate_feedback_{interaction_id}", "elements": elements}


def render_answer(answer: Answer, *, ask_a_human: bool = False) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}`` for chat.postMessage / chat.update / a response_url."""
    body = markdown_to_mrkdwn(_without_fallback_label(answer)) or "_(no answer text)_"
    label = label_for(answer)
    head: Blocks = [context(label)] if label else []
    tail: Blocks = sources_blocks(answer.sources)
    if answer.interaction_id is not None and answer.status in (Status.ANSWERED, Status.NOT_FOUND):
        tail.append(feedback_actions(answer.interaction_id, ask_a_human=ask_a_human))
    room = MAX_BLOCKS - len(head) - len(tail)
    pieces = split_text(body, SECTION_LIMIT)
    if len(pieces) > room:
        pieces = pieces[:room]
        note = "\n_… (the answer was too long for Slack and was cut here)_"
        pieces[-1] = pieces[-1][: SECTION_LIMIT - len(note)] + note
    blocks = head + [mrkdwn_section(p) for p in pieces] + tail
    text = (f"{_plain_label(label)}\n" if label else "") + body
    return {"text": _truncate(text, NOTIFICATION_TEXT_LIMIT), "blocks": blocks}


def _plain_label(label: str) -> str:
    return re.sub(r":[a-z_+-]+: ", "", label).replace("*", "")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_placeholder() -> dict[str, Any]:
    return {"text": PLACEHOLDER_TEXT, "blocks": [context(f":hourglass_flowing_sand: {PLACEHOLDER_TEXT}")]}


def render_notice(message: str, *, emoji: str = ":warning:") -> dict[str, Any]:
    """A short message in place of an answer (failures, refusals)."""
    return {"text": message, "blocks": [mrkdwn_section(f"{emoji} {escape(message)}")]}


def render_markdown(markdown: str) -> dict[str, Any]:
    """Any Markdown (admin replies, help) as mrkdwn sections."""
    text = markdown_to_mrkdwn(markdown) or " "
    pieces = split_text(text, SECTION_LIMIT)[:MAX_BLOCKS]
    return {"text": _truncate(text, NOTIFICATION_TEXT_LIMIT), "blocks": [mrkdwn_section(p) for p in pieces]}


def feedback_modal(interaction_id: int, *, channel: str = "", message_ts: str = "") -> dict[str, Any]:
    """The 👎 modal: what was wrong (a few predefined reasons) and optional free text."""
    metadata = json.dumps({"interaction_id": interaction_id, "channel": channel, "message_ts": message_ts})
    return {
        "type": "modal",
        "callback_id": FEEDBACK_VIEW,
        "private_metadata": metadata,
        "title": plain("What was wrong?", 24),
        "submit": plain("Send", 24),
        "close": plain("Cancel", 24),
        "blocks": [
            context("Thanks for telling us. Your answer helps us fix the handbook and Deskmate."),
            {"type": "input", "block_id": REASON_BLOCK, "optional": True,
             "label": plain("What was wrong with the answer?", 2000),
             "element": {"type": "radio_buttons", "action_id": REASON_BLOCK,
                         "options": [{"text": plain(text), "value": key} for key, text in DOWN_REASONS.items()]}},
            {"type": "input", "block_id": COMMENT_BLOCK, "optional": True,
             "label": plain("Anything else? (optional)", 2000),
             "element": {"type": "plain_text_input", "action_id": COMMENT_BLOCK, "multiline": True,
                         "max_length": 2000,
                         "placeholder": plain("What did you expect to find?", 150)}},
        ],
    }
