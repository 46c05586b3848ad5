"""The admin dashboard: auth, the figures it plots, knowledge gaps, drift, audited controls, and a real browser.

The web process runs here with a database seeded with three weeks of history: release ``initial``, then ``r2``
promoted 10 days ago and rolled back 3 days ago; retrieval scores that fell this week; a few questions nobody
could answer, asked in several phrasings. No index and no worker are needed: the dashboard only reads the
database (and loads the embedder to group questions).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from feedback.models import AuditEntry, Feedback, Interaction, Release, ReleaseEvent, Switch
from playbooks.dashboard.drift import compare
from playbooks.dashboard.gaps import group_by_words, knowledge_gaps
from playbooks.dashboard.data import Window
from feedback.releases import initial_release
from tests.conftest import settings_for
from tests.stack import Stack, running_stack

TOKEN = "dash-token-0123456789"
NOW = datetime.now(timezone.utc)
PROMOTED_DAYS_AGO, ROLLED_BACK_DAYS_AGO = 10, 3
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

GAPS = {  # unanswered questions, in several phrasings each
    "standing desk": ["Can I expense a standing desk?", "can i get reimbursed for a standing desk",
                      "Is a standing desk covered by the home office budget?"],
    "parking": ["Where do I park at the Lisbon office?", "Is there parking at the Lisbon office?"],
}
ROUTINE = ["How much is the meal per diem?", "How do I reset my VPN password?", "When is payday this month?",
           "How many days of annual leave do I get?"]
PASSAGE = {"doc_id": "it/home-office", "title": "Home office", "heading": "Equipment", "location": "it/home-office.md",
           "chunk_id": "c1", "kb": "default", "knowledge_set": "it", "score": 0.4, "index_version": 1}


def release_on(day_ago: float) -> str:
    return "r2" if ROLLED_BACK_DAYS_AGO < day_ago <= PROMOTED_DAYS_AGO else "initial"


def seed_answers() -> Iterator[tuple[int, float, str, str | None]]:
    """The seeded answers: (k, days ago, release, vote) — 8 a day for 14 days, most of them voted."""
    for day in range(14):
        for k in range(8):
            day_ago = day + (k + 0.5) / 9
            release = release_on(day_ago)
            yield k, day_ago, release, "down" if release == "r2" and k % 2 == 0 else "up" if k % 4 != 3 else None


def voted_dates(release: str) -> list[str]:
    """The UTC dates with a vote on an answer of ``release`` (which depend on the time of day the test runs)."""
    return sorted({(NOW - timedelta(days=day_ago)).date().isoformat()
                   for _k, day_ago, answered_by, vote in seed_answers() if answered_by == release and vote})


async def seed(stack: Stack) -> dict[str, Any]:
    rng = random.Random(7)
    settings = stack.settings
    async with stack.db.asession() as session:
        first = initial_release(settings)
        first.created_at = NOW - timedelta(days=21)
        session.add(first)
        session.add(Release(**{**first.model_dump(exclude={"id", "name", "created_at"}), "name": "r2",
                               "notes": "shorter prompt"}))
        session.add(ReleaseEvent(release_name="initial", action="bootstrap", actor="deskmate",
                                 at=NOW - timedelta(days=21)))
        session.add(ReleaseEvent(release_name="r2", previous="initial", action="promote", actor="slack:UADMIN",
                                 at=NOW - timedelta(days=PROMOTED_DAYS_AGO)))
        session.add(ReleaseEvent(release_name="initial", previous="r2", action="rollback", actor="cli:ops",
                                 at=NOW - timedelta(days=ROLLED_BACK_DAYS_AGO)))
        session.add(Switch(scope="slack:CNOISY", mode="off", reason="spam", set_by="slack:UADMIN"))
        session.add(AuditEntry(actor="slack:UADMIN", platform="slack", where="slack:COPS", command="promote r2",
                               allowed=True, before="initial", after="r2", at=NOW - timedelta(days=PROMOTED_DAYS_AGO)))
        await session.commit()
        n = 0
        for k, day_ago, release, label in seed_answers():
            at = NOW - timedelta(days=day_ago)
            fallback = release == "r2" and k % 3 == 0
            score = rng.gauss(0.45 if day_ago < 7 else 0.62, 0.06)
            n += 1
            row = Interaction(idempotency_key=f"seed:{n}", platform="slack", channel="CGEN", user_hash="u",
                              question=ROUTINE[k % len(ROUTINE)], status="answered", release=release,
                              fallback=fallback, fallback_reason="timeout" if fallback else None,
                              top_score=score, passages=[PASSAGE], cost_usd=0.004, model=first.model,
                              latency_ms={"total_before_delivery": 1500.0}, attempts=1,
                              created_at=at - timedelta(seconds=2 + k), answered_at=at)
            session.add(row)
            await session.flush()
            if label:
                session.add(Feedback(interaction_id=row.id, user_hash=f"v{n}", platform="slack", label=label,
                                     reason="wrong" if label == "down" else None))
        for topic, phrasings in GAPS.items():
            for j, text in enumerate(phrasings * 2):
                n += 1
                at = NOW - timedelta(days=1 + j, hours=2)
                session.add(Interaction(idempotency_key=f"seed:{n}", platform="teams", channel="19:x", user_hash="u",
                                        question=text, status="not_found", release="initial", top_score=0.2,
                                        passages=[PASSAGE], created_at=at - timedelta(seconds=1), answered_at=at))
        await session.commit()
    return {"interactions": n}


@pytest.fixture
async def dashboard(tmp_path: Path, redis_url: str) -> AsyncIterator[Stack]:
    settings = settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url=redis_url,
                            dashboard_token=TOKEN, daily_budget_usd=0.05, admin_user_ids=["slack:UADMIN"],
                            gate_enabled=False)
    async with running_stack(settings, worker=False) as stack:
        await seed(stack)
        yield stack


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_without_the_token_every_dashboard_url_is_401(dashboard: Stack) -> None:
    client = dashboard.client
    for path in ("/dashboard", "/dashboard/api/overview", "/dashboard/api/gaps", "/dashboard/api/audit",
                 "/dashboard/api/delivery"):
        assert (await client.get(path)).status_code == 401, path
    assert (await client.get("/dashboard", headers=bearer("wrong"))).status_code == 401
    assert (await client.get("/dashboard?token=wrong")).status_code == 401
    assert (await client.post("/dashboard/actions/kill", data={"mode": "off"})).status_code == 401
    # an SSO header means nothing unless configured
    assert (await client.get("/dashboard", headers={"X-Forwarded-Email": "eve@example.com"})).status_code == 401
    # ?token= sets a cookie (an HMAC, not the token) and redirects to the URL without it
    redirect = await client.get("/dashboard?token=" + TOKEN + "&days=7")
    assert redirect.status_code == 303 and redirect.headers["location"] == "/dashboard?days=7"
    assert TOKEN not in redirect.headers["set-cookie"] and "HttpOnly" in redirect.headers["set-cookie"]
    assert (await client.get("/dashboard?days=7")).status_code == 200  # the cookie now
    assert (await client.get("/dashboard/api/overview", headers=bearer())).status_code == 200


async def test_answers_not_yet_delivered_and_failed_deliveries_are_counted_and_marked(dashboard: Stack) -> None:
    async with dashboard.db.asession() as session:
        for n, (state, attempts, error) in enumerate([("pending", 3, "HTTP 503"), ("failed", 1, "channel_not_found"),
                                                      ("delivered", 2, "HTTP 500")]):
            session.add(Interaction(idempotency_key=f"delivery:{n}", platform="slack", channel="CDELIV", user_hash="u",
                                    question="Where is the VPN guide?", status="answered", answer="Here.",
                                    delivery_state=state, delivery_attempts=attempts, delivery_error=error,
                                    delivery_next_at=NOW + timedelta(seconds=30) if state == "pending" else None,
                                    created_at=NOW - timedelta(minutes=5), answered_at=NOW - timedelta(minutes=4)))
        await session.commit()
    data = (await dashboard.client.get("/dashboard/api/delivery", headers=bearer())).json()
    assert (data["undelivered"], data["failed"], data["delivered"]) == (1, 1, 1)
    assert data["failed_attempts"] == 3 + 1 + 1, "the delivered row's last attempt succeeded"
    assert [(r["delivery_state"], r["label"]) for r in data["rows"]] == [
        ("pending", "answered, not yet delivered"), ("failed", "delivery failed")]
    assert data["rows"][0]["error"] == "HTTP 503" and data["rows"][0]["next_attempt_at"]
    page = (await dashboard.client.get("/dashboard", headers=bearer())).text
    assert '<div class="kpi alert" id="kpi-answered-not-yet-delivered"><span class="muted">answered, not yet ' \
           'delivered</span><b>1</b>' in page
    assert '<div class="kpi alert" id="kpi-delivery-failed"><span class="muted">delivery failed</span><b>1</b>' in page
    assert '<span class="pending" data-state="pending">answered, not yet delivered</span>' in page
    assert '<span class="flag" data-state="failed">delivery failed</span>' in page


async def test_overview_plots_each_release_from_its_promotion_and_shows_the_rollback(dashboard: Stack) -> None:
    data = (await dashboard.client.get("/dashboard/api/overview?days=14", headers=bearer())).json()
    labels = data["labels"]
    assert len(labels) == 14 and labels[-1] == NOW.date().isoformat()
    r2 = data["releases"]["r2"]["up_rate"]
    initial = data["releases"]["initial"]["up_rate"]
    r2_days = [i for i, v in enumerate(r2) if v is not None]
    promoted_day = labels.index((NOW - timedelta(days=PROMOTED_DAYS_AGO)).date().isoformat())
    rollback_day = labels.index((NOW - timedelta(days=ROLLED_BACK_DAYS_AGO)).date().isoformat())
    first, last = voted_dates("r2")[0], voted_dates("r2")[-1]
    assert r2_days[0] == labels.index(first) and r2_days[-1] == labels.index(last), "plotted where it was voted"
    assert promoted_day <= r2_days[0] <= promoted_day + 1 and rollback_day - 1 <= r2_days[-1] <= rollback_day, \
        "r2's line starts on its promotion and ends on its rollback (the first/last vote may fall on the next/previous date)"
    assert initial[rollback_day + 1] is not None and initial[promoted_day + 1] is None  # the old line resumes
    assert max(v for v in r2 if v is not None) < min(v for v in initial if v is not None)  # r2 got more 👎
    assert any(v and v > 0 for v in data["releases"]["r2"]["fallback_rate"])
    assert all(not v for v in data["releases"]["initial"]["fallback_rate"] if v is not None)
    actions = [(e["action"], e["release"], e["day"]) for e in data["release_events"]]
    assert ("promote", "r2", promoted_day) in actions and ("rollback", "initial", rollback_day) in actions
    assert data["active_release"] == "initial"
    assert 100 <= sum(data["answers_per_day"]["answered"]) <= 14 * 8
    assert sum(data["answers_per_day"]["not_found"]) == 10
    assert data["cost_usd"]["budget"] == 0.05 and max(data["cost_usd"]["per_day"]) > 0
    assert all(p is None or 1.9 <= p <= 10 for p in data["latency_s"]["p50"])


async def test_knowledge_gaps_group_phrasings_with_their_sources(dashboard: Stack) -> None:
    gaps = (await dashboard.client.get("/dashboard/api/gaps?days=30", headers=bearer())).json()
    assert gaps["method"] == "embedding"
    for phrasings in GAPS.values():
        group = next(g for g in gaps["groups"] if g["label"] in phrasings)
        assert set(group["questions"]) == set(phrasings), group  # rephrasings together, nothing else with them
        assert group["count"] == group["unanswered"] == 2 * len(phrasings)
        assert group["sources"][0]["doc_id"] == "it/home-office" and group["sources"][0]["count"] == group["count"]
    # 👎 answers are gaps too, with their reasons
    downvoted = [g for g in gaps["groups"] if g["downvoted"]]
    assert downvoted and downvoted[0]["reasons"] == {"wrong": downvoted[0]["downvoted"]}
    assert all(len(g["questions"]) == 1 for g in downvoted)  # the same question, asked many times, is one group
    # the fallback without a model: shared words still put the standing-desk questions together
    words = await knowledge_gaps(dashboard.db, dashboard.settings, Window.last(30), method="words")
    assert words["method"] == "words"
    desk = next(g for g in words["groups"] if "standing desk" in g["label"].lower())
    assert desk["count"] >= 4
    assert len(group_by_words([])) == 0


async def test_drift_flags_this_weeks_lower_scores(dashboard: Stack) -> None:
    drift = (await dashboard.client.get("/dashboard/api/drift", headers=bearer())).json()
    assert drift["flagged"] and drift["mean_shift"] < -0.1 and drift["p_value"] < 0.01
    assert drift["this_week"]["n"] >= 50 and drift["last_week"]["n"] >= 50
    rng = random.Random(1)
    same = compare([rng.gauss(0.6, 0.1) for _ in range(80)], [rng.gauss(0.6, 0.1) for _ in range(80)])
    assert not same["flagged"] and same["reason"] == "no significant shift"
    assert not compare([0.5] * 5, [0.2] * 5)["flagged"]  # too few answers to say


async def test_controls_run_the_admin_handler_and_are_audited(dashboard: Stack, tmp_path: Path) -> None:
    client = dashboard.client
    killed = await client.post("/dashboard/actions/kill", headers=bearer(),
                               json={"mode": "retrieval-only", "reason": "provider incident"})
    assert killed.status_code == 200 and killed.json()["ok"], killed.text
    switches = (await client.get("/dashboard/api/switches", headers=bearer())).json()
    assert {"scope": "global", "mode": "retrieval-only"}.items() <= next(
        s for s in switches if s["scope"] == "global").items()
    rolled = await client.post("/dashboard/actions/rollback", headers=bearer(), json={"release": "r2"})
    assert rolled.json()["ok"], rolled.text
    assert (await client.get("/dashboard/api/releases", headers=bearer())).json()["active"] == "r2"
    bad = await client.post("/dashboard/actions/kill", headers=bearer(), json={"mode": "sideways"})
    assert bad.status_code == 400 and not bad.json()["ok"]
    audit = (await client.get("/dashboard/api/audit", headers=bearer())).json()
    assert [(e["actor"], e["command"], e["allowed"]) for e in audit[:2]] == [
        ("dashboard:token (dashboard token holder)", "rollback r2", True),
        ("dashboard:token (dashboard token holder)", "kill retrieval-only everywhere provider incident", True)]
    # a form posted with the session cookie but without the page's CSRF token is refused
    await client.get(f"/dashboard?token={TOKEN}")
    forged = await client.post("/dashboard/actions/kill", data={"mode": "off"})
    assert forged.status_code == 403


async def test_sso_users_see_the_dashboard_and_only_admins_may_act(tmp_path: Path, redis_url: str) -> None:
    settings = settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 's.db'}", redis_url=redis_url,
                            dashboard_sso_header="X-Forwarded-Email", admin_user_ids=["ops@example.com"])
    async with running_stack(settings, worker=False) as stack:
        client = stack.client
        assert (await client.get("/dashboard")).status_code == 401
        page = await client.get("/dashboard", headers={"X-Forwarded-Email": "dev@example.com"})
        assert page.status_code == 200 and "dev@example.com" in page.text
        csrf = page.cookies.get("deskmate_csrf")
        assert csrf and f'value="{csrf}"' in page.text
        refused = await client.post("/dashboard/actions/kill", headers={"X-Forwarded-Email": "dev@example.com"},
                                    data={"mode": "off", "csrf": csrf})
        assert refused.status_code == 303 and "ok=0" in refused.headers["location"]
        allowed = await client.post("/dashboard/actions/kill", headers={"X-Forwarded-Email": "ops@example.com"},
                                    data={"mode": "off", "target": "slack:C0LOUD", "csrf": csrf})
        assert "ok=1" in allowed.headers["location"]
        audit = (await client.get("/dashboard/api/audit", headers={"X-Forwarded-Email": "ops@example.com"})).json()
    assert [(e["actor"], e["allowed"]) for e in audit] == [("dashboard:ops@example.com", True),
                                                           ("dashboard:dev@example.com", False)]


async def test_the_page_renders_its_charts_in_a_real_browser(dashboard: Stack, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            external: list[str] = []
            page.on("request", lambda r: external.append(r.url) if not r.url.startswith(dashboard.url) else None)
            response = await page.goto(f"{dashboard.url}/dashboard?token={TOKEN}&days=14")
            assert response is not None and response.status == 200
            assert page.url == f"{dashboard.url}/dashboard?days=14"  # the token left the address bar
            assert await page.title() == "Deskmate — operations"
            counts = {chart: await page.locator(f"svg#{chart} {shape}").count() for chart, shape in (
                ("chart-answers", "rect.bar"), ("chart-up-rate", "circle.pt"), ("chart-fallback-rate", "circle.pt"),
                ("chart-latency", "circle.pt"), ("chart-cost", "rect.bar"), ("chart-drift", "rect.bar"))}
            assert all(n > 0 for n in counts.values()), counts
            r2_points = await page.locator('svg#chart-up-rate circle.pt[data-series="r2"]').count()
            assert 0 < r2_points < 14
            box = await page.locator("svg#chart-up-rate").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100  # laid out, not just in the DOM
            assert await page.locator("svg#chart-cost g.limit").count() == 1  # the budget line
            assert await page.locator("#drift-card .flag").count() == 1
            assert "standing desk" in (await page.locator("#gaps").inner_text()).lower()
            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            # the kill-switch form, as an operator uses it
            await page.select_option("#kill-form select[name=mode]", "off")
            await page.fill("#kill-form input[name=reason]", "browser test")
            await page.click("#kill-form button")
            await page.wait_for_selector("#flash")
            flash = await page.locator("#flash").inner_text()
            switches = await page.locator("#switches").inner_text()
        finally:
            await browser.close()
    assert "Kill-switch everywhere" in flash and "off" in flash
    assert "browser test" in switches
    assert not external, external
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


async def test_knowledge_sources_show_their_last_sync_and_flag_a_held_or_failed_one(dashboard: Stack) -> None:
    from feedback.models import SyncRun

    async with dashboard.db.asession() as session:
        session.add(SyncRun(source="handbook", kind="folder", status="failed", started_at=NOW - timedelta(hours=2),
                            errors=["folder not found: /srv/handbook"]))
        session.add(SyncRun(source="handbook", kind="folder", status="ok", started_at=NOW - timedelta(hours=1),
                            added=3, updated=1, unchanged=40, index_version=7))
        session.add(SyncRun(source="eng", kind="git", status="held", started_at=NOW - timedelta(minutes=5),
                            errors=["held: this sync would delete 9 and change 0 of the 20 documents of source 'eng'"]))
        await session.commit()
    data = (await dashboard.client.get("/dashboard/api/sources", headers=bearer())).json()
    rows = {r["name"]: r for r in data["sources"]}
    assert (rows["handbook"]["status"], rows["handbook"]["added"], rows["handbook"]["index_version"]) == ("ok", 3, 7)
    assert rows["eng"]["status"] == "held" and "would delete 9" in rows["eng"]["errors"][0]
    page = (await dashboard.client.get("/dashboard", headers=bearer())).text
    assert '<section id="sources"><h2>Knowledge sources</h2>' in page
    assert '<span class="flag" data-status="held">held</span>' in page and "+3 ~1 -0 =40" in page
