"""Helpers for the playbook tests: admin actors, settings with Claude (the local fake), asking in a channel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings
from bot.core.types import Platform, Question
from bot.runtime import Runtime, build_runtime
from feedback.models import Interaction
from playbooks.admin import AdminActor, AdminReply, handle_admin_command
from bench.procs import stop
from tests.conftest import settings_for
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
    submitted = await rt.intake.submit(question)
    assert submitted.enqueued and submitted.interaction_id is not None
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


# --- a second index version and a separate worker process -----------------------------------------------
NEW_DOC = """---
title: Plotter room
---
# Plotter room

The large-format plotter in room 4.12 is unlocked with the door code QX-4471. Book it in the facilities calendar.
"""
QUESTION = "What is the door code of the plotter room?"
OLD_MARKER = "Release marker: OLD-PROMPT."
NEW_MARKER = "Release marker: NEW-PROMPT."


@pytest.fixture
def two_version_data_dir(sample_data_dir: Path, tmp_path: Path) -> Path:
    """A copy of the shared sample index plus version 2, which adds one document (incremental: one embedded)."""
    from knowledge.config import KnowledgeConfig
    from knowledge.index import IndexStore
    from knowledge.ingest import ingest

    data_dir = tmp_path / "data"
    shutil.copytree(sample_data_dir, data_dir)
    docs = tmp_path / "kb"
    shutil.copytree(SAMPLE_KNOWLEDGE_DIR, docs)
    (docs / "people" / "plotter-room.md").write_text(NEW_DOC, encoding="utf-8")
    report = ingest(IndexStore(KnowledgeConfig.from_settings(settings_for(data_dir))), docs, kb="default")
    assert report.version == 2 and report.chunks_embedded <= 3
    return data_dir


async def create_old_and_new_releases(rt: Runtime) -> None:
    """``v-old`` (index 1, OLD marker in the prompt) and ``v-new`` (index 2, NEW marker); both promoted, new last."""
    from bot.llm import DEFAULT_PROMPT_TEMPLATE
    from playbooks.releases import activate, create_release

    async with rt.db.asession() as session:
        await create_release(session, rt.settings, "v-old", actor="test", index_version=1,
                             prompt_template=f"{DEFAULT_PROMPT_TEMPLATE}\n{OLD_MARKER}", prompt_version="old")
        await create_release(session, rt.settings, "v-new", actor="test", index_version=2,
                             prompt_template=f"{DEFAULT_PROMPT_TEMPLATE}\n{NEW_MARKER}", prompt_version="new")
        await activate(session, rt.settings, "v-old", actor="test", action="promote")
        await activate(session, rt.settings, "v-new", actor="test", action="promote")


def system_prompt(request: Any) -> str:
    return " ".join(block.get("text", "") for block in request.body.get("system", []))


def passages_text(request: Any) -> str:
    return str(request.search_results)


def worker_env(settings: Settings) -> dict[str, str]:
    """The DESKMATE_* environment that makes `deskmate worker` use this test's database, Redis, data and fakes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    values: dict[str, Any] = {
        "DATA_DIR": settings.data_dir, "DATABASE_URL": settings.database_url_resolved(),
        "REDIS_URL": settings.redis_url, "ANTHROPIC_API_KEY": settings.anthropic_api_key,
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url, "LLM_MAX_RETRIES": 0, "WORKER_POLL_DELAY_S": 0.02,
        "SLACK_BOT_TOKEN": settings.slack_bot_token, "SLACK_API_URL": settings.slack_api_url,
        "DAILY_BUDGET_USD": settings.daily_budget_usd, "LOG_FORMAT": "json",
    }
    env.update({f"DESKMATE_{k}": str(v) for k, v in values.items() if v is not None})
    env["ANONYMIZED_TELEMETRY"] = "False"
    return env


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """Starts `deskmate worker` subprocesses; stops them (SIGTERM, then kill) after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        exe = Path(sys.executable).parent / "deskmate"
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([str(exe), "worker"], env=worker_env(settings), cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            stop(proc, timeout_s=15)
