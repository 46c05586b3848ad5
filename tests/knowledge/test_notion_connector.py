"""The notion kind against a local fake of the Notion API (tests/fakes/notion_api.py, real HTTP, Notion's JSON
shapes and errors): pages and database rows shared with the integration synced into a real index as Markdown
(headings, lists, tables, row properties; citations at the page's Notion URL), re-syncs that download nothing,
an edit re-read alone, trashed and unshared pages deleted, roots, a 429 waited out, a rejected secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.connectors.base import Connector, read_secret
from knowledge.connectors.config import SourcesConfigError, parse_sources
from knowledge.connectors.notion import NOTION_VERSION, NotionConnector, NotionSource
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever, SearchFilter
from tests.fakes.notion_api import (
    FakeNotion,
    block,
    bullet,
    callout,
    code,
    heading,
    numbered,
    para,
    start_fake_notion,
    table,
    text,
    todo,
    toggle,
)

SECRET = "ntn_3141592653589793secret"


@pytest.fixture
def notion() -> Iterator[FakeNotion]:
    with start_fake_notion(token=SECRET) as fake:
        fake.max_per_response = 2  # Notion may answer fewer results than page_size: pagination is exercised
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


def source_of(notion: FakeNotion, **keys: Any) -> NotionSource:
    (source,) = parse_sources([{"name": "wiki", "kind": "notion", "token_env": "NOTION_TOKEN", "api_url": notion.url,
                                "min_interval_s": 0, **keys}])
    assert isinstance(source, NotionSource)
    return source


ENV = {"NOTION_TOKEN": SECRET}


def doc_id(pid: str, slug: str) -> str:
    return f"wiki/{slug}-{pid}"


def test_shared_pages_and_rows_sync_then_resync_edit_trash_and_unshare(
        notion: FakeNotion, store: IndexStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    salaries = notion.add_page("Salaries", shared=False, blocks=[  # original synced blocks (synced_from null)
        block("synced_block", {"synced_from": None}, [para("Salary bands of every grade.")])])
    mirrored = notion.add_page("Office hours", blocks=[
        block("synced_block", {"synced_from": None}, [para("The IT desk is open from 8 to 18.")])])
    handbook = notion.add_page("IT Handbook", blocks=[
        heading(1, "Remote access"),
        para([text("Open "), text("NorthGate", bold=True), text(" and sign in with your badge number; see the "),
              text("VPN page", link="/vpn-0123")]),
        numbered("Install the client", [bullet("Windows: from the Company Portal")]),
        numbered("Sign in"),
        todo("Enrol a second factor", True),
        toggle("Troubleshooting", [para("Error 809 means the hotel network blocks the tunnel.")]),
        callout("Never share your badge number.", "⚠️"),
        heading(2, "Printers"),
        table([["Floor", "Printer"], ["2", "HP-2F | colour"], ["3", "Canon-3F"]]),
        code("lpadmin -p HP-2F -E", "shell"),
        block("ai_block", {}),
        block("synced_block", {"synced_from": {"type": "block_id", "block_id": notion.children[mirrored][0]}}),
        block("synced_block", {"synced_from": {"type": "block_id", "block_id": notion.children[salaries][0]}}),
    ])
    laptops = notion.add_page("Laptops", parent=handbook,
                              blocks=[para("Laptops are replaced every three years by the IT desk.")])
    tickets = notion.add_database("Known issues", parent=handbook, schema={"Status": "status", "Area": "multi_select"})
    row = notion.add_row(tickets, "Printer jam on floor 2", {
        "Status": {"type": "status", "status": {"name": "Resolved"}},
        "Area": {"type": "multi_select", "multi_select": [{"name": "printing"}, {"name": "office"}]}},
        blocks=[para("Open tray 2 and pull the green lever to release the paper.")])
    parking = notion.add_page("Parking", blocks=[para("Visitor parking is behind building C, level -1.")])
    notion.rate_limit("/v1/search", retry_after=2)

    sleeps: list[float] = []

    def open_recording(self: NotionSource, work_dir: Path, *, environ: Mapping[str, str] | None = None,
                       max_bytes: int = 5_000_000) -> Connector:
        token = read_secret(self.name, "token", self.token_env, self.token_file, environ)
        assert token is not None
        return NotionConnector(self, token=token, max_bytes=max_bytes, sleep=sleeps.append)

    monkeypatch.setattr(NotionSource, "open_connector", open_recording)
    source = source_of(notion)
    work = tmp_path / "work"
    ids = {"handbook": doc_id(handbook, "it-handbook"), "laptops": doc_id(laptops, "laptops"),
           "row": doc_id(row, "printer-jam-on-floor-2"), "parking": doc_id(parking, "parking"),
           "hours": doc_id(mirrored, "office-hours")}

    first = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert first.status == "ok", first.errors
    assert sorted(first.added) == sorted(ids.values()), "unshared pages are not synced"
    assert sleeps == [2.0], "the 429's Retry-After was waited out"
    assert all(r.headers["notion-version"] == NOTION_VERSION and r.headers["authorization"] == f"Bearer {SECRET}"
               for r in notion.requests)
    assert len(notion.served("POST", "/v1/search")) > 2, "search results were paginated"

    retriever = Retriever(store)
    top = retriever.search("error 809 hotel network tunnel", kb="t", k=1)[0]
    assert (top.doc_id, top.title, top.heading) == (ids["handbook"], "IT Handbook", "Remote access")
    assert top.location == notion.pages[handbook]["url"], "citations link to the page in Notion"
    printers = retriever.search("HP-2F Canon-3F printer per floor", kb="t", k=1)[0]
    assert printers.heading == "Remote access › Printers" and "HP-2F \\| colour" in printers.text
    issue = retriever.search("printer paper jam green lever", kb="t", k=1)[0]
    assert issue.doc_id == ids["row"] and "**Status:** Resolved" in issue.text and "printing, office" in issue.text
    mirror = (work / "wiki" / "files" / f"it-handbook-{handbook}.md").read_text()
    for expected in ("1. Install the client\n   - Windows: from the Company Portal\n2. Sign in",
                     "- [x] Enrol a second factor", "> ⚠️ Never share your badge number.",
                     "```shell\nlpadmin -p HP-2F -E\n```", "**NorthGate**",
                     "[VPN page](https://www.notion.so/vpn-0123)",
                     f"- [Laptops]({notion.pages[laptops]['url']})", "<!-- Notion block not supported: ai_block -->",
                     "The IT desk is open from 8 to 18.\n\n<!-- Notion content not shared with the integration -->"):
        assert expected in mirror, expected

    notion.requests.clear()
    again = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert again.status == "unchanged" and again.index_version == first.index_version
    assert notion.served("GET", "/v1/blocks") == [], "nothing unchanged was downloaded"

    notion.edit(laptops, title="Laptops and tablets",
                blocks=[para("Laptops are replaced every four years since 2026.")])
    notion.trash(row)
    notion.unshare(parking)
    notion.requests.clear()
    third = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert (third.updated, sorted(third.deleted), third.added) == ([ids["laptops"]],
                                                                   sorted([ids["row"], ids["parking"]]), [])
    assert {r.path for r in notion.served("GET", "/v1/blocks")} == {f"/v1/blocks/{laptops}/children"}
    renamed = retriever.search("laptop replacement", kb="t", k=1)[0]
    assert "four years" in renamed.text and renamed.title == "Laptops and tablets", "renamed, same document id"


def test_roots_restrict_the_sync_and_a_restricted_source_stays_out_of_public_channels(
        notion: FakeNotion, store: IndexStore, tmp_path: Path) -> None:
    security = notion.add_page("Security", blocks=[para("Report a lost badge to the security desk at once."),
                                                   toggle("Procedures", [])])
    drill = notion.add_page("Fire drill", in_block=notion.children[security][1],
                            blocks=[para("Leave by the nearest stairs; the lifts stop.")])
    incidents = notion.add_page("Incidents", parent=security,
                                blocks=[para("A phishing mail is forwarded to phishing@example.com.")])
    register = notion.add_database("Risk register", parent=security, schema={"Owner": "rich_text"})
    risk = notion.add_row(register, "Tailgating", {"Owner": {"type": "rich_text", "rich_text": [text("Facilities")]}},
                          blocks=[para("Badge doors close after one person.")])
    other = notion.add_page("Cafeteria", blocks=[para("Lunch is served from noon.")])
    notion.add_page("Menu", parent=other, blocks=[para("Soup of the day.")])

    url = notion.pages[security]["url"]
    source = source_of(notion, roots=[url], visibility="restricted", knowledge_set="security")
    result = sync_source(store, source, [source], work_root=tmp_path / "work", default_kb="t", environ=ENV)
    assert result.status == "ok", result.errors
    assert sorted(result.added) == sorted([f"wiki/security-{security}", f"wiki/incidents-{incidents}",
                                           f"wiki/tailgating-{risk}", f"wiki/fire-drill-{drill}"])
    assert not any(r.path.startswith(f"/v1/blocks/{other}") for r in notion.requests), "outside the roots"
    found = Retriever(store).search("lost badge", kb="t", k=1)
    assert found[0].doc_id == f"wiki/security-{security}" and found[0].knowledge_set == "security"
    assert Retriever(store).search("lost badge", kb="t", k=1, search_filter=SearchFilter(public_only=True)) == []

    unshared = notion.add_page("Board minutes", shared=False)
    bad = source_of(notion, roots=[unshared])
    failed = sync_source(store, bad, [bad], work_root=tmp_path / "work2", default_kb="t", environ=ENV)
    assert failed.status == "failed"
    assert f"root page {unshared} does not exist or is not shared with the integration" in failed.errors[0]


def test_a_rejected_secret_fails_the_run_leaves_the_index_and_is_never_shown(
        notion: FakeNotion, store: IndexStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notion.add_page("Onboarding", blocks=[para("New starters get their laptop on day one.")])
    source = source_of(notion)
    work = tmp_path / "work"
    assert sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV).status == "ok"

    wrong = "ntn_revoked_2718281828459045"
    result = sync_source(store, source, [source], work_root=work, default_kb="t", environ={"NOTION_TOKEN": wrong})
    assert result.status == "failed" and store.latest_version("t") == 1
    assert result.errors == ["source 'wiki': Notion rejected the integration secret (unauthorized); check "
                             "token_env NOTION_TOKEN holds the integration's current secret"]
    out = capsys.readouterr()
    for secret in (SECRET, wrong):
        assert secret not in json.dumps(result.to_dict()) and secret not in out.out + out.err
    assert Retriever(store).search("laptop day one", kb="t", k=1)[0].doc_id.startswith("wiki/onboarding-")

    notion.read_content = False
    refused = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert refused.errors == ["source 'wiki': the integration may not search (restricted_resource); give it the "
                              "'Read content' capability"]
    missing = sync_source(store, source, [source], work_root=work, default_kb="t", environ={})
    assert missing.errors == ["source 'wiki': token_env names NOTION_TOKEN, which is not set"]
    down = source_of(notion, api_url="http://127.0.0.1:9", max_retries=0)
    unreachable = sync_source(store, down, [down], work_root=tmp_path / "w2", default_kb="t", environ=ENV)
    assert unreachable.status == "failed" and "ConnectError" in unreachable.errors[0]
    assert "is http://127.0.0.1:9 reachable?" in unreachable.errors[0]


def test_recent_edits_are_read_again_large_pages_skipped_and_an_incomplete_listing_deletes_nothing(
        notion: FakeNotion) -> None:
    big = notion.add_page("Policies", blocks=[para("x" * 3000)])
    notion.clock += timedelta(minutes=5)
    page = notion.add_page("Wifi", blocks=[para("The guest network is Acme-Guest; the password is at reception.")])
    edited = datetime.fromisoformat(notion.pages[page]["last_edited_time"].replace("Z", "+00:00"))
    now = [edited + timedelta(seconds=30)]
    sleeps: list[float] = []
    source = source_of(notion, min_interval_s=0.25)
    connector = NotionConnector(source, token=SECRET, max_bytes=2000, clock=lambda: now[0], sleep=sleeps.append)

    first = connector.changes(None)
    assert [r.path for r in first.changed] == [f"wifi-{page}.md"]
    assert first.changed[0].version != notion.pages[page]["last_edited_time"], "still in its minute: provisional"
    assert list(first.skipped) == [f"policies-{big}.md"]
    assert re.fullmatch(r"too large \(3,\d{3} bytes > limit 2,000\)", first.skipped[f"policies-{big}.md"])
    assert sleeps and all(0 < s <= 0.25 for s in sleeps), "a minimum interval is kept between requests"

    now[0] = edited + timedelta(minutes=10)
    notion.requests.clear()
    second = connector.changes(first.cursor)
    assert second.changed[0].version == notion.pages[page]["last_edited_time"]
    assert [r.path for r in notion.served("GET", "/v1/blocks")] == [f"/v1/blocks/{page}/children"], \
        "the provisional page was read again, the large one was not"
    assert second.skipped == first.skipped

    notion.requests.clear()
    third = connector.changes(second.cursor)
    assert notion.served("GET", "/v1/blocks") == [] and third.complete

    newest = notion.add_page("Printers", blocks=[para("Printers are on every floor.")])
    notion.search_limit = 1  # search stops at query_result_limit_reached: Wifi and Policies are not returned
    partial = connector.changes(third.cursor)
    assert [r.path for r in partial.changed] == [f"printers-{newest}.md"]
    assert not partial.complete and partial.deleted == [], "an incomplete listing is not taken as deletions"
    assert f"wifi-{page}" in json.dumps(json.loads(partial.cursor))
    connector.close()


def test_databases_can_be_left_out_a_page_unshared_after_the_listing_is_dropped_a_failing_one_kept(notion: FakeNotion) -> None:
    team = notion.add_page("Team", blocks=[para("Who is who.")])
    people = notion.add_database("People", parent=team, schema={"Role": "select"})
    notion.add_row(people, "Ada", {"Role": {"type": "select", "select": {"name": "Engineer"}}})
    connector = NotionConnector(source_of(notion, include_databases=False), token=SECRET)
    assert [r.path for r in connector.changes(None).changed] == [f"team-{team}.md"]
    assert notion.served("POST", "/v1/data_sources") == []

    notion.requests.clear()
    with_rows = NotionConnector(source_of(notion), token=SECRET)
    listed = with_rows.changes(None)
    assert len(listed.changed) == 2 and len(notion.served("POST", "/v1/data_sources")) == 1
    row = next(r for r in listed.changed if r.path.startswith("ada-"))
    notion.pages[team]["last_edited_time"] = notion.pages[row.path[4:-3]]["last_edited_time"] = \
        "2026-11-30T11:00:00.000Z"
    notion.fail_content = {team: 404, row.path[4:-3]: 500}  # unshared after the search; a server error
    again = with_rows.changes(listed.cursor)
    assert [r.path for r in again.changed] == [row.path] and again.changed[0].version == row.version, \
        "the failing row is kept as it was (retried next time); the unshared page is dropped"
    assert again.errors == [f"{row.path}: HTTP 500 internal_server_error"] and again.complete


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "Value error, give exactly one of 'token_env' and 'token_file' (the integration secret)"),
        ({"token_env": "A", "token_file": "/run/secrets/notion"},
         "Value error, give exactly one of 'token_env' and 'token_file'"),
        ({"token": "ntn_abc"}, "key 'token' would put a credential in the file; name an environment variable"),
        ({"token_env": "A", "roots": ["not-a-page"]}, "key 'roots' Value error, 'not-a-page' is not a Notion page id"),
        ({"token_env": "A", "api_url": "api.notion.com"}, "key 'api_url' Value error, must be an http(s):// URL"),
        ({"token_env": "A", "min_interval_s": -1}, "key 'min_interval_s' Input should be greater than or equal to 0"),
        ({"token_env": "A", "space": "x"}, "key 'space' is not a setting of this kind of source"),
    ],
)
def test_bad_settings_are_refused_with_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(SourcesConfigError, match=re.escape(f"sources file: source 'wiki': {message}")):
        parse_sources([{"name": "wiki", "kind": "notion", **keys}])


def test_settings_read_page_urls_and_show_the_credential_by_name_only() -> None:
    (source,) = parse_sources([{"name": "wiki", "kind": "notion", "token_file": "/run/secrets/notion",
                                "roots": ["https://www.notion.so/acme/IT-Handbook-1f2e3d4c5b6a79881f2e3d4c5b6a7988",
                                          "1F2E3D4C-5B6A-7988-1F2E-3D4C5B6A7989"]}])
    assert isinstance(source, NotionSource)
    assert source.roots == ["1f2e3d4c5b6a79881f2e3d4c5b6a7988", "1f2e3d4c5b6a79881f2e3d4c5b6a7989"]
    assert source.public_settings()["token_file"] == "/run/secrets/notion"
    assert source.api_url == "https://api.notion.com" and source.min_interval_s == pytest.approx(0.35)
