"""Helpers for the playbook tests: admin actors, settings with Claude (the local fake), asking in a channel."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bot.question import Platform, Question
from bot.queue import submit
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from feedback.models import Interaction
from playbooks.admin import AdminActor, AdminReply, handle_admin_command
from tests.stack import wait_final

ADMIN = AdminActor(platform="slack", user_id="UADMIN", channel="COPS", display_name="alice")
TEAMS_ADMIN = AdminActor(platform="teams", user_id="29:1admin-aad", channel="19:ops@thread.tacv2", display_name="tom")
STRANGER = AdminActor(platform="slack", user_id="USTRANGER", channel="CGENERAL", display_name="mallory")
ADMIN_IDS = ["slack:UADMIN", "teams:29:1admin-aad"]


def claude_settings(make_settings: Callable[..., Settings], fake: Any, **extra: Any) -> Settings:
    values: dict[str, Any] = {"anthropic_api_key": "sk-test", "anthropic_base_url": fake.url, "llm_max_retries": 0,
                              "llm_timeout_s": 5, "admin_user_ids": ADMIN_IDS}
    values.update(extra)
    return make_settings(**values)


async def ask_in(rt: Runtime, channel: str, text: str = "How much is the daily meal allowance when I travel?", *,
                 platform: Platform = Platform.SLACK, timeout_s: float = 30) -> Interaction:
    """Submit a question in ``channel`` through the real queue and wait for the worker's recorded answer."""
    question = Question(idempotency_key=f"test:{uuid.uuid4().hex}", platform=platform, workspace="T1",
                        channel=channel, thread="", user="U_ASKER", text=text, channel_type="im")
    submitted = await submit(rt.db, rt.redis, question)
    assert submitted.enqueued
    return await wait_final(rt.db, submitted.interaction_id, timeout_s)


async def run(rt: Runtime, text: str, actor: AdminActor = ADMIN) -> AdminReply:
    return await handle_admin_command(rt, actor, text)


@pytest.fixture
def open_gate() -> Iterator[None]:
    """Promotions pass (the quality gate of feedback/ is tested there; these tests are about the pointer)."""
    from playbooks.gate import register_gate

    register_gate(lambda *_: (True, "gate open for this test"))
    yield
    register_gate(None)


@pytest.fixture
async def web_rt(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    """A web-process runtime (database + Redis, no retriever) with two admins configured."""
    rt = await build_runtime(make_settings(admin_user_ids=ADMIN_IDS), worker=False)
    try:
        yield rt
    finally:
        await rt.aclose()
