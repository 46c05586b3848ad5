"""`deskmate chat`: talk to Deskmate in the terminal, through the same intake, queue and worker as every surface.

Votes go through :class:`feedback.votes.Votes` like everywhere else (recorded, then scored on the answer's trace);
status labels are :mod:`bot.status_text`'s. The answer is printed as the worker writes it (the live events of
:mod:`bot.local_chat.live`), then its sources; an answer that was not streamed (an excerpt, "not found") is
printed whole once it is recorded.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from bot.core.types import Platform, Status
from bot.intake import QuestionRejected, clean_question, record_failed_reply_for
from bot.local_chat.answers import interaction_view
from bot.local_chat.live import follow
from bot.local_chat.web import local_question
from bot.runtime import Runtime
from feedback.votes import VoteError

console = Console()

LOCAL_USER = "local-user"


class NotRecorded(RuntimeError):
    """The question could not be recorded (the database is unreachable)."""


async def ask_and_wait(rt: Runtime, text: str, conversation: str, timeout_s: float = 180.0) -> dict[str, Any]:
    question = local_question(text, conversation, user=LOCAL_USER)
    submitted = await rt.intake.submit(question)
    interaction_id = submitted.interaction_id
    if interaction_id is None:
        raise NotRecorded(await record_failed_reply_for(question))
    return await ask_wait_recorded(rt, interaction_id, timeout_s)


async def ask_and_follow(rt: Runtime, text: str, conversation: str, timeout_s: float = 180.0) -> tuple[
        dict[str, Any], str]:
    """Like :func:`ask_and_wait`, printing the answer's text as it is written; returns the recorded answer and
    the text printed while it streamed."""
    question = local_question(text, conversation, user=LOCAL_USER)
    submitted = await rt.intake.submit(question)
    interaction_id = submitted.interaction_id
    if interaction_id is None:
        raise NotRecorded(await record_failed_reply_for(question))
    row = await rt.interactions.get(interaction_id)
    written = ""
    if row is not None:
        async for event in follow(rt.redis, row.idempotency_key, timeout_s=timeout_s):
            if event is not None and event.kind == "text":
                written += event.text
                console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
                continue
            view = await interaction_view(rt.interactions, interaction_id)
            if view and view["status"] != Status.PENDING:
                break
        if written:
            console.print()
    return await ask_wait_recorded(rt, interaction_id, timeout_s), written


async def ask_wait_recorded(rt: Runtime, interaction_id: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while time.monotonic() < deadline:
        view = await interaction_view(rt.interactions, interaction_id)
        if view and view["status"] != Status.PENDING:
            return view
        await asyncio.sleep(delay)
        delay = min(0.5, delay * 1.5)
    raise TimeoutError(f"no answer after {timeout_s:.0f} s — is a worker running? (interaction {interaction_id})")


def print_answer(view: dict[str, Any], streamed: str = "") -> None:
    """The recorded answer: its label, its text (unless that was just printed as it streamed), its sources."""
    label = view.get("label")
    if label:
        console.print(f"[yellow]{escape(label['icon'])} [bold]{escape(label['title'])}[/bold] — "
                      f"{escape(label['detail'])}[/yellow]")
    text = view.get("error") or view.get("text") or view["answer"] or ""
    if not streamed or streamed.strip() != text.strip():
        console.print(Markdown(text))
    for s in view["sources"]:
        heading = f" › {s['heading']}" if s.get("heading") and s["heading"] != s["title"] else ""
        console.print(f"  [bold][{s['number']}][/bold] {escape(s['title'] + heading)}  "
                      f"[dim]{escape(s['location'])}[/dim]")


async def vote(rt: Runtime, interaction_id: int, answer: str) -> None:
    """``y`` / ``n`` → a vote, recorded and scored like a click on Slack or Teams."""
    if answer not in ("y", "n"):
        return
    try:
        await rt.votes.vote(interaction_id=interaction_id, user=LOCAL_USER, platform=Platform.LOCAL.value,
                            label="up" if answer == "y" else "down")
    except VoteError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")


async def chat_loop(rt: Runtime, questions: list[str] | None = None) -> int:
    conversation = uuid.uuid4().hex
    interactive = questions is None
    if interactive:
        console.print("[bold]Deskmate[/bold] — ask about the handbook. Empty line or Ctrl-D to quit.\n")
    pending = list(questions or [])
    while True:
        if interactive:
            try:
                text = await asyncio.to_thread(console.input, "[bold green]you>[/bold green] ")
            except (EOFError, KeyboardInterrupt):
                return 0
            if not text.strip():
                return 0
        else:
            if not pending:
                return 0
            text = pending.pop(0)
            console.print(f"[bold green]you>[/bold green] {escape(text)}")
        try:
            text = clean_question(text, rt.settings)
        except QuestionRejected as exc:
            console.print(f"[red]{escape(exc.reply)}[/red]")
            continue
        try:
            view, streamed = await ask_and_follow(rt, text, conversation)
        except NotRecorded as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            continue
        print_answer(view, streamed)
        if interactive and view["status"] in (Status.ANSWERED, Status.NOT_FOUND):
            answer = (await asyncio.to_thread(console.input, "[dim]helpful? (y/n, Enter to skip)[/dim] "))
            await vote(rt, view["interaction_id"], answer.strip().lower())
        console.print()
        if not interactive:
            sys.stdout.flush()
