"""Scale-out, proven: two web processes and two workers against one Postgres, one Chroma server and one Redis.

Real processes, as deployed (``deskmate web``, ``deskmate worker``, ``chroma run``, Debian's PostgreSQL), on
127.0.0.1; only the LLM is the local fake Messages API, served from this test's event loop. One test, in phases
that share the cluster (starting it is the expensive part):

1. a stream of questions through both web processes' chat API: each answered exactly once, by both workers;
2. the kill-switch set through web #1's dashboard: both workers reply with the maintenance message;
3. a promotion, then a rollback through web #2's dashboard: both workers follow each at the next message;
4. a worker SIGKILLed while it waits on the LLM: the other worker answers the question (the job is handed on
   once the dead worker's lease on it lapses: ``LEASE_S``, short here so that the test does not wait 15 s);

and throughout: no question answered twice, every job log line names its interaction, no message text in logs.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select

from bench.scale_out import DASHBOARD_TOKEN, SAMPLE, Cluster, Proc, ask_all, start_cluster, wait_all_final
from bot.core.settings import Settings
from bot.core.types import FINAL_STATUSES
from feedback.db import Database
from feedback.models import Interaction
from tests.fakes.anthropic_server import Reply

pytestmark = pytest.mark.slow

#: A small slice of the sample handbook: the test is about processes, not retrieval, and embedding is the
#: slow part of starting up.
KNOWLEDGE = ["travel/per-diem.md", "travel/expenses.md", "it/vpn.md", "it/password-and-mfa.md",
             "people/annual-leave.md"]
JOB_TIMEOUT_S = 10
LEASE_S = 4
TAG = re.compile(r"\(([skprx]\d*-\d+)\)")
QUESTIONS = ["How much is the meal per diem when I travel?", "How do I connect to the VPN from home?",
             "How many days of annual leave do I get?", "How do I reset my password and MFA?",
             "How do I submit an expense report?"]
AUTH = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}


def knowledge_subset(root: Path) -> Path:
    target = root / "kb"
    for rel in KNOWLEDGE:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / rel, target / rel)
    return target


def tag_of(text: str) -> str:
    return text[text.rindex("(") + 1:-1]


def llm_calls(fake: Any) -> Counter[str]:
    """LLM requests per question tag (each question ends with a unique ``(tag-i)``)."""
    return Counter(tag for request in fake.message_requests
                   for tag in set(TAG.findall(json.dumps(request.body))))


async def ask_until_both_workers(cluster: Cluster, tag: str, *, batch: int = 6, rounds: int = 4) -> list[dict]:
    """Ask batches until each worker has answered at least one of them; returns every answer's view."""
    views: list[dict] = []
    for k in range(rounds):
        ids = await ask_all(cluster, batch, tag=f"{tag}{k}" if k else tag, questions=QUESTIONS)
        views += await wait_all_final(cluster, ids, timeout_s=120)
        asked = {v["interaction_id"] for v in views}
        if all(w.handled() & asked for w in cluster.workers if w.alive):
            return views
    raise AssertionError(f"a worker answered none of {len(views)} questions: "
                         f"{ {w.name: sorted(w.handled()) for w in cluster.workers} }")


