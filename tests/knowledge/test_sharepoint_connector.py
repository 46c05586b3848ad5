"""The sharepoint kind against a local Microsoft Graph + Entra ID (tests/fakes/graph_api.py, HTTPS on 127.0.0.1),
driven through MSAL and the connector's own HTTP client, synced into a real index and searched: document
libraries through drive delta, site pages through their canvas, a OneDrive, permissions mapped to visibility,
429 + Retry-After, an expired delta token, wrong credentials."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docx import Document

from knowledge.config import KnowledgeConfig
from knowledge.connectors import sharepoint
from knowledge.connectors.config import SourcesConfigError, parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever, SearchFilter
from tests.fakes.graph_api import CLIENT_ID, CLIENT_SECRET, TENANT_ID, FakeGraph, start_fake_graph

ENV = {"SP_SECRET": CLIENT_SECRET}


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[FakeGraph]:
    with start_fake_graph(tmp_path / "tls") as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig(index_dir=tmp_path / "data" / "index", chroma_dir=tmp_path / "data" / "chroma"))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The connector's Retry-After waits, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(sharepoint, "_sleep", waited.append)
    return waited


def source_for(graph: FakeGraph, **keys: Any) -> Any:
    settings = {"name": "hr", "kind": "sharepoint", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
                "client_secret_env": "SP_SECRET", "authority_url": graph.authority_url, "graph_url": graph.graph_url,
                "ca_file": str(graph.ca_file), **keys}
    return parse_sources([settings])[0]


def docx(title: str, *sections: tuple[str, str]) -> bytes:
    document = Document()
    document.core_properties.title = title
    for heading, text in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_a_site_syncs_its_libraries_and_pages_then_only_what_changed(graph: FakeGraph, store: IndexStore,
                                                                      tmp_path: Path, sleeps: list[float]) -> None:
    site = graph.add_site("acme.sharepoint.com", "/sites/HR", "Human Resources")
    docs = graph.add_drive(site, "Documents")
    policies = graph.add_folder(docs, "Policies")
    leave = graph.add_file(docs, "Leave.docx", docx("Leave policy", ("Annual leave", "Everyone has 27 days of "
                           "paid annual leave, booked in the Absence app.")), parent=policies)
    expenses = graph.add_file(docs, "Expenses.md", b"# Expenses\n\n## Deadlines\n\nSubmit travel claims within "
                              b"30 days of the trip.\n", parent=policies)
    graph.add_file(docs, "logo.png", b"\x89PNG\r\n\x1a\n", parent=policies)
    home = graph.add_page(site, "Welcome", ["<h2>Parental leave</h2><p>Parents get 16 weeks of fully paid "
                                            "parental leave.</p>", "<h2>Contacts</h2><p>Write to hr@acme.example "
                                            "for anything else.</p>"])
    graph.add_page(site, "Reorg plan", ["<p>Not announced yet.</p>"], level="draft", version="0.3")
    graph.add_page(site, "Benefits", ["<h2>Lunch</h2><p>Lunch vouchers are worth 9 euros a day.</p>"], folder="HR")
    graph.throttle("/root/delta", times=1, retry_after=3)
    source = source_for(graph, site="https://acme.sharepoint.com/sites/HR", knowledge_set="hr")
    work = tmp_path / "work"

    first = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert first.status == "ok", first.errors
    assert first.added == ["hr/Documents/Policies/Expenses", "hr/Documents/Policies/Leave",
                           "hr/SitePages/HR/Benefits", "hr/SitePages/Welcome"]
    assert graph.served("$skiptoken=") and graph.served("/root/delta?token=n."), "listings followed their nextLink"
    assert sorted((s.path, s.reason) for s in first.skipped) == [
        ("hr/Documents/Policies/logo.png", "unsupported file type '.png'"),
        ("hr/SitePages/Reorg plan.html", "draft page, never published")]
    assert sleeps == [3.0], "the 429's Retry-After was waited"
    assert len(graph.served("/oauth2/v2.0/token", "POST")) == 1, "one app token for the whole sync (MSAL's cache)"
    assert len(graph.served("/_download/")) == 2, "content read through the 302 to the pre-authenticated URL"
    assert all("Authorization" in r.headers and r.headers["User-Agent"] == sharepoint.USER_AGENT
               for r in graph.served("/v1.0/")), "every Graph call signed and decorated"
    retriever = Retriever(store)
    top = retriever.search("how many days of annual leave", kb="t", k=1)[0]
    assert (top.doc_id, top.heading, top.knowledge_set) == ("hr/Documents/Policies/Leave", "Annual leave", "hr")
    assert top.location == "https://acme.sharepoint.com/sites/HR/Shared%20Documents/Policies/Leave.docx"
    page = retriever.search("parental leave weeks", kb="t", k=1)[0]
    assert (page.doc_id, page.title, page.heading) == ("hr/SitePages/Welcome", "Welcome", "Parental leave")
    assert page.location == "https://acme.sharepoint.com/sites/HR/SitePages/Welcome.aspx"
    assert "16 weeks" in page.text

    graph.requests.clear()
    again = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert again.status == "unchanged" and again.index_version == first.index_version
    assert graph.served("/content") == [] and graph.served("canvasLayout") == [], "nothing downloaded"
    assert len(graph.served("/root/delta")) == 1, "one delta call (its deltaLink) for the unchanged library"

    graph.edit(leave, docx("Leave policy", ("Annual leave", "Everyone has 30 days of paid annual leave.")))
    graph.edit_page(home, ["<h2>Parental leave</h2><p>Parents get 20 weeks of fully paid parental leave.</p>"])
    graph.requests.clear()
    edited = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert edited.status == "ok" and edited.updated == ["hr/Documents/Policies/Leave", "hr/SitePages/Welcome"]
    assert [r.path.split("/")[-2] for r in graph.served("/content")] == [leave.id], "only the edited file"
    assert len(graph.served("canvasLayout")) == 1
    assert "20 weeks" in Retriever(store).search("parental leave weeks", kb="t", k=1)[0].text

    graph.delete(docs, expenses)
    graph.rename(policies, "HR policies")
    moved = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert moved.status == "ok"
    assert moved.deleted == ["hr/Documents/Policies/Expenses", "hr/Documents/Policies/Leave"]
    assert moved.added == ["hr/Documents/HR policies/Leave"], "a renamed folder moves its files"
    assert Retriever(store).search("travel claims deadline", kb="t", k=3)[0].doc_id != \
        "hr/Documents/Policies/Expenses"


def test_an_expired_delta_token_resyncs_with_a_full_listing(graph: FakeGraph, store: IndexStore,
                                                            tmp_path: Path) -> None:
    site = graph.add_site("acme.sharepoint.com", "/sites/IT", "IT")
    docs = graph.add_drive(site, "Documents")
    graph.add_drive(site, "Archive")  # not one of the libraries asked for
    vpn = graph.add_file(docs, "vpn.txt", b"VPN\n\nOpen NorthGate and sign in with your badge number.\n")
    old = graph.add_file(docs, "fax.txt", b"Fax\n\nThe fax machine is on the third floor.\n")
    source = source_for(graph, name="it", site="acme.sharepoint.com:/sites/IT", libraries=["documents"],
                        pages=False)
    work = tmp_path / "work"
    assert sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV).added == [
        "it/Documents/fax", "it/Documents/vpn"]

    graph.delete(docs, old)
    graph.expire_delta_tokens(docs)
    graph.requests.clear()
    result = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert result.status == "ok" and result.deleted == ["it/Documents/fax"] and result.unchanged == [
        "it/Documents/vpn"]
    delta_calls = graph.served("/root/delta")
    assert "token=d." in delta_calls[0].path and "token" not in delta_calls[1].path, "410 -> a fresh enumeration"
    assert graph.served("/content") == [], "the unchanged file is not downloaded again"
    assert vpn.id not in "".join(r.path for r in graph.requests if "/items/" in r.path)


def test_permissions_map_to_visibility(graph: FakeGraph, store: IndexStore, tmp_path: Path) -> None:
    site = graph.add_site("acme.sharepoint.com", "/sites/Finance", "Finance")
    docs = graph.add_drive(site, "Documents")
    graph.add_file(docs, "budget.txt", b"Budget\n\nThe travel budget is 1200 euros per person per year.\n")
    members = {"id": "aTowIy5mfG1lbWJlcnM", "roles": ["write"],
               "grantedToV2": {"siteGroup": {"id": "5", "displayName": "Finance Members",
                                             "loginName": "Finance Members"}}}
    person = {"id": "aTowIy5mfG1lbWJlcnNoaXB8", "roles": ["read"],
              "grantedToV2": {"user": {"id": "5d33dd65", "displayName": "Misty Suarez",
                                       "email": "misty@acme.example"},
                              "siteUser": {"id": "12", "displayName": "Misty Suarez",
                                           "loginName": "i:0#.f|membership|misty@acme.example"}}}
    salaries = graph.add_file(docs, "salaries.txt", b"Salaries\n\nThe salary bands of every grade are listed "
                              b"here.\n", shared="users", permissions=[person])
    graph.add_file(docs, "bonus.txt", b"Bonus\n\nThe yearly bonus is paid in March.\n", shared="users",
                   permissions=[members, person])
    onedrive = graph.add_user_drive("Misty@acme.example")
    graph.add_file(onedrive, "notes.md", b"# Notes\n\nMy notes about the quarterly parking lottery.\n")
    graph.add_file(onedrive, "guide.md", b"# Guide\n\nThe espresso machine guide for the whole office.\n",
                   shared="organization")
    fin = source_for(graph, name="fin", site="acme.sharepoint.com:/sites/Finance")
    mine = source_for(graph, name="misty", user="misty@acme.example")
    work = tmp_path / "work"
    assert sync_source(store, fin, [fin, mine], work_root=work, default_kb="t", environ=ENV).status == "ok"
    assert len(graph.served("/permissions")) == 2, "read for the shared files only"
    assert sync_source(store, mine, [fin, mine], work_root=work, default_kb="t", environ=ENV).status == "ok"

    retriever, public = Retriever(store), SearchFilter(public_only=True)

    def public_ids(query: str) -> list[str]:
        return [p.doc_id for p in retriever.search(query, kb="t", k=8, search_filter=public)]

    everything = {p.doc_id for p in retriever.search("salary bands budget bonus notes guide", kb="t", k=10)}
    assert everything == {"fin/Documents/budget", "fin/Documents/salaries", "fin/Documents/bonus",
                          "misty/notes", "misty/guide"}
    assert "fin/Documents/salaries" not in public_ids("salary bands of every grade"), "shared with one person"
    assert "fin/Documents/bonus" in public_ids("yearly bonus March"), "kept the site's group"
    assert "fin/Documents/budget" in public_ids("travel budget euros"), "inherits the site"
    assert "misty/notes" not in public_ids("parking lottery notes"), "a OneDrive file nobody else sees"
    assert "misty/guide" in public_ids("espresso machine guide"), "shared with the whole organization"

    graph.share(salaries, "organization", [{"id": "link1", "roles": ["read"],
                                            "link": {"scope": "organization", "type": "view"}}])
    graph.requests.clear()
    resynced = sync_source(store, fin, [fin, mine], work_root=work, default_kb="t", environ=ENV)
    assert resynced.status == "ok" and resynced.errors == [] and resynced.updated == ["fin/Documents/salaries"]
    assert len(graph.served("/content")) == 1, "a sharing change re-reads that file"
    assert "fin/Documents/salaries" in public_ids("salary bands of every grade"), \
        "now shared with an organization link: public at the next sync"


def test_wrong_credentials_fail_the_run_clearly_without_the_secret(graph: FakeGraph, store: IndexStore,
                                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    site = graph.add_site("acme.sharepoint.com", "/sites/HR", "HR")
    graph.add_file(graph.add_drive(site, "Documents"), "a.txt", b"A\n\nThe canteen opens at noon every day.\n")
    source = source_for(graph, site="acme.sharepoint.com:/sites/HR")
    work = tmp_path / "work"
    assert sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV).status == "ok"
    version = store.latest_version("t")

    wrong = "not-the-secret-" + CLIENT_SECRET[::-1]
    graph.requests.clear()
    refused = sync_source(store, source, [source], work_root=work, default_kb="t", environ={"SP_SECRET": wrong})
    assert refused.status == "failed" and refused.index_version is None
    assert refused.errors == [f"source 'hr': sign-in refused for app {CLIENT_ID} (invalid_client AADSTS7000215); "
                              "check the client secret (client_secret_env / client_secret_file) and that it has "
                              "not expired"]
    assert store.latest_version("t") == version, "the index is untouched"
    assert graph.served("/oauth2/v2.0/token", "POST") and graph.served("/v1.0/") == [], "no Graph call unsigned"

    other = source_for(graph, site="acme.sharepoint.com:/sites/HR", tenant_id="contoso.onmicrosoft.com")
    lost = sync_source(store, other, [other], work_root=work, default_kb="t", environ=ENV)
    assert lost.status == "failed" and lost.errors == [
        f"source 'hr': cannot sign in at {graph.authority_url}/contoso.onmicrosoft.com (tenant not found, or "
        "authority_url is not a Microsoft Entra ID authority); check tenant_id and authority_url"]

    missing = source_for(graph, site="acme.sharepoint.com:/sites/Nope")
    gone = sync_source(store, missing, [missing], work_root=tmp_path / "w2", default_kb="t", environ=ENV)
    assert gone.status == "failed" and gone.errors == [
        "source 'hr': site acme.sharepoint.com:/sites/Nope not found (itemNotFound); check site: "
        "acme.sharepoint.com:/sites/Nope"]

    graph.deny = True
    revoked = sync_source(store, source, [source], work_root=work, default_kb="t", environ=ENV)
    assert revoked.status == "failed" and revoked.errors == [
        "source 'hr': Microsoft Graph refused site acme.sharepoint.com:/sites/HR (403 accessDenied); check that the "
        "app has the application permission Sites.Read.All (or Sites.Selected granted on it) with admin consent"]
    assert store.latest_version("t") == version and Retriever(store).search("canteen", kb="t", k=1)[0].doc_id == \
        "hr/Documents/a", "lost access keeps the index as it was"

    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err + repr(refused.to_dict())
    assert CLIENT_SECRET not in logged and wrong not in logged


def test_settings_are_validated(graph: FakeGraph) -> None:
    base = {"name": "sp", "kind": "sharepoint", "tenant_id": TENANT_ID, "client_id": CLIENT_ID,
            "client_secret_env": "SP_SECRET"}
    with pytest.raises(SourcesConfigError, match="give exactly one of 'site'"):
        parse_sources([base])
    with pytest.raises(SourcesConfigError, match="key 'client_secret' would put a credential in the file"):
        parse_sources([{**base, "site": "acme.sharepoint.com:/sites/HR", "client_secret": "s3cr3t"}])
    with pytest.raises(SourcesConfigError, match="give 'client_secret_env' or 'client_secret_file'"):
        parse_sources([{k: v for k, v in base.items() if k != "client_secret_env"} | {"user": "a@acme.example"}])
    with pytest.raises(SourcesConfigError, match="key 'tenant_id' Field required"):
        parse_sources([{k: v for k, v in base.items() if k != "tenant_id"} | {"user": "a@acme.example"}])
    with pytest.raises(SourcesConfigError, match="key 'graph_url' Value error, must be an https:// URL"):
        parse_sources([{**base, "user": "a@acme.example", "graph_url": "http://graph.example/v1.0"}])
    with pytest.raises(SourcesConfigError, match="'libraries' applies to a site"):
        parse_sources([{**base, "user": "a@acme.example", "libraries": ["Documents"]}])
    with pytest.raises(SourcesConfigError, match="expected a site as hostname:/path"):
        parse_sources([{**base, "site": "sites/HR"}])
    (root,) = parse_sources([{**base, "site": "https://acme.sharepoint.com/"}])
    assert root.site == "acme.sharepoint.com"
    (source,) = parse_sources([{**base, "site": "acme.sharepoint.com:/sites/HR/"}])
    assert source.site == "acme.sharepoint.com:/sites/HR"
    with pytest.raises(SourcesConfigError, match="client_secret_env names SP_SECRET, which is not set"):
        source.open_connector(Path("."), environ={})
    assert source.public_settings()["client_secret_env"] == "SP_SECRET"
