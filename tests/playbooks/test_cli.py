"""`deskmate admin …`, `deskmate release …` and `deskmate rollback` through typer, against a real database."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from bot.cli import app
from bot.cli import playbooks as playbooks_cli
from bot.core.settings import Settings, get_settings
from feedback.db import get_database
from feedback.models import AuditEntry, EvalRun, Release, Switch
from playbooks.gate import register_gate


@pytest.fixture
def cli(make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[Callable[..., Any]]:
    """Run `deskmate ARGS` in-process with DESKMATE_* pointing at the test's database, Redis and sample index."""
    settings = make_settings()
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DESKMATE_DATABASE_URL", settings.database_url_resolved())
    monkeypatch.setenv("DESKMATE_REDIS_URL", str(settings.redis_url))
    monkeypatch.setattr(playbooks_cli, "out", Console(width=250, soft_wrap=True))
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.output

    run.settings = settings  # type: ignore[attr-defined]
    yield run
    get_settings.cache_clear()


def db_session(settings: Settings) -> Session:
    return Session(get_database(settings.database_url_resolved()).engine, expire_on_commit=False)


def test_admin_kill_status_and_audit_as_the_cli_operator(cli: Callable[..., Any]) -> None:
    out = cli("admin", "kill", "off", "slack:C0NOISY", "--reason", "bad answers")
    assert "slack:C0NOISY: on → off" in out
    status = cli("admin", "status")
    assert "slack:C0NOISY: off" in status and "bad answers" in status
    cli("admin", "kill", "off", "here", code=1)
    audit = cli("admin", "audit")
    user = getpass.getuser()
    assert f"cli:{user}" in audit and "kill off slack:C0NOISY bad answers" in audit
    assert "slack:C0NOISY=on" in audit and "slack:C0NOISY=off" in audit
    with db_session(cli.settings) as session:  # type: ignore[attr-defined]
        assert session.get(Switch, "slack:C0NOISY").set_by == f"cli:{user}"  # type: ignore[union-attr]
        entries = session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
    assert [e.command for e in entries] == ["kill off slack:C0NOISY bad answers", "status", "kill off here"]
    assert all(e.platform == "cli" and e.allowed for e in entries)


def test_release_create_list_promote_and_rollback(cli: Callable[..., Any], tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are Deskmate. Answer only from the documents; cite them.\n", encoding="utf-8")
    created = cli("release", "create", "terse-1", "--prompt-file", str(prompt), "--k", "4", "--min-score", "0.25",
                  "--index-version", "latest", "--knowledge-set", "people", "--knowledge-set", "it",
                  "--dense-weight", "0.6", "--thread-merge", "rrf", "--notes", "shorter answers")
    assert "terse-1" in created and "deskmate release promote terse-1" in created
    cli("release", "create", "terse-1", code=1)  # releases are immutable
    cli("release", "create", "bad", "--index-version", "99", code=2)
    with db_session(cli.settings) as session:  # type: ignore[attr-defined]
        release = session.exec(select(Release).where(Release.name == "terse-1")).one()
        session.add(EvalRun(release_name="terse-1", dataset="golden/sample.jsonl",
                            metrics={"recall_at_k": 0.91, "citation_coverage": 0.88}))
        session.commit()
    assert release.prompt_template.startswith("You are Deskmate.") and release.prompt_version.startswith("sha-")
    assert (release.retrieval_k, release.min_score, release.index_version) == (4, 0.25, 1)
    assert release.knowledge_sets == ["people", "it"] and release.fusion["dense_weight"] == 0.6
    assert release.fusion["alternative_merge"] == "rrf" and release.fusion["crosslingual"] is True, \
        "the base release's other fusion settings are kept"
    assert release.created_by == f"cli:{getpass.getuser()}"

    listing = cli("release", "list")
    assert "terse-1" in listing and "recall_at_k=0.91" in listing and "▶" in listing

    register_gate(lambda *_: (False, "no eval of terse-1 on the current index"))
    try:
        refused = cli("release", "promote", "terse-1", code=1)
        assert "no eval of terse-1" in refused
        forced = cli("release", "promote", "terse-1", "--force")
        assert "initial → terse-1" in forced and "promoted anyway" in forced
    finally:
        register_gate(None)
    assert "terse-1 → initial" in cli("rollback")
    assert "initial → terse-1" in cli("admin", "rollback", "terse-1")
    releases = cli("admin", "releases")
    assert "▶ terse-1" in releases and "rollback (forced)" not in releases and "promote (forced)" in releases
    audit = cli("admin", "audit", "--limit", "3")
    assert "rollback terse-1" in audit and "release create" not in audit


def test_admin_commands_work_with_redis_down(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKMATE_REDIS_URL", "redis://127.0.0.1:1")
    get_settings.cache_clear()
    assert "Deskmate status" in cli("admin", "status")
    assert "everywhere: on → retrieval-only" in cli("admin", "kill", "retrieval-only")
    assert "Spend today" in cli("admin", "budget")


def test_grant_from_the_cli(cli: Callable[..., Any]) -> None:
    assert "slack:U0NEW can now run admin commands" in cli("admin", "grant", "slack:U0NEW", "--note", "on-call")
    cli("admin", "grant", "U0BARE", code=1)  # the CLI has no platform of its own
    assert "slack:U0NEW" in cli("admin", "admins")
    assert "no longer an admin" in cli("admin", "revoke", "slack:U0NEW")


def test_release_canary_start_status_and_stop_from_the_cli(cli: Callable[..., Any]) -> None:
    from feedback.models import Canary

    cli("release", "create", "cand-1", "--k", "4", "--notes", "fewer passages")
    register_gate(lambda *_: (False, "no eval of cand-1"))
    try:
        refused = cli("release", "canary", "cand-1", "--share", "25", code=1)
        assert "no eval of cand-1" in refused, "a live canary asks the promotion gate first"
        started = cli("release", "canary", "cand-1", "--share", "25", "--exclude", "slack:C0VIP", "--min-answers",
                      "400", "--max-hours", "48", "--force")
    finally:
        register_gate(None)
    assert "answers 25% of conversations" in started and "slack:C0VIP" in started
    cli("release", "canary", "initial", code=1)  # the active release is no candidate
    assert "already running" in cli("release", "canary", "cand-1", code=1)
    status = cli("release", "canary", "status")
    assert "cand-1" in status and "running" in status and "👎 per rated answer" in status
    assert "stopped by cli:" in cli("release", "canary", "stop", "--reason", "wrong week")
    with db_session(cli.settings) as session:  # type: ignore[attr-defined]
        canary = session.exec(select(Canary)).one()
        entries = session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
    assert (canary.share, canary.excluded, canary.min_answers, canary.max_hours) == (25, ["slack:C0VIP"], 400, 48)
    assert canary.state == "stopped" and "wrong week" in canary.decision
    starts = [e for e in entries if e.command.startswith("canary cand-1")]
    assert [e.detail.startswith("FORCED past the gate") for e in starts if e.after] == [True]
