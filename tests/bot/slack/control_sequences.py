"""What Slack would read as a control sequence in a message Deskmate posts — for assertions.

Slack parses ``<…>`` in a message's ``text`` and in every mrkdwn text object: ``<!channel>``, ``<!here>``,
``<!everyone>``, ``<!subteam^…>``, ``<!date…>``, ``<@U…>``, ``<#C…>`` notify or link; ``<url|label>`` links.
:func:`control_sequences` returns every ``<…>`` in a message (its ``text`` and every string anywhere in its
blocks) that is not a well-formed http(s)/mailto link with a clean URL, and not one of the mentions the test says
Deskmate wrote itself (``own``). A nested or unclosed ``<`` is reported too. Entities (``&lt;!here&gt;``) are
text to Slack and are not reported.

    assert control_sequences(message) == []
    assert control_sequences(escalation, own={f"<@{HUMAN}>", f"<#{PUBLIC}>"}) == []
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

#: A link Slack renders as a link and nothing else: the URL has no <, >, | or whitespace; the label no < or >.
_LINK = re.compile(r"(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?", re.IGNORECASE)


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a message: ``text``, and each string value anywhere in ``blocks`` (or a view)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def control_sequences_in_text(text: str, own: Iterable[str] = ()) -> list[str]:
    allowed = set(own)
    found: list[str] = []
    start = text.find("<")
    while start != -1:
        close = text.find(">", start + 1)
        reopened = text.find("<", start + 1)
        if close == -1 or (reopened != -1 and reopened < close):
            found.append(text[start:start + 60])  # unclosed or nested: Slack's reading is anyone's guess
            start = reopened
            continue
        token = text[start:close + 1]
        if token not in allowed and not _LINK.fullmatch(token[1:-1]):
            found.append(token)
        start = text.find("<", close + 1)
    return found


def control_sequences(message: Any, own: Iterable[str] = ()) -> list[str]:
    """The control sequences in ``message`` (a dict with ``text``/``blocks``, a list of blocks, or a string)
    that Deskmate did not mean to write; ``[]`` when it is safe to post."""
    own = tuple(own)
    return [token for text in strings_in(message) for token in control_sequences_in_text(text, own)]


def visible_text(mrkdwn: str) -> str:
    """Roughly what a reader sees: links as their labels, Slack's three entities decoded (nothing else: Slack
    shows ``&#60;`` as typed), formatting marks left in."""
    def label(m: re.Match[str]) -> str:
        inner = m.group(1)
        return inner.split("|", 1)[1] if "|" in inner else inner

    text = re.sub(r"<([^<>]*)>", label, mrkdwn)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
