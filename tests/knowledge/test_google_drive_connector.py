"""The google_drive kind against a local fake of Google's token endpoint and Drive API v3 (tests/fakes/
google_drive_api.py): a service account key signed by google-auth, a folder tree listed with files.list, Docs,
Sheets and Slides exported, PDFs downloaded, re-syncs from changes.list (edits, trash, removal, moves), sharing
mapped to visibility, rate limits honoured — synced into a real index and searched."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pptx
import pytest

from knowledge.config import KnowledgeConfig
from knowledge.connectors import google_drive
from knowledge.connectors.config import SourcesConfigError, parse_sources
from knowledge.connectors.sync import SyncResult, sync_source
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever, SearchFilter
from tests.fakes.google_drive_api import (
    DOC,
    SHEET,
    SLIDES,
    TOKEN_AUDIENCE,
    FakeDrive,
    generate_key,
    start_fake_drive,
)
from tests.knowledge.test_formats import pdf_bytes

ACCOUNT = "deskmate-reader@acme-docs.iam.gserviceaccount.com"
HTML = "text/html"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ANYONE = [{"id": "anyoneWithLink", "type": "anyone", "role": "reader", "allowFileDiscovery": False}]
DOMAIN = [{"id": "0912k", "type": "domain", "role": "reader", "domain": "acme.example"}]
NAMED = [{"id": "0411", "type": "user", "role": "writer", "emailAddress": "cfo@acme.example"},
         {"id": "0412", "type": "group", "role": "reader", "emailAddress": "finance@acme.example"}]


def doc_html(title: str, *sections: tuple[str, str]) -> bytes:
    """What Drive's text/html export of a Google Doc looks like: no <title>, a style block, the title paragraph."""
    body = "".join(f'<h2 id="h.{i}"><span>{heading}</span></h2><p><span>{text}</span></p>'
                   for i, (heading, text) in enumerate(sections))
    return (f'<html><head><meta content="text/html; charset=UTF-8" http-equiv="content-type"><style type="text/css">'
            f'.c1{{color:#000}}</style></head><body class="doc-content"><p class="title"><span>{title}</span></p>'
            f'<h1 id="h.t"><span>{title}</span></h1>{body}</body></html>').encode()


def xlsx_bytes(sheets: dict[str, list[list[Any]]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pptx_bytes(slides: list[tuple[str, str]]) -> bytes:
    deck = pptx.Presentation()
    for title, text in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = text
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    return generate_key()


@pytest.fixture
def drive(key_pair: tuple[str, str]) -> Iterator[FakeDrive]:
    with start_fake_drive() as fake:
        fake.add_service_account(ACCOUNT, key_pair[1])
        yield fake


@pytest.fixture
def key_file(tmp_path: Path, drive: FakeDrive, key_pair: tuple[str, str]) -> Path:
    path = tmp_path / "secrets" / "drive-key.json"
    path.parent.mkdir()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "acme-docs", "private_key_id": "k1", "private_key": key_pair[0],
        "client_email": ACCOUNT, "client_id": "1234567890", "token_uri": drive.token_uri,
    }))
    return path


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The connector's waits (Retry-After, back-off), recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(google_drive, "_default_sleep", waits.append)
    return waits


