"""`rollback` from the web side changes the prompt and the index the NEXT answer uses in a separate worker process.

The worker is `deskmate worker` started as a subprocess with DESKMATE_* settings pointing at this test's database,
Redis and data directory, and at the local fake of the Anthropic API, so what it sent to "Claude" can be read.
Two index versions are kept: version 2 adds a document version 1 does not have, so the index a release pins is
visible in the passages sent to the model.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.core.settings import Settings
from bot.llm import DEFAULT_PROMPT_TEMPLATE
from bot.runtime import build_runtime
from playbooks.releases import create_release
from tests.conftest import settings_for
from tests.playbooks.conftest import (
    ADMIN,
    ADMIN_IDS,
    NEW_MARKER,
    OLD_MARKER,
    QUESTION,
    ask_in,
    passages_text,
    run,
    system_prompt,
)


async def test_rollback_changes_prompt_and_index_of_the_next_answer_in_another_worker_process(
    two_version_data_dir: Path, tmp_path: Path, redis_url: str, fake_anthropic: Any,
    worker_process: Callable[[Settings], subprocess.Popen[bytes]], open_gate: None,
) -> None:
    settings = settings_for(two_version_data_dir, database_url=f"sqlite:///{tmp_path / 'deskmate.db'}",
                            redis_url=redis_url, anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url,
                            admin_user_ids=ADMIN_IDS)
    web = await build_runtime(settings, worker=False)  # this process plays the web process: no retriever
    try:
        async with web.db.asession() as session:
            await create_release(session, settings, "v-old", actor="test", index_version=1,
                                 prompt_template=f"{DEFAULT_PROMPT_TEMPLATE}\n{OLD_MARKER}", prompt_version="old")
            await create_release(session, settings, "v-new", actor="test", index_version=2,
                                 prompt_template=f"{DEFAULT_PROMPT_TEMPLATE}\n{NEW_MARKER}", prompt_version="new")
        assert (await run(web, "promote v-old")).ok
        assert (await run(web, "promote v-new")).ok

        proc = worker_process(settings)
        first = await ask_in(web, "C1", QUESTION, timeout_s=180)  # includes the worker's start-up
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        assert first.release == "v-new" and first.index_version == 2
        assert NEW_MARKER in system_prompt(fake_anthropic.message_requests[-1])
        assert "QX-4471" in passages_text(fake_anthropic.message_requests[-1]), "index v2 has the plotter room"

        rolled = await run(web, "rollback")
        assert rolled.ok and "`v-new` → `v-old`" in rolled.text
        started = time.monotonic()
        second = await ask_in(web, "C1", QUESTION)
        elapsed = time.monotonic() - started
        request = fake_anthropic.message_requests[-1]
        assert second.release == "v-old" and second.index_version == 1
        assert OLD_MARKER in system_prompt(request) and NEW_MARKER not in system_prompt(request)
        assert "QX-4471" not in passages_text(request), "index v1 (kept, not rebuilt) has no plotter room"

        assert (await run(web, "rollback v-new", ADMIN)).ok, "rollback NAME goes forward again"
        third = await ask_in(web, "C2", QUESTION)
        assert third.release == "v-new" and NEW_MARKER in system_prompt(fake_anthropic.message_requests[-1])
        assert elapsed < 5, f"the answer after the rollback took {elapsed:.1f} s"
    finally:
        await web.aclose()
