"""`deskmate source list|show|sync`: an operator declares sources in a YAML file, syncs them, and sees every run
(counts, skip reasons, errors) recorded in the database; a bad file or an unknown source is a clear error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.core import settings as settings_module


@pytest.fixture
def operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    handbook = tmp_path / "handbook"
    (handbook / "it").mkdir(parents=True)
    (handbook / "it" / "vpn.md").write_text("# VPN\n\nOpen NorthGate and sign in with your badge number.\n")
    (handbook / "it" / "scan.png").write_bytes(b"\x89PNG")
    (tmp_path / "sources.yaml").write_text(
        "- name: handbook\n  kind: folder\n  path: handbook\n  schedule: '@daily'\n"
        f"- name: eng\n  kind: git\n  repository: {tmp_path / 'missing-repo'}\n  token_env: ENG_GIT_TOKEN\n")
    monkeypatch.chdir(tmp_path)  # the default DESKMATE_SOURCES_FILE is sources.yaml in the working directory
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENG_GIT_TOKEN", "ghp_do_not_print_me")
    settings_module.get_settings.cache_clear()
    yield tmp_path
    settings_module.get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_sync_list_and_show(operator: Path) -> None:
    code, out, err = invoke("source", "list", "--json")
    assert code == 0, err
    listed = {s["name"]: s for s in json.loads(out)}
    assert listed["handbook"]["schedule"] == "@daily" and listed["handbook"]["last_run"] is None
    assert listed["eng"]["token_env"] == "ENG_GIT_TOKEN"

    code, out, err = invoke("source", "sync", "--all", "--json")
    assert code == 1, "a source failed"
    runs = {r["source"]: r for r in json.loads(out)}
    assert runs["handbook"]["status"] == "ok" and runs["handbook"]["added"] == ["handbook/it/vpn"]
    assert runs["handbook"]["skipped"][0]["path"] == "handbook/it/scan.png"
    assert runs["eng"]["status"] == "failed" and "git clone failed" in runs["eng"]["errors"][0]
    assert "ghp_do_not_print_me" not in out + err

    code, out, err = invoke("source", "sync", "handbook")
    assert code == 0 and "handbook (folder): unchanged" in err

    code, out, _ = invoke("source", "list", "--json")
    last = {s["name"]: s["last_run"] for s in json.loads(out)}
    assert last["handbook"]["status"] == "unchanged" and last["eng"]["status"] == "failed"

    code, out, _ = invoke("source", "show", "handbook", "--json")
    shown = json.loads(out)
    assert [r["status"] for r in shown["runs"]] == ["unchanged", "ok"]
    assert shown["runs"][1]["added"] == 1 and shown["runs"][1]["skipped"][0]["reason"].startswith("unsupported")
    code, out, _ = invoke("source", "show", "eng")
    assert code == 0 and "failed" in out and "git clone failed" in out


def test_unknown_sources_and_bad_files_are_clear_errors(operator: Path) -> None:
    code, _, err = invoke("source", "sync", "nope")
    assert code == 1 and "no source named 'nope'" in err
    code, _, err = invoke("source", "sync")
    assert code == 2 and "name one source, or --all" in err
    (operator / "sources.yaml").write_text("- name: handbook\n  kind: folder\n  token: abc123\n")
    code, _, err = invoke("source", "list")
    assert code == 2 and "source 'handbook': key 'token' would put a credential in the file" in err
    assert "abc123" not in err


def test_a_mass_deletion_is_held_until_forced(operator: Path) -> None:
    handbook = operator / "handbook" / "it"
    for i in range(10):
        (handbook / f"page-{i}.md").write_text(f"# Page {i}\n\nTopic number {i} of the IT handbook, in detail.\n")
    (operator / "sources.yaml").write_text("- name: handbook\n  kind: folder\n  path: handbook\n")
    assert invoke("source", "sync", "handbook")[0] == 0
    for i in range(4):
        (handbook / f"page-{i}.md").unlink()
    code, _, err = invoke("source", "sync", "handbook")
    assert code == 1 and "handbook (folder): held" in err and "would delete 4 and change 0 of the 11" in err
    code, _, err = invoke("source", "sync", "handbook", "--force")
    assert code == 0 and "handbook (folder): ok" in err and "4 deleted" in err