def handbook(drive: FakeDrive) -> dict[str, str]:
    root = drive.folder("Handbook")
    hr = drive.folder("HR", root)
    ids = {"root": root, "hr": hr}
    ids["vpn"] = drive.add("VPN guide", root, DOC, doc_html(
        "VPN guide", ("Connecting", "Open NorthGate and sign in with your badge number."),
        ("Troubleshooting", "Restart the NorthGate client when the tunnel drops.")), export_type=HTML,
        permissions=ANYONE)
    ids["vpn2"] = drive.add("VPN guide", root, DOC, doc_html(
        "VPN guide", ("Contractors", "Contractors use the guest portal, never NorthGate.")), export_type=HTML,
        permissions=DOMAIN)
    ids["leave"] = drive.add("Leave policy", hr, DOC, doc_html(
        "Leave policy", ("Annual leave", "Everyone has 25 days of paid leave a year.")), export_type=HTML,
        permissions=DOMAIN)
    ids["salaries"] = drive.add("Salary bands 2026", hr, SHEET, xlsx_bytes({
        "Engineering": [["Grade", "Band"], ["E3", "70000-85000 EUR"]],
        "Sales": [["Grade", "Band"], ["S2", "55000-65000 EUR plus commission"]]}), export_type=XLSX,
        permissions=NAMED)
    ids["deck"] = drive.add("Onboarding", hr, SLIDES, pptx_bytes([
        ("Welcome aboard", "Your first week starts with a laptop pickup at the IT desk."),
        ("Badges", "Collect your badge from reception on day one.")]), export_type=PPTX, permissions=DOMAIN)
    ids["pdf"] = drive.add("Expense policy.pdf", root, "application/pdf", pdf_bytes(
        ["Expense claims", "Claims are due within 30 days of the trip."]), permissions=DOMAIN)
    ids["logo"] = drive.add("logo.png", root, "image/png", b"\x89PNG\r\n\x1a\n", permissions=DOMAIN)
    return ids


def source_for(drive: FakeDrive, folder_id: str, key_file: Path, **extra: Any) -> Any:
    (source,) = parse_sources([{"name": "drive", "kind": "google_drive", "folder_id": folder_id,
                                "service_account_file": str(key_file), "api_url": drive.url, **extra}])
    return source


def sync(store: IndexStore, source: Any, tmp_path: Path, **kwargs: Any) -> SyncResult:
    return sync_source(store, source, [source], work_root=tmp_path / "work", default_kb="t", **kwargs)


def content_requests(drive: FakeDrive) -> list[str]:
    return sorted(path for _, path, query, _ in drive.requests
                  if path.endswith("/export") or query.get("alt") == "media")


def test_a_drive_folder_syncs_with_exports_visibility_and_citations(drive: FakeDrive, key_file: Path,
                                                                    store: IndexStore, tmp_path: Path,
                                                                    slept: list[float]) -> None:
    ids = handbook(drive)
    drive.throttle("/drive/v3/files", status=429, reason="rateLimitExceeded", retry_after="3")
    drive.throttle(f"/drive/v3/files/{ids['leave']}/export", status=403, reason="userRateLimitExceeded",
                   retry_after="2")
    source = source_for(drive, ids["root"], key_file)

    first = sync(store, source, tmp_path)
    assert first.status == "ok", first.errors
    vpn2 = f"drive/vpn-guide-{ids['vpn2'][-8:].lower()}"
    assert sorted(first.added) == sorted(["drive/expense-policy", "drive/hr/leave-policy", "drive/hr/onboarding",
                                          "drive/hr/salary-bands-2026", f"drive/vpn-guide-{ids['vpn'][-8:].lower()}",
                                          vpn2])
    assert [(s.path, s.reason) for s in first.skipped] == [("drive/logo.png", "unsupported file type 'image/png'")]
    assert slept == [3.0, 2.0], "429 and 403 userRateLimitExceeded both waited for their Retry-After"
    assert not [p for _, p, _, _ in drive.requests if p.endswith("/permissions")], "My Drive: files.list has them"
    (grant,) = drive.token_requests
    assert grant["claims"]["iss"] == ACCOUNT and grant["claims"]["aud"] == TOKEN_AUDIENCE
    assert grant["claims"]["scope"] == "https://www.googleapis.com/auth/drive.readonly"

    retriever = Retriever(store)
    top = retriever.search("paid leave days a year", kb="t", k=1)[0]
    assert (top.doc_id, top.title, top.knowledge_set) == ("drive/hr/leave-policy", "Leave policy", "hr")
    assert top.location == f"https://docs.google.com/document/d/{ids['leave']}/edit?usp=drivesdk"
    assert top.heading and "Annual leave" in top.heading
    deck = retriever.search("badge from reception on day one", kb="t", k=1)[0]
    assert deck.doc_id == "drive/hr/onboarding" and deck.location.startswith("https://docs.google.com/presentation/")
    pdf = retriever.search("claims due within 30 days of the trip", kb="t", k=1)[0]
    assert (pdf.doc_id, pdf.location) == ("drive/expense-policy",
                                          f"https://drive.google.com/file/d/{ids['pdf']}/view?usp=drivesdk")
    # the sheet is shared with named people only: every sheet of it is searchable, never in a public channel
    sales = retriever.search("S2 band commission", kb="t", k=1)[0]
    assert (sales.doc_id, sales.title) == ("drive/hr/salary-bands-2026", "Salary bands 2026")
    assert "commission" in sales.text and "Sales" in (sales.heading or "")
    assert (deck.title, top.title) == ("Onboarding", "Leave policy"), "titled with the Drive file's name"
    public = retriever.search("S2 band commission", kb="t", k=10, search_filter=SearchFilter(public_only=True))
    assert "drive/hr/salary-bands-2026" not in {p.doc_id for p in public}
    assert {p.doc_id for p in public} >= {"drive/hr/leave-policy"}, "anyone / domain sharing is public-eligible"

    drive.requests.clear()
    again = sync(store, source, tmp_path)
    assert again.status == "unchanged" and again.index_version == first.index_version
    assert content_requests(drive) == [], "nothing downloaded or exported"
    assert [path for _, path, _, _ in drive.requests if path != "/token"] == ["/drive/v3/changes"], \
        "one changes.list call"

    drive.edit(ids["leave"], doc_html("Leave policy", ("Annual leave", "Everyone has 30 days of paid leave a year.")))
    drive.expire_tokens_at(f"/drive/v3/files/{ids['leave']}/export")  # the token expires (or is revoked) mid-sync
    drive.requests.clear()
    third = sync(store, source, tmp_path)
    assert (third.status, third.updated, third.added, third.deleted) == ("ok", ["drive/hr/leave-policy"], [], [])
    assert content_requests(drive) == [f"/drive/v3/files/{ids['leave']}/export"] * 2, "401, new token, again"
    assert [path for _, path, _, _ in drive.requests].count("/token") == 2
    assert "30 days" in retriever.search("paid leave days a year", kb="t", k=1)[0].text


