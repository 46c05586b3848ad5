"""The Teams activity handler: what Deskmate does with each kind of activity.

- ``message`` — a question (the bot's @mention stripped), handed to :meth:`bot.intake.Intake.submit`: a
  redelivered activity (same id in the same conversation) is ignored; otherwise, in a personal chat, a stream
  is started with an informative update (:mod:`bot.teams.streaming`) that the worker continues with the answer
  as it is written; in channels and group chats (or where Teams refuses the stream) a typing indicator and a
  placeholder reply are sent, which the worker replaces with the answer. Then the question is recorded and
  enqueued (if it cannot be recorded, the placeholder or the stream says so). ``admin …`` goes to the admin command handler.
  A message whose ``value`` is Deskmate card data is an ``Action.Submit`` from an older client: feedback.
- ``conversationUpdate`` — a greeting when the bot itself is added (installed); everything else is ignored.
- ``messageReaction`` — 👍/❤️ (up) and 😢/😠 (down) on an answer are votes.
- ``invoke adaptiveCard/action`` — 👍 / 👎 / reason / "Ask a human": recorded, answered with a refreshed card
  (👎 asks what was wrong). A name-less card-action invoke carrying Deskmate data is handled the same way.

Nothing here waits for an answer: Teams allows a turn 15 seconds and redelivers after that.
"""

from __future__ import annotations

import asyncio
import re
import time
from http import HTTPStatus

from botbuilder.core import BotAdapter, CardFactory, InvokeResponse, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    AdaptiveCardInvokeResponse,
    AdaptiveCardInvokeValue,
    ChannelAccount,
    ConversationParameters,
    MessageReaction,
)

from bot.core.log import get_logger, redact
from bot.core.types import Question
from bot.intake import Outcome, QuestionRejected, clean_question, record_failed_reply_for
from knowledge.language import detect_language
from bot.runtime import Runtime
from bot.status_text import NO_SUPPORT_CHANNEL, PLACEHOLDER, SUPPORT_UNREACHABLE, progress_in
from bot.teams.activities import (
    build_question,
    channel_of,
    conversation_type,
    strip_mentions,
    tenant_of,
    user_of,
)
from bot.teams.cards import CardState, Verb, answer_card, message_text
from bot.teams.streaming import final_text_activity, start_activity
from bot.teams.feedback import (
    ActionOutcome,
    CardAction,
    answer_from_row,
    apply_card_action,
    apply_reactions,
    parse_card_action,
)
from bot.teams.learned import on_correction, on_review_action, on_support_reply, record_escalation
from bot.teams.retry import describe, own_retries, with_retries
from feedback.interactions import Interaction
from playbooks.admin import AdminActor, handle_admin_command, is_admin_command

log = get_logger(__name__)

ADMIN_WORD = re.compile(r"^\s*admin\b", re.IGNORECASE)
GREETED_KEY = "deskmate:teams:greeted:{}"


def looks_like_admin(text: str) -> bool:
    """``admin <command>`` (or a bare ``admin`` for the help); "admin rights for my laptop?" stays a question."""
    return bool(ADMIN_WORD.match(text)) and (is_admin_command(text) or text.strip().lower() == "admin")


def greeting(app_name: str) -> str:
    return (f"👋 Hi, I'm **{app_name}**. Ask me anything about the company handbook — travel, expenses, IT, "
            "benefits — and I'll answer from the documents, with numbered sources.\n\n"
            f"In a channel or group chat, @mention me (**@{app_name} how do I book travel?**); in a personal chat just "
            "ask. Use 👍 / 👎 on an answer to tell us how it did.")


def text_activity(text: str) -> Activity:
    return Activity(type=ActivityTypes.message, text=text, text_format="markdown")


def text_in_message(row: Interaction) -> bool:
    """Was the answer delivered as a streamed message (its text the message's, the card only sources and
    actions)? Then a refreshed card keeps that shape."""
    return (row.delivery or {}).get("card") == "compact"