async def dashboard(cluster: Cluster, web: Proc, action: str, **body: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{cluster.url(web)}/dashboard/actions/{action}", headers=AUTH, json=body)
    assert r.status_code == 200 and r.json()["ok"], r.text
    return str(r.json()["text"])


async def scrape(url: str) -> dict[tuple[str, tuple], float]:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url)).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_two_webs_and_two_workers_answer_once_obey_switches_and_survive_a_killed_worker(
    tmp_path: Path, fake_anthropic: Any
) -> None:
    started = time.monotonic()
    fake_anthropic.always(Reply.answer(delay_s=0.2))
    phases: dict[str, float] = {}
    async with start_cluster(tmp_path / "cluster", fake_anthropic.url, webs=2, workers=2,
                             knowledge=knowledge_subset(tmp_path), worker_max_jobs=2,
                             job_timeout_s=JOB_TIMEOUT_S, worker_lease_s=LEASE_S, worker_lease_renew_s=1,
                             sweeper_interval_s=2, sweeper_min_age_s=5,
                             metrics_cache_s=0) as cluster:
        phases.update(cluster.timings)
        web1, web2 = cluster.webs
        settings = Settings(_env_file=None, data_dir=Path(cluster.env["DESKMATE_DATA_DIR"]),  # type: ignore[call-arg]
                            database_url=cluster.database_url, chroma_url=cluster.env["DESKMATE_CHROMA_URL"],
                            gate_enabled=False)
        db = Database(cluster.database_url)

        # 1. one stream of questions through both web processes, answered by both workers
        stream = await ask_until_both_workers(cluster, "s", batch=12)
        assert {v["status"] for v in stream} == {"answered"}, stream
        assert {v["release"] for v in stream} == {"initial"}
        phases["stream_s"] = round(time.monotonic() - started, 1)

        # 2. the kill-switch, set through web #1's dashboard: both workers obey at the next message
        reply = await dashboard(cluster, web1, "kill", mode="off", reason="scale-out test")
        assert "off" in reply
        killed = await ask_until_both_workers(cluster, "k")
        assert {v["status"] for v in killed} == {"maintenance"}, killed
        await dashboard(cluster, web2, "kill", mode="on")
        phases["killswitch_s"] = round(time.monotonic() - started, 1)

        # 3. a promotion (as `deskmate release create` / `promote` do), then a rollback through web #2's dashboard
        from playbooks.releases import create_release, promote

        async with db.asession() as session:
            await create_release(session, settings, "r2", actor="cli:test", notes="scale-out test")
            await promote(session, settings, "r2", actor="cli:test", gate=None)
        promoted = await ask_until_both_workers(cluster, "p")
        assert {(v["status"], v["release"]) for v in promoted} == {("answered", "r2")}, promoted
        assert "initial" in await dashboard(cluster, web2, "rollback")
        rolled_back = await ask_until_both_workers(cluster, "r")
        assert {(v["status"], v["release"]) for v in rolled_back} == {("answered", "initial")}, rolled_back
        phases["releases_s"] = round(time.monotonic() - started, 1)

        # 4. a worker killed while it waits on the LLM: the other one answers the question
        fake_anthropic.script(Reply.answer(delay_s=120))  # the next LLM call hangs
        before = len(fake_anthropic.message_requests)
        [victim_id] = await ask_all(cluster, 1, tag="x", questions=QUESTIONS)
        deadline = time.monotonic() + 60
        while len(fake_anthropic.message_requests) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        [victim] = [w for w in cluster.workers if victim_id in w.handled()]
        victim.kill()  # SIGKILL, mid-answer
        [survivor] = [w for w in cluster.workers if w is not victim]
        killed_at = time.monotonic()
        [recovered] = await wait_all_final(cluster, [victim_id], timeout_s=JOB_TIMEOUT_S + 60)
        recovery_s = round(time.monotonic() - killed_at, 1)
        assert recovered["status"] == "answered" and recovered["fallback"] is False, recovered
        assert victim_id in survivor.handled()
        phases["worker_kill_recovery_s"] = recovery_s

        # every question answered exactly once
        async with db.asession() as session:
            rows = list((await session.exec(select(Interaction).order_by(col(Interaction.id)))).all())
        asked = stream + killed + promoted + rolled_back + [recovered]
        assert len(rows) == len(asked) == len({r.idempotency_key for r in rows})
        assert all(r.status in FINAL_STATUSES for r in rows)
        attempts = {r.id: r.attempts for r in rows}
        assert attempts.pop(victim_id) == 2 and set(attempts.values()) == {1}, attempts
        def done_lines() -> Counter[int]:
            return Counter(ln["interaction_id"] for w in cluster.workers for ln in w.log_lines()
                           if ln.get("event") == "pipeline.done")

        for _ in range(100):  # the row is final a moment before the job logs pipeline.done
            if set(done := done_lines()) >= {r.id for r in rows}:
                break
            await asyncio.sleep(0.1)
        assert set(done.values()) == {1} and set(done) == {r.id for r in rows}, done  # one answer each
        calls = llm_calls(fake_anthropic)
        for row in rows:
            expected = 0 if row.status == "maintenance" else 2 if row.id == victim_id else 1
            assert calls[tag_of(row.question)] == expected, (row.question, calls[tag_of(row.question)])

        # logs: JSON, the interaction id on every line of a job, no message text anywhere
        for proc in cluster.webs + cluster.workers:
            text = proc.log_path.read_text()
            assert "when I travel" not in text and "connect to the VPN" not in text, proc.name
        for worker in cluster.workers:
            job_lines = [ln for ln in worker.log_lines() if str(ln.get("event", "")).startswith("pipeline.")]
            assert job_lines and all(isinstance(ln.get("interaction_id"), int) for ln in job_lines)

        # metrics agree across processes: both web processes read the same figures
        m1, m2 = await scrape(cluster.url(web1) + "/metrics"), await scrape(cluster.url(web2) + "/metrics")
        answers = {k: v for k, v in m1.items() if k[0] == "deskmate_answers_total"}
        assert sum(answers.values()) == len(rows) and answers == {k: v for k, v in m2.items()
                                                                  if k[0] == "deskmate_answers_total"}
        assert m1[("deskmate_killswitch_mode", (("mode", "on"), ("scope", "global")))] == 1
        worker_metrics = await scrape(f"http://127.0.0.1:{survivor.port}/metrics")
        assert worker_metrics[("deskmate_answer_stage_seconds_count", (("stage", "generate"),))] >= 1
        await db.aclose()
    phases["total_s"] = round(time.monotonic() - started, 1)
    print("scale-out phases (s since start):", phases)
    assert recovery_s < LEASE_S + 20