def test_trash_removal_and_moves_are_deletions_and_a_folder_moved_in_is_listed(
        drive: FakeDrive, key_file: Path, store: IndexStore, tmp_path: Path, slept: list[float]) -> None:
    ids = handbook(drive)
    archive = drive.folder("Archive")  # outside the synced folder
    old = drive.folder("Old IT", archive)
    drive.add("Printer setup", old, DOC, doc_html("Printer setup", ("Printing", "Print badges on the third "
                                                  "floor printer named Hopper.")), export_type=HTML,
              permissions=DOMAIN)
    source = source_for(drive, ids["root"], key_file, page_size=2)  # every listing takes several pages
    first = sync(store, source, tmp_path)
    assert first.status == "ok" and len(first.added) == 6
    assert len(drive.served("/drive/v3/files", q=f"'{ids['root']}' in parents and trashed=false")) == 3

    drive.trash(ids["hr"])  # a folder trashed: everything below it goes
    drive.delete(ids["pdf"])  # deleted for good (or access lost): changes say removed
    drive.move(ids["vpn2"], archive)  # moved out of the tree
    drive.move(old, ids["root"])  # a folder moved in: its files were not changed, they must be listed
    drive.rename(ids["vpn"], "VPN")
    drive.requests.clear()
    second = sync(store, source, tmp_path)
    assert second.status == "ok", second.errors
    assert len(drive.served("/drive/v3/changes")) >= 3, "changes.list followed nextPageToken"
    assert sorted(second.deleted) == sorted([
        "drive/expense-policy", "drive/hr/leave-policy", "drive/hr/onboarding", "drive/hr/salary-bands-2026",
        f"drive/vpn-guide-{ids['vpn'][-8:].lower()}", f"drive/vpn-guide-{ids['vpn2'][-8:].lower()}"])
    assert sorted(second.added) == ["drive/old-it/printer-setup", "drive/vpn"], "renamed: a new path, no id suffix"
    top = Retriever(store).search("third floor printer", kb="t", k=1)[0]
    assert (top.doc_id, top.title, top.knowledge_set) == ("drive/old-it/printer-setup", "Printer setup", "old-it")


