"""``/deskmate`` (name from ``slack_command``): ``ask <question>`` answers privately, ``help`` explains, and
anything else is an admin command handed to :func:`playbooks.admin.handle_admin_command` (which parses and
authorises it). Replies are ephemeral: the ack carries the immediate one, ``response_url`` the later ones.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.core.log import get_logger
from bot.core.types import Platform, Question
from bot.intake import QuestionRejected, clean_question
from bot.slack.adapter import SlackAdapter
from bot.slack.listeners import DISABLED_REPLY
from bot.slack.mrkdwn import escape
from bot.slack.rendering import render_markdown
from bot.status_text import PLACEHOLDER
from playbooks.admin import AdminActor, handle_admin_command

log = get_logger(__name__)


def help_text(command: str) -> str:
    command = escape(command)  # from the request: Slack's own, but text all the same
    return (
        "*Deskmate* answers questions from the company handbook and cites its sources.\n"
        f"• Mention me in a channel — `@Deskmate how do I book travel?` — and I answer in the thread; "
        "reply in that thread to follow up.\n"
        "• Or send me a direct message.\n"
        f"• `{command} ask &lt;question&gt;` — an answer only you can see.\n"
        f"• `{command} help` — this message.\n"
        "Rate answers with :+1: / :-1: — it is how Deskmate gets better. "
        f"Admins: `{command} status`, `{command} kill …`, `{command} rollback`, `{command} releases`."
    )


async def channel_type_of(adapter: SlackAdapter, body: dict[str, Any]) -> str:
    channel = body.get("channel_id", "")
    name = body.get("channel_name", "")
    if name == "directmessage" or channel.startswith("D"):
        return "im"
    if name == "privategroup":  # how Slack names a private channel or group DM the app is not in
        return "group"
    return await adapter.channel_type(channel)


async def ask(adapter: SlackAdapter, body: dict[str, Any], text: str, respond: AsyncRespond) -> None:
    channel = body.get("channel_id", "")
    user = body.get("user_id", "")
    channel_type = await channel_type_of(adapter, body)
    policy = await adapter.policy(channel, channel_type)
    if not policy.enabled:
        await respond(text=escape(DISABLED_REPLY), response_type="ephemeral")
        return
    key = body.get("trigger_id") or f"{channel}:{user}:{text}"
    question = Question(
        idempotency_key=f"slack:command:{key}", platform=Platform.SLACK, workspace=body.get("team_id", ""),
        channel=channel, thread="", user=user, text=text, channel_type=channel_type, ephemeral=True,
        reply_target={"channel": channel, "user": user, "response_url": body.get("response_url")},
    )
    await adapter.submit(question, placeholder=False)


async def admin(adapter: SlackAdapter, body: dict[str, Any], text: str, respond: AsyncRespond) -> None:
    actor = AdminActor(platform=Platform.SLACK.value, user_id=body.get("user_id", ""),
                       channel=body.get("channel_id", ""), display_name=body.get("user_name", ""))
    try:
        reply = await handle_admin_command(adapter.rt, actor, text)
    except Exception as exc:  # noqa: BLE001 - the admin sees that it failed, the log has why
        log.exception("slack.admin_command_failed", command=text.split(" ", 1)[0])
        await respond(text=f":warning: That command failed: {escape(str(exc)[:300])}", response_type="ephemeral")
        return
    await respond(response_type="ephemeral", **render_markdown(reply.text))


async def on_command(adapter: SlackAdapter, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
    command = body.get("command") or adapter.settings.slack_command
    raw = (body.get("text") or "").strip()
    verb, _, rest = raw.partition(" ")
    verb = verb.lower()
    if verb in ("", "help"):
        await ack(text=help_text(command), response_type="ephemeral")
        return
    if verb == "ask":
        try:
            text = clean_question(rest, adapter.settings)
        except QuestionRejected as exc:
            await ack(text=escape(exc.reply), response_type="ephemeral")
            return
        await ack(text=f"{PLACEHOLDER.with_icon} _“{escape(text[:200])}”_",
                  response_type="ephemeral")
        await ask(adapter, body, text, respond)
        return
    await ack()
    await admin(adapter, body, raw, respond)


def register(app: AsyncApp, adapter: SlackAdapter) -> None:
    async def command(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await adapter.after_ack(_with_apology(adapter, ack, body, respond), "command")

    app.command(adapter.settings.slack_command)(command)


async def _with_apology(adapter: SlackAdapter, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
    try:
        await on_command(adapter, ack, body, respond)
    except Exception:  # noqa: BLE001 - the user gets a reply, the log the trace
        log.exception("slack.command_failed")
        try:
            await respond(text=":warning: Sorry — that didn't work. Please try again.", response_type="ephemeral")
        except Exception:  # noqa: BLE001
            pass
