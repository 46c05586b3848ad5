"""The README's main job, as a user runs it: ``deskmate run`` with no settings but a data folder and a port — the
embedded Redis on its unix socket, SQLite, the bundled sample ingested, no API key — answers a question in the
local chat with the labelled extractive fallback, citing the handbook."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.procs import stop
from tests.fakes.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


def test_deskmate_run_answers_over_the_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_") and k != "ANTHROPIC_API_KEY"}
    env.update({"DESKMATE_DATA_DIR": str(tmp_path / "data"), "DESKMATE_WEB_PORT": str(port),
                "ANONYMIZED_TELEMETRY": "False"})
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 240
            while True:  # until every dependency is ready (the first run ingests the sample)
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
            asked = client.post("/chat/api/ask", json={"text": "How much is the daily meal allowance when I travel?",
                                                       "conversation_id": "readme"})
            assert asked.status_code == 202 and asked.json()["queued"] is True, asked.text
            headers = {"X-Deskmate-Conversation": asked.json()["conversation"]}
            url = f"/chat/api/interactions/{asked.json()['interaction_id']}"
            deadline = time.monotonic() + 120
            while (answer := client.get(url, headers=headers).json())["status"] in ("pending", "answering"):
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
    finally:
        stop(proc)  # SIGTERM: it stops its embedded Redis too
    assert answer["status"] == "answered", answer
    assert "not written by the AI model" in answer["answer"] and "[1]" in answer["answer"]
    assert answer["sources"], answer