def test_a_shared_drive_reads_permissions_per_file_and_its_own_changes(drive: FakeDrive, key_file: Path,
                                                                       store: IndexStore, tmp_path: Path,
                                                                       slept: list[float]) -> None:
    shared = "0AFinanceDrive"
    root = drive.folder("Finance", None, drive_id=shared, id="1FinanceRootFolderXyz")
    budget = drive.add("Budget rules", root, DOC, doc_html("Budget rules", ("Approvals", "Spend over 5000 EUR "
                       "needs the CFO's approval.")), export_type=HTML, permissions=NAMED, drive_id=shared)
    travel = drive.add("Travel", root, DOC, doc_html("Travel", ("Trains", "Take the train for trips under 600 km.")),
                       export_type=HTML, permissions=DOMAIN, drive_id=shared)
    drive.throttle(f"/drive/v3/files/{travel}/permissions", status=500, reason="backendError", retry_after=None)
    per_diem = drive.add("Per diem.pdf", root, "application/pdf", pdf_bytes(["Per diem", "The daily meal "
                         "allowance is 60 EUR in Europe."]), permissions=DOMAIN, drive_id=shared)
    source = source_for(drive, root, key_file, drive_id=shared, subject="docs-bot@acme.example")
    first = sync(store, source, tmp_path)
    assert first.status == "ok" and sorted(first.added) == ["drive/budget-rules", "drive/per-diem", "drive/travel"]
    assert drive.token_requests[0]["claims"]["sub"] == "docs-bot@acme.example", "domain-wide delegation"
    listing = drive.served("/drive/v3/files", corpora="drive", driveId=shared, includeItemsFromAllDrives="true",
                           supportsAllDrives="true")
    assert listing, "shared drive listed with corpora=drive"
    assert len(drive.served(f"/drive/v3/files/{budget}/permissions")) == 1, "files.list has no permissions there"
    def public(query: str) -> set[str]:
        return {p.doc_id for p in Retriever(store).search(query, kb="t", k=5,
                                                          search_filter=SearchFilter(public_only=True))}

    assert "drive/budget-rules" not in public("CFO approval spend") and "drive/per-diem" in public("meal allowance")
    assert "drive/travel" not in public("train trips"), "its permissions could not be read (500): restricted for now"

    # sharing changed, content not: now the whole domain for the rules, named people only for the per diem PDF
    drive.share(budget, NAMED + DOMAIN)
    drive.share(per_diem, NAMED)
    drive.requests.clear()
    second = sync(store, source, tmp_path)
    assert second.status == "ok" and sorted(second.updated) == ["drive/budget-rules", "drive/per-diem",
                                                                "drive/travel"]
    assert "drive/travel" in public("train trips"), "asked again: shared with the domain"
    assert drive.served("/drive/v3/changes", driveId=shared)
    assert "drive/budget-rules" in public("CFO approval spend")
    assert "drive/per-diem" not in public("meal allowance"), "an un-sharing reaches the index"


def test_files_too_large_are_skipped_with_the_reason(drive: FakeDrive, key_file: Path, tmp_path: Path,
                                                     slept: list[float]) -> None:
    store = IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma",
                                       max_document_bytes=50_000))
    root = drive.folder("Handbook")
    drive.add("Laptops", root, DOC, doc_html("Laptops", ("Refresh", "Laptops are replaced every three years.")),
              export_type=HTML, permissions=DOMAIN)
    big = drive.add("Asset register", root, SHEET, xlsx_bytes({"All": [["Tag", "Owner"]]}), export_type=XLSX,
                    permissions=DOMAIN)
    drive.items[big].export_too_large = True  # Drive's 10 MB export limit
    drive.add("Scans.pdf", root, "application/pdf", pdf_bytes(["Scans"]) + b"%" * 60_000, permissions=DOMAIN)
    source = source_for(drive, root, key_file)
    first = sync(store, source, tmp_path)
    assert first.status == "partial" and first.added == ["drive/laptops"]
    assert len(first.errors) == 1 and "exportSizeLimitExceeded" in first.errors[0]
    assert [(s.path, s.reason) for s in first.skipped] == [
        ("drive/scans.pdf", f"too large ({len(drive.items[list(drive.items)[-1]].content):,} bytes > limit 50,000)")]
    assert not [r for r in drive.requests if r[2].get("alt") == "media"], "its size is known: never downloaded"
    second = sync(store, source, tmp_path)
    assert second.status == "unchanged" and second.errors == []
    assert [(s.path, s.reason.split(" (")[0]) for s in second.skipped] == [
        ("drive/asset-register.xlsx", "Google Drive cannot export it"), ("drive/scans.pdf", "too large")]


