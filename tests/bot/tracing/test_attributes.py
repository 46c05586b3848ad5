"""Trace-level attributes stay within Langfuse's limits: nothing it would drop is sent as is."""

from __future__ import annotations

import json

from bot.tracing.attributes import MAX_PROPAGATED_CHARS, TraceAttributes, session_id, status_tag


def test_a_thread_is_the_session_unless_langfuse_would_drop_it() -> None:
    assert session_id("1712345678.000200") == "1712345678.000200"
    assert session_id("") is None
    for thread in ("19:réunion@thread.tacv2", "x" * (MAX_PROPAGATED_CHARS + 1)):
        hashed = session_id(thread)
        assert hashed is not None and hashed.startswith("thread-") and hashed.isascii()
        assert hashed == session_id(thread) and len(hashed) <= MAX_PROPAGATED_CHARS


def test_answer_attributes_are_clipped_and_tagged() -> None:
    long = "r" * 500
    attributes = TraceAttributes.of_answer(interaction_id=7, user_id="", thread="t1", platform="slack",
                                           release=long)
    kwargs = attributes.propagated()
    assert kwargs["user_id"] is None  # no user: no user id, never an empty one
    assert kwargs["trace_name"] == "answer" and kwargs["session_id"] == "t1"
    assert kwargs["tags"][0] == "platform:slack"
    assert all(len(tag) <= MAX_PROPAGATED_CHARS for tag in kwargs["tags"])
    assert len(kwargs["version"]) <= MAX_PROPAGATED_CHARS
    assert kwargs["metadata"]["interaction_id"] == 7
    # Metadata values are limited once JSON-encoded.
    assert all(len(json.dumps(value)) <= MAX_PROPAGATED_CHARS for value in kwargs["metadata"].values())
    assert len(status_tag("x" * 500)) == MAX_PROPAGATED_CHARS


def test_without_release_or_interaction_nothing_is_invented() -> None:
    attributes = TraceAttributes.of_answer(interaction_id=None, user_id="3f1c", thread="", platform="teams",
                                           release=None)
    assert attributes.tags == ["platform:teams"]
    assert attributes.metadata == {"platform": "teams"}
    assert attributes.version is None and attributes.session_id is None and attributes.user_id == "3f1c"
