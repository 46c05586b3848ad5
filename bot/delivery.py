"""Delivering an answer back to where the question came from.

Each chat surface registers a :class:`Deliverer` for its platform in the worker's runtime. The local chat needs
none: its page and the terminal read the recorded interaction (and, while an answer is written, its live stream).

A deliverer makes one attempt and either returns references to what it posted or raises :class:`DeliveryFailed`,
which says whether trying again can help (``retryable``: a 429, a 5xx or an HTML error page, a timeout, a refused
connection) and how long the platform asked us to wait (``retry_after_s``). Retrying — with backoff, until a
deadline, across restarts — is the pipeline's and the queue's job (:meth:`bot.pipeline.AnswerPipeline.deliver`),
not the deliverer's. An exception of any other type is treated as retryable.

Exactly once: retrying must not post twice. Updating the placeholder in place is idempotent; a new message is
posted only when the placeholder is gone (or there never was one), and the pipeline records the posted message's
id as soon as the deliverer returns it.

Streaming (issue 14)
--------------------
:meth:`StreamingDeliverer.open_stream` (a :class:`Deliverer` that can stream; the pipeline streams only
through deliverers that have it) returns an :class:`AnswerStream` when the answer can be written live into the
conversation (Slack: ``chat.startStream``; Teams: streaming in personal chats), or None when it cannot (then the
answer goes the placeholder-then-update way above). The pipeline drives a stream like this::

    stream = await deliverer.open_stream(question)      # nothing is posted yet
    await stream.status("Searching the handbook…")      # live status (may post: the stream has started)
    await stream.append("The VPN…")                     # any number of times, as the model writes
    refs = await stream.finish(answer)                  # or: await stream.abandon(text)

Rules every implementation keeps:

- **Nothing posted before the first call.** ``open_stream`` only decides whether streaming is possible here; the
  first :meth:`~AnswerStream.status` / :meth:`~AnswerStream.append` that posts something makes :attr:`refs`
  non-empty. The pipeline reads ``refs`` after every call and records them in the interaction's ``delivery``
  at once (while the question is still pending), so a job retried after a crash knows what was posted.
- **Coalescing and pacing are the stream's job.** ``append`` may be called for every model token; the stream
  buffers and sends at most as often as the platform allows (Slack: ``chat.appendStream`` per workspace, 429
  ``Retry-After`` honoured; Teams: throttled updates). ``append`` should return quickly (it must not hold the
  model's stream back for long); text is never dropped: what was not sent yet goes out with ``finish``.
- **``finish(answer)`` leaves exactly the answer**: its complete text (whatever was streamed before), the numbered
  sources, 👍/👎 and "Ask a human" — the same final message the non-streaming path shows. The answer may differ
  from what was streamed (the model fell back midway, or the answer turned out "not found"): ``finish`` then
  replaces the streamed text. It removes the placeholder/progress indicator the adapter posted, if any.
- **``abandon(text)``** replaces whatever was streamed with ``text`` (the maintenance reply after a kill-switch set
  mid-stream, the failure notice): no half answer is ever left. Both return the refs of the final message.
- **Failures** raise :class:`DeliveryFailed` from any method. The pipeline then stops streaming (it calls no
  further method of that stream, except possibly ``abandon``), finishes the answer without it, and delivers it
  with :meth:`Deliverer.deliver` — with ``question.reply_target["stream"]`` set to the stream's last ``refs``.
- **Replacing an earlier stream.** When ``question.reply_target["stream"]`` holds refs (a stream failed midway, or
  a crashed attempt recorded them), :meth:`Deliverer.deliver` and :meth:`Deliverer.deliver_failure` must make
  *that* message show the reply (stop the stream if still open, then update it in place; if it is gone, post
  anew) instead of posting a second answer beside it; and the pipeline does not open a new stream.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.core.types import Answer, Question

#: The key of ``Question.reply_target`` under which the pipeline passes an earlier stream's refs to the deliverer.
STREAM_REFS = "stream"


class DeliveryFailed(Exception):
    """One delivery attempt failed. ``retryable``: another attempt may succeed; ``retry_after_s``: the platform's
    ``Retry-After`` (seconds), when it sent one."""

    def __init__(self, error: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        kind = "retryable" if self.retryable else "permanent"
        after = f", retry after {self.retry_after_s:g} s" if self.retry_after_s is not None else ""
        return f"DeliveryFailed({self.error!r}, {kind}{after})"


class AnswerStream(Protocol):
    """One answer being written live into the user's conversation (see the module docstring for the rules)."""

    @property
    def refs(self) -> dict[str, Any]:
        """What has been posted so far (Slack: channel and message ``ts``; Teams: activity / stream id); empty until
        something is posted. JSON-serialisable: the pipeline records it so a retried job never posts twice."""
        ...

    async def status(self, text: str) -> None:
        """Show a live status ("Searching the handbook…", "Writing…"); a no-op where the platform has none."""
        ...

    async def append(self, text: str) -> None:
        """More answer text (Markdown, ``[n]`` markers included); buffered, coalesced and paced by the stream."""
        ...

    async def finish(self, answer: Answer) -> dict[str, Any]:
        """The final message: exactly ``answer`` (complete text, numbered sources, 👍/👎 and "Ask a human");
        returns its refs."""
        ...

    async def abandon(self, text: str) -> dict[str, Any]:
        """Replace whatever was streamed with ``text`` (maintenance reply, failure notice); returns its refs."""
        ...


class Deliverer(Protocol):
    async def deliver(self, question: Question, answer: Answer) -> dict[str, Any]:
        """Update the placeholder with the answer (or post it, if the placeholder is gone or there is none);
        return references to what was posted. If ``question.reply_target[STREAM_REFS]`` holds an earlier stream's
        refs, that message is the one to update. Raises :class:`DeliveryFailed`."""
        ...

    async def deliver_failure(self, question: Question, message: str) -> dict[str, Any]:
        """Tell the user, in their thread, that answering failed (same contract as :meth:`deliver`)."""
        ...

    async def aclose(self) -> None: ...


class StreamingDeliverer(Deliverer, Protocol):
    """A deliverer that can write an answer live (Slack, Teams, the local chat's stream hub)."""

    async def open_stream(self, question: Question) -> AnswerStream | None:
        """A stream for this question's answer, or None where streaming is not possible (the channel type, the
        platform, an ephemeral reply, a setting): then the answer is delivered with :meth:`deliver`. Posts
        nothing; must not raise for an ordinary "cannot stream here"."""
        ...
