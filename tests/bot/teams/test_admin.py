"""``@Deskmate admin …`` in Teams goes through the shared admin handler, authorised by Azure AD object id."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import select

from bot.core.settings import Settings
from feedback.models import AuditEntry
from tests.bot.teams.conftest import activity, post, settle, teams_settings
from tests.fakes.botframework import FakeConnector
from tests.stack import Stack, running_stack


def admin_text(connector: FakeConnector, command: str, **changes: object) -> dict:
    return activity("message_channel_mention", connector, text=f"<at>My Combined</at> {command}\n", **changes)


async def audit(stack: Stack) -> list[AuditEntry]:
    async with stack.db.asession() as session:
        return list((await session.exec(select(AuditEntry))).all())


async def test_admin_command_from_a_non_admin_is_refused_and_audited(teams_stack: Stack,
                                                                     connector: FakeConnector) -> None:
    body = admin_text(connector, "admin kill off here")
    assert (await post(teams_stack, body)).status_code == 200
    [reply] = connector.messages()
    assert "only Deskmate admins" in reply.body["text"] and reply.body["textFormat"] == "markdown"
    assert await teams_stack.interactions() == [], "an admin command is not a question"
    [entry] = await audit(teams_stack)
    assert entry.allowed is False and entry.platform == "teams"
    assert body["from"]["aadObjectId"] in entry.actor


async def test_admin_by_aad_object_id_can_switch_a_channel_off(make_settings: Callable[..., Settings],
                                                               connector: FakeConnector) -> None:
    aad_id = "6b703ce3-6d14-4fe6-b90c-dc5f03657ae4"  # from.aadObjectId in the recorded channel message
    async with running_stack(teams_settings(make_settings, admin_user_ids=[aad_id])) as stack:
        assert (await post(stack, admin_text(connector, "admin kill off here maintenance window"))).status_code == 200
        [reply] = connector.messages()
        assert "Kill-switch" in reply.body["text"] and "off" in reply.body["text"]
        [entry] = await audit(stack)
        assert entry.allowed is True

        question = admin_text(connector, "How do I book travel?", id="1571537199999")
        assert (await post(stack, question)).status_code == 200
        [row] = await stack.interactions()
        assert (await stack.wait_final(row.id)).status == "maintenance"
        await settle(stack)


async def test_a_question_that_starts_with_admin_is_still_a_question(teams_stack: Stack,
                                                                    connector: FakeConnector) -> None:
    assert (await post(teams_stack, admin_text(connector, "admin rights for my laptop?"))).status_code == 200
    [row] = await teams_stack.interactions()
    assert row.question == "admin rights for my laptop?"
    assert await audit(teams_stack) == []