def test_wrong_credentials_fail_the_run_leave_the_index_and_never_show_the_key(
        drive: FakeDrive, key_file: Path, store: IndexStore, tmp_path: Path, slept: list[float],
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    ids = handbook(drive)
    source = source_for(drive, ids["root"], key_file)
    assert sync(store, source, tmp_path).status == "ok"
    version = store.latest_version("t")

    other_key, _ = generate_key()  # a key Google does not know (deleted, or another account's)
    data = json.loads(key_file.read_text())
    key_file.write_text(json.dumps({**data, "private_key": other_key}))
    drive.edit(ids["leave"], doc_html("Leave policy", ("Annual leave", "Changed, but never read.")))
    failed = sync(store, source, tmp_path)
    assert failed.status == "failed" and store.latest_version("t") == version
    assert "Google refused the service account key (invalid_grant: Invalid JWT Signature.)" in failed.errors[0]
    assert ACCOUNT in failed.errors[0]
    secret_line = other_key.splitlines()[1]
    shown = json.dumps(failed.to_dict()) + capfd.readouterr().out + capfd.readouterr().err + caplog.text
    assert secret_line not in shown and "BEGIN PRIVATE KEY" not in shown

    env = {"DRIVE_KEY": json.dumps({**data, "private_key": other_key})}
    (from_env,) = parse_sources([{"name": "drive", "kind": "google_drive", "folder_id": ids["root"],
                                  "service_account_env": "DRIVE_KEY", "api_url": drive.url}])
    assert sync(store, from_env, tmp_path, environ=env).status == "failed"
    unset = sync(store, from_env, tmp_path, environ={})
    assert unset.errors == ["source 'drive': service_account_env names DRIVE_KEY, which is not set"]
    missing = sync(store, source_for(drive, "1NoSuchFolder", key_file.with_name("gone.json")), tmp_path)
    assert missing.status == "failed" and "service_account_file" in missing.errors[0]


def test_a_folder_id_drive_does_not_know_fails_with_what_to_check(drive: FakeDrive, key_file: Path,
                                                                  store: IndexStore, tmp_path: Path,
                                                                  slept: list[float]) -> None:
    result = sync(store, source_for(drive, "1NoSuchFolder", key_file), tmp_path)
    assert result.status == "failed"
    assert "not found (HTTP 404 notFound): check folder_id 1NoSuchFolder" in result.errors[0]
    assert ACCOUNT in result.errors[0]


@pytest.mark.parametrize(("settings", "message"), [
    ({"service_account_file": "/k.json"}, "key 'folder_id' Field required"),
    ({"folder_id": "abc"}, "give exactly one of 'service_account_file' and 'service_account_env'"),
    ({"folder_id": "abc", "service_account_file": "/k.json", "service_account_env": "K"}, "give exactly one of"),
    ({"folder_id": "abc", "private_key": "-----BEGIN PRIVATE KEY-----"}, "key 'private_key' would put a credential"),
    ({"folder_id": "abc", "service_account_env": "K", "api_url": "ftp://x"}, "key 'api_url' Value error"),
    ({"folder_id": "a b", "service_account_env": "K"}, "key 'folder_id' String should match pattern"),
])
def test_bad_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(SourcesConfigError, match=message):
        parse_sources([{"name": "drive", "kind": "google_drive", **settings}])
