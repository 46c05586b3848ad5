"""Knowledge sources: the sources file (clear errors, no credentials in it), schedules, and syncing a real git
repository and a folder into a real index (Chroma, BM25, the real embedder) — added, changed and deleted
documents, a re-sync with nothing new, a failing source beside a healthy one."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import SourcesConfigError, load_sources, parse_sources, read_secret
from knowledge.connectors.schedule import Schedule
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever, SearchFilter

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "Docs", "GIT_AUTHOR_EMAIL": "docs@example.com",
           "GIT_COMMITTER_NAME": "Docs", "GIT_COMMITTER_EMAIL": "docs@example.com", "GIT_CONFIG_GLOBAL": "/dev/null"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            git(repo, "rm", "-q", rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        git(repo, "add", rel)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "handbook-repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, {
        "README.md": "# Repository\n\nHow this repository is organised, for its maintainers only.\n",
        "docs/it/vpn.md": "# VPN\n\n## Connecting\n\nOpen NorthGate and sign in with your badge number.\n",
        "docs/it/laptops.md": "# Laptops\n\nLaptops are replaced every three years by the IT desk.\n",
        "docs/travel/per-diem.md": "# Per diem\n\nThe daily meal allowance is EUR 60 in Europe.\n",
        "docs/logo.png": "not really a picture",
    }, "first")
    return root


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


# --- the sources file ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([{"name": "hr", "kind": "folder"}], "source 'hr': key 'path' Field required"),
        ([{"name": "hr", "kind": "dropbox"}], "source 'hr': unknown kind; one of: folder, git"),
        ([{"name": "hr", "path": "x"}], "source 'hr': key 'kind' is missing"),
        ([{"name": "hr", "kind": "folder", "path": "x", "colour": "red"}],
         "source 'hr': key 'colour' is not a setting of this kind of source"),
        ([{"name": "hr", "kind": "folder", "path": "x", "schedule": "61 * * * *"}],
         "source 'hr': key 'schedule' Value error, minute '61' is outside 0-59"),
        ([{"name": "hr", "kind": "folder", "path": "x", "visibility": "secret"}], "source 'hr': key 'visibility'"),
        ([{"name": "Human Resources", "kind": "folder", "path": "x"}], "key 'name' String should match pattern"),
        ([{"name": "hr", "kind": "folder", "path": "a"}, {"name": "hr", "kind": "folder", "path": "b"}],
         "source 'hr': the name is used twice"),
        ([{"kind": "folder", "path": "a"}], "source #1: key 'name' Field required"),
        ({"name": "hr"}, "expected a list of sources"),
    ],
)
def test_a_bad_source_is_refused_with_its_name_and_key(sources: object, message: str) -> None:
    with pytest.raises(SourcesConfigError) as exc:
        parse_sources(sources)
    assert message in str(exc.value)


def test_credentials_are_never_taken_from_the_file_nor_shown(tmp_path: Path) -> None:
    with pytest.raises(SourcesConfigError) as exc:
        parse_sources([{"name": "eng", "kind": "git", "repository": "https://x/y.git", "token": "ghp_s3cret"}])
    assert "key 'token' would put a credential in the file" in str(exc.value) and "token_env" in str(exc.value)
    assert "ghp_s3cret" not in str(exc.value)
    with pytest.raises(SourcesConfigError) as exc:
        parse_sources([{"name": "eng", "kind": "git", "repository": "https://bot:ghp_s3cret@x/y.git"}])
    assert "put it in token_env or token_file" in str(exc.value) and "ghp_s3cret" not in str(exc.value)

    with pytest.raises(SourcesConfigError, match="source 'eng': token_env names ENG_TOKEN, which is not set"):
        read_secret("eng", "token", "ENG_TOKEN", None, {})
    assert read_secret("eng", "token", "ENG_TOKEN", None, {"ENG_TOKEN": "ghp_s3cret\n"}) == "ghp_s3cret"
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    assert read_secret("eng", "token", None, secret) == "from-a-file"
    with pytest.raises(SourcesConfigError, match="source 'eng': token_file .* cannot be read"):
        read_secret("eng", "token", None, tmp_path / "missing")

    shown = parse_sources([{"name": "eng", "kind": "git", "repository": "https://x/y.git",
                            "token_env": "ENG_TOKEN"}])[0].public_settings()
    assert shown["token_env"] == "ENG_TOKEN" and "token" not in shown


def test_the_sources_file_reads_a_list_or_a_mapping_and_folders_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "sources.yaml"
    path.write_text("sources:\n  - name: hr\n    kind: folder\n    path: ../handbook\n    schedule: every 30m\n")
    (source,) = load_sources(path)
    assert source.path == (tmp_path / "conf" / "../handbook")  # type: ignore[union-attr]
    assert load_sources(tmp_path / "absent.yaml") == []
    path.write_text("- name: hr\n  kind: folder\n  path: [unclosed\n")
    with pytest.raises(SourcesConfigError, match="not valid YAML"):
        load_sources(path)


@pytest.mark.parametrize(
    ("text", "after", "due"),
    [
        ("every 30m", "2026-12-02 10:00", "2026-12-02 10:30"),
        ("every 6h", "2026-12-02 10:00", "2026-12-02 16:00"),
        ("@hourly", "2026-12-02 10:00", "2026-12-02 11:00"),
        ("@daily", "2026-12-02 10:00", "2026-12-03 00:00"),
        ("*/15 * * * *", "2026-12-02 10:07", "2026-12-02 10:15"),
        ("30 2 * * 1-5", "2026-12-04 03:00", "2026-12-07 02:30"),  # Friday after the run -> Monday
        ("0 9 1 * *", "2026-12-02 10:00", "2027-01-01 09:00"),
        ("0 0 * * 7", "2026-12-02 10:00", "2026-12-06 00:00"),  # 7 is Sunday
    ],
)
def test_schedules(text: str, after: str, due: str) -> None:
    moment = datetime.strptime(after, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    assert Schedule.parse(text).next_after(moment) == datetime.strptime(due, "%Y-%m-%d %H:%M").replace(
        tzinfo=timezone.utc)
    assert Schedule.parse("manual").next_after(moment) is None and Schedule.parse(None).manual


# --- syncing ------------------------------------------------------------------------------------------------
def test_a_git_repository_syncs_incrementally_with_additions_changes_and_deletions(
        repo: Path, store: IndexStore, tmp_path: Path) -> None:
    (source,) = parse_sources([{"name": "eng", "kind": "git", "repository": str(repo), "path": "docs",
                                "web_url": "https://git.example/handbook/blob/main/docs"}])
    work = tmp_path / "work"

    def sync():  # noqa: ANN202
        return sync_source(store, source, [source], work_root=work, default_kb="t")

    first = sync()
    assert first.status == "ok" and first.errors == [], first.errors
    assert sorted(first.added) == ["eng/it/laptops", "eng/it/vpn", "eng/travel/per-diem"]
    assert first.index_version == 1
    top = Retriever(store).search("meal allowance in Europe", kb="t", k=1)[0]
    assert top.doc_id == "eng/travel/per-diem" and top.knowledge_set == "travel"
    assert top.location == "https://git.example/handbook/blob/main/docs/travel/per-diem.md"

    again = sync()
    assert again.status == "unchanged" and again.index_version == 1 and again.added == []

    commit(repo, {"docs/travel/per-diem.md": "# Per diem\n\nThe daily meal allowance is EUR 75 in Europe.\n",
                  "docs/it/laptops.md": None,
                  "docs/hr/leave.md": "# Leave\n\nEveryone has 25 days of paid leave a year.\n",
                  "README.md": "# Repository\n\nChanged outside the docs folder: not a document.\n"}, "second")
    second = sync()
    assert second.status == "ok" and second.index_version == 2
    assert (second.added, second.updated, second.deleted) == (["eng/hr/leave"], ["eng/travel/per-diem"],
                                                              ["eng/it/laptops"])
    assert second.unchanged == ["eng/it/vpn"]
    found = Retriever(store).search("meal allowance in Europe", kb="t", k=3)
    assert "EUR 75" in found[0].text and "eng/it/laptops" not in {p.doc_id for p in found}
    assert not (work / "eng" / "files" / "it" / "laptops.md").exists()

    # history rewritten (a force-push): the cursor is unknown, the whole tree is listed and compared
    git(repo, "checkout", "-q", "--orphan", "rewritten")
    git(repo, "rm", "-rq", "--cached", ".")
    commit(repo, {"docs/it/vpn.md": "# VPN\n\n## Connecting\n\nOpen NorthGate and sign in with your badge number.\n"},
           "rewritten")
    git(repo, "branch", "-f", "main", "rewritten")
    git(repo, "checkout", "-q", "main")
    third = sync()
    assert third.status == "ok" and sorted(third.deleted) == ["eng/hr/leave", "eng/travel/per-diem"]
    assert third.unchanged == ["eng/it/vpn"]


def test_a_failing_source_beside_a_healthy_one(repo: Path, store: IndexStore, tmp_path: Path) -> None:
    folder = tmp_path / "security"
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "incidents.md").write_text("# Incidents\n\nReport a lost laptop to security within "
                                                      "one hour.\n")
    (folder / "policies" / "legacy.txt").write_bytes(b"\x89PNG\x00\x00")
    sources = parse_sources([
        {"name": "sec", "kind": "folder", "path": str(folder), "visibility": "restricted",
         "knowledge_set": "security"},
        {"name": "eng", "kind": "git", "repository": str(tmp_path / "no-such-repo")},
        {"name": "private", "kind": "git", "repository": str(repo), "token_env": "DESKMATE_TEST_UNSET_TOKEN"},
    ])
    work = tmp_path / "work"
    healthy = sync_source(store, sources[0], sources, work_root=work, default_kb="t", environ={})
    assert healthy.status == "ok" and healthy.added == ["sec/policies/incidents"]
    assert healthy.skipped and healthy.skipped[0].path == "sec/policies/legacy.txt"
    assert "binary content" in healthy.skipped[0].reason

    broken = sync_source(store, sources[1], sources, work_root=work, default_kb="t", environ={})
    assert broken.status == "failed" and broken.index_version is None
    assert "git clone failed" in broken.errors[0]
    locked = sync_source(store, sources[2], sources, work_root=work, default_kb="t", environ={})
    assert locked.status == "failed"
    assert locked.errors == ["source 'private': token_env names DESKMATE_TEST_UNSET_TOKEN, which is not set"]

    assert store.latest_version("t") == 1, "the failures changed nothing"
    passages = Retriever(store).search("lost laptop", kb="t", k=1)
    assert passages[0].doc_id == "sec/policies/incidents" and passages[0].knowledge_set == "security"
    assert Retriever(store).search("lost laptop", kb="t", k=1,
                                   search_filter=SearchFilter(public_only=True)) == [], "restricted by its source"

    (folder / "policies" / "incidents.md").unlink()
    (folder / "policies" / "legacy.txt").unlink()
    emptied = sync_source(store, sources[0], sources, work_root=work, default_kb="t")
    assert emptied.status == "failed" and "every document it had is gone" in emptied.errors[0]
    assert store.latest_version("t") == 1


def test_the_change_guard_holds_a_mass_deletion_until_forced(tmp_path: Path, store: IndexStore) -> None:
    from knowledge.connectors.sync import ChangeGuard

    root = tmp_path / "many"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    topics = ["vpn", "laptops", "printers", "badges", "parking", "lunch", "wifi", "phones", "desks", "lockers",
              "keys", "mail"]
    commit(root, {f"{t}.md": f"# {t.title()}\n\nEverything about {t} at the office, for every employee.\n"
                  for t in topics}, "first")
    (source,) = parse_sources([{"name": "office", "kind": "git", "repository": str(root)}])
    work = tmp_path / "work"
    guard = ChangeGuard(max_share=0.3)
    assert sync_source(store, source, [source], work_root=work, default_kb="t", guard=guard).status == "ok"

    commit(root, {f"{t}.md": None for t in topics[:5]}, "an accidental mass deletion")
    held = sync_source(store, source, [source], work_root=work, default_kb="t", guard=guard)
    assert held.status == "held" and held.deleted == [] and store.latest_version("t") == 1
    assert "would delete 5 and change 0 of the 12 documents of source 'office' (42% > 30%)" in held.errors[0]
    assert "deskmate source sync office --force" in held.errors[0] and "source-change-held.md" in held.errors[0]
    assert (work / "office" / "files" / "vpn.md").exists(), "nothing was applied to the mirror"
    assert sync_source(store, source, [source], work_root=work, default_kb="t", guard=guard).status == "held"

    forced = sync_source(store, source, [source], work_root=work, default_kb="t", guard=None)
    assert forced.status == "ok" and len(forced.deleted) == 5 and store.latest_version("t") == 2

    folder = tmp_path / "folder"
    folder.mkdir()
    for t in topics:
        (folder / f"{t}.md").write_text(f"# {t.title()}\n\nThe {t} policy, revised for everyone this year.\n")
    (local,) = parse_sources([{"name": "local", "kind": "folder", "path": str(folder)}])
    assert sync_source(store, local, [local], work_root=work, default_kb="f", guard=guard).status == "ok"
    for t in topics[:3]:
        (folder / f"{t}.md").write_text(f"# {t.title()}\n\nRewritten completely.\n")
    for t in topics[3:5]:
        (folder / f"{t}.md").unlink()
    in_place = sync_source(store, local, [local], work_root=work, default_kb="f", guard=guard)
    assert in_place.status == "held" and "delete 2 and change 3 of the 12 documents" in in_place.errors[0]
    assert store.latest_version("f") == 1


def test_a_source_restricted_later_is_hidden_from_public_channels_at_once(tmp_path: Path, store: IndexStore) -> None:
    """Same text, new permissions: the next sync makes a version with the new labels (no re-embedding) — keeping
    the old ones would leave a newly restricted document answering in public channels."""
    folder = tmp_path / "hr"
    folder.mkdir()
    (folder / "salaries.md").write_text("# Salary bands\n\nThe salary bands for every grade, revised in March.\n")
    (public,) = parse_sources([{"name": "hr", "kind": "folder", "path": str(folder)}])
    work = tmp_path / "work"
    assert sync_source(store, public, [public], work_root=work, default_kb="t").status == "ok"
    assert Retriever(store).search("salary bands", kb="t", k=1, search_filter=SearchFilter(public_only=True))

    restricted = public.model_copy(update={"visibility": "restricted"})
    result = sync_source(store, restricted, [restricted], work_root=work, default_kb="t")
    assert result.status == "ok" and result.updated == ["hr/salaries"] and store.latest_version("t") == 2
    assert Retriever(store).search("salary bands", kb="t", k=1,
                                   search_filter=SearchFilter(public_only=True)) == []
    assert Retriever(store).search("salary bands", kb="t", k=1)[0].doc_id == "hr/salaries"


def test_the_change_guard_holds_a_surge_of_empty_documents(tmp_path: Path, store: IndexStore) -> None:
    """New documents that come back blank (an export that broke) are held like a mass deletion, before the mirror
    changes; forced, they are skipped with their reason."""
    from knowledge.connectors.sync import ChangeGuard

    root = tmp_path / "many"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    topics = ["vpn", "laptops", "printers", "badges", "parking", "lunch", "wifi", "phones", "desks", "lockers"]
    commit(root, {f"{t}.md": f"# {t.title()}\n\nEverything about {t} at the office, for every employee.\n"
                  for t in topics}, "first")
    (source,) = parse_sources([{"name": "office", "kind": "git", "repository": str(root)}])
    work = tmp_path / "work"
    guard = ChangeGuard(max_share=0.3)
    assert sync_source(store, source, [source], work_root=work, default_kb="t", guard=guard).status == "ok"

    commit(root, {f"blank-{n}.md": "  \n\n" for n in range(4)}, "an export that produced blank pages")
    held = sync_source(store, source, [source], work_root=work, default_kb="t", guard=guard)
    assert held.status == "held" and store.latest_version("t") == 1
    assert "4 documents of source 'office' came back empty or unreadable (it had 10" in held.errors[0]
    assert "source-change-held.md" in held.errors[0]
    assert not (work / "office" / "files" / "blank-0.md").exists(), "nothing was applied to the mirror"

    forced = sync_source(store, source, [source], work_root=work, default_kb="t", guard=None)
    assert forced.status == "unchanged" and store.latest_version("t") == 1
    assert {s.path for s in forced.skipped} >= {f"office/blank-{n}.md" for n in range(4)}


def test_a_private_repository_is_cloned_over_https_with_the_token_and_refused_without_it(
        tmp_path: Path, store: IndexStore, repo: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The token reaches git as basic auth (the real ``git http-backend`` checks it); a wrong one fails the run
    clearly, never prompts, and is printed nowhere."""
    import logging

    from tests.fakes.git_http import start_git_http

    caplog.set_level(logging.DEBUG)
    served = tmp_path / "served"
    served.mkdir()
    git(served, "clone", "-q", "--bare", str(repo), "handbook.git")
    with start_git_http(served, username="x-access-token", token="ghp_right_token") as server:
        (source,) = parse_sources([{"name": "eng", "kind": "git", "repository": server.url("handbook.git"),
                                    "path": "docs", "token_env": "ENG_GIT_TOKEN"}])
        work = tmp_path / "work"
        refused = sync_source(store, source, [source], work_root=work, default_kb="t",
                              environ={"ENG_GIT_TOKEN": "ghp_wrong_token"})
        assert refused.status == "failed" and store.latest_version("t") is None
        assert "git clone failed" in refused.errors[0] or "Authentication failed" in refused.errors[0], refused.errors
        assert server.requests and not any(ok for _, _, ok in server.requests)

        synced = sync_source(store, source, [source], work_root=work, default_kb="t",
                             environ={"ENG_GIT_TOKEN": "ghp_right_token"})
        assert synced.status == "ok", synced.errors
        assert sorted(synced.added) == ["eng/it/laptops", "eng/it/vpn", "eng/travel/per-diem"]
        assert any(ok for _, _, ok in server.requests)
    printed = capsys.readouterr()
    for secret in ("ghp_wrong_token", "ghp_right_token"):
        assert secret not in caplog.text and secret not in printed.out + printed.err
        assert secret not in str(refused.to_dict()) and secret not in str(synced.to_dict())
        assert secret not in (work / "eng" / "repo.git" / "config").read_text()
