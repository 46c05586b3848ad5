"""`deskmate chat`: talk to Deskmate in the terminal, through the same queue and worker as every surface."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from rich.console import Console
from rich.markdown import Markdown

from bot.local_chat.answers import interaction_view
from bot.local_chat.web import local_question
from bot.intake import QuestionRejected, clean_question
from bot.queue import submit
from bot.runtime import Runtime
from feedback.votes import record_vote

console = Console()


async def ask_and_wait(rt: Runtime, text: str, conversation: str, timeout_s: float = 180.0) -> dict[str, Any]:
    submitted = await submit(rt.db, rt.redis, local_question(text, conversation))
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while time.monotonic() < deadline:
        view = await interaction_view(rt.db, submitted.interaction_id)
        if view and view["status"] != "pending":
            return view
        await asyncio.sleep(delay)
        delay = min(0.5, delay * 1.5)
    raise TimeoutError(f"no answer after {timeout_s:.0f} s — is a worker running? (interaction {submitted.interaction_id})")


def print_answer(view: dict[str, Any]) -> None:
    if view["status"] == "not_found":
        console.print("[yellow]Not found in the knowledge base[/yellow]")
    console.print(Markdown(view["answer"] or view.get("error") or ""))
    for s in view["sources"]:
        heading = f" › {s['heading']}" if s.get("heading") and s["heading"] != s["title"] else ""
        console.print(f"  [bold][{s['number']}][/bold] {s['title']}{heading}  [dim]{s['location']}[/dim]")


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
            console.print(f"[bold green]you>[/bold green] {text}")
        try:
            text = clean_question(text, rt.settings)
        except QuestionRejected as exc:
            console.print(f"[red]{exc.reply}[/red]")
            continue
        view = await ask_and_wait(rt, text, conversation)
        print_answer(view)
        if interactive and view["status"] in ("answered", "not_found"):
            vote = (await asyncio.to_thread(console.input, "[dim]helpful? (y/n, Enter to skip)[/dim] ")).strip().lower()
            if vote in ("y", "n"):
                await record_vote(rt.db, interaction_id=view["interaction_id"], user="local-user", platform="local",
                                  label="up" if vote == "y" else "down")
        console.print()
        if not interactive:
            sys.stdout.flush()