class DeskmateTeamsBot(TeamsActivityHandler):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def on_turn(self, turn_context: TurnContext) -> None:
        own_retries(turn_context.turn_state.get(BotAdapter.BOT_CONNECTOR_CLIENT_KEY))
        await super().on_turn(turn_context)

    # --- questions --------------------------------------------------------------------------------------------
    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        action = parse_card_action(activity.value) if isinstance(activity.value, dict) else None
        if action is not None:
            await self._on_card_submit(turn_context, action)
            return
        if await on_support_reply(self.rt, turn_context):
            return  # a reply in an "Ask a human" thread of the support channel: a draft learned answer
        text = strip_mentions(activity)
        if looks_like_admin(text):
            await self._on_admin(turn_context, text)
            return
        try:
            question_text = clean_question(text, self.rt.settings)
        except QuestionRejected as exc:
            log.info("teams.question_rejected", reason=exc.reason)
            await turn_context.send_activity(exc.reply)
            return
        question = build_question(activity, question_text, placeholder_id=None)
        # the placeholder / live status in the asker's language (py3langid, off the event loop: its first use loads
        # the model); the worker's stream words its status in the same one
        language = await asyncio.to_thread(detect_language, question_text)
        question.reply_target["language"] = language
        placeholder_text = progress_in(PLACEHOLDER, language).with_icon

        async def show_progress(pending: Question) -> None:
            """Intake's ``prepare`` step: in a personal chat a stream's informative update (the worker streams
            the answer into it); elsewhere, with ``DESKMATE_STREAMING=off``, or if Teams refuses the stream, typing
            and then the placeholder the worker replaces with the answer."""
            if conversation_type(activity) == "personal" and self.rt.settings.streaming == "on":
                started = time.time()
                stream_id = await self._send_quietly(turn_context, start_activity(placeholder_text))
                if stream_id:
                    pending.reply_target.update(stream_id=stream_id, stream_sequence=1, stream_started_at=started)
                    return
            await self._send_quietly(turn_context, Activity(type=ActivityTypes.typing))
            pending.reply_target["placeholder_id"] = await self._send_quietly(turn_context,
                                                                              text_activity(placeholder_text))

        submitted = await self.rt.intake.submit(question, prepare=show_progress)
        placeholder_id = question.reply_target.get("placeholder_id")
        stream_id = question.reply_target.get("stream_id")
        log.info("teams.question", interaction_id=submitted.interaction_id, outcome=submitted.outcome.value,
                 enqueued=submitted.enqueued, channel_type=question.channel_type, question=redact(question_text))
        if submitted.outcome is Outcome.DUPLICATE and (placeholder_id or stream_id):
            # the database caught a redelivery (Redis could not): one placeholder (or stream) is enough
            try:
                await turn_context.delete_activity(placeholder_id or stream_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("teams.placeholder_delete_failed", error=describe(exc))
        elif submitted.outcome is Outcome.UNRECORDED and stream_id:
            apology = await record_failed_reply_for(question)  # in the language detected above
            try:  # the stream ends with the notice
                await turn_context.send_activity(final_text_activity(stream_id, apology))
            except Exception as exc:  # noqa: BLE001
                log.warning("teams.stream_notice_failed", error=describe(exc))
                await self._send_quietly(turn_context, text_activity(apology))
        elif submitted.outcome is Outcome.UNRECORDED:
            await self._replace_quietly(turn_context, placeholder_id,
                                        text_activity(await record_failed_reply_for(question)))

    async def _replace_quietly(self, turn_context: TurnContext, activity_id: str | None, activity: Activity) -> None:
        """Update the message ``activity_id`` within the turn (or send ``activity`` when there is none)."""
        if activity_id:
            activity.id = activity_id
            try:
                await with_retries(lambda: turn_context.update_activity(activity), attempts=2, backoff_s=0.3,
                                   what="teams.turn_update")
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("teams.turn_update_failed", error=describe(exc))
                activity.id = None
        await self._send_quietly(turn_context, activity)

    @staticmethod
    async def _send_quietly(turn_context: TurnContext, activity: Activity) -> str | None:
        """Send within the turn (two quick tries); a failure is logged, not raised — the answer still comes."""
        try:
            response = await with_retries(lambda: turn_context.send_activity(activity), attempts=2, backoff_s=0.3,
                                          what=f"teams.turn_{activity.type}")
            return getattr(response, "id", None)
        except Exception as exc:  # noqa: BLE001
            log.warning("teams.turn_send_failed", activity_type=activity.type, error=describe(exc))
            return None

    # --- admin --------------------------------------------------------------------------------------------------
    async def _on_admin(self, turn_context: TurnContext, text: str) -> None:
        """Authorised by Azure AD object id (``from.aadObjectId``); the handler audits every attempt."""
        activity = turn_context.activity
        sender = activity.from_property
        actor = AdminActor(platform="teams", user_id=(getattr(sender, "aad_object_id", None) or "") if sender else "",
                           channel=channel_of(activity), display_name=(sender.name or "") if sender else "")
        reply = await handle_admin_command(self.rt, actor, text)
        log.info("teams.admin_command", ok=reply.ok)
        await turn_context.send_activity(text_activity(reply.text))

    # --- install greeting ---------------------------------------------------------------------------------------
    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        # Replaces TeamsActivityHandler's dispatch, which looks every added member up on the connector.
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        added: list[ChannelAccount] = activity.members_added or []
        if not bot_id or not any(member.id == bot_id for member in added):
            return
        try:
            first = await self.rt.redis.set(GREETED_KEY.format(activity.id), "1", nx=True, ex=86_400)
        except Exception as exc:  # noqa: BLE001 - Redis down: greeting twice beats not greeting
            log.warning("teams.greeting_dedupe_unavailable", error=str(exc))
            first = True
        if not first:
            return  # a redelivered install event
        log.info("teams.installed", conversation_type=getattr(activity.conversation, "conversation_type", None))
        await self._send_quietly(turn_context, text_activity(greeting(self.rt.settings.teams_app_name)))

    async def on_installation_update(self, turn_context: TurnContext) -> None:
        return None  # Teams also sends conversationUpdate on install; greeting once is enough

    # --- reactions ----------------------------------------------------------------------------------------------
    async def on_reactions_added(self, message_reactions: list[MessageReaction], turn_context: TurnContext) -> None:
        activity = turn_context.activity
        row = await apply_reactions(self.rt.interactions, self.rt.votes, [r.type for r in message_reactions if r.type],
                                    message_id=activity.reply_to_id or "", user=user_of(activity),
                                    channel=channel_of(activity))
        if row is not None:
            log.info("teams.reaction_vote", interaction_id=row.id)

    async def on_reactions_removed(self, message_reactions: list[MessageReaction], turn_context: TurnContext) -> None:
        return None  # a removed reaction leaves the recorded vote; 👍/👎 on the card changes it

    # --- card actions -------------------------------------------------------------------------------------------
    async def on_adaptive_card_invoke(self, turn_context: TurnContext,
                                      invoke_value: AdaptiveCardInvokeValue) -> AdaptiveCardInvokeResponse:
        review = await on_review_action(self.rt, turn_context, (invoke_value.action or {}).get("data"))
        if review is not None:  # a learned answer's review card (bot/teams/learned.py)
            return AdaptiveCardInvokeResponse(status_code=HTTPStatus.OK,
                                              type="application/vnd.microsoft.card.adaptive", value=review)
        action = parse_card_action((invoke_value.action or {}).get("data"))
        if action is None:
            return AdaptiveCardInvokeResponse(status_code=HTTPStatus.BAD_REQUEST,
                                              type="application/vnd.microsoft.error",
                                              value={"code": "BadRequest", "message": "Not a Deskmate action."})
        outcome, notice = await self._apply(turn_context, action)
        if outcome is None:
            return AdaptiveCardInvokeResponse(status_code=HTTPStatus.NOT_FOUND, type="application/vnd.microsoft.error",
                                              value={"code": "NotFound",
                                                     "message": "That answer is not available in this conversation."})
        card = answer_card(answer_from_row(outcome.row), state=outcome.state, notice=notice,
                           text_in_message=text_in_message(outcome.row))
        return AdaptiveCardInvokeResponse(status_code=HTTPStatus.OK, type="application/vnd.microsoft.card.adaptive",
                                          value=card)

    async def on_teams_card_action_invoke(self, turn_context: TurnContext) -> InvokeResponse:
        action = parse_card_action(turn_context.activity.value)
        if action is None:
            log.info("teams.card_action_ignored")
            return InvokeResponse(status=HTTPStatus.OK)
        outcome, notice = await self._apply(turn_context, action)
        await self._refresh_card(turn_context, outcome, notice)
        return InvokeResponse(status=HTTPStatus.OK)

    async def _on_card_submit(self, turn_context: TurnContext, action: CardAction) -> None:
        """``Action.Submit`` fallback: the same data arrives as a message ``value``; the card is updated in place."""
        outcome, notice = await self._apply(turn_context, action)
        await self._refresh_card(turn_context, outcome, notice)

    async def _refresh_card(self, turn_context: TurnContext, outcome: ActionOutcome | None, notice: str | None) -> None:
        message_id = turn_context.activity.reply_to_id
        if outcome is None or not message_id:
            return
        answer = answer_from_row(outcome.row)
        in_message = text_in_message(outcome.row)
        card = answer_card(answer, state=outcome.state, notice=notice, text_in_message=in_message)
        activity = Activity(type=ActivityTypes.message, id=message_id, attachments=[CardFactory.adaptive_card(card)],
                            text=message_text(answer) if in_message else None,
                            text_format="markdown" if in_message else None)
        try:
            await turn_context.update_activity(activity)
        except Exception as exc:  # noqa: BLE001 - the vote is recorded; only the card refresh failed
            log.warning("teams.card_refresh_failed", error=describe(exc))

    async def _apply(self, turn_context: TurnContext, action: CardAction) -> tuple[ActionOutcome | None, str | None]:
        activity = turn_context.activity
        outcome = await apply_card_action(self.rt.interactions, self.rt.votes, action, user=user_of(activity),
                                          channel=channel_of(activity))
        if outcome is None:
            return None, None
        if outcome.error:
            return ActionOutcome(outcome.row, CardState.OPEN), f"Couldn't record that: {outcome.error}"
        notice = None
        if action.verb == Verb.ESCALATE:
            notice = await self._escalate(turn_context, outcome.row)
        elif action.verb == Verb.REASON and action.comment and outcome.row.id is not None:
            await on_correction(self.rt, turn_context, interaction_id=outcome.row.id, comment=action.comment)
        log.info("teams.card_action", verb=action.verb.value, interaction_id=outcome.row.id)
        return outcome, notice

    async def _escalate(self, turn_context: TurnContext, row: Interaction) -> str | None:
        """Start a thread in the support channel; returns a notice for the card when that was not possible."""
        support_channel = self.rt.settings.teams_support_channel
        if not support_channel:
            return NO_SUPPORT_CHANNEL
        activity = turn_context.activity
        who = (activity.from_property.name if activity.from_property else None) or "Someone"
        answer = (row.answer or "")[:1500]
        text = (f"🙋 **{who}** asked for a human about a Deskmate answer (#{row.id}).\n\n"
                f"**Question:** {row.question}\n\n**Deskmate answered:**\n\n{answer}")
        connector = own_retries(turn_context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY])
        parameters = ConversationParameters(
            is_group=True, bot=activity.recipient, tenant_id=tenant_of(activity) or None,
            channel_data={"channel": {"id": support_channel}}, activity=text_activity(text),
        )
        try:
            created = await with_retries(lambda: connector.conversations.create_conversation(parameters), attempts=3,
                                         backoff_s=0.5, what="teams.escalate")
        except Exception as exc:  # noqa: BLE001
            log.error("teams.escalation_post_failed", interaction_id=row.id, error=describe(exc))
            return SUPPORT_UNREACHABLE
        if row.id is not None:  # learned answers follow the thread
            await record_escalation(self.rt, interaction_id=row.id, support_channel=support_channel,
                                    response=created, tenant=tenant_of(activity))
        return None
