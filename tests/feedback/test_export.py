"""`deskmate feedback export`: labelled answers as JSONL or CSV, filtered by date and label; Langfuse pushes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import feedback as feedback_cli
from bot.core.settings import Settings
from feedback.db import Database
from feedback.export import labelled_rows, parse_since, render
from feedback.langfuse_sync import dataset_item_id, feedback_item, push_dataset, push_scores
from feedback.models import Feedback
from feedback.votes import Votes
from tests.fakes.langfuse_server import start_fake_langfuse
from tests.feedback.helpers import add_interaction


async def invoke(args: list[str]):
    """The CLI runs its own event loop: in a thread, as from a shell."""
    return await asyncio.to_thread(CliRunner().invoke, feedback_cli.feedback_app, args)


async def labelled(db: Database) -> dict[str, int]:
    """Three answers: 👍 (cited, traced), 👎 with a reason, and a 👍 on a 'not found' reply."""
    up = await add_interaction(db, question="whats the per diem in the US", answer="USD 80 a day [1].",
                               trace_id="b" * 32)
    down = await add_interaction(db, question="vpn not working", answer="Restart your laptop [1].",
                                 cited=("it/laptop-setup",), platform="teams")
    nf = await add_interaction(db, question="What is the capital of Australia?", status="not_found",
                               answer="I couldn't find this.", cited=("travel/international-travel",))
    await Votes(db, user_salt="test-salt").vote(interaction_id=up, user="U1", platform="slack", label="up")
    await Votes(db, user_salt="test-salt").vote(interaction_id=down, user="U2", platform="teams", label="down", reason="wrong",
                      comment="that is not how NorthGate works")
    await Votes(db, user_salt="test-salt").vote(interaction_id=nf, user="U3", platform="slack", label="up")
    return {"up": up, "down": down, "not_found": nf}


async def test_rows_carry_question_passages_answer_citations_release_label(db: Database) -> None:
    ids = await labelled(db)
    rows = {r["interaction_id"]: r for r in await labelled_rows(db)}
    assert set(rows) == set(ids.values())
    up = rows[ids["up"]]
    assert up["question"] == "whats the per diem in the US" and up["answer"] == "USD 80 a day [1]."
    assert up["label"] == "up" and up["release"] == "initial" and up["platform"] == "slack"
    assert up["cited_doc_ids"] == ["travel/per-diem"] and up["citations"][0]["doc_id"] == "travel/per-diem"
    assert up["passages"][0]["doc_id"] == "travel/per-diem" and up["passages"][0]["rank"] == 1
    assert len(up["user_hash"]) == 32 and up["trace_id"] == "b" * 32
    assert datetime.fromisoformat(up["voted_at"]).tzinfo is not None
    down = rows[ids["down"]]
    assert (down["label"], down["reason"], down["comment"], down["platform"]) == (
        "down", "wrong", "that is not how NorthGate works", "teams")
    assert rows[ids["not_found"]]["citations"] == [], "closest sources of a 'not found' reply are not citations"


async def test_filters_by_label_and_since(db: Database) -> None:
    ids = await labelled(db)
    assert [r["interaction_id"] for r in await labelled_rows(db, label="down")] == [ids["down"]]
    assert len(await labelled_rows(db, label="up")) == 2
    # the 👎 was given long ago: only the others are "since yesterday"
    async with db.asession() as session:
        from sqlmodel import select

        row = (await session.exec(select(Feedback).where(Feedback.label == "down"))).one()
        row.updated_at = datetime.now(timezone.utc) - timedelta(days=30)
        session.add(row)
        await session.commit()
    since = datetime.now(timezone.utc) - timedelta(days=1)
    assert {r["interaction_id"] for r in await labelled_rows(db, since=since)} == {ids["up"], ids["not_found"]}
    assert len(await labelled_rows(db, since=parse_since("2000-01-01"))) == 3
    with pytest.raises(ValueError):
        await labelled_rows(db, label="sideways")
    with pytest.raises(ValueError):
        parse_since("last tuesday")


async def test_jsonl_and_csv(db: Database) -> None:
    await labelled(db)
    rows = await labelled_rows(db)
    lines = render(rows, "jsonl").splitlines()
    assert [json.loads(line)["question"] for line in lines] == [r["question"] for r in rows]
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert len(parsed) == 3
    first = parsed[0]
    assert first["label"] == "up" and first["cited_doc_ids"] == "travel/per-diem"
    assert json.loads(first["citations"])[0]["doc_id"] == "travel/per-diem"
    assert json.loads(first["passages"])[0]["chunk_id"] == "travel/per-diem#0"


async def test_export_command(db: Database, settings: Settings, tmp_path: Path, monkeypatch) -> None:
    await labelled(db)
    monkeypatch.setattr(feedback_cli, "get_settings", lambda: settings)
    out = tmp_path / "down.csv"
    result = await invoke(["export", "--label", "down", "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    [row] = list(csv.DictReader(out.open(encoding="utf-8")))
    assert (row["question"], row["label"], row["reason"]) == ("vpn not working", "down", "wrong")
    result = await invoke(["export", "--since", "2000-01-01"])
    assert result.exit_code == 0
    assert len([json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]) == 3
    bad = await invoke(["export", "--format", "xml"])
    assert bad.exit_code == 2


async def test_scores_and_dataset_pushed_to_langfuse(db: Database, make_settings) -> None:
    ids = await labelled(db)
    rows = await labelled_rows(db)
    with start_fake_langfuse() as fake:
        settings = make_settings(langfuse_public_key=fake.public_key, langfuse_secret_key=fake.secret_key,
                                 langfuse_host=fake.url)
        scores = push_scores(settings, rows)
        assert (scores.sent, scores.skipped, scores.failed) == (1, 2, 0), "only the traced answer has a trace"
        assert [(s["traceId"], s["value"], s["name"]) for s in fake.scores] == [("b" * 32, 1.0, "user_feedback")]

        items = [feedback_item(r) for r in rows]
        first = push_dataset(settings, "deskmate-feedback", items)
        again = push_dataset(settings, "deskmate-feedback", items)  # upsert: same ids, no duplicates
        assert first.sent == again.sent == 3 and first.failed == 0
        assert list(fake.datasets) == ["deskmate-feedback"]
        stored = {i["metadata"]["interaction_id"]: i for i in fake.items_of("deskmate-feedback")}
        assert len(stored) == 3
        up, down = stored[ids["up"]], stored[ids["down"]]
        assert up["input"] == {"question": "whats the per diem in the US"}
        assert up["expectedOutput"]["answer"] == "USD 80 a day [1]." and up["sourceTraceId"] == "b" * 32
        assert down["expectedOutput"] is None and down["metadata"]["reason"] == "wrong"
        assert up["id"] == dataset_item_id("deskmate-feedback", f"feedback:{rows[0]['feedback_id']}")
        assert fake.unauthorized == 0


def test_push_dataset_command_without_langfuse_is_a_clear_error(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(feedback_cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(feedback_cli.feedback_app, ["push-dataset", "x"])
    assert result.exit_code == 1 and "Langfuse is not configured" in result.output
