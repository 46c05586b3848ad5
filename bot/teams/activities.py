"""Reading Teams activities: who, where, which thread, and the question text without the bot's @mention.

Teams shapes (recorded in ``shared/fixtures/teams``):

- ``conversation.conversationType`` is ``personal``, ``channel`` or ``groupChat``;
- in a channel, ``conversation.id`` is ``19:…@thread.…;messageid=<root post id>`` — the reply chain — and
  ``channelData.channel.id`` is the channel;
- ``from.aadObjectId`` is the user's Azure AD object id (``from.id`` is a Teams-scoped ``29:…`` id);
- a mention of the bot is an entity ``{"type": "mention", "mentioned": {"id": <recipient id>},
  "text": "<at>Name</at>"}`` and that ``text`` appears verbatim in ``activity.text``.
"""

from __future__ import annotations

import hashlib
import html
import re
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import Activity

from bot.core.types import Platform, Question

_AT_TAG = re.compile(r"<at[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _entity_dict(entity: Any) -> dict[str, Any]:
    """Entities deserialize to ``Entity`` objects whose Teams fields live in ``additional_properties``."""
    if isinstance(entity, dict):
        return entity
    data = dict(getattr(entity, "additional_properties", None) or {})
    data.setdefault("type", getattr(entity, "type", None))
    return data


def strip_mentions(activity: Activity) -> str:
    """The message text with the bot's @mention removed and other mentions reduced to the name."""
    text = activity.text or ""
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        data = _entity_dict(entity)
        if (data.get("type") or "").lower() != "mention":
            continue
        mentioned = data.get("mentioned") or {}
        mention_text = data.get("text") or ""
        if bot_id and mentioned.get("id") == bot_id and mention_text:
            text = text.replace(mention_text, " ")
    text = _AT_TAG.sub(lambda m: m.group(1), text)  # another person's mention: keep their name
    text = html.unescape(_TAG.sub("", text)) if "<" in text else html.unescape(text)
    return re.sub(r"\s+", " ", text).strip()


def conversation_type(activity: Activity) -> str:
    conversation = activity.conversation
    kind = getattr(conversation, "conversation_type", None) if conversation else None
    return kind or ("groupChat" if conversation is not None and conversation.is_group else "personal")


def base_conversation_id(conversation_id: str) -> str:
    """A channel conversation id without its ``;messageid=…`` reply-chain suffix."""
    return conversation_id.split(";", 1)[0]


def channel_data(activity: Activity) -> dict[str, Any]:
    data = activity.channel_data
    if isinstance(data, dict):
        return data
    return data.serialize() if hasattr(data, "serialize") else {}


def channel_of(activity: Activity) -> str:
    """Where the question was asked: the Teams channel, or the personal / group chat."""
    conversation_id = activity.conversation.id if activity.conversation else ""
    if conversation_type(activity) == "channel":
        channel = (channel_data(activity).get("channel") or {}).get("id")
        if channel:
            return str(channel)
    return base_conversation_id(conversation_id)


def thread_of(activity: Activity) -> str:
    """The conversation context: a channel post's reply chain, or the whole personal / group chat."""
    return activity.conversation.id if activity.conversation else ""


def tenant_of(activity: Activity) -> str:
    conversation = activity.conversation
    tenant = getattr(conversation, "tenant_id", None) if conversation else None
    return tenant or str((channel_data(activity).get("tenant") or {}).get("id") or "")


def user_of(activity: Activity) -> str:
    """The stable user id: the Azure AD object id when Teams sends it (it does for people)."""
    sender = activity.from_property
    if sender is None:
        return ""
    return getattr(sender, "aad_object_id", None) or sender.id or ""


def idempotency_key(activity: Activity) -> str:
    """Activity id plus conversation id: Teams redelivers an activity with the same pair."""
    conversation_id = activity.conversation.id if activity.conversation else ""
    key = f"teams:{conversation_id}:{activity.id}"
    if len(key) > 200:  # the column holds 255; long chat ids are hashed, not truncated (no collisions)
        key = f"teams:{hashlib.sha256(conversation_id.encode()).hexdigest()[:32]}:{activity.id}"
    return key


def conversation_reference(activity: Activity) -> dict[str, Any]:
    """The JSON-safe ``ConversationReference`` the worker continues the conversation from."""
    return TurnContext.get_conversation_reference(activity).serialize()


def build_question(activity: Activity, text: str, *, placeholder_id: str | None) -> Question:
    return Question(
        idempotency_key=idempotency_key(activity), platform=Platform.TEAMS, workspace=tenant_of(activity),
        channel=channel_of(activity), thread=thread_of(activity), user=user_of(activity), text=text,
        channel_type=conversation_type(activity),
        reply_target={
            "reference": conversation_reference(activity),
            "placeholder_id": placeholder_id,
            "user_name": (activity.from_property.name if activity.from_property else None) or "",
        },
    )
