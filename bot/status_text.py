"""What Deskmate tells people about a question's status, worded once for every chat surface.

Slack (Block Kit), Teams (Adaptive Cards) and the local chat (the page and the terminal) each *format* these
texts their own way — bold, colour, escaping — but none of them words a status itself:

- :func:`status_label` — the label above an answer that is not a normal, model-written one: not found in the
  handbook, an automatic (extractive) excerpt, the maintenance reply, an error; ``None`` for a normal answer;
- :func:`answer_body` — the answer text without the extractive answer's own leading label (the surface shows
  :func:`status_label` instead, so the label is not shown twice);
- :data:`PLACEHOLDER` — the "looking it up" message shown until the worker's answer replaces it;
- :data:`FAILURE_NOTICE` — what replaces the placeholder when answering failed for good;
- the acknowledgements of a vote and the outcomes of "Ask a human".

Example::

    label = status_label(answer.status, fallback=answer.fallback, fallback_reason=answer.fallback_reason)
    if label:
        print(f"{label.icon} {label.title} — {label.detail}")
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.core.types import Answer, Status
from bot.fallback import fallback_label


@dataclass(frozen=True)
class StatusLabel:
    """A label shown above an answer: ``<icon> <title> — <detail>`` with the title emphasised."""

    icon: str  # a Unicode emoji (Slack, Teams, browsers and terminals all show it)
    title: str
    detail: str
    warning: bool = False  # shown in a warning colour where the surface has one

    @property
    def text(self) -> str:
        """The label as one plain sentence (notifications, screen readers, the terminal)."""
        return f"{self.title} — {self.detail}"


@dataclass(frozen=True)
class Progress:
    """A short progress message with its icon."""

    icon: str
    text: str

    @property
    def with_icon(self) -> str:
        return f"{self.icon} {self.text}"


PLACEHOLDER = Progress("⏳", "Looking through the handbook…")

NOT_FOUND_LABEL = StatusLabel("🔍", "Not found in the handbook", "nothing here answers this, so I won't guess.")
MAINTENANCE_LABEL = StatusLabel("⏸️", "Deskmate is paused", "this is an automatic reply.")
ERROR_LABEL = StatusLabel("⚠️", "Something went wrong", "this answer could not be completed.", warning=True)
FALLBACK_TITLE = "Automatic excerpt"
FALLBACK_DETAIL = "quoted from the sources, not written by the AI model"

#: Replaces the placeholder when a question could not be answered at all (the job failed for good).
FAILURE_NOTICE = ("Sorry — something went wrong while answering. The team has been notified; "
                  "please try again in a few minutes.")

#: Acknowledgements of a vote.
VOTE_UP_THANKS = "Thanks — glad it helped."
VOTE_DOWN_THANKS = "Thanks — your feedback was recorded and will help fix this answer."

#: "Ask a human".
NO_SUPPORT_CHANNEL = ("No support channel is configured, so I can't pass this on. "
                      "Please ask the support team directly.")
SUPPORT_UNREACHABLE = "I couldn't reach the support channel. Please ask the support team directly."


def escalated(where: str = "") -> str:
    """The question was passed on; ``where`` names the support channel in the surface's own syntax."""
    return f"I've asked the support team{f' in {where}' if where else ''}; someone will get back to you."


def fallback_status_label(reason: str | None) -> StatusLabel:
    detail = f"{FALLBACK_DETAIL} ({reason})." if reason else f"{FALLBACK_DETAIL}."
    return StatusLabel("⚠️", FALLBACK_TITLE, detail, warning=True)


def status_label(status: Status | str, *, fallback: bool = False,
                 fallback_reason: str | None = None) -> StatusLabel | None:
    """The label for an answer (or a recorded interaction) with this status; None for a normal answer."""
    if status == Status.MAINTENANCE:
        return MAINTENANCE_LABEL
    if status == Status.NOT_FOUND:
        return NOT_FOUND_LABEL
    if status == Status.ERROR:
        return ERROR_LABEL
    if fallback:
        return fallback_status_label(fallback_reason)
    return None


def answer_label(answer: Answer) -> StatusLabel | None:
    return status_label(answer.status, fallback=answer.fallback, fallback_reason=answer.fallback_reason)


_OWN_FALLBACK_LABEL = re.compile(r"\A_Automatic excerpt — not written by the AI model[^\n]*_\s*")


def answer_body(text: str, *, fallback: bool, fallback_reason: str | None = None) -> str:
    """The answer text to show under :func:`status_label`: an extractive answer starts with its own Markdown
    label (:func:`bot.fallback.fallback_label`), which the surface's label replaces."""
    if fallback:
        own = fallback_label(fallback_reason or "")
        text = text.removeprefix(own) if text.startswith(own) else _OWN_FALLBACK_LABEL.sub("", text)
    return text.strip()
