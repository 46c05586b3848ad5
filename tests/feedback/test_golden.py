"""Golden sets: the bundled sample set is valid; bad lines are reported; feedback is promoted into a set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedback.db import Database
from feedback.export import labelled_rows
from feedback.golden import (
    SAMPLE_GOLDEN,
    GoldenError,
    check_doc_ids,
    load_golden,
    parse_golden,
    promote_feedback,
    summary,
    write_golden,
)
from feedback.votes import Votes
from tests.feedback.helpers import add_interaction


def test_bundled_sample_set_is_valid_and_matches_the_sample_knowledge_base(sample_data_dir: Path) -> None:
    from bot.core.settings import Settings
    from knowledge.config import KnowledgeConfig
    from knowledge.index import IndexStore

    items = load_golden(SAMPLE_GOLDEN)
    assert summary(items) == {"items": 44, "answerable": 33, "unanswerable": 11, "needs_review": 0, "regression": 0}
    config = KnowledgeConfig.from_settings(Settings(_env_file=None, data_dir=sample_data_dir))
    doc_ids = {c.doc_id for c in IndexStore(config).load("default").chunks}
    assert check_doc_ids(items, doc_ids) == []


def test_every_problem_is_reported_with_its_line() -> None:
    text = "\n".join([
        json.dumps({"qid": "a", "question": "q?", "relevant_doc_ids": ["x"], "answer": "y", "answerable": True}),
        "{not json",
        json.dumps({"qid": "a", "question": "dup", "relevant_doc_ids": [], "answer": "", "answerable": False}),
        json.dumps({"qid": "b", "question": "no refs", "relevant_doc_ids": [], "answer": "", "answerable": True}),
        json.dumps({"qid": "c", "question": "x", "relevant_doc_ids": ["d"], "answer": "", "answerable": False,
                    "colour": "red"}),
        json.dumps({"qid": "d", "question": "x", "answerable": None}),
        json.dumps({"qid": "e", "question": "x", "answerable": None, "needs_review": True, "regression": True,
                    "rejected_answer": "Ich weiß es nicht.", "rejected_status": "declined"}),
    ])
    with pytest.raises(GoldenError) as caught:
        parse_golden(text, source="set.jsonl")
    problems = "\n".join(caught.value.problems)
    assert "set.jsonl:2: not JSON" in problems
    assert "set.jsonl:3: duplicate qid 'a'" in problems
    assert "set.jsonl:4: an answerable item needs relevant_doc_ids" in problems
    assert "set.jsonl:4: an answerable item needs a reference answer" in problems
    assert "set.jsonl:5: an unanswerable item has no relevant_doc_ids" in problems
    assert "set.jsonl:5: unknown fields: colour" in problems
    assert "set.jsonl:6: answerable must be true or false (null only with needs_review)" in problems
    assert "set.jsonl:7: rejected_status must be one of answered, not_found" in problems


async def test_feedback_is_promoted_into_the_golden_set(db: Database, tmp_path: Path) -> None:
    good = await add_interaction(db, question="whats the per diem in the US",
                                 answer="_Automatic excerpt — not written by the AI model (no API key configured)._"
                                        "\n\n> The per diem is USD 80 per full day. [1]", fallback=True)
    bad = await add_interaction(db, question="vpn not working", answer="Restart your laptop [1].",
                                cited=("it/laptop-setup",))
    declined = await add_interaction(db, question="What is the capital of Australia?", status="not_found",
                                     answer="I couldn't find this in the handbook.", cited=("travel/per-diem",))
    tied = await add_interaction(db, question="how do I book a flight")
    known = await add_interaction(db, question="Whats the per diem in the US?")  # already in the set below
    await Votes(db, user_salt="test-salt").vote(interaction_id=good, user="U1", platform="slack", label="up")
    await Votes(db, user_salt="test-salt").vote(interaction_id=good, user="U2", platform="slack", label="up")
    await Votes(db, user_salt="test-salt").vote(interaction_id=bad, user="U1", platform="slack", label="down", reason="wrong")
    await Votes(db, user_salt="test-salt").vote(interaction_id=bad, user="U2", platform="slack", label="down", reason="wrong")
    await Votes(db, user_salt="test-salt").vote(interaction_id=bad, user="U3", platform="slack", label="up")
    await Votes(db, user_salt="test-salt").vote(interaction_id=declined, user="U1", platform="slack", label="up")
    await Votes(db, user_salt="test-salt").vote(interaction_id=tied, user="U1", platform="slack", label="up")
    await Votes(db, user_salt="test-salt").vote(interaction_id=tied, user="U2", platform="slack", label="down")
    await Votes(db, user_salt="test-salt").vote(interaction_id=known, user="U1", platform="slack", label="up")

    promotion = promote_feedback(await labelled_rows(db), [])
    by_id = {i.interaction_id: i for i in promotion.added}
    assert set(by_id) == {good, bad, declined}, "the tie is skipped and the repeated question promoted once"
    assert promotion.skipped == {"votes tied": 1, "already in the set": 1}

    reference = by_id[good]
    assert (reference.answerable, reference.relevant_doc_ids, reference.origin) == (True, ["travel/per-diem"],
                                                                                     "feedback:up")
    assert reference.answer == "The per diem is USD 80 per full day.", "no fallback label, quote marks or markers"
    regression = by_id[bad]
    assert regression.regression and regression.needs_review and regression.answerable is None
    assert (regression.rejected_answer, regression.rejected_doc_ids, regression.reason) == (
        "Restart your laptop [1].", ["it/laptop-setup"], "wrong")
    assert regression.rejected_status == "answered", "a 'not found' reply is recognised by it, in any language"
    assert by_id[declined].answerable is False and by_id[declined].relevant_doc_ids == []

    path = tmp_path / "promoted.jsonl"
    write_golden(path, promotion.added)
    assert [i.qid for i in load_golden(path)] == [i.qid for i in promotion.added], "what is written loads back"
    assert [i.rejected_status for i in load_golden(path)] == [i.rejected_status for i in promotion.added]
    again = promote_feedback(await labelled_rows(db), load_golden(path))
    assert again.added == [] and again.skipped["already in the set"] == 4


async def test_promote_and_validate_golden_commands(db: Database, settings, tmp_path: Path, monkeypatch) -> None:
    import asyncio

    from typer.testing import CliRunner

    from bot.cli import feedback as feedback_cli

    monkeypatch.setattr(feedback_cli, "get_settings", lambda: settings)
    good = await add_interaction(db, question="whats the per diem in the US", answer="USD 80 a day [1].")
    await Votes(db, user_salt="test-salt").vote(interaction_id=good, user="U1", platform="slack", label="up")
    target = tmp_path / "golden" / "promoted.jsonl"
    runner = CliRunner()

    def invoke(args: list[str]):
        return asyncio.to_thread(runner.invoke, feedback_cli.feedback_app, args)

    dry = await invoke(["promote-golden", "--into", str(target), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout.splitlines()[0])["answer"] == "USD 80 a day." and not target.exists()
    wrote = await invoke(["promote-golden", "--into", str(target)])
    assert wrote.exit_code == 0 and "Added 1 items" in " ".join(wrote.output.split())
    again = await invoke(["promote-golden", "--into", str(target)])
    assert "Added 0 items" in " ".join(again.output.split()) and len(target.read_text().splitlines()) == 1
    valid = await invoke(["validate-golden", str(target)])
    assert valid.exit_code == 0 and "valid" in valid.stdout
    target.write_text('{"qid": "x"}\n')
    invalid = await invoke(["validate-golden", str(target)])
    assert invalid.exit_code == 1 and "question must be a non-empty string" in invalid.output
