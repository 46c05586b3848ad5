"""An :class:`~bot.core.types.Answer` → a Block Kit message; also the placeholder, notices and the 👎 modal.

Slack's limits shape this module: a section's text is at most 3,000 characters (longer answers become several
sections), a message has at most 50 blocks, a button's value at most 2,000 characters (it carries only the
interaction id). Fallback, "not found" and maintenance answers carry a visible label so nobody mistakes an
automatic excerpt for a written answer; the wording of labels and the placeholder is :mod:`bot.status_text`'s.

The answer's body is a ``markdown`` block (standard Markdown, rendered by Slack: headings, lists, tables, code;
:func:`~bot.slack.mrkdwn.markdown_for_block`); the label, sources and buttons are mrkdwn context and actions as
before, and the notification ``text`` is the mrkdwn conversion (:func:`~bot.slack.mrkdwn.markdown_to_mrkdwn`),
which also renders answers too long for one message's markdown and admin replies.

Every piece of outside text — the answer, source titles and locations, a notice — reaches the message through
:mod:`bot.slack.mrkdwn` (:func:`~bot.slack.mrkdwn.escape`, :func:`~bot.slack.mrkdwn.link`,
:func:`~bot.slack.mrkdwn.markdown_link`, the two converters): nothing posted can carry a ``<!channel>``, ``<@U…>``
or other control sequence Deskmate did not write, nor a link whose text names another address than its target.
"""

from __future__ import annotations

import json
from typing import Any

from bot.core.types import Answer, Source, Status
from bot.slack.mrkdwn import (
    escape,
    link,
    markdown_for_block,
    markdown_to_mrkdwn,
    safe_cut,
    safe_url,
    split_text,
    truncate,
)
from bot.status_text import CONTINUED, CONTINUED_BELOW, PLACEHOLDER, Progress, StatusLabel, answer_body, answer_label
from feedback.votes import DOWN_REASONS
from knowledge.sources import display_location, is_url

SECTION_LIMIT = 3000
MAX_BLOCKS = 50
NOTIFICATION_TEXT_LIMIT = 3000
#: The answer text one message carries (:func:`render_answer_parts`): Slack refuses a message whose blocks hold
#: much more than ~12,000 characters of text (``msg_blocks_too_long``), whatever the per-block limits allow.
MESSAGE_TEXT_BUDGET = 10_000
#: Slack's limit on the text of all ``markdown`` blocks of one message (slack_sdk's ``MarkdownBlock``).
MARKDOWN_BLOCK_LIMIT = 12_000

VOTE_UP = "deskmate_vote_up"
VOTE_DOWN = "deskmate_vote_down"
ESCALATE = "deskmate_escalate"
FEEDBACK_VIEW = "deskmate_feedback"
REASON_BLOCK = "reason"
COMMENT_BLOCK = "comment"

Blocks = list[dict[str, Any]]


def mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def markdown_block(text: str) -> dict[str, Any]:
    """Slack's ``markdown`` block: ``text`` is standard Markdown already made safe (:func:`markdown_for_block`)."""
    return {"type": "markdown", "text": text}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def label_mrkdwn(label: StatusLabel) -> str:
    """A status label (worded by :mod:`bot.status_text`) as mrkdwn: icon, bold title, detail."""
    return f"{label.icon} *{escape(label.title)}* — {escape(label.detail)}"


def source_line(source: Source) -> str:
    text = f"[{source.number}] {source.label}"
    if is_url(source.location or "") and safe_url(source.location):
        return link(source.location, text)
    location = display_location(source.location, source.doc_id)  # a path is shown, never linked
    where = f" — {escape(location)}" if location else ""
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


def _markdown_body(answer: Answer) -> str:
    return markdown_for_block(answer_body(answer.text, fallback=answer.fallback,
                                          fallback_reason=answer.fallback_reason)) or "_(no answer text)_"


