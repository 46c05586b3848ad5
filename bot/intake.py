"""Checks every chat surface applies to a message before it becomes a question."""

from __future__ import annotations

import re

from bot.core.settings import Settings

EMPTY_REPLY = "Ask me a question about the handbook — for example “How do I book travel?”"


class QuestionRejected(ValueError):
    """A message that will not be answered, with the reply the user should see."""

    def __init__(self, reply: str, reason: str) -> None:
        super().__init__(reply)
        self.reply = reply
        self.reason = reason


def clean_question(text: str | None, settings: Settings) -> str:
    """The question text, whitespace-normalised; raises :class:`QuestionRejected` for empty or huge ones."""
    cleaned = re.sub(r"[ \t\u00a0]+", " ", (text or "").replace("\x00", "")).strip()
    if not cleaned:
        raise QuestionRejected(EMPTY_REPLY, "empty")
    if len(cleaned) > settings.max_question_chars:
        raise QuestionRejected(
            f"That message is {len(cleaned):,} characters long; I can take questions up to "
            f"{settings.max_question_chars:,}. Please ask a shorter question (you can paste the key part).",
            "too_long",
        )
    return cleaned