def render_answer(answer: Answer, *, ask_a_human: bool = False, budget: int = MESSAGE_TEXT_BUDGET) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}`` for chat.postMessage / chat.update / a response_url: the body in one
    ``markdown`` block when it fits (``budget``), else in mrkdwn sections (cut at Slack's 50 blocks)."""
    body = markdown_to_mrkdwn(answer_body(answer.text, fallback=answer.fallback,
                                          fallback_reason=answer.fallback_reason)) or "_(no answer text)_"
    label = answer_label(answer)
    head: Blocks = [context(label_mrkdwn(label))] if label else []
    tail: Blocks = sources_blocks(answer.sources)
    if answer.interaction_id is not None and answer.status in (Status.ANSWERED, Status.NOT_FOUND):
        tail.append(feedback_actions(answer.interaction_id, ask_a_human=ask_a_human))
    notification = truncate((f"{escape(label.text)}\n" if label else "") + body, NOTIFICATION_TEXT_LIMIT)
    markdown = _markdown_body(answer)
    if len(markdown) <= min(budget, MARKDOWN_BLOCK_LIMIT):
        return {"text": notification, "blocks": head + [markdown_block(markdown)] + tail}
    room = MAX_BLOCKS - len(head) - len(tail)
    pieces = split_text(body, SECTION_LIMIT)
    if len(pieces) > room:
        pieces = pieces[:room]
        note = "\n_… (the answer was too long for Slack and was cut here)_"
        pieces[-1] = pieces[-1][: safe_cut(pieces[-1], SECTION_LIMIT - len(note))] + note
    blocks = head + [mrkdwn_section(p) for p in pieces] + tail
    return {"text": notification, "blocks": blocks}


def render_answer_parts(answer: Answer, *, ask_a_human: bool = False,
                        budget: int = MESSAGE_TEXT_BUDGET) -> list[dict[str, Any]]:
    """The answer as one message, or — too long for one (more than ``budget`` characters of text) — as several,
    in order: the label on the first, the sources and buttons on the last, each but the last ending with
    "(continued below)" and each but the first starting with "(continued)", each part's text in one ``markdown``
    block. Nothing is cut."""
    body = _markdown_body(answer)
    if len(body) <= budget:
        return [render_answer(answer, ask_a_human=ask_a_human, budget=budget)]
    label = answer_label(answer)
    tail: Blocks = sources_blocks(answer.sources)
    if answer.interaction_id is not None and answer.status in (Status.ANSWERED, Status.NOT_FOUND):
        tail.append(feedback_actions(answer.interaction_id, ask_a_human=ask_a_human))
    room = budget - len(CONTINUED) - len(CONTINUED_BELOW) - 4
    chunks = split_text(body, room)
    messages: list[dict[str, Any]] = []
    for n, chunk in enumerate(chunks):
        first, last = n == 0, n == len(chunks) - 1
        text = ("" if first else CONTINUED + "\n") + chunk + ("" if last else "\n" + CONTINUED_BELOW)
        head: Blocks = [context(label_mrkdwn(label))] if first and label else []
        blocks = head + [markdown_block(text)] + (tail if last else [])
        note = (f"{escape(label.text)}\n" if first and label else "") + markdown_to_mrkdwn(text)
        messages.append({"text": truncate(note, NOTIFICATION_TEXT_LIMIT), "blocks": blocks[:MAX_BLOCKS]})
    return messages


def render_progress(progress: Progress) -> dict[str, Any]:
    """The placeholder showing what is happening now ("Searching the handbook…", "Writing…")."""
    return {"text": escape(progress.text), "blocks": [context(escape(progress.with_icon))]}


def render_placeholder() -> dict[str, Any]:
    return {"text": PLACEHOLDER.text, "blocks": [context(PLACEHOLDER.with_icon)]}


def render_notice(message: str, *, emoji: str = ":warning:") -> dict[str, Any]:
    """A short plain-text message in place of an answer (failures, refusals)."""
    return {"text": escape(message), "blocks": [mrkdwn_section(f"{emoji} {escape(message)}")]}


def render_markdown(markdown: str) -> dict[str, Any]:
    """Any Markdown (admin replies, help) as mrkdwn sections."""
    text = markdown_to_mrkdwn(markdown) or " "
    pieces = split_text(text, SECTION_LIMIT)[:MAX_BLOCKS]
    return {"text": truncate(text, NOTIFICATION_TEXT_LIMIT), "blocks": [mrkdwn_section(p) for p in pieces]}


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
